//! Layer fixtures and small file helpers: trees built with fixed times,
//! xattrs, whiteouts, and syscall results as comparable strings.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

pub const FIXED_MTIME: i64 = 1_000_000_000;

pub fn mknod(p: &Path, mode: u32, dev: u64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscall.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(r, 0, "mknod {}", p.display());
}

pub fn whiteout(p: &Path) {
    mknod(p, libc::S_IFCHR, 0);
}

pub fn set_xattr(p: &Path, name: &str, v: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid pointers.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

pub fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid pointers.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn list_xattr(p: &Path) -> Result<Vec<String>, i32> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 8192];
    // SAFETY: valid pointers.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    let mut v: Vec<String> = buf[..r as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| !s.starts_with("security."))
        .collect();
    v.sort();
    Ok(v)
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn set_mtime(p: &Path, t: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid pointers.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// Sets every object below `root` to FIXED_MTIME, deepest first.
pub fn fix_times(root: &Path) {
    for p in walk(root).iter().rev() {
        set_mtime(p, FIXED_MTIME);
    }
    set_mtime(root, FIXED_MTIME);
}

pub fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// Three lowers with files, dirs, symlinks, hard links, a fifo, xattrs,
/// whiteouts and an opaque dir; `aufs` writes `.wh.` markers instead of the
/// kernel's char 0/0 and opaque xattr.
pub fn build_lowers(base: &Path, aufs: bool) -> Vec<PathBuf> {
    build_lowers_with(base, aufs, priv_prefix())
}

/// The private xattr prefix a user can write: trusted.overlay. as root,
/// user.overlay. otherwise (what rootless overlays use, userxattr).
pub fn priv_prefix() -> &'static str {
    if is_root() {
        "trusted.overlay."
    } else {
        "user.overlay."
    }
}

pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// The fixture with its private xattrs under `prefix` (user.overlay. for
/// userxattr mounts).
pub fn build_lowers_with(base: &Path, aufs: bool, prefix: &str) -> Vec<PathBuf> {
    let l1 = base.join("l1");
    let l2 = base.join("l2");
    let l3 = base.join("l3");
    for l in [&l1, &l2, &l3] {
        fs::create_dir_all(l).unwrap();
    }
    // bottom
    write(&l3.join("a/x"), b"x from l3\n");
    write(&l3.join("a/y"), b"y from l3\n");
    write(&l3.join("a/sub/z"), b"z\n");
    write(&l3.join("hard1"), b"linked\n");
    fs::hard_link(l3.join("hard1"), l3.join("hard2")).unwrap();
    write(&l3.join("deep/1/2/3/file"), b"deep\n");
    mknod(&l3.join("fifo"), libc::S_IFIFO | 0o644, 0);
    std::os::unix::fs::symlink("a/x", l3.join("sym")).unwrap();
    write(&l3.join("xat"), b"with xattr\n");
    set_xattr(&l3.join("xat"), "user.test", b"value");
    write(&l3.join("opq/hidden"), b"hidden\n");
    write(&l3.join("wh-me"), b"to be whited out\n");
    write(&l3.join("gone-dir/inner"), b"i\n");
    write(&l3.join("ro"), b"read only\n");
    fs::set_permissions(l3.join("ro"), fs::Permissions::from_mode(0o444)).unwrap();
    {
        let f = fs::File::create(l3.join("sparse")).unwrap();
        f.set_len(1 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_at(b"middle", 512 * 1024).unwrap();
    }
    // middle
    write(&l2.join("a/w"), b"w from l2\n");
    write(&l2.join("opq/visible"), b"visible\n");
    write(&l2.join("emptyish/.keep"), b"");
    if aufs {
        write(&l2.join("a/.wh.y"), b"");
        write(&l2.join(".wh.wh-me"), b"");
        write(&l2.join(".wh.gone-dir"), b"");
        write(&l2.join("opq/.wh..wh..opq"), b"");
    } else {
        whiteout(&l2.join("a/y"));
        whiteout(&l2.join("wh-me"));
        whiteout(&l2.join("gone-dir"));
        set_xattr(&l2.join("opq"), &format!("{prefix}opaque"), b"y");
    }
    // top
    write(&l1.join("top"), b"top file\n");
    write(&l1.join("a/x"), b"x from l1\n");
    fs::create_dir_all(l1.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", l1.join("abs")).unwrap();
    write(&l1.join("owned"), b"owned by 1000\n");
    // Only root can give files away; rootless fixtures keep their own ids.
    if is_root() {
        std::os::unix::fs::chown(l1.join("owned"), Some(1000), Some(1000)).unwrap();
    }
    fs::set_permissions(l1.join("owned"), fs::Permissions::from_mode(0o640)).unwrap();
    for l in [&l1, &l2, &l3] {
        fix_times(l);
    }
    vec![l1, l2, l3]
}

/// The three-layer fixture spread over ten lowers: its top layer stays on
/// top, its middle becomes layer 5 and its bottom layer 10, and the layers in
/// between add entries to the merged dirs.
pub fn build_ten_lowers(base: &Path) -> Vec<PathBuf> {
    let three = build_lowers(&base.join("three"), false);
    let ten: Vec<PathBuf> = (1..=10).map(|i| base.join(format!("l{i}"))).collect();
    fs::rename(&three[0], &ten[0]).unwrap();
    fs::rename(&three[1], &ten[4]).unwrap();
    fs::rename(&three[2], &ten[9]).unwrap();
    for (i, l) in ten.iter().enumerate() {
        if [0, 4, 9].contains(&i) {
            continue;
        }
        write(
            &l.join(format!("a/from{}", i + 1)),
            format!("layer {}\n", i + 1).as_bytes(),
        );
        write(&l.join(format!("deep/1/in{}", i + 1)), b"deep\n");
        if i == 6 {
            whiteout(&l.join("a/x"));
        }
        fix_times(l);
    }
    ten
}

/// Result of a syscall-ish op as a comparable string.
pub fn res<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

pub fn append(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(p)?;
    f.write_all(data)
}

pub fn read(p: &Path) -> Result<Vec<u8>, i32> {
    fs::read(p).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn ls(p: &Path) -> Result<Vec<String>, i32> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A busybox rootfs (its applets as links, /srv/conf.d/old, /img with a
/// hard link, /img/low/f) as a tar to import as a container image.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    fs::create_dir_all(rootfs.join("srv/conf.d")).unwrap();
    fs::write(rootfs.join("srv/conf.d/old"), b"old\n").unwrap();
    fs::create_dir_all(rootfs.join("img/low")).unwrap();
    fs::write(rootfs.join("img/low/f"), b"low\n").unwrap();
    fs::write(rootfs.join("img/a"), b"a\n").unwrap();
    fs::hard_link(rootfs.join("img/a"), rootfs.join("img/hard")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static missing: run scripts/test");
    for c in [
        "sh", "ls", "cat", "echo", "rm", "mkdir", "mv", "ln", "chmod", "stat", "cp", "true", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(c)).unwrap();
    }
    let tar = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

/// Runs `cmd`, which must succeed; returns its stdout.
pub fn output_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
