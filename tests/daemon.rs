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
        output_ok(Command::new("fusermount3").arg("-u").arg(&mnt));
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
                output_ok(Command::new("fusermount3").arg("-u").arg(&mnt));
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

/// In the background the daemon's warnings go to syslog (here a socket of
/// the test's, through OVLFUSE_SYSLOG_SOCKET), its cwd is `/`, and the mount
/// is of type fuse.ovlfuse with SOURCE as its source.
#[test]
fn background_daemon_logs_to_syslog_and_leaves_its_cwd() {
    use std::os::unix::net::UnixDatagram;
    let s = Scratch::new("syslog");
    let opts = layers(&s);
    fs::create_dir_all(s.0.join("l/bad")).unwrap();
    set_xattr(&s.0.join("l/bad"), "trusted.overlay.redirect", b"../x");
    let sock_path = s.0.join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mnt = s.0.join("m");
    output_ok(
        Command::new(bin())
            .args(["-o", &opts, "mysource"])
            .arg(&mnt)
            .env("OVLFUSE_SYSLOG_SOCKET", &sock_path)
            .current_dir(&s.0),
    );
    let guard = MountGuard(mnt.clone());
    let line = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&*mnt.display().to_string()))
        .map(str::to_string)
        .unwrap();
    assert!(
        line.starts_with("mysource ") && line.contains(" fuse.ovlfuse "),
        "{line}"
    );
    // The lookup of a dir with a bad redirect logs a warning, after start-up.
    let e = fs::read_dir(mnt.join("bad")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).expect("nothing reached syslog");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(
        msg.starts_with("<28>ovlfuse[") && msg.contains("bad redirect"),
        "{msg}"
    );
    let pid: u32 = msg["<28>ovlfuse[".len()..]
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    drop(guard);
}

/// libfuse's convention: a privileged helper mounts /dev/fuse itself and
/// starts the daemon with `/dev/fd/N` as its mountpoint; ovlfuse serves
/// that connection (here the test is the helper).
#[test]
fn serves_a_connection_mounted_by_a_helper() {
    use std::ffi::CString;
    let s = Scratch::new("devfd");
    let opts = layers(&s);
    let mnt = s.0.join("m");
    // SAFETY: plain syscalls; the fd is left inheritable on purpose.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0);
    let data = CString::new(format!(
        "fd={fd},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other"
    ))
    .unwrap();
    let target = CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::mount(
            c"helper".as_ptr(),
            target.as_ptr(),
            c"fuse.ovlfuse".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(r, 0, "mount: {}", std::io::Error::last_os_error());
    let guard = MountGuard(mnt.clone());
    let mut child = Command::new(bin())
        .args(["-f", "-o", &opts])
        .arg(format!("/dev/fd/{fd}"))
        .spawn()
        .unwrap();
    // SAFETY: our copy of the fd; the daemon has its own.
    unsafe { libc::close(fd) };
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"lower\n");
    fs::write(mnt.join("new"), b"n").unwrap();
    assert_eq!(fs::read(s.0.join("u/new")).unwrap(), b"n");
    drop(guard);
    let st = wait_exit(&mut child, 10).expect("the daemon did not end at unmount");
    assert!(st.success());
}
