//! Syscalls on a /dev/fuse connection: reading requests, writing replies
//! and notifications, cloning the fd per worker thread, and registering
//! passthrough backing files. Used only by `crate::wire`.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{cvt, cvt_ssize};

const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;
const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// Reads one request into `buf`; retries on EINTR.
pub fn read_request(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match cvt_ssize(n) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// Writes one reply or notification, gathered from `parts`, in one call
/// (the device takes a message only whole).
pub fn write_message(fd: BorrowedFd, parts: &[IoSlice]) -> io::Result<usize> {
    loop {
        // SAFETY: IoSlice is ABI-compatible with iovec; every slice is valid.
        let n = unsafe {
            libc::writev(
                fd.as_raw_fd(),
                parts.as_ptr().cast(),
                parts.len() as libc::c_int,
            )
        };
        match cvt_ssize(n) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// A new fd on the same connection as `session` (FUSE_DEV_IOC_CLONE), so
/// that each worker reads its own queue.
pub fn clone_fd(session: BorrowedFd) -> io::Result<OwnedFd> {
    let fd = super::open_path(c"/dev/fuse", libc::O_RDWR)?;
    let mut src = session.as_raw_fd() as u32;
    // SAFETY: the ioctl reads a u32 fd number from the pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), FUSE_DEV_IOC_CLONE, &mut src) })?;
    Ok(fd)
}

/// Registers `file` as a passthrough backing file; returns its id.
pub fn backing_open(dev: BorrowedFd, file: BorrowedFd) -> io::Result<u32> {
    #[repr(C)]
    struct BackingMap {
        fd: i32,
        flags: u32,
        padding: u64,
    }
    let map = BackingMap {
        fd: file.as_raw_fd(),
        flags: 0,
        padding: 0,
    };
    // SAFETY: the ioctl reads a fuse_backing_map from the pointer.
    let id = cvt(unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_OPEN, &map) })?;
    Ok(id as u32)
}

/// Drops a backing id the kernel no longer needs for new opens.
pub fn backing_close(dev: BorrowedFd, id: u32) -> io::Result<()> {
    // SAFETY: the ioctl reads a u32 from the pointer.
    cvt(unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &id) }).map(drop)
}
