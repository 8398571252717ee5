//! Process control, used only by the command line front end.

use std::io;

pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: called while the process has a single thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

pub fn setsid() {
    // SAFETY: plain syscall; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
}

/// Points stdin, stdout and stderr at /dev/null.
pub fn detach_stdio() {
    // SAFETY: plain syscalls on a fd we opened.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: ends the process without running destructors (the child owns the mount).
    unsafe { libc::_exit(code) }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and threads spawned later)
/// and returns the set, to be waited for with `wait_signal`.
pub fn block_term_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        // Not an end: a request for the statistics (as fuse-overlayfs).
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

pub fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: set is a valid sigset, sig a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

pub fn geteuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}
