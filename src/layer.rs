//! One layer (upper or lower): its root fd and all I/O relative to it.
//!
//! Paths are merged-view relative paths ("a/b", "." for the root). Opens go
//! through openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so a symlink inside a
//! layer can never lead an internal walk out of it.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sys::{self, Stat};

#[derive(Debug)]
pub struct Layer {
    pub root: OwnedFd,
    pub path: PathBuf,
    pub dev: u64,
    /// 0 for the upper, 1.. for lowers (top first): the kernel's layer index.
    pub idx: usize,
    pub data_only: bool,
}

/// Relative path of `name` inside `dir` ("." is the root).
pub fn join(dir: &[u8], name: &OsStr) -> Vec<u8> {
    if dir.is_empty() || dir == b"." {
        name.as_bytes().to_vec()
    } else {
        let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
        v.extend_from_slice(dir);
        v.push(b'/');
        v.extend_from_slice(name.as_bytes());
        v
    }
}

pub fn to_c(path: &[u8]) -> io::Result<CString> {
    if path.is_empty() {
        return Ok(CString::from(c"."));
    }
    CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Splits "a/b/c" into ("a/b", "c"); a top-level name has parent ".".
pub fn split_parent(path: &[u8]) -> (&[u8], &OsStr) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], OsStr::from_bytes(&path[i + 1..])),
        None => (b".", OsStr::from_bytes(path)),
    }
}

impl Layer {
    /// Opens a layer root once, following symlinks (`l/` links) at mount time only.
    pub fn open(path: &Path, idx: usize, data_only: bool) -> io::Result<Layer> {
        let c = sys::cstr(path.as_os_str())?;
        // A readable fd, not O_PATH: open_by_handle_at needs one as mount fd.
        let root = match sys::open_path(&c, libc::O_RDONLY | libc::O_DIRECTORY) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY)?
            }
            r => r?,
        };
        let st = sys::fstat(root.as_fd())?;
        Ok(Layer {
            root,
            path: path.to_path_buf(),
            dev: st.st_dev,
            idx,
            data_only,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    pub fn stat(&self, path: &[u8]) -> io::Result<Stat> {
        sys::fstatat(self.fd(), &to_c(path)?)
    }

    /// stat that maps ENOENT/ENOTDIR to None.
    pub fn try_stat(&self, path: &[u8]) -> io::Result<Option<Stat>> {
        match self.stat(path) {
            Ok(st) => Ok(Some(st)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn open_file(&self, path: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
        sys::open_beneath(self.fd(), &to_c(path)?, flags | libc::O_NOFOLLOW, mode)
    }

    /// An O_PATH fd of a directory, for *at calls on its entries.
    pub fn open_dir_path(&self, path: &[u8]) -> io::Result<OwnedFd> {
        sys::open_beneath(self.fd(), &to_c(path)?, libc::O_PATH | libc::O_DIRECTORY, 0)
    }

    pub fn open_dir(&self, path: &[u8]) -> io::Result<OwnedFd> {
        sys::open_beneath(
            self.fd(),
            &to_c(path)?,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
    }

    pub fn readlink(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        sys::readlinkat(self.fd(), &to_c(path)?)
    }

    pub fn getxattr(&self, path: &[u8], name: &CStr) -> io::Result<Vec<u8>> {
        sys::getxattr(self.fd(), &to_c(path)?, name)
    }

    /// getxattr mapping "no such attribute / not supported" to None.
    pub fn try_getxattr(&self, path: &[u8], name: &CStr) -> io::Result<Option<Vec<u8>>> {
        match self.getxattr(path, name) {
            Ok(v) => Ok(Some(v)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) | Some(libc::EPERM)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn setxattr(&self, path: &[u8], name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
        sys::setxattr(self.fd(), &to_c(path)?, name, value, flags)
    }

    pub fn removexattr(&self, path: &[u8], name: &CStr) -> io::Result<()> {
        sys::removexattr(self.fd(), &to_c(path)?, name)
    }

    pub fn listxattr(&self, path: &[u8]) -> io::Result<Vec<OsString>> {
        sys::listxattr(self.fd(), &to_c(path)?)
    }

    /// Entries of a directory of this layer (no "." or "..").
    pub fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(OsString, u64, u8)>> {
        let fd = self.open_dir(path)?;
        sys::read_dir(fd.as_fd())
    }
}
