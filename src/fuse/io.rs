//! Requests on open files and dirs: open, read, write, create, release,
//! fsync, allocation, seeking, copying, and listing.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::entry::{caller, creds};
use super::{attr, tryr, OvlFuse};
use crate::node::Node;
use crate::open::DirEntry;
use crate::stats;
use crate::wire::{Attr, BackingId, DirBuf, Entry, OpenIo, Reply, Request};

/// A dir and its listing.
type Listing = (std::sync::Arc<Node>, std::sync::Arc<Vec<DirEntry>>);

impl OvlFuse {
    /// Picks the I/O mode of a new open (passthrough.rs); None: the inode
    /// was retired, and the open is to be retried (ESTALE) on a new one.
    fn start_io(
        &self,
        node: &Arc<Node>,
        fh: u64,
        register: impl FnOnce(&OwnedFd) -> std::io::Result<BackingId>,
    ) -> crate::Result<Option<OpenIo>> {
        let fd = self
            .pt
            .enabled()
            .then(|| self.fs.passthrough_fd(fh))
            .flatten();
        match self.pt.start(node.ino, fh, fd, register) {
            Some(io) => {
                if matches!(io, OpenIo::Passthrough(_)) {
                    stats::add(&stats::STATS.passthrough_opens, 1);
                }
                Ok(Some(io))
            }
            None => {
                log::debug!(
                    "open of node {:x} conflicts with its backing file: retired",
                    node.ino
                );
                self.fs.release(fh);
                self.fs.retire(node)?;
                Ok(None)
            }
        }
    }

    pub(super) fn open(&self, req: &Request, flags: u32, reply: Reply) {
        let n = tryr!(reply, self.node(req.nodeid));
        if self.fs.is_retired(&n) {
            // Its names lead to other nodes now: the kernel walks the path
            // again, asking afresh (LOOKUP_REVAL).
            log::debug!("open of retired node {:x}: ESTALE", n.ino);
            return reply.error(libc::ESTALE);
        }
        let fh = tryr!(reply, self.fs.open(&n, flags as i32));
        match tryr!(reply, self.start_io(&n, fh, |fd| reply.open_backing(fd))) {
            Some(io) => reply.opened(fh, &io),
            None => reply.error(libc::ESTALE),
        }
    }

    pub(super) fn create(
        &self,
        req: &Request,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: u32,
        reply: Reply,
    ) {
        let p = tryr!(reply, self.node(req.nodeid));
        let mode = self.acl_mode(&p, mode, umask);
        let r = self.fs.create(&p, name, mode, flags as i32, creds(req));
        let (node, st, fh) = tryr!(reply, r);
        let a = attr(&st);
        let mut e = self.entry_of(&node, &a);
        if st.st_size == 0 {
            // An empty file: nothing changes its attributes behind the
            // kernel's back before a write, truncate or fallocate, each of
            // which makes the kernel ask again. So the fstat that stdio
            // does after an open is answered from the cache.
            e.attr_ttl = self.ttl;
        }
        match tryr!(reply, self.start_io(&node, fh, |fd| reply.open_backing(fd))) {
            Some(io) => reply.created(&e, fh, &io),
            None => reply.error(libc::ESTALE),
        }
    }

    pub(super) fn read(&self, fh: u64, offset: u64, size: u32, reply: Reply) {
        // Read straight into the transport's buffer: no allocation and one
        // copy per READ (cold reads of lower files go this way).
        let fd = tryr!(reply, self.fs.read_fd(fh));
        reply.data_fill(
            size as usize,
            Box::new(move |buf| crate::file::read_at(fd.as_fd(), buf, offset).map_err(|e| e.0)),
        )
    }

    pub(super) fn write(&self, req: &Request, fh: u64, offset: u64, data: &[u8], reply: Reply) {
        let n = tryr!(reply, self.fs.write(fh, offset, data));
        tryr!(reply, self.fs.kill_priv_fh(fh, &caller(req)));
        reply.written(n)
    }

    pub(super) fn release(&self, req: &Request, fh: u64, reply: Reply) {
        self.pt.end(req.nodeid, fh);
        self.fs.release(fh);
        reply.ok()
    }

    pub(super) fn fsync(&self, fh: u64, datasync: bool, reply: Reply) {
        tryr!(reply, self.fs.fsync(fh, datasync));
        reply.ok()
    }

    pub(super) fn fallocate(
        &self,
        req: &Request,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
        reply: Reply,
    ) {
        tryr!(reply, self.fs.fallocate(fh, offset, length, mode as i32));
        tryr!(reply, self.fs.kill_priv_fh(fh, &caller(req)));
        reply.ok()
    }

    pub(super) fn lseek(&self, fh: u64, offset: i64, whence: u32, reply: Reply) {
        let off = tryr!(reply, self.fs.lseek(fh, offset, whence as i32));
        reply.offset(off)
    }

