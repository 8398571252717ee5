//! Old kernels (fuse-overlayfs runs from Linux 4.18 on, and so must
//! ovlfuse): under common::old_kernel's seccomp filter and FUSE 7.27 INIT
//! flags ovlfuse takes its fallbacks and keeps the kernel's results.
//! scripts/test also runs the comparison suites with OVLFUSE_TEST_OLD_KERNEL=1.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::{Command, Stdio};

use common::*;

/// The filter itself: openat2 gives ENOSYS and RENAME_WHITEOUT EINVAL to a
/// process under it, while plain renameat2 still works.
#[test]
fn the_filter_refuses_what_4_18_lacks() {
    let s = Scratch::new("oldk-filter");
    fs::write(s.0.join("a"), b"a").unwrap();
    let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
class How(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
how = How(0, 0, 0)
r = libc.syscall(437, -100, (d + "/a").encode(), ctypes.byref(how), 24)
print("openat2", r, ctypes.get_errno())
r = libc.renameat2(-100, (d + "/a").encode(), -100, (d + "/b").encode(), 4)
print("whiteout", r, ctypes.get_errno())
r = libc.renameat2(-100, (d + "/a").encode(), -100, (d + "/b").encode(), 0)
print("plain", r)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).arg(&s.0).stdin(Stdio::null());
    old_kernel(&mut cmd);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("openat2 -1 {}", libc::ENOSYS)),
        "{text}"
    );
    assert!(
        text.contains(&format!("whiteout -1 {}", libc::EINVAL)),
        "{text}"
    );
    assert!(text.contains("plain 0"), "{text}");
}

/// ovlfuse under the filter: no passthrough (INIT of 7.27), copy-up by
/// read/write, whiteouts by rename + mknod, opens by the component walk
/// (the symlink-escape tests of tests/robustness.rs run this way in
/// scripts/test); the merged view matches kernel overlayfs's.
#[test]
fn ovlfuse_takes_its_fallbacks() {
    let s = Scratch::new("oldk");
    for d in ["l/d", "u", "w", "m", "ku", "kw", "km"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    fs::write(s.0.join("l/d/f"), vec![7u8; 300_000]).unwrap();
    fs::write(s.0.join("l/g"), b"g").unwrap();
    std::os::unix::fs::symlink("/etc", s.0.join("l/out")).unwrap();
    let log = s.0.join("daemon.log");
    let p = |d: &str| s.0.join(d).display().to_string();
    let opts = format!("lowerdir={},upperdir={},workdir={}", p("l"), p("u"), p("w"));
    let logf = fs::File::create(&log).unwrap();
    let mut m = OvlMount::new_with(&opts, &s.0.join("m"), |c| {
        old_kernel(c);
        c.stderr(logf);
    });
    let k = KernelMount::new(
        &[s.0.join("l")],
        Some((&s.0.join("ku"), &s.0.join("kw"))),
        &s.0.join("km"),
        "",
    );
    for mnt in [s.0.join("m"), s.0.join("km")] {
        // copy-up (copy_file_range refused), rename leaving a whiteout.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("d/f"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        drop(f);
        fs::rename(mnt.join("g"), mnt.join("g2")).unwrap();
        assert_eq!(
            fs::read_link(mnt.join("out")).unwrap(),
            std::path::Path::new("/etc")
        );
    }
    assert_maps_eq(
        &dump_tree(&s.0.join("m")),
        &dump_tree(&s.0.join("km")),
        "merged view",
    );
    drop(k);
    assert!(m.stop().is_some_and(|st| st.success()));
    let wh = fs::symlink_metadata(s.0.join("u/g")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout"
    );
    assert_eq!(fs::metadata(s.0.join("u/d/f")).unwrap().len(), 300_001);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("passthrough is not available"), "{text}");
}
