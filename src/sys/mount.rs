//! Syscalls of mounting and unmounting a FUSE connection, and of the
//! workdir lock. Used only by `crate::mount` and `crate::ovl`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// mount(2) with the given source, type, flags and option string.
pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: u64,
    data: &CStr,
) -> io::Result<()> {
    // SAFETY: every pointer is a valid NUL-terminated string.
    cvt(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// Lazily detaches exactly the mount that `fd` (an O_PATH fd of its root)
/// is on, whatever is mounted at its path by now: the path given to umount2
/// is the fd's magic link, which resolves to that very mount.
pub fn umount_detach_fd(fd: BorrowedFd) -> io::Result<()> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    cvt(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Lazily detaches what is mounted at `path` (a mount just made, whose
/// identity could not be read).
pub fn umount_path_detach(path: &CStr) -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path.
    cvt(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Whether the FUSE connection behind `dev` (a /dev/fuse fd) has ended:
/// the kernel reports POLLERR once it is aborted or unmounted. Waits up to
/// `ms` milliseconds for that (0: just look).
pub fn fuse_disconnected(dev: BorrowedFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: dev.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return r > 0 && p.revents & (libc::POLLERR | libc::POLLNVAL) != 0;
    }
}

/// flock(LOCK_EX | LOCK_NB): Err(EWOULDBLOCK) while another open file holds it.
/// The lock lives as long as the open file, so it ends with the process,
/// also on SIGKILL.
pub fn flock_exclusive(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).map(drop)
}

/// Takes a /dev/fuse fd that fusermount3 sends back over `sock` (SCM_RIGHTS).
pub fn recv_fd(sock: BorrowedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one cmsghdr carrying one int, suitably aligned.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: msg points at valid buffers.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walks the control messages the kernel filled in.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
            return Ok(OwnedFd::from_raw_fd(fd));
        }
    }
    Err(io::Error::other("fusermount3 sent no /dev/fuse fd"))
}

/// The fd number `n` (`/dev/fd/N`) as an owned fd, if it is open.
pub fn inherited_fd(n: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only asks whether the fd exists.
    cvt(unsafe { libc::fcntl(n, libc::F_GETFD) })?;
    // SAFETY: the fd is open and handed to us by our parent; nobody else owns it here.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Clears FD_CLOEXEC so that a helper we exec inherits the fd.
pub fn keep_on_exec(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: plain fcntl on a valid fd.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) }).map(drop)
}

pub fn getuid_gid() -> (u32, u32) {
    // SAFETY: always succeed.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Changes the working directory to `/`, as a daemon does.
pub fn chdir_root() {
    // SAFETY: a valid path; failure leaves the cwd as it was.
    unsafe { libc::chdir(c"/".as_ptr()) };
}

fn statx_dev_at(dir: RawFd, path: &CStr, flags: i32) -> io::Result<u64> {
    // SAFETY: statx is plain data; the kernel fills it in.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // DONT_SYNC: no GETATTR goes to a FUSE server (maybe our own, not yet
    // serving, or another daemon's).
    let flags = flags | libc::AT_STATX_DONT_SYNC | libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: valid path and out pointer.
    cvt(unsafe { libc::statx(dir, path.as_ptr(), flags, 0, &mut stx) })?;
    Ok(libc::makedev(stx.stx_dev_major, stx.stx_dev_minor))
}

/// st_dev of `path`, without asking a FUSE server.
pub fn statx_dev(path: &CStr) -> io::Result<u64> {
    statx_dev_at(libc::AT_FDCWD, path, 0)
}

/// st_dev of what `fd` refers to, without asking a FUSE server.
pub fn statx_dev_fd(fd: BorrowedFd) -> io::Result<u64> {
    statx_dev_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// Mount attributes (mount_setattr(2)): the atime policy bits.
pub const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// A detached clone of the mount at `path`, rooted at `path` (open_tree(2)
/// with OPEN_TREE_CLONE): a private view whose flags are ours to set, gone
/// once nothing holds it.
pub fn clone_tree(path: &CStr) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_long = 1;
    // SAFETY: a valid NUL-terminated path; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_long,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sets `set` and clears `clear` on the mount `fd` is the root of
/// (mount_setattr(2)).
pub fn mount_setattr(fd: BorrowedFd, set: u64, clear: u64) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: an empty path with AT_EMPTY_PATH and a struct of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
