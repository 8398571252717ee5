//! xattr syscalls relative to a dir fd.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{cvt, cvt_ssize};

// xattrs relative to a dir fd: getxattrat & co. (Linux 6.13) where the kernel
// has them, else the same call through /proc/self/fd/N/path without following
// the last symlink.
static NO_XATTRAT: AtomicBool = AtomicBool::new(false);
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

fn proc_path(dir: BorrowedFd, path: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if path.to_bytes() != b"." && !path.to_bytes().is_empty() {
        p.push(b'/');
        p.extend_from_slice(path.to_bytes());
    }
    CString::new(p).expect("no NUL")
}

fn xattrat_missing(r: libc::c_long) -> bool {
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) && {
        NO_XATTRAT.store(true, Ordering::Relaxed);
        true
    }
}

fn at_flags(path: &CStr) -> libc::c_uint {
    let mut f = libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
    if path.to_bytes().is_empty() {
        f |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    f
}

/// Value of xattr `name` of `dir/path` (not following a final symlink).
pub fn getxattr(dir: BorrowedFd, path: &CStr, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match getxattr_buf(dir, path, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 65536 => {
                let want = getxattr_buf(dir, path, name, &mut [])?;
                buf.resize(want.max(buf.len() * 2).min(65536), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// getxattr into `buf`; an empty buf asks for the size.
pub fn getxattr_buf(
    dir: BorrowedFd,
    path: &CStr,
    name: &CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    if !NO_XATTRAT.load(Ordering::Relaxed) {
        let mut args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len() as u32,
            flags: 0,
        };
        // SAFETY: args describes buf, which is writable for its length.
        let r = unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                dir.as_raw_fd(),
                path.as_ptr(),
                at_flags(path),
                name.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        if !xattrat_missing(r) {
            return cvt_ssize(r as libc::ssize_t);
        }
    }
    let p = proc_path(dir, path);
    // SAFETY: buf is writable for its length.
    cvt_ssize(unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

pub fn setxattr(
    dir: BorrowedFd,
    path: &CStr,
    name: &CStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    if !NO_XATTRAT.load(Ordering::Relaxed) {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len() as u32,
            flags: flags as u32,
        };
        // SAFETY: args describes value, which is readable for its length.
        let r = unsafe {
            libc::syscall(
                SYS_SETXATTRAT,
                dir.as_raw_fd(),
                path.as_ptr(),
                at_flags(path),
                name.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        if !xattrat_missing(r) {
            return cvt_ssize(r as libc::ssize_t).map(drop);
        }
    }
    let p = proc_path(dir, path);
    // SAFETY: value is readable for its length.
    cvt(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn removexattr(dir: BorrowedFd, path: &CStr, name: &CStr) -> io::Result<()> {
    if !NO_XATTRAT.load(Ordering::Relaxed) {
        // SAFETY: plain syscall on valid strings.
        let r = unsafe {
            libc::syscall(
                SYS_REMOVEXATTRAT,
                dir.as_raw_fd(),
                path.as_ptr(),
                at_flags(path),
                name.as_ptr(),
            )
        };
        if !xattrat_missing(r) {
            return cvt_ssize(r as libc::ssize_t).map(drop);
        }
    }
    let p = proc_path(dir, path);
    // SAFETY: plain syscall.
    cvt(unsafe { libc::lremovexattr(p.as_ptr(), name.as_ptr()) }).map(drop)
}

fn listxattr_buf(dir: BorrowedFd, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    if !NO_XATTRAT.load(Ordering::Relaxed) {
        // SAFETY: buf is writable for its length.
        let r = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                path.as_ptr(),
                at_flags(path),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if !xattrat_missing(r) {
            return cvt_ssize(r as libc::ssize_t);
        }
    }
    let p = proc_path(dir, path);
    // SAFETY: buf is writable for its length.
    cvt_ssize(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// All xattr names of `dir/path`.
pub fn listxattr(dir: BorrowedFd, path: &CStr) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match listxattr_buf(dir, path, &mut buf) {
            Ok(n) => break n,
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let want = listxattr_buf(dir, path, &mut [])?;
                buf.resize(want.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    };
    Ok(buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsStr::from_bytes(s).to_os_string())
        .collect())
}
