//! ovlfuse: a FUSE overlay filesystem with Linux kernel overlayfs semantics
//! and on-disk format. The core (everything but `fuse`, `wire`, `mount`)
//! runs without a mount.
//!
//! Who does what, in the spirit of the kernel's overlayfs.h. `OvlFs` (ovl.rs)
//! is the mount; each part below owns its state, and the `impl OvlFs`
//! blocks in the operation modules use the parts through their methods.
//!
//! State (each owns its fields):
//!   config     options as fuse-overlayfs and the kernel spell them; checks
//!   layer      one layer: root fd, openat2 RESOLVE_BENEATH I/O, atime reach
//!   workdir    W/work: temp names, clean-up, in-use lock, `Whiteouts` form
//!   node       the inode table (ovl_inode + dcache); nodemap its index
//!   ghost      what forgotten nodes leave for file handles
//!   inomap     st_ino: xino bits, copied-up numbers, pinned removed objects
//!   split      keys of split nodes (names of lower hard links, index=off)
//!   open       open file and dir handles by fh
//!   rename_lock  the path lock, and the crate's lock order
//!   format     every on-disk byte: xattr names, whiteouts, handles, index
//!
//! Operations (`impl OvlFs` by concern, as the kernel's files):
//!   namei      lookup with `LookupData`; namei/ino.rs the inode number step
//!   redirect   following redirects in lookup (ovl_check_redirect)
//!   readdir    merged listing, d_ino as st_ino
//!   copy_up    copy-up with `CopyUpCtx`: build, origin/index, install
//!   index      origins and W/index (hard links with index=on)
//!   dir        create (plain and over a whiteout), link, unlink, rmdir
//!   rename     rename as check, prepare, commit (`RenameCtx`)
//!   whiteout   writing whiteouts through a WorkDir
//!   inode      getattr, setattr, access, readlink
//!   file       open, read, write, fsync; passthrough which opens may
//!   xattr      user-visible xattrs; killpriv set-id dropping; idmap owners
//!   export     file handles (LOOKUP of "." and "..")
//!
//! Front end: `wire` speaks FUSE (/dev/fuse or io_uring), `fuse` adapts
//! requests to the core, `mount` mounts. All raw syscalls are in `sys`.

pub mod check;
pub mod config;
pub mod copy_up;
pub mod diff;
pub mod diff_tar;
pub mod dir;
pub mod export;
pub mod file;
pub mod format;
pub mod fuse;
pub mod ghost;
pub mod idmap;
pub mod index;
pub mod inode;
pub mod inomap;
pub mod killpriv;
pub mod layer;
pub mod logger;
pub mod mount;
pub mod namei;
pub mod node;
pub mod nodemap;
pub mod offline;
pub mod open;
pub mod ovl;
pub mod passthrough;
pub mod readdir;
pub mod redirect;
pub mod rename;
pub mod rename_lock;
pub mod split;
pub mod stats;
pub mod sys;
pub mod whiteout;
pub mod wire;
pub mod workdir;
pub mod xattr;

pub use ovl::OvlFs;

/// An errno for the caller: every core operation fails with one, spelled
/// `Errno::ENOENT`; `Errno(n)` carries one from the real filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),*) => {
        impl Errno {
            $(pub const $name: Errno = Errno(libc::$name);)*
        }
    };
}

errnos!(
    EACCES,
    EBADF,
    EEXIST,
    EINVAL,
    EIO,
    EISDIR,
    ENAMETOOLONG,
    ENODATA,
    ENOENT,
    ENOTDIR,
    ENOTEMPTY,
    EOPNOTSUPP,
    EPERM,
    EROFS,
    ESTALE,
    EXDEV,
    ERANGE,
    ENOSYS,
    ELOOP,
    EMLINK,
    EFBIG,
    ENOSPC,
    EOVERFLOW,
    ENOTSUP,
    EAGAIN,
    EINTR
);

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.0)
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

pub type Result<T> = std::result::Result<T, Errno>;

/// Why a mount cannot be set up: the layer, its path and the cause.
#[derive(Debug)]
pub enum SetupError {
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    /// Another mount holds the upper or work dir.
    InUse {
        what: &'static str,
        path: std::path::PathBuf,
    },
}

impl SetupError {
    pub fn io(what: &'static str, path: &std::path::Path, err: std::io::Error) -> SetupError {
        let path = path.to_owned();
        SetupError::Io { what, path, err }
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Io { what, path, err } => {
                write!(f, "{what} {}: {}", path.display(), crate::config::io_msg(err))
            }
            SetupError::InUse { what, path } => write!(
                f,
                "{what} {}: is in use by another ovlfuse mount (EBUSY); unmount that one first, or give this mount its own upperdir and workdir",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SetupError {}
