//! File handles (name_to_handle_at, open_by_handle_at) and small helpers.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// File handle of `dir/path` (not following a final symlink): (type, bytes).
pub fn name_to_handle_at(dir: BorrowedFd, path: &CStr) -> io::Result<(i32, Vec<u8>)> {
    const MAX: usize = 128;
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; MAX],
    }
    let mut h = Handle {
        bytes: MAX as u32,
        kind: 0,
        data: [0; MAX],
    };
    let mut mount_id: libc::c_int = 0;
    let flags = if path.to_bytes().is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: h is a file_handle with MAX bytes of room; mount_id is an out pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            path.as_ptr(),
            &mut h as *mut Handle,
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (h.bytes as usize).min(MAX);
    Ok((h.kind, h.data[..n].to_vec()))
}

/// Opens the object a file handle names, on the filesystem of `mount_fd`.
pub fn open_by_handle_at(
    mount_fd: BorrowedFd,
    kind: i32,
    bytes: &[u8],
    flags: i32,
) -> io::Result<OwnedFd> {
    let mut buf = Vec::with_capacity(8 + bytes.len());
    buf.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(bytes);
    // SAFETY: buf holds a struct file_handle followed by its bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_ptr(),
            flags | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
