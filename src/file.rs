//! Open files and their I/O (the kernel's file.c).
//!
//! A handle opened on a lower file before a copy-up switches to the upper
//! copy on its next read, as the kernel's ovl_real_fdget does.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use std::sync::Arc;

use crate::copy_up::CopyUp;
use crate::dir::{Creds, NewObj};
use crate::node::Node;
pub use crate::open::OpenFile;
use crate::sys::{self, Stat};
use crate::{Errno, OvlFs, Result};

/// Flags passed to the real open. Creation is done by then, O_DIRECT is the
/// page cache's business on the FUSE side, and kernel-internal bits (FUSE
/// passes FMODE_EXEC as 0x20) make openat2 fail with EINVAL.
fn real_flags(flags: i32) -> i32 {
    const KEEP: i32 = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_NONBLOCK
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_NOATIME
        | libc::O_TRUNC
        | libc::O_LARGEFILE;
    flags & KEEP
}

/// Whether reads of this node go to the upper layer by now.
fn data_in_upper(node: &Node) -> bool {
    node.has_upper() && !node.state.read().metacopy
}

impl OvlFs {
    pub fn open(&self, node: &Arc<Node>, flags: i32) -> Result<u64> {
        let _paths = self.rename_lock.paths();
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        if write || trunc {
            if self.read_only() {
                return Err(Errno::EROFS);
            }
            self.copy_up(node, if trunc { CopyUp::NoData } else { CopyUp::Data })?;
        }
        let (layer, path) = self.real_data(node)?;
        if (write || trunc) && layer.idx != 0 {
            // Never write into a lower layer, whatever went wrong before.
            log::error!("refusing a write open outside the upper layer");
            return Err(Errno::EIO);
        }
        let fd = layer
            .open_file(&path, real_flags(flags), 0)
            .inspect_err(|e| {
                log::debug!(
                    "open {}: {} in {}: {e}",
                    node.ino,
                    String::from_utf8_lossy(&path),
                    layer.path.display()
                )
            })?;
        let fh = self.add_file(node, fd, flags);
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            // Attributes cached from before would hide what mapped writes
            // do to the real file's times (see Node::writers).
            self.invalidate_attr(node.ino);
        }
        Ok(fh)
    }

    fn add_file(&self, node: &Arc<Node>, fd: OwnedFd, flags: i32) -> u64 {
        let writable = real_flags(flags) & libc::O_ACCMODE != libc::O_RDONLY;
        let st = writable.then(|| sys::fstat(fd.as_fd()).ok()).flatten();
        let f = OpenFile::new(
            node.clone(),
            fd,
            real_flags(flags) & !libc::O_TRUNC,
            data_in_upper(node),
            st.as_ref(),
        );
        self.handles.add_file(f)
    }

    /// create(2): a new regular file, opened with `flags`.
    pub fn create(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        mode: u32,
        flags: i32,
        c: Creds,
    ) -> Result<(Arc<Node>, Stat, u64)> {
        let _paths = self.rename_lock.paths();
        // The file is new and empty: nothing to truncate.
        let open = real_flags(flags) & !libc::O_TRUNC;
        let (node, st, fd) = self.create_object_open(parent, name, NewObj::File(mode), open, c)?;
        let fd = match fd {
            Some(fd) => fd,
            None => self.upper()?.open_file(&self.path_of(&node)?, open, 0)?,
        };
        let fh = self.add_file(&node, fd, flags);
        Ok((node, st, fh))
    }

    pub fn file(&self, fh: u64) -> Result<Arc<OpenFile>> {
        self.handles.file(fh)
    }

    /// Points the files open on `node`'s lower data at its upper copy.
    pub fn switch_open_files(&self, node: &Arc<Node>) {
        if !data_in_upper(node) {
            return;
        }
        let Ok(path) = self.path_of(node) else { return };
        let Ok(upper) = self.upper() else { return };
        let open = self.handles.files_of(node.ino);
        for f in open
            .iter()
            .filter(|f| Arc::ptr_eq(&f.node, node) && !f.on_upper())
        {
            if let Ok(fd) = upper.open_file(&path, f.flags(), 0) {
                f.switch_to_upper(fd);
            }
        }
    }

    /// The fd to use now: reopens on the upper copy once one exists.
    fn current_fd(&self, f: &OpenFile) -> Result<Arc<OwnedFd>> {
        if !f.on_upper() && data_in_upper(&f.node) {
            // Only this reopen builds a path: fd I/O holds no rename lock.
            let _paths = self.rename_lock.paths();
            match self.path_of(&f.node) {
                Ok(path) => f.switch_to_upper(self.upper()?.open_file(&path, f.flags(), 0)?),
                // Retired (lower_passthrough): its readers keep the lower.
                Err(Errno::ESTALE) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(f.fd())
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let fd = self.read_fd(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = read_at(fd.as_fd(), &mut buf, off)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The fd a READ on `fh` reads from now (the upper copy once there is
    /// one); the transport reads it into its own buffer ([`read_at`]).
    pub fn read_fd(&self, fh: u64) -> Result<Arc<OwnedFd>> {
        let f = self.file(fh)?;
        self.current_fd(&f)
    }

    pub fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<u32> {
        let f = self.file(fh)?;
        let fd = self.current_fd(&f)?;
        let mut done = 0;
        while done < data.len() {
            done += sys::pwrite(fd.as_fd(), &data[done..], off + done as u64)?;
        }
        Ok(done as u32)
    }

    /// The fd the kernel may do this file's I/O on directly (FUSE
    /// passthrough): data already in the upper layer, any file of a
    /// read-only overlay, and with `lower_passthrough` a lower file opened
    /// for reading (after a copy-up, `retire` gives its names a new inode).
    pub fn passthrough_fd(&self, fh: u64) -> Option<(Arc<OwnedFd>, (u64, u64))> {
        let f = self.file(fh).ok()?;
        if f.may_be_setid() {
            return None;
        }
        // By default a lower file's readers must reach the copy after a
        // copy-up, which a passthrough open cannot (README, Benchmarks).
        let stable = if self.read_only() {
            !f.node.state.read().metacopy
        } else if f.on_upper() {
            true
        } else {
            self.cfg.lower_passthrough && !f.writable() && !crate::node::is_split_id(f.node.ino)
        };
        if !stable {
            return None;
        }
        Some((f.fd(), f.file_id()?))
    }

    /// `node`'s passthrough readers hold its lower file, which a copy-up
    /// replaced, and the kernel lets no other open of the inode in. So its
    /// names leave it: the next lookup of each gives a node of its own
    /// with the same st_ino (split.rs), and the readers keep this one,
    /// reading the lower copy as on kernels before 4.19.
    pub fn retire(&self, node: &Arc<Node>) -> Result<()> {
        if node.is_dir() || !node.has_upper() {
            log::error!(
                "open of {}: its passthrough backing file is not its data",
                node.ino
            );
            return Err(Errno::EIO);
        }
        let _commit = self.rename_lock.commit();
        node.pin_lower_paths();
        let names = std::mem::take(&mut node.state.write().aliases);
        self.splits.retire(node.ino);
        crate::stats::add(&crate::stats::STATS.retired, 1);
        for (p, name) in names {
            self.invalidate_entry_later(p.ino, &name);
        }
        Ok(())
    }

    pub fn is_retired(&self, node: &Node) -> bool {
        self.splits.is_retired(node.ino)
    }

    pub fn release(&self, fh: u64) {
        if let Some(f) = self.handles.take_file(fh) {
            // Writes through a mapping may have moved the times without the
            // kernel noticing; a write(2) made it drop them already.
            let moved = f.writable()
                && sys::fstat(f.fd().as_fd())
                    .is_ok_and(|st| (st.st_mtime, st.st_mtime_nsec) != f.mtime_at_open());
            let ino = f.node.ino;
            drop(f);
            if moved {
                self.invalidate_attr(ino);
            }
        }
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let f = self.file(fh)?;
        if self.fsync_enabled() {
            sys::fsync(self.current_fd(&f)?.as_fd(), datasync)?;
        }
        Ok(())
    }

    /// fsync of a dir: its upper dir, if it has one (a lower one has
    /// nothing of ours to sync). Best effort, as the kernel's overlay.
    pub fn fsyncdir(&self, node: &Node) -> Result<()> {
        let _paths = self.rename_lock.paths();
        if !node.has_upper() || !self.fsync_enabled() {
            return Ok(());
        }
        if let Ok(fd) = self
            .path_of(node)
            .and_then(|p| Ok(self.upper()?.open_dir(&p)?))
        {
            let _ = sys::fsync(fd.as_fd(), false);
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, off: u64, len: u64, mode: i32) -> Result<()> {
        let f = self.file(fh)?;
        Ok(sys::fallocate(
            self.current_fd(&f)?.as_fd(),
            mode,
            off,
            len,
        )?)
    }

    pub fn lseek(&self, fh: u64, off: i64, whence: i32) -> Result<i64> {
        let f = self.file(fh)?;
        Ok(sys::lseek(self.current_fd(&f)?.as_fd(), off, whence)?)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u32> {
        let fi = self.file(fh_in)?;
        let fo = self.file(fh_out)?;
        let (a, b) = (self.current_fd(&fi)?, self.current_fd(&fo)?);
        let len = len.min(1 << 30) as usize;
        match sys::copy_file_range(a.as_fd(), off_in, b.as_fd(), off_out, len) {
            Ok(n) => Ok(n as u32),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                ) =>
            {
                let data = self.read(fh_in, off_in, len.min(1 << 20) as u32)?;
                self.write(fh_out, off_out, &data)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads `buf.len()` bytes at `off`, fewer only at end of file.
pub fn read_at(fd: BorrowedFd, buf: &mut [u8], off: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = sys::pread(fd, &mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
