//! Data safety under pressure: a full upper filesystem, and layers that
//! try to lead ovlfuse out of them with symlinks.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

/// A small tmpfs mounted on `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

#[test]
fn full_upper_gives_enospc_and_keeps_everything_intact() {
    let s = Scratch::new("full");
    let l = s.0.join("l");
    let big: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 251) as u8).collect();
    write(&l.join("big"), &big);
    write(&l.join("small"), b"small\n");
    let t = Tmpfs::new(&s.0.join("t"), "8m");
    for d in ["u", "w"] {
        fs::create_dir_all(t.0.join(d)).unwrap();
    }
    let m = s.0.join("m");
    fs::create_dir_all(&m).unwrap();
    let (u, w) = (t.0.join("u"), t.0.join("w"));
    let _g = OvlMount::layers(std::slice::from_ref(&l), Some((&u, &w)), &m, "");
    // A copy-up that does not fit: ENOSPC for the caller, nothing half done.
    let e = append(&m.join("big"), b"!").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert_eq!(
        read(&m.join("big")).unwrap(),
        big,
        "the merged view still shows the lower file"
    );
    assert_eq!(read(&l.join("big")).unwrap(), big, "the lower is untouched");
    assert!(!u.join("big").exists(), "no partial copy in the upper");
    assert_eq!(
        fs::read_dir(w.join("work")).unwrap().count(),
        0,
        "a temp file stayed in W/work"
    );
    // Writes that do not fit: ENOSPC, earlier data kept.
    let mut f = fs::File::create(m.join("fill")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0usize;
    let err = loop {
        match f.write_all(&chunk).and_then(|_| f.sync_all()) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written < 64 << 20, "no ENOSPC on an 8 MiB upper");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    // Space freed: the mount works again.
    fs::remove_file(m.join("fill")).unwrap();
    append(&m.join("small"), b"more\n").unwrap();
    assert_eq!(read(&m.join("small")).unwrap(), b"small\nmore\n");
    assert_eq!(read(&l.join("small")).unwrap(), b"small\n");
    assert_eq!(fs::read_dir(w.join("work")).unwrap().count(), 0);
}