    pub(super) fn copy_file_range(
        &self,
        req: &Request,
        (fh_in, off_in): (u64, u64),
        (fh_out, off_out): (u64, u64),
        len: u64,
        reply: Reply,
    ) {
        let n = tryr!(
            reply,
            self.fs.copy_file_range(fh_in, off_in, fh_out, off_out, len)
        );
        tryr!(reply, self.fs.kill_priv_fh(fh_out, &caller(req)));
        reply.written(n)
    }

    pub(super) fn opendir(&self, req: &Request, reply: Reply) {
        let n = tryr!(reply, self.node(req.nodeid));
        if self.no_opendir.load(std::sync::atomic::Ordering::Relaxed) {
            // The kernel takes this as "open dirs without asking" and
            // caches listings with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR.
            return reply.error(if n.is_dir() {
                libc::ENOSYS
            } else {
                libc::ENOTDIR
            });
        }
        let fh = tryr!(reply, self.fs.opendir(&n));
        // Every change to a dir's names comes through this mount, and the
        // kernel drops its cached listing at each; listings are in name
        // order, so positions hold from one open to the next.
        reply.opened(fh, &OpenIo::CachedDir)
    }

    pub(super) fn releasedir(&self, fh: u64, reply: Reply) {
        self.fs.releasedir(fh);
        reply.ok()
    }

    pub(super) fn fsyncdir(&self, req: &Request, reply: Reply) {
        let n = tryr!(reply, self.node(req.nodeid));
        tryr!(reply, self.fs.fsyncdir(&n));
        reply.ok()
    }

    /// The dir a read is of, and its listing (a handle's, or with no
    /// handle, fh 0, one for the dir node: zero-message opendir).
    fn listing(&self, req: &Request, fh: u64, offset: u64) -> crate::Result<Listing> {
        if fh == 0 {
            let dir = self.node(req.nodeid)?;
            let entries = self.fs.readdir_unopened(&dir, offset)?;
            return Ok((dir, entries));
        }
        Ok((self.fs.dir_node(fh)?, self.fs.readdir(fh, offset)?))
    }

    pub(super) fn readdir(&self, req: &Request, fh: u64, offset: u64, size: u32, reply: Reply) {
        let (_, entries) = tryr!(reply, self.listing(req, fh, offset));
        let mut buf = DirBuf::new(size);
        for en in crate::readdir::entries_after(&entries, offset) {
            if !buf.add(en.ino, en.off, en.dtype as u32, en.name.as_bytes()) {
                break;
            }
        }
        reply.dir(buf)
    }

    /// Each entry is a lookup (counted, as the kernel keeps it) whose
    /// attributes come along; d_ino is the st_ino that stat reports, also
    /// where the node id differs (a name of a lower hard link).
    pub(super) fn readdirplus(&self, req: &Request, fh: u64, offset: u64, size: u32, reply: Reply) {
        let (dir, entries) = tryr!(reply, self.listing(req, fh, offset));
        let mut buf = DirBuf::new(size);
        let none = Attr::default();
        let unlinked = Entry {
            nodeid: 0,
            generation: 0,
            entry_ttl: std::time::Duration::ZERO,
            attr_ttl: std::time::Duration::ZERO,
            attr: &none,
        };
        let rest = crate::readdir::entries_after(&entries, offset);
        // Lookups only where this reply covers the rest of the dir. Past
        // one reply the kernel asks with plain READDIR, so `ls -l` looks
        // up most names of a big dir one by one anyway, and a walk that
        // does not stat (find) would pay a lookup per name that the
        // kernel's overlay never makes: cold, 2.2 s against 4.8 s for a
        // find of 1,000,000 files in dirs of 1,000.
        let lookups = DirBuf::plus_fit(size, rest.iter().map(|e| e.name.len()));
        for en in rest {
            let (off, name, dtype) = (en.off, en.name.as_bytes(), en.dtype as u32);
            // "." and ".." take no lookup and need no attributes; a name
            // listed but not found (an xattr whiteout outside an opaque=x
            // dir) goes without them too (node id 0).
            let found = match name {
                b"." | b".." => None,
                _ if !lookups => None,
                _ => self.fs.lookup_listed(&dir, &en.name, true, en.layer).ok(),
            };
            let Some((node, st)) = found else {
                if !buf.add_plus(&unlinked, en.ino, off, dtype, name) {
                    break;
                }
                continue;
            };
            let a = attr(&st);
            if !buf.add_plus(&self.entry_of(&node, &a), st.st_ino, off, dtype, name) {
                // Did not fit: the lookup is given back.
                self.fs.forget(node.ino, 1);
                break;
            }
        }
        reply.dir(buf)
    }
}
