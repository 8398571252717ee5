//! The overlay core driven directly, without FUSE or a mount.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use common::*;
use ovlfuse::config::Config;
use ovlfuse::dir::{Creds, NewObj};
use ovlfuse::inode::SetAttr;
use ovlfuse::node::Node;
use ovlfuse::{Errno, OvlFs};

/// The caller's own ids: what a rootless daemon can give new objects.
fn me() -> Creds {
    // SAFETY: no arguments.
    unsafe {
        Creds {
            uid: libc::geteuid(),
            gid: libc::getegid(),
        }
    }
}

fn fs_over(base: &Path, aufs: bool, upper: bool) -> OvlFs {
    let lowers = build_lowers(base, aufs);
    let mut c = Config::default();
    c.apply_options(&format!("lowerdir={}", join_lowers(&lowers)))
        .unwrap();
    if !is_root() {
        c.apply_options("userxattr").unwrap();
    }
    if upper {
        for d in ["u", "w"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        c.apply_options(&format!(
            "upperdir={},workdir={}",
            base.join("u").display(),
            base.join("w").display()
        ))
        .unwrap();
    }
    fs::create_dir_all(base.join("m")).unwrap();
    c.validate(base, &base.join("m")).unwrap();
    OvlFs::new(c).unwrap()
}

fn walk(fs: &OvlFs, path: &str) -> Result<Arc<Node>, Errno> {
    let mut n = fs.nodes.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        n = fs.lookup(&n, OsStr::new(part), true)?.0;
    }
    Ok(n)
}

