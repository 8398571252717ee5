//! `W/work` (the kernel's ovl_workdir): where copy-ups, whiteouts and new
//! objects over whiteouts are built before one rename moves them into the
//! upper. Owns the work dir's fd, its temp names, its clean-up at mount,
//! the in-use lock of the workdir, and the whiteout form the upper takes.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use log::info;

use crate::layer::Layer;
use crate::sys;
use crate::{Result, SetupError};

/// How whiteouts are written in the upper (the kernel's only form is the
/// char 0/0 device; `.wh.NAME` files where the upper refuses those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    Device,
    Aufs,
}

pub struct WorkDir {
    fd: OwnedFd,
    /// The workdir's own fd: it holds the in-use lock for the mount's life.
    _lock: OwnedFd,
    seq: AtomicU64,
    whiteouts: Whiteouts,
}

impl WorkDir {
    /// Creates `W/work` (and `W/index`) as the kernel does, empties
    /// `W/work` of what a crash left, and finds the whiteout form. `wl` is
    /// the workdir, already locked (lock_in_use).
    pub fn prepare(
        wl: Layer,
        index: bool,
        path: &Path,
    ) -> std::result::Result<WorkDir, SetupError> {
        let err = |e| SetupError::io("workdir", path, e);
        let fd = make_work_dirs(&wl, index).map_err(err)?;
        let whiteouts = whiteouts_needed(&wl, &fd).map_err(err)?;
        Ok(WorkDir {
            fd,
            _lock: wl.root,
            seq: AtomicU64::new(0),
            whiteouts,
        })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn whiteouts(&self) -> Whiteouts {
        self.whiteouts
    }

    /// A fresh name for a temp object in the work dir.
    pub fn tmp_name(&self) -> CString {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#ovl{:x}-{:x}", std::process::id(), n)).expect("no NUL")
    }

    /// Removes a temp object (a tree, for a dir) after a failed step.
    pub fn remove_tmp(&self, tmp: &CStr) {
        let work = self.fd.as_fd();
        if sys::unlinkat(work, tmp, 0).is_err() {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            if let Ok(sub) = sys::open_beneath(work, tmp, flags, 0) {
                let _ = clean_dir(&sub);
            }
            let _ = sys::unlinkat(work, tmp, libc::AT_REMOVEDIR);
        }
    }

    /// A char 0/0 whiteout under a temp name, to be renamed into place.
    pub fn whiteout_tmp(&self) -> Result<CString> {
        let tmp = self.tmp_name();
        sys::mknodat(self.fd.as_fd(), &tmp, libc::S_IFCHR, 0)?;
        Ok(tmp)
    }

    /// Whether trusted.* xattrs can be written here (else userxattr).
    pub fn trusted_xattrs_work(&self) -> bool {
        let name = c"trusted.overlay.ovlfuse-probe";
        match sys::setxattr(self.fd.as_fd(), c"", name, b"y", 0) {
            Ok(()) => {
                let _ = sys::removexattr(self.fd.as_fd(), c"", name);
                true
            }
            Err(_) => false,
        }
    }
}

/// Takes the in-use lock of an upper or work dir, as the kernel's in-use
/// flags: one mount per upper and workdir. A daemon that was just
/// unmounted may still be on its way out: wait a little for its lock.
pub fn lock_in_use(
    l: &Layer,
    what: &'static str,
    path: &Path,
) -> std::result::Result<(), SetupError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sys::mount::flock_exclusive(l.fd()) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if std::time::Instant::now() >= deadline {
                    return Err(SetupError::InUse {
                        what,
                        path: path.to_owned(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(SetupError::io(what, path, e)),
        }
    }
}

fn make_work_dirs(w: &Layer, index: bool) -> io::Result<OwnedFd> {
    for (name, want) in [(c"work", true), (c"index", index)] {
        if !want {
            continue;
        }
        // Mode 000 as the kernel makes them; an unprivileged daemon could
        // not enter those, so it keeps them to itself with 0700.
        let mode = if sys::geteuid() == 0 { 0 } else { 0o700 };
        match sys::mkdirat(w.fd(), name, mode) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => sys::fchmodat(w.fd(), name, mode)?,
            Err(e) => return Err(e),
        }
    }
    let work = sys::open_beneath(w.fd(), c"work", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    clean_dir(&work)?;
    Ok(work)
}

/// Removes everything inside an open directory, recursively.
pub fn clean_dir(dir: &OwnedFd) -> io::Result<()> {
    for (name, _, dtype) in sys::read_dir(dir.as_fd())? {
        let c = sys::cstr(&name)?;
        if dtype == libc::DT_DIR {
            let sub = sys::open_beneath(dir.as_fd(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            clean_dir(&sub)?;
            sys::unlinkat(dir.as_fd(), &c, libc::AT_REMOVEDIR)?;
        } else {
            sys::unlinkat(dir.as_fd(), &c, 0)?;
        }
    }
    Ok(())
}

/// Marks a workdir whose upper holds `.wh.NAME` whiteouts, so that later
/// mounts keep reading and writing them even where mknod would work.
const AUFS_MARK: &CStr = c"ovlfuse-aufs-whiteouts";

/// `.wh.NAME` files if the upper was written so before, or if creating a
/// char 0/0 device in W/work is refused (seccomp, some filesystems).
/// Logged once, as fuse-overlayfs users expect.
fn whiteouts_needed(w: &Layer, work: &OwnedFd) -> io::Result<Whiteouts> {
    if sys::fstatat(w.fd(), AUFS_MARK).is_ok() {
        info!("this upper layer holds .wh.NAME whiteouts (workdir marked so): keeping them");
        return Ok(Whiteouts::Aufs);
    }
    let probe = c"ovlfuse-whiteout-probe";
    match sys::mknodat(work.as_fd(), probe, libc::S_IFCHR, 0) {
        Ok(()) => {
            sys::unlinkat(work.as_fd(), probe, 0)?;
            Ok(Whiteouts::Device)
        }
        Err(e) => {
            info!(
                "whiteout devices cannot be created in the upper layer ({}): using .wh.NAME files, which kernel overlayfs does not read",
                crate::config::io_msg(&e)
            );
            let flags = libc::O_CREAT | libc::O_WRONLY;
            drop(sys::openat(w.fd(), AUFS_MARK, flags, 0o600)?);
            Ok(Whiteouts::Aufs)
        }
    }
}
