//! Mounts made by tests and undone by Drop: kernel overlayfs, ovlfuse
//! daemons (ended by pid), scratch dirs, and old-kernel simulation.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ovlfuse")
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "ovlfuse-t-{}-{}-{}",
            std::process::id(),
            tag,
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let want = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| Path::new(m) == want)
            .unwrap_or(false)
    })
}

pub fn umount(p: &Path) {
    for _ in 0..50 {
        if !is_mounted(p) {
            return;
        }
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscall on a valid path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: lazy detach as the last resort.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Kernel overlayfs mounted on `mnt`; unmounted on drop.
pub struct KernelMount {
    pub mnt: PathBuf,
}

impl KernelMount {
    pub fn new(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &str,
    ) -> KernelMount {
        let o = overlay_opts(lowers, upper, extra);
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &o])
            .arg(mnt)
            .status()
            .unwrap();
        assert!(st.success(), "kernel overlay mount failed: {o}");
        KernelMount {
            mnt: mnt.to_path_buf(),
        }
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        umount(&self.mnt);
    }
}

/// `lowerdir=..[,upperdir=..,workdir=..][,extra]`, the same for both mounts.
pub fn overlay_opts(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, extra: &str) -> String {
    let mut o = format!("lowerdir={}", join_lowers(lowers));
    if let Some((u, w)) = upper {
        o += &format!(",upperdir={},workdir={}", u.display(), w.display());
    }
    if !extra.is_empty() {
        o += ",";
        o += extra;
    }
    o
}

pub fn join_lowers(l: &[PathBuf]) -> String {
    l.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// ovlfuse running in the foreground as our child; unmounted and reaped on drop.
pub struct OvlMount {
    pub mnt: PathBuf,
    pub child: Option<Child>,
}

impl OvlMount {
    pub fn new(opts: &str, mnt: &Path) -> OvlMount {
        OvlMount::new_with(opts, mnt, |_| {})
    }

    /// As new, with `f` adjusting the command first (e.g. a pre_exec hook).
    pub fn new_with(opts: &str, mnt: &Path, f: impl FnOnce(&mut Command)) -> OvlMount {
        let mut cmd = Command::new(bin());
        cmd.args(["-f", "-o", opts]).arg(mnt).stdin(Stdio::null());
        if std::env::var_os("OVLFUSE_TEST_OLD_KERNEL").is_some() {
            old_kernel(&mut cmd);
        }
        f(&mut cmd);
        let child = cmd.spawn().expect("spawn ovlfuse");
        let mut m = OvlMount {
            mnt: mnt.to_path_buf(),
            child: Some(child),
        };
        let t = Instant::now();
        while !is_mounted(mnt) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ovlfuse exited before mounting: {st}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "ovlfuse did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn layers(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &str,
    ) -> OvlMount {
        OvlMount::new(&overlay_opts(lowers, upper, extra), mnt)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The daemon, no longer unmounted or reaped on drop.
    pub fn into_child(mut self) -> Child {
        self.mnt = PathBuf::new();
        self.child.take().expect("running")
    }

    /// Unmounts and waits for the daemon to exit; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        umount(&self.mnt);
        let mut child = self.child.take()?;
        let t = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OvlMount {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- layer building ----

/// OVLFUSE_TEST_OLD_KERNEL=1: every ovlfuse the tests start behaves as on
/// Linux 4.18, fuse-overlayfs's oldest kernel: a seccomp filter fails what
/// came later (openat2, close_range, io_uring: ENOSYS; renameat2
/// RENAME_WHITEOUT: EINVAL; FICLONE: EOPNOTSUPP; the passthrough ioctl:
/// ENOTTY), copy_file_range answers EXDEV as across filesystems, and
/// ovlfuse asks INIT for FUSE 7.27 features only.
pub fn old_kernel(cmd: &mut Command) {
    const FICLONE: u32 = 0x4004_9409;
    const FUSE_DEV_IOC_BACKING_OPEN: u32 = 0x4010_e501;
    let err = |e: i32| 0x0005_0000 | e as u32;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let (ld, jeq, jset, ret) = (0x20, 0x15, 0x45, 0x06);
    // Offsets are counted from the instruction after the arch check.
    let filter = vec![
        ins(ld, 0, 0, 0), // 0: syscall number
        ins(jeq, 8, 0, libc::SYS_openat2 as u32),
        ins(jeq, 7, 0, libc::SYS_close_range as u32),
        ins(jeq, 6, 0, libc::SYS_io_uring_setup as u32),
        ins(jeq, 5, 0, libc::SYS_open_tree as u32),
        ins(jeq, 4, 0, libc::SYS_mount_setattr as u32),
        ins(jeq, 4, 0, libc::SYS_copy_file_range as u32),
        ins(jeq, 4, 0, libc::SYS_renameat2 as u32),
        ins(jeq, 7, 0, libc::SYS_ioctl as u32),
        ins(ret, 0, 0, SECCOMP_ALLOW),     // 9
        ins(ret, 0, 0, err(libc::ENOSYS)), // 10
        ins(ret, 0, 0, err(libc::EXDEV)),  // 11
        ins(ld, 0, 0, 16 + 8 * 4),         // 12: renameat2 flags
        ins(jset, 0, 1, libc::RENAME_WHITEOUT),
        ins(ret, 0, 0, err(libc::EINVAL)), // 14
        ins(ret, 0, 0, SECCOMP_ALLOW),     // 15
        ins(ld, 0, 0, 16 + 8),             // 16: ioctl request
        ins(jeq, 2, 0, FICLONE),
        ins(jeq, 2, 0, FUSE_DEV_IOC_BACKING_OPEN),
        ins(ret, 0, 0, SECCOMP_ALLOW),         // 19
        ins(ret, 0, 0, err(libc::EOPNOTSUPP)), // 20
        ins(ret, 0, 0, err(libc::ENOTTY)),     // 21
    ];
    cmd.env("OVLFUSE_FUSE_PROTO", "7.27");
    seccomp(cmd, filter);
}

const SECCOMP_ALLOW: u32 = 0x7fff_0000;

/// seccomp: mknod and mknodat fail with EPERM (as where whiteout devices
/// cannot be made); everything else is allowed.
pub fn no_mknod(cmd: &mut Command) {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let (ld, jeq, ret) = (0x20, 0x15, 0x06);
    let filter = vec![
        ins(ld, 0, 0, 0), // syscall number
        ins(jeq, 2, 0, libc::SYS_mknodat as u32),
        ins(jeq, 1, 0, libc::SYS_mknod as u32),
        ins(ret, 0, 0, SECCOMP_ALLOW),
        ins(ret, 0, 0, 0x0005_0000 | libc::EPERM as u32),
    ];
    seccomp(cmd, filter);
}

/// Runs `cmd` under a seccomp filter: `body` (BPF on seccomp_data) after a
/// check that lets other architectures through untouched.
pub fn seccomp(cmd: &mut Command, body: Vec<libc::sock_filter>) {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut filter = vec![
        ins(0x20, 0, 0, 4), // arch
        ins(0x15, 1, 0, AUDIT_ARCH_X86_64),
        ins(0x06, 0, 0, SECCOMP_ALLOW),
    ];
    filter.extend(body);
    // SAFETY: only async-signal-safe prctl calls run between fork and exec;
    // the filter is moved into the closure.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, 2, &prog as *const _ as usize, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Unmounts a mount the test made (or that a daemon made for it) on drop.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        umount(&self.0);
    }
}