fn names(fs: &OvlFs, path: &str) -> Vec<String> {
    let n = walk(fs, path).unwrap();
    let mut v: Vec<String> = fs
        .merged_entries(&n)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn lookup_honours_whiteouts_opaque_dirs_and_aufs_markers() {
    for aufs in [false, true] {
        let s = Scratch::new("core");
        let fs = fs_over(&s.0, aufs, true);
        assert_eq!(walk(&fs, "wh-me").unwrap_err(), Errno(libc::ENOENT));
        assert_eq!(walk(&fs, "a/y").unwrap_err(), Errno(libc::ENOENT));
        assert_eq!(walk(&fs, "gone-dir").unwrap_err(), Errno(libc::ENOENT));
        assert_eq!(walk(&fs, "opq/hidden").unwrap_err(), Errno(libc::ENOENT));
        assert!(walk(&fs, "opq/visible").is_ok());
        assert_eq!(walk(&fs, ".wh.wh-me").unwrap_err(), Errno(libc::ENOENT));
        assert_eq!(names(&fs, "a"), vec!["sub", "w", "x"]);
        assert_eq!(names(&fs, "opq"), vec!["visible"]);
        assert!(!names(&fs, "")
            .iter()
            .any(|n| n.starts_with(".wh.") || n == "wh-me" || n == "gone-dir"));
        // a/x comes from the top layer.
        let x = walk(&fs, "a/x").unwrap();
        let fh = fs.open(&x, libc::O_RDONLY).unwrap();
        assert_eq!(fs.read(fh, 0, 100).unwrap(), b"x from l1\n");
        fs.release(fh);
    }
}

#[test]
fn unlink_of_lower_file_writes_only_a_whiteout() {
    let s = Scratch::new("core");
    let fs = fs_over(&s.0, false, true);
    let root = fs.nodes.root();
    fs.unlink(&root, OsStr::new("sparse")).unwrap();
    let md = fs::symlink_metadata(s.0.join("u/sparse")).unwrap();
    assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(md.rdev(), 0);
    assert_eq!(walk(&fs, "sparse").unwrap_err(), Errno(libc::ENOENT));
    let a = walk(&fs, "a").unwrap();
    assert_eq!(
        fs.rmdir(&root, OsStr::new("a")).unwrap_err(),
        Errno(libc::ENOTEMPTY)
    );
    assert_eq!(
        fs.unlink(&root, OsStr::new("a")).unwrap_err(),
        Errno(libc::EISDIR)
    );
    drop(a);
    assert_eq!(
        fs::read_dir(s.0.join("w/work")).unwrap().count(),
        0,
        "work dir left temp files"
    );
}

#[test]
fn copy_up_keeps_data_owner_mode_times_and_xattrs() {
    let s = Scratch::new("core");
    let fs = fs_over(&s.0, false, true);
    let owned = walk(&fs, "owned").unwrap();
    let before = fs.getattr(&owned, None).unwrap();
    let after = fs
        .setattr(
            &owned,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(after.st_ino, before.st_ino, "st_ino changed by copy-up");
    let md = fs::metadata(s.0.join("u/owned")).unwrap();
    // The fixture's owner: 1000 as root, the caller's own rootless.
    let owner = match is_root() {
        true => (1000, 1000),
        false => (me().uid, me().gid),
    };
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (owner.0, owner.1, 0o600)
    );
    assert_eq!(md.mtime(), FIXED_MTIME);
    assert_eq!(fs::read(s.0.join("u/owned")).unwrap(), b"owned by 1000\n");
    // Parent dirs come first, with their metadata.
    let z = walk(&fs, "deep/1/2/3/file").unwrap();
    fs.setxattr(&z, OsStr::new("user.k"), b"v", 0).unwrap();
    assert_eq!(
        fs::metadata(s.0.join("u/deep/1")).unwrap().mtime(),
        FIXED_MTIME
    );
    let x = walk(&fs, "xat").unwrap();
    let fh = fs.open(&x, libc::O_WRONLY | libc::O_APPEND).unwrap();
    fs.release(fh);
    assert_eq!(
        get_xattr(&s.0.join("u/xat"), "user.test").unwrap(),
        b"value"
    );
    // Holes stay holes.
    let sp = walk(&fs, "sparse").unwrap();
    let fh = fs.open(&sp, libc::O_RDWR).unwrap();
    assert_eq!(fs.read(fh, 512 * 1024, 6).unwrap(), b"middle");
    fs.release(fh);
    let md = fs::metadata(s.0.join("u/sparse")).unwrap();
    assert_eq!(md.len(), 1 << 20);
    assert!(
        md.blocks() < 64,
        "copy-up filled the holes: {} blocks",
        md.blocks()
    );
    assert_eq!(fs::read_dir(s.0.join("w/work")).unwrap().count(), 0);
}

#[test]
fn reader_switches_to_upper_after_copy_up() {
    let s = Scratch::new("core");
    let fs = fs_over(&s.0, false, true);
    let n = walk(&fs, "top").unwrap();
    let r = fs.open(&n, libc::O_RDONLY).unwrap();
    let w = fs.open(&n, libc::O_WRONLY).unwrap();
    fs.write(w, 0, b"TOP").unwrap();
    assert_eq!(fs.read(r, 0, 3).unwrap(), b"TOP");
    fs.release(r);
    fs.release(w);
}

#[test]
fn creations_over_whiteouts_are_atomic_and_opaque() {
    let s = Scratch::new("core");
    let fs = fs_over(&s.0, false, true);
    let root = fs.nodes.root();
    let (d, _) = fs
        .create_object(&root, OsStr::new("gone-dir"), NewObj::Dir(0o755), me())
        .unwrap();
    assert!(d.is_dir());
    assert_eq!(
        get_xattr(&s.0.join("u/gone-dir"), &format!("{}opaque", priv_prefix())).unwrap(),
        b"y"
    );
    assert!(names(&fs, "gone-dir").is_empty());
    // Another owner where the daemon may give files away (root).
    let c = match is_root() {
        true => Creds { uid: 1234, gid: 99 },
        false => me(),
    };
    let (_, st) = fs
        .create_object(&root, OsStr::new("wh-me"), NewObj::File(0o4755), c)
        .unwrap();
    assert_eq!(
        (st.st_uid, st.st_gid, st.st_mode & 0o7777),
        (c.uid, c.gid, 0o4755)
    );
    assert_eq!(
        fs.create_object(
            &root,
            OsStr::new("new-wh"),
            NewObj::Special(libc::S_IFCHR | 0o600, 0),
            me()
        )
        .unwrap_err(),
        Errno(libc::EPERM)
    );
    assert_eq!(
        fs.create_object(&root, OsStr::new("top"), NewObj::Dir(0o755), me())
            .unwrap_err(),
        Errno(libc::EEXIST)
    );
    assert_eq!(fs::read_dir(s.0.join("w/work")).unwrap().count(), 0);
}

#[test]
fn read_only_overlay_refuses_changes() {
    let s = Scratch::new("core");
    let fs = fs_over(&s.0, false, false);
    let root = fs.nodes.root();
    let top = walk(&fs, "top").unwrap();
    assert_eq!(
        fs.unlink(&root, OsStr::new("top")).unwrap_err(),
        Errno(libc::EROFS)
    );
    assert_eq!(
        fs.open(&top, libc::O_WRONLY).unwrap_err(),
        Errno(libc::EROFS)
    );
    assert_eq!(
        fs.setattr(
            &top,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            }
        )
        .unwrap_err(),
        Errno(libc::EROFS)
    );
    assert_eq!(
        fs.create_object(&root, OsStr::new("n"), NewObj::Dir(0o755), me())
            .unwrap_err(),
        Errno(libc::EROFS)
    );
}

