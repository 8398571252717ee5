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

use crate::config::Atime;
use crate::sys::{self, mount as sm, Stat};

/// How layers are reached so that the daemon's own reads move atime as the
/// kernel's overlay does: by the overlay's atime option in the upper, never
/// in a lower (the kernel reads lowers with O_NOATIME). Best through a view,
/// a detached clone of the layers' mount with that option set: it holds
/// for passthrough reads too, whose backing file is opened on it. Without
/// one (no privilege over mounts, or an old kernel), opens with O_NOATIME
/// cover "never"; strictatime then acts as the filesystem's own option.
#[derive(Debug)]
pub struct Reach {
    view: Option<std::sync::Arc<OwnedFd>>,
    at: PathBuf,
    noatime: bool,
}

impl Reach {
    /// A view of the mount of `at`, which holds every layer that is to be
    /// opened through it.
    pub fn new(at: &Path, atime: Atime, nodiratime: bool) -> Reach {
        let set = match atime {
            Atime::Relative => 0,
            Atime::Never => sm::MOUNT_ATTR_NOATIME,
            Atime::Strict => sm::MOUNT_ATTR_STRICTATIME,
        } | if nodiratime {
            sm::MOUNT_ATTR_NODIRATIME
        } else {
            0
        };
        let clear = sm::MOUNT_ATTR_ATIME_MASK | sm::MOUNT_ATTR_NODIRATIME;
        let view = sys::cstr(at.as_os_str())
            .and_then(|c| sm::clone_tree(&c))
            .and_then(|fd| sm::mount_setattr(fd.as_fd(), set, clear).map(|_| fd));
        if let Err(e) = &view {
            log::debug!(
                "{}: no private mount view ({e}); atime by O_NOATIME",
                at.display()
            );
        }
        Reach {
            view: view.ok().map(std::sync::Arc::new),
            at: at.to_path_buf(),
            noatime: atime == Atime::Never,
        }
    }

    /// `path` opened through the view, if it is the same dir there: a
    /// mount below `at` is not part of the clone.
    fn open(&self, path: &Path, direct: &Stat) -> Option<OwnedFd> {
        let view = self.view.as_ref()?;
        let rel = path.strip_prefix(&self.at).ok()?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = sys::cstr(rel.as_os_str()).ok()?;
        let fd = sys::open_beneath(view.as_fd(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0).ok()?;
        let st = sys::fstat(fd.as_fd()).ok()?;
        (st.st_dev == direct.st_dev && st.st_ino == direct.st_ino).then_some(fd)
    }
}

/// The deepest dir that holds both `a` and `b` (absolute, canonical).
pub fn common_dir(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

#[derive(Debug)]
pub struct Layer {
    pub root: OwnedFd,
    /// The view `root` was opened through, kept alive with it.
    _view: Option<std::sync::Arc<OwnedFd>>,
    /// Reached directly, and reads must not move atime: opens add O_NOATIME.
    noatime_opens: bool,
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
    /// Opens a layer root once, following symlinks (`l/` links) at mount
    /// time only, through `reach`'s view where it can.
    pub fn open(path: &Path, idx: usize, data_only: bool, reach: &Reach) -> io::Result<Layer> {
        let c = sys::cstr(path.as_os_str())?;
        // A readable fd, not O_PATH: open_by_handle_at needs one as mount fd.
        let root = match sys::open_path(&c, libc::O_RDONLY | libc::O_DIRECTORY) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY)?
            }
            r => r?,
        };
        let st = sys::fstat(root.as_fd())?;
        let (root, view) = match reach.open(path, &st) {
            Some(fd) => (fd, reach.view.clone()),
            None => (root, None),
        };
        Ok(Layer {
            noatime_opens: view.is_none() && (reach.noatime || idx > 0),
            _view: view,
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

    /// Whether passthrough reads (which open the backing file with the
    /// caller's flags, on the mount of our fd) move atime as ours do.
    pub fn passthrough_atime_ok(&self) -> bool {
        !self.noatime_opens
    }

    /// An open beneath the root, with O_NOATIME where reads must not move
    /// atime and we may ask for it (owner or CAP_FOWNER; else EPERM).
    fn open_at(&self, path: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
        self.open_maybe_noatime(path, flags, mode, self.noatime_opens)
    }

    fn open_maybe_noatime(
        &self,
        path: &[u8],
        flags: i32,
        mode: u32,
        noatime: bool,
    ) -> io::Result<OwnedFd> {
        let c = to_c(path)?;
        if noatime && flags & libc::O_PATH == 0 {
            match sys::open_beneath(self.fd(), &c, flags | libc::O_NOATIME, mode) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                r => return r,
            }
        }
        sys::open_beneath(self.fd(), &c, flags, mode)
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
        self.open_at(path, flags | libc::O_NOFOLLOW, mode)
    }

    /// An O_PATH fd of a directory, for *at calls on its entries.
    pub fn open_dir_path(&self, path: &[u8]) -> io::Result<OwnedFd> {
        sys::open_beneath(self.fd(), &to_c(path)?, libc::O_PATH | libc::O_DIRECTORY, 0)
    }

    pub fn open_dir(&self, path: &[u8]) -> io::Result<OwnedFd> {
        self.open_at(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
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

    /// Entries of a dir that ovlfuse reads for itself, not for a listing
    /// the user asked for: read with O_NOATIME, so that it moves no atime
    /// (the kernel's overlay has no such read).
    pub fn scan_dir(&self, path: &[u8]) -> io::Result<Vec<(OsString, u64, u8)>> {
        let fd = self.open_maybe_noatime(path, libc::O_RDONLY | libc::O_DIRECTORY, 0, true)?;
        sys::read_dir(fd.as_fd())
    }
}