/// Symlinks in layers (absolute, `..`, a symlinked dir where another layer
/// has a real one) never lead ovlfuse's own walks out of the layers: every
/// operation stays inside, and nothing outside changes.
#[test]
fn layer_symlinks_never_lead_outside() {
    let s = Scratch::new("hostile");
    let outside = s.0.join("outside");
    write(&outside.join("secret"), b"secret\n");
    let (l1, l2) = (s.0.join("l1"), s.0.join("l2"));
    write(&l2.join("d/inner"), b"inner\n");
    fs::create_dir_all(&l1).unwrap();
    // In the top layer, "d" is a symlink out of the layer; below it a real dir.
    std::os::unix::fs::symlink(&outside, l1.join("d")).unwrap();
    std::os::unix::fs::symlink("../../outside", l1.join("up")).unwrap();
    std::os::unix::fs::symlink("/", l1.join("abs")).unwrap();
    for d in ["u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    // The upper has a symlinked dir too, where a lower has a real one.
    write(&l2.join("x/y"), b"y\n");
    std::os::unix::fs::symlink(&outside, u.join("x")).unwrap();
    let _g = OvlMount::layers(&[l1, l2], Some((&u, &w)), &m, "");
    // The merged view shows the symlinks as symlinks, not merged dirs.
    for n in ["d", "up", "abs", "x"] {
        assert!(
            fs::symlink_metadata(m.join(n))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{n}"
        );
    }
    // Operations on those names act on the links themselves.
    let c = CString::new(m.join("d").as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscall on a valid path.
    assert_eq!(unsafe { libc::lchown(c.as_ptr(), 1234, 1234) }, 0);
    fs::remove_file(m.join("up")).unwrap();
    fs::rename(m.join("abs"), m.join("abs2")).unwrap();
    fs::remove_file(m.join("x")).unwrap();
    fs::create_dir(m.join("x")).unwrap();
    write(&m.join("x/new"), b"inside\n");
    // Nothing outside the layers changed or appeared.
    assert_eq!(ls(&outside).unwrap(), vec!["secret"]);
    assert_eq!(read(&outside.join("secret")).unwrap(), b"secret\n");
    let md = fs::metadata(&outside).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(md.uid(), 1234, "lchown went through the link");
    assert!(u.join("x").is_dir() && !u.join("x").is_symlink());
    assert_eq!(read(&u.join("x/new")).unwrap(), b"inside\n");
}

/// Corrupt markers give EIO (or fall back) and a log line; the daemon lives.
#[test]
fn corrupt_markers_give_errors_not_crashes() {
    let s = Scratch::new("corrupt");
    let (l1, l2) = (s.0.join("l1"), s.0.join("l2"));
    write(&l2.join("d/f"), b"f\n");
    write(&l2.join("a/b/f"), b"f\n");
    for d in ["u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    fs::create_dir_all(&l1).unwrap();
    let u = s.0.join("u");
    // Redirects that are not names or absolute paths.
    for (dir, v) in [
        ("bad1", &b"../../etc"[..]),
        ("bad2", b""),
        ("bad3", b"a/b"),
        ("bad4", b"/a/../../x"),
    ] {
        fs::create_dir(u.join(dir)).unwrap();
        set_xattr(&u.join(dir), "trusted.overlay.redirect", v);
    }
    // A redirect cycle: each dir points at the other.
    fs::create_dir(u.join("c1")).unwrap();
    fs::create_dir(u.join("c2")).unwrap();
    set_xattr(&u.join("c1"), "trusted.overlay.redirect", b"/c2");
    set_xattr(&u.join("c2"), "trusted.overlay.redirect", b"/c1");
    // A truncated origin and a metacopy file without data.
    write(&u.join("o"), b"o\n");
    set_xattr(
        &u.join("o"),
        "trusted.overlay.origin",
        &[0, 0xfb, 0x1d, 0, 1, 0, 0],
    );
    write(&u.join("meta"), b"");
    set_xattr(&u.join("meta"), "trusted.overlay.metacopy", b"");
    let (w, m) = (s.0.join("w"), s.0.join("m"));
    let mut g = OvlMount::layers(&[l1, l2], Some((&u, &w)), &m, "metacopy=on");
    for dir in ["bad1", "bad2", "bad3", "bad4"] {
        let e = fs::symlink_metadata(m.join(dir)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{dir}");
    }
    // The cycle resolves to what the layers hold, without looping.
    assert!(ls(&m.join("c1")).is_ok() && ls(&m.join("c2")).is_ok());
    assert_eq!(
        read(&m.join("o")).unwrap(),
        b"o\n",
        "a bad origin is ignored"
    );
    assert_eq!(
        fs::symlink_metadata(m.join("meta"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    // Everything else still works, and the daemon is alive.
    assert_eq!(read(&m.join("d/f")).unwrap(), b"f\n");
    fs::write(m.join("new"), b"n").unwrap();
    let names = ls(&m).unwrap();
    assert!(
        names.contains(&"new".to_string()) && names.contains(&"d".to_string()),
        "{names:?}"
    );
    let st = g.stop().unwrap();
    assert!(st.success(), "daemon exit status {st}");
}

/// Corrupt hard-link bookkeeping (index=on): a bad `nlink` xattr on the
/// upper inode and a truncated `origin` on its W/index entry. ovlfuse keeps
/// serving, never panics, and shows what kernel overlayfs shows over the
/// same layers, errno for errno.
#[test]
fn corrupt_nlink_and_index_origin_match_the_kernel() {
    let s = Scratch::new("corrupt-index");
    let l = s.0.join("l");
    write(&l.join("hl"), b"linked\n");
    fs::hard_link(l.join("hl"), l.join("hl2")).unwrap();
    write(&l.join("plain"), b"plain\n");
    for d in ["u", "w", "m", "wk", "mk"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let lowers = vec![l.clone()];
    {
        let _g = OvlMount::layers(&lowers, Some((&u, &w)), &m, "index=on");
        append(&m.join("hl"), b"more\n").unwrap();
        append(&m.join("plain"), b"more\n").unwrap();
    }
    let index: Vec<_> = fs::read_dir(w.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(index.len(), 1, "one index entry for hl: {index:?}");
    set_xattr(&index[0], "trusted.overlay.origin", &[0, 0xfb, 0x15, 0]);
    set_xattr(&u.join("hl"), "trusted.overlay.nlink", b"garbage");
    set_xattr(
        &u.join("plain"),
        "trusted.overlay.nlink",
        b"U-99999999999999999999",
    );
    // What each name shows: errno or (nlink, content).
    let view = |m: &Path| -> Vec<String> {
        ["hl", "hl2", "plain"]
            .iter()
            .map(|n| match fs::symlink_metadata(m.join(n)) {
                Err(e) => format!("{n}: errno {}", e.raw_os_error().unwrap_or(0)),
                Ok(md) => format!(
                    "{n}: nlink {} {}",
                    md.nlink(),
                    res(fs::read(m.join(n))).replace("ok", "read ok")
                ),
            })
            .collect()
    };
    let mut g = OvlMount::layers(&lowers, Some((&u, &w)), &m, "index=on");
    let ours = view(&m);
    fs::write(m.join("new"), b"n").unwrap();
    assert_eq!(read(&m.join("new")).unwrap(), b"n");
    let st = g.stop().unwrap();
    assert!(st.success(), "daemon exit status {st}");
    fs::remove_file(u.join("new")).unwrap();
    let k = KernelMount::new(
        &lowers,
        Some((&u, &s.0.join("wk"))),
        &s.0.join("mk"),
        "index=on",
    );
    assert_eq!(
        ours,
        view(&k.mnt),
        "ovlfuse vs kernel over the corrupt layers"
    );
}

/// What a read-only fd held across a copy-up reads afterwards: the copy,
/// as on the kernel's overlay since Linux 4.19, where Docker's notes still
/// list the older behaviour (the lower file). A new open reads the copy,
/// writes reach the upper only, and the lower file is untouched.
#[test]
fn a_read_fd_held_across_copy_up_reads_the_copy_as_on_the_kernel() {
    use std::io::{Read, Seek};
    let s = Scratch::new("held-fd");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    for name in ["kernel", "ovlfuse"] {
        for d in [&l, &u, &w, &m] {
            let _ = fs::remove_dir_all(d);
            fs::create_dir_all(d).unwrap();
        }
        write(&l.join("f"), b"old");
        let read_all = |f: &mut fs::File| {
            let mut v = Vec::new();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        let lowers = [l.clone()];
        let (_k, _o) = match name {
            "kernel" => (
                Some(KernelMount::new(&lowers, Some((&u, &w)), &m, "")),
                None,
            ),
            _ => (
                None,
                Some(OvlMount::layers(&lowers, Some((&u, &w)), &m, "")),
            ),
        };
        let mut held = fs::File::open(m.join("f")).unwrap();
        assert_eq!(read_all(&mut held), b"old");
        let mut wr = fs::OpenOptions::new()
            .append(true)
            .open(m.join("f"))
            .unwrap();
        wr.write_all(b" and new").unwrap();
        drop(wr);
        assert_eq!(read_all(&mut held), b"old and new", "{name}: the held fd");
        let mut fresh = fs::File::open(m.join("f")).unwrap();
        assert_eq!(read_all(&mut fresh), b"old and new", "{name}: a new open");
        assert_eq!(
            fs::read(u.join("f")).unwrap(),
            b"old and new",
            "{name}: the upper"
        );
        assert_eq!(fs::read(l.join("f")).unwrap(), b"old", "{name}: the lower");
    }
}

/// With `lower_passthrough`, the other choice: a lower file opened for
/// reading does its reads by FUSE passthrough, so an fd held across a
/// copy-up keeps reading the lower copy (as on kernels before 4.19, and as
/// Docker's notes describe overlay2). The kernel lets no other open into
/// an inode whose passthrough opens hold another file, so the name gets a
/// new inode of the same st_ino: the writer's open, new opens, renames and
/// removals all work, and the layers end as the kernel's overlay leaves
/// them. Where FUSE has no passthrough (the old-kernel rerun) the option
/// changes nothing: the held fd reads the copy.
#[test]
fn with_lower_passthrough_a_held_read_fd_keeps_the_lower_copy() {
    use std::io::{Read, Seek};
    let s = Scratch::new("held-lower");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    for d in [&l, &u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    write(&l.join("f"), b"old");
    write(&l.join("g"), b"gee");
    let read_all = |f: &mut fs::File| {
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let append = |p: &Path, data: &[u8]| {
        let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(data).unwrap();
    };
    let old_kernel = std::env::var_os("OVLFUSE_TEST_OLD_KERNEL").is_some();
    let lowers = [l.clone()];
    let o = OvlMount::layers(&lowers, Some((&u, &w)), &m, "lower_passthrough");
    let ino = fs::metadata(m.join("f")).unwrap().ino();
    let mut held = fs::File::open(m.join("f")).unwrap();
    let mut held2 = fs::File::open(m.join("f")).unwrap();
    assert_eq!(read_all(&mut held), b"old");
    append(&m.join("f"), b" and new");
    let seen: &[u8] = if old_kernel { b"old and new" } else { b"old" };
    assert_eq!(read_all(&mut held), seen, "the held fd");
    assert_eq!(read_all(&mut held2), seen, "the other held fd");
    assert_eq!(fs::read(m.join("f")).unwrap(), b"old and new", "a new open");
    assert_eq!(
        fs::metadata(m.join("f")).unwrap().ino(),
        ino,
        "st_ino by name"
    );
    assert_eq!(held.metadata().unwrap().ino(), ino, "st_ino by the held fd");
    // A second writer, a reader opened after the copy-up, then a rename and
    // a removal of the name, with the old fds still open.
    append(&m.join("f"), b"!");
    let mut after = fs::File::open(m.join("f")).unwrap();
    assert_eq!(read_all(&mut after), b"old and new!");
    fs::rename(m.join("f"), m.join("h")).unwrap();
    assert_eq!(fs::read(m.join("h")).unwrap(), b"old and new!");
    assert_eq!(fs::metadata(m.join("h")).unwrap().ino(), ino);
    append(&m.join("g"), b"!");
    fs::remove_file(m.join("g")).unwrap();
    assert!(!m.join("g").exists());
    let seen: &[u8] = if old_kernel { b"old and new!" } else { b"old" };
    assert_eq!(read_all(&mut held), seen, "the held fd, after all");
    drop((held, held2, after));
    let ours = fs::read(m.join("h")).unwrap();
    drop(o);
    assert_eq!(fs::read(l.join("f")).unwrap(), b"old", "the lower");
    fs::create_dir_all(s.0.join("mk")).unwrap();
    let k = KernelMount::new(&lowers, Some((&u, &w)), &s.0.join("mk"), "");
    assert_eq!(
        fs::read(k.mnt.join("h")).unwrap(),
        ours,
        "the kernel reads the upper"
    );
    assert!(!k.mnt.join("f").exists() && !k.mnt.join("g").exists());
}
