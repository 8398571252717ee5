//! Whiteouts in the upper layer: char 0/0 devices as the kernel makes
//! them, or AUFS `.wh.NAME` files where the upper refuses such devices
//! (workdir::Whiteouts). Each helper keeps the merged view whole if it
//! is cut short: the marker goes in before the upper entry goes away.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::format;
use crate::stats;
use crate::sys;
use crate::workdir::{Whiteouts, WorkDir};
use crate::Result;

impl WorkDir {
    /// A whiteout named `cname` in `pfd` where the name is free: char 0/0,
    /// or an AUFS `.wh.` file.
    pub fn create_whiteout(&self, pfd: &OwnedFd, cname: &CStr) -> Result<()> {
        stats::add(&stats::STATS.whiteouts, 1);
        if self.whiteouts() == Whiteouts::Device {
            return Ok(sys::mknodat(pfd.as_fd(), cname, libc::S_IFCHR, 0)?);
        }
        let wh = aufs_name(cname)?;
        drop(sys::openat(
            pfd.as_fd(),
            &wh,
            libc::O_CREAT | libc::O_WRONLY,
            0o600,
        )?);
        Ok(())
    }

    /// Drops the AUFS whiteout of `cname` once an object took the name.
    pub fn drop_aufs_whiteout(&self, pfd: &OwnedFd, cname: &CStr) -> Result<()> {
        match sys::unlinkat(pfd.as_fd(), &aufs_name(cname)?, 0) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Replaces the upper entry `cname` of `pfd` by a whiteout (atomically
    /// with char 0/0 whiteouts).
    pub fn whiteout_over(&self, pfd: &OwnedFd, cname: &CStr, is_dir: bool) -> Result<()> {
        let work = self.fd();
        if self.whiteouts() == Whiteouts::Aufs {
            // Counted by create_whiteout.
            // Whiteout first: a crash in between leaves the upper object,
            // which still shadows the lower one.
            self.create_whiteout(pfd, cname)?;
            if !is_dir {
                return Ok(sys::unlinkat(pfd.as_fd(), cname, 0)?);
            }
            let tmp = self.tmp_name();
            sys::renameat2(pfd.as_fd(), cname, work.as_fd(), &tmp, 0)?;
            self.remove_tmp(&tmp);
            return Ok(());
        }
        let tmp = self.whiteout_tmp()?;
        stats::add(&stats::STATS.whiteouts, 1);
        let flags = if is_dir { sys::RENAME_EXCHANGE } else { 0 };
        if let Err(e) = sys::renameat2(work.as_fd(), &tmp, pfd.as_fd(), cname, flags) {
            self.remove_tmp(&tmp);
            return Err(e.into());
        }
        if is_dir {
            // The old dir (now at tmp) holds only whiteouts.
            self.remove_tmp(&tmp);
        }
        Ok(())
    }

    /// rename that leaves a whiteout at the source when asked.
    pub fn rename_whiteout(
        &self,
        spfd: &OwnedFd,
        sname: &CStr,
        dpfd: &OwnedFd,
        dname: &CStr,
        whiteout: bool,
    ) -> Result<()> {
        if self.whiteouts() == Whiteouts::Aufs {
            if whiteout {
                self.create_whiteout(spfd, sname)?;
            }
            if let Err(e) = sys::renameat2(spfd.as_fd(), sname, dpfd.as_fd(), dname, 0) {
                if whiteout {
                    let _ = sys::unlinkat(spfd.as_fd(), &aufs_name(sname)?, 0);
                }
                return Err(e.into());
            }
            return self.drop_aufs_whiteout(dpfd, dname);
        }
        if !whiteout {
            sys::renameat2(spfd.as_fd(), sname, dpfd.as_fd(), dname, 0)?;
            return Ok(());
        }
        stats::add(&stats::STATS.whiteouts, 1);
        match sys::renameat2(
            spfd.as_fd(),
            sname,
            dpfd.as_fd(),
            dname,
            sys::RENAME_WHITEOUT,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                sys::renameat2(spfd.as_fd(), sname, dpfd.as_fd(), dname, 0)?;
                sys::mknodat(spfd.as_fd(), sname, libc::S_IFCHR, 0)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `.wh.NAME` for NAME.
fn aufs_name(name: &CStr) -> Result<std::ffi::CString> {
    let n = format::aufs_whiteout_name(OsStr::from_bytes(name.to_bytes()));
    Ok(sys::cstr(&n)?)
}
