//! The FUSE mount: made with mount(2) as root (fusermount3 otherwise), or
//! taken ready-made as `/dev/fd/N`, and removed only while it is still ours.
//!
//! Container engines unmount a `merged` dir and mount it again within
//! milliseconds. A daemon whose connection the kernel has ended must never
//! unmount by path then: the path may already hold the next mount.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Atime;
use crate::sys;

/// What the mount asks of the kernel (mount.fuse's options).
#[derive(Debug, Clone, Default)]
pub struct MountArgs {
    /// The source column of /proc/mounts.
    pub source: String,
    /// The type is `fuse.<subtype>`, as libfuse names it after the program.
    pub subtype: String,
    pub ro: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub atime: Atime,
    pub nodiratime: bool,
    pub default_permissions: bool,
    pub allow_other: bool,
    pub allow_root: bool,
}

/// A live mount of ours (or a connection handed to us as `/dev/fd/N`).
pub struct FuseMount {
    /// A duplicate of the connection's fd: POLLERR on it says the kernel
    /// has ended the connection (the mount is gone).
    watch: OwnedFd,
    /// None for `/dev/fd/N`: whoever mounted it unmounts it.
    path: Option<CString>,
    /// The mount's st_dev, to recognise it at `path` later.
    dev: u64,
    /// Mounted through fusermount3, so unmounted through it too.
    helper: bool,
}

impl MountArgs {
    fn flags(&self) -> u64 {
        let mut f = 0;
        for (on, bit) in [
            (self.ro, libc::MS_RDONLY),
            (self.nosuid, libc::MS_NOSUID),
            (self.nodev, libc::MS_NODEV),
            (self.noexec, libc::MS_NOEXEC),
            (self.atime == Atime::Never, libc::MS_NOATIME),
            (self.atime == Atime::Strict, libc::MS_STRICTATIME),
            (self.nodiratime, libc::MS_NODIRATIME),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }

    /// The options fusermount3 takes (it adds fd, rootmode and ids).
    fn helper_opts(&self) -> String {
        let mut o = vec![
            format!("fsname={}", self.source.replace(',', "_")),
            format!("subtype={}", self.subtype),
        ];
        for (on, name) in [
            (self.ro, "ro"),
            (self.nosuid, "nosuid"),
            (self.nodev, "nodev"),
            (self.noexec, "noexec"),
            (self.atime == Atime::Never, "noatime"),
            (self.atime == Atime::Strict, "strictatime"),
            (self.nodiratime, "nodiratime"),
            (self.default_permissions, "default_permissions"),
            (self.allow_other, "allow_other"),
            (self.allow_root && !self.allow_other, "allow_root"),
        ] {
            if on {
                o.push(name.into());
            }
        }
        o.join(",")
    }
}

/// Mounts a new FUSE connection at `mnt`; returns the fd to serve it on.
pub fn mount(mnt: &Path, args: &MountArgs) -> io::Result<(OwnedFd, FuseMount)> {
    let path = CString::new(mnt.as_os_str().as_bytes())?;
    let (dev, helper) = match mount_direct(&path, args) {
        Ok(fd) => (fd, false),
        // Not privileged (mount(2) refused, or /dev/fuse closed to us):
        // the setuid helper can do both.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            (mount_helper(mnt, args)?, true)
        }
        Err(e) => return Err(e),
    };
    let mut m = FuseMount {
        watch: dev.try_clone()?,
        path: Some(path),
        dev: 0,
        helper,
    };
    match sys::mount::statx_dev(m.path.as_ref().expect("set")) {
        Ok(d) => m.dev = d,
        Err(e) => {
            // Without its device the mount could not be told apart later:
            // take it down now rather than leave it behind.
            let _ = sys::mount::umount_path_detach(m.path.as_ref().expect("set"));
            return Err(e);
        }
    }
    Ok((dev, m))
}

/// Serves a connection that someone else mounted (`/dev/fd/N`).
pub fn adopt(fd: i32) -> io::Result<(OwnedFd, FuseMount)> {
    let dev = sys::mount::inherited_fd(fd)?;
    let watch = dev.try_clone()?;
    let m = FuseMount {
        watch,
        path: None,
        dev: 0,
        helper: false,
    };
    Ok((dev, m))
}

fn mount_direct(path: &CString, args: &MountArgs) -> io::Result<OwnedFd> {
    let dev = sys::open_path(c"/dev/fuse", libc::O_RDWR)?;
    let (uid, gid) = sys::mount::getuid_gid();
    let mut data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid}",
        dev.as_raw_fd()
    );
    if args.default_permissions {
        data.push_str(",default_permissions");
    }
    if args.allow_other {
        data.push_str(",allow_other");
    }
    let source = CString::new(args.source.as_bytes())?;
    let data = CString::new(data)?;
    let fstype = CString::new(format!("fuse.{}", args.subtype))?;
    match sys::mount::mount(&source, path, &fstype, args.flags(), &data) {
        // A kernel without subtypes in the type name.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            let data = CString::new(format!(
                "{},subtype={}",
                data.to_string_lossy(),
                args.subtype
            ))?;
            sys::mount::mount(&source, path, c"fuse", args.flags(), &data)?
        }
        r => r?,
    }
    Ok(dev)
}

/// The unprivileged way: fusermount3 mounts and sends back the fd.
fn mount_helper(mnt: &Path, args: &MountArgs) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    sys::mount::keep_on_exec(theirs.as_fd())?;
    let st = Command::new("fusermount3")
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .arg("-o")
        .arg(args.helper_opts())
        .arg("--")
        .arg(mnt)
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run fusermount3: {e}")))?;
    drop(theirs);
    if !st.success() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "fusermount3 could not mount (see its message above)",
        ));
    }
    sys::mount::recv_fd(ours.as_fd())
}

impl FuseMount {
    /// Whether the kernel still has the connection (the mount exists in
    /// some namespace).
    pub fn alive(&self) -> bool {
        !sys::mount::fuse_disconnected(self.watch.as_fd(), 0)
    }

    /// Waits up to `ms` for the kernel to end the connection.
    pub fn wait_gone(&self, ms: i32) -> bool {
        sys::mount::fuse_disconnected(self.watch.as_fd(), ms)
    }

    /// Unmounts (lazily, as libfuse does on a signal) the mount if it is
    /// still ours and still at its path; otherwise does nothing.
    pub fn unmount(&self) {
        let Some(path) = &self.path else { return };
        if !self.alive() || self.dev == 0 {
            return;
        }
        if self.helper {
            // Checked as closely before as fusermount3 lets us.
            if sys::mount::statx_dev(path).ok() == Some(self.dev) && self.alive() {
                let _ = Command::new("fusermount3")
                    .args(["-u", "-q", "-z", "--"])
                    .arg(OsStr::from_bytes(path.as_bytes()))
                    .status();
            }
            return;
        }
        // Pin whatever is at the path now, then check it is our mount: if
        // ours had gone, the kernel would have ended the connection before
        // its device number could be given to a new mount.
        let Ok(fd) = sys::open_path(path, libc::O_PATH | libc::O_DIRECTORY) else {
            return;
        };
        if sys::mount::statx_dev_fd(fd.as_fd()).ok() != Some(self.dev) || !self.alive() {
            return;
        }
        if let Err(e) = sys::mount::umount_detach_fd(fd.as_fd()) {
            log::warn!(
                "cannot unmount {}: {e}",
                PathBuf::from(OsStr::from_bytes(path.as_bytes())).display()
            );
        }
    }
}
