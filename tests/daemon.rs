//! The daemon's life: one mount per upper/workdir (as the kernel's EBUSY),
//! an exiting daemon never unmounts the next mount at its path, and
//! SIGTERM always ends it, also while another mount namespace holds the mount.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn layers(s: &Scratch) -> String {
    for d in ["l", "u", "w", "m", "m2"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    fs::write(s.0.join("l/f"), b"lower\n").unwrap();
    let p = |d: &str| s.0.join(d).display().to_string();
    format!("lowerdir={},upperdir={},workdir={}", p("l"), p("u"), p("w"))
}

/// The mount type /proc/self/mounts gives for `mnt`.
fn mount_type(mnt: &Path) -> Option<String> {
    let want = mnt.display().to_string();
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f[1] == want)
        .map(|f| f[2].to_string())
}

/// Waits for a child to exit; kills it (it is ours) after `secs`.
fn wait_exit(c: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

#[test]
fn second_mount_of_an_upper_in_use_is_refused() {
    let s = Scratch::new("busy");
    let opts = layers(&s);
    let first = OvlMount::new(&opts, &s.0.join("m"));
    assert_eq!(mount_type(&s.0.join("m")).as_deref(), Some("fuse.ovlfuse"));
    let out = Command::new(bin())
        .args(["-o", &opts])
        .arg(s.0.join("m2"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "second mount: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("in use"), "{err}");
    assert!(!is_mounted(&s.0.join("m2")));
    // The same upper with another workdir is refused too.
    fs::create_dir_all(s.0.join("w2")).unwrap();
    let other_work = opts.replace("/w", "/w2");
    let out = Command::new(bin())
        .args(["-o", &other_work])
        .arg(s.0.join("m2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upperdir"));
    assert_eq!(fs::read(s.0.join("m/f")).unwrap(), b"lower\n");
    drop(first);
    // A SIGKILLed daemon drops its lock with its fds.
    let mut killed = OvlMount::new(&opts, &s.0.join("m"));
    killed.child.as_mut().unwrap().kill().unwrap();
    killed.child.as_mut().unwrap().wait().unwrap();
    umount(&s.0.join("m"));
    let again = OvlMount::new(&opts, &s.0.join("m2"));
    assert_eq!(fs::read(s.0.join("m2/f")).unwrap(), b"lower\n");
    drop(again);
}

#[test]
fn an_exiting_daemon_never_unmounts_the_next_mount() {
    let s = Scratch::new("remount");
    let opts = layers(&s);
    let mnt = s.0.join("m");
    let mut cur = OvlMount::new(&opts, &mnt);
    for i in 0..100 {
        // As Docker does: unmount, mount again at once at the same path.
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success());
        let mut old = cur.into_child();
        cur = OvlMount::new(&opts, &mnt);
        let st = wait_exit(&mut old, 10).expect("old daemon did not exit");
        assert!(st.success(), "cycle {i}: old daemon {st}");
        assert!(is_mounted(&mnt), "cycle {i}: the new mount is gone");
        assert_eq!(fs::read(mnt.join("f")).unwrap(), b"lower\n", "cycle {i}");
    }
    drop(cur);
}

/// A process in a private copy of our mount namespace: it holds the mount.
struct NsHolder(Child);

impl NsHolder {
    fn new(mnt: &Path) -> NsHolder {
        let c = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "120"])
            .spawn()
            .unwrap();
        let h = NsHolder(c);
        let want = format!(" {} ", mnt.display());
        let t = Instant::now();
        loop {
            let info =
                fs::read_to_string(format!("/proc/{}/mountinfo", h.0.id())).unwrap_or_default();
            let own_ns = fs::read_link(format!("/proc/{}/ns/mnt", h.0.id())).ok()
                != fs::read_link("/proc/self/ns/mnt").ok();
            if own_ns && info.contains(&want) {
                return h;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "unshare did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_ends_the_daemon_while_another_namespace_holds_the_mount() {
    let s = Scratch::new("nsterm");
    let opts = layers(&s);
    let mnt = s.0.join("m");
    for unmount_first in [false, true] {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            let mut m = OvlMount::new(&opts, &mnt);
            let holder = NsHolder::new(&mnt);
            if unmount_first {
                let st = Command::new("fusermount3")
                    .arg("-u")
                    .arg(&mnt)
                    .status()
                    .unwrap();
                assert!(st.success());
                // The other namespace still holds it: the daemon serves on.
                std::thread::sleep(Duration::from_millis(200));
                assert!(m.child.as_mut().unwrap().try_wait().unwrap().is_none());
            }
            // SAFETY: our own child.
            unsafe { libc::kill(m.pid() as i32, sig) };
            let mut child = m.into_child();
            let st = wait_exit(&mut child, 10);
            assert!(
                st.is_some_and(|s| s.success()),
                "signal {sig} (unmounted first: {unmount_first}): daemon did not end cleanly: {st:?}"
            );
            assert!(!is_mounted(&mnt));
            drop(holder);
        }
    }
}