#[test]
fn work_dir_is_emptied_at_mount() {
    let s = Scratch::new("core");
    fs::create_dir_all(s.0.join("w/work/#stale-dir/inner")).unwrap();
    fs::write(s.0.join("w/work/#stale"), b"half a copy-up").unwrap();
    let _fs = fs_over(&s.0, false, true);
    assert_eq!(fs::read_dir(s.0.join("w/work")).unwrap().count(), 0);
    let md = fs::metadata(s.0.join("w/work")).unwrap();
    // An unprivileged daemon keeps it 0700: it could not enter 000.
    assert_eq!(
        md.permissions().mode() & 0o777,
        if is_root() { 0 } else { 0o700 },
        "W/work is mode 000 like the kernel's (0700 rootless)"
    );
}

/// File handles of forgotten nodes (export.rs): LOOKUP "." finds a node the
/// kernel forgot by the name it had, with its ancestors forgotten too and
/// with its generation; LOOKUP ".." gives the parent; a name that is gone,
/// or leads to another object by now, gives ESTALE and holds nothing.
#[test]
fn forgotten_nodes_are_found_again_by_id() {
    let s = Scratch::new("export");
    let fs = fs_over(&s.0, false, true);
    let f = walk(&fs, "deep/1/2/3/file").unwrap();
    let (ino, generation) = (f.ino, f.generation());
    let dir = walk(&fs, "deep/1/2").unwrap();
    let (dino, dgen) = (dir.ino, dir.generation());
    drop((f, dir));
    let before = fs.nodes.len();
    // The kernel forgets every lookup the walks took, bottom up.
    for p in [
        "deep/1/2/3/file",
        "deep/1/2/3",
        "deep/1/2",
        "deep/1",
        "deep",
    ] {
        let n = walk(&fs, p).unwrap();
        let id = n.ino;
        drop(n);
        fs.forget(id, u64::MAX);
    }
    assert!(fs.nodes.len() < before, "nodes were forgotten");
    assert!(fs.nodes.get(ino).is_none() && fs.nodes.get(dino).is_none());

    let (n, st) = fs.lookup_self(ino).unwrap();
    assert_eq!((n.ino, n.generation(), st.st_size), (ino, generation, 5));
    let (d, _) = fs.lookup_self(dino).unwrap();
    assert_eq!((d.ino, d.generation()), (dino, dgen));
    let (p, _) = fs.lookup_parent(dino).unwrap();
    assert_eq!(p.path().unwrap(), b"deep/1");
    assert_eq!(fs.lookup_parent(1).unwrap().0.ino, 1);
    drop((n, d, p));

    // Renamed while forgotten: the old name leads nowhere.
    let t = walk(&fs, "top").unwrap();
    let tino = t.ino;
    drop(t);
    fs.forget(tino, u64::MAX);
    fs::rename(s.0.join("l1/top"), s.0.join("l1/top2")).unwrap();
    assert_eq!(fs.lookup_self(tino).unwrap_err(), Errno(libc::ESTALE));
    assert!(fs.nodes.get(tino).is_none());
}
