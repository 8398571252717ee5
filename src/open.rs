//! What each open FUSE handle holds: a file's real fd (which moves to the
//! upper copy after a copy-up) and a dir's listing snapshot, and the
//! table of handles by fh. State only; the operations are in file.rs and
//! readdir.rs.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::node::Node;
use crate::sys::Stat;
use crate::{Errno, Result};

#[derive(Debug)]
pub struct OpenFile {
    pub node: Arc<Node>,
    fd: RwLock<Arc<OwnedFd>>,
    flags: i32,
    on_upper: AtomicBool,
    /// Opened for writing on a file with set-id bits (as far as known):
    /// its modifications go through ovlfuse, which drops them (killpriv).
    setid: AtomicBool,
    /// For a writable open: the real file's mtime then, to tell at release
    /// whether the kernel's cached times may be stale (Node::writers).
    mtime_at_open: (i64, i64),
    /// (st_dev, st_ino) of the real file, where it was read at open (a
    /// writable open, whose fd never changes): passthrough needs it.
    file_id: Option<(u64, u64)>,
}

impl OpenFile {
    /// An open of `node` on `fd` (real open flags `flags`); `st`: the real
    /// file's stat, for a writable open. Counts itself in the node.
    pub fn new(
        node: Arc<Node>,
        fd: OwnedFd,
        flags: i32,
        on_upper: bool,
        st: Option<&Stat>,
    ) -> OpenFile {
        node.opens.fetch_add(1, Ordering::AcqRel);
        let f = OpenFile {
            node,
            fd: RwLock::new(Arc::new(fd)),
            flags,
            on_upper: AtomicBool::new(on_upper),
            setid: AtomicBool::new(
                st.is_some_and(|st| st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0),
            ),
            mtime_at_open: st.map_or((0, 0), |st| (st.st_mtime, st.st_mtime_nsec)),
            file_id: st.map(|st| (st.st_dev, st.st_ino)),
        };
        if f.writable() {
            f.node.writers.fetch_add(1, Ordering::AcqRel);
        }
        f
    }

    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().clone()
    }

    pub fn flags(&self) -> i32 {
        self.flags
    }

    pub fn on_upper(&self) -> bool {
        self.on_upper.load(Ordering::Acquire)
    }

    /// From now on I/O goes to `fd`, the upper copy.
    pub fn switch_to_upper(&self, fd: OwnedFd) {
        *self.fd.write() = Arc::new(fd);
        self.on_upper.store(true, Ordering::Release);
    }

    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }

    pub fn mtime_at_open(&self) -> (i64, i64) {
        self.mtime_at_open
    }

    /// The real file's (st_dev, st_ino): kept from the open, else read now.
    pub fn file_id(&self) -> Option<(u64, u64)> {
        self.file_id.or_else(|| {
            crate::sys::fstat(self.fd().as_fd())
                .ok()
                .map(|st| (st.st_dev, st.st_ino))
        })
    }

    pub fn may_be_setid(&self) -> bool {
        self.setid.load(Ordering::Acquire)
    }

    pub fn clear_setid(&self) {
        self.setid.store(false, Ordering::Release)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.node.opens.fetch_sub(1, Ordering::AcqRel);
        if self.writable() {
            self.node.writers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    pub dtype: u8,
    /// The lower layer (index into the lowers) the name was listed from;
    /// None for upper names, "." and "..". A lookup of the name need not
    /// ask the layers above it again (readdirplus).
    pub layer: Option<u16>,
    /// Its position cookie (readdir.rs): where reading resumes after it.
    pub off: u64,
}

/// An open directory: the listing is a snapshot taken when reading starts
/// at offset 0, so offsets stay stable while the handle is open.
#[derive(Debug)]
pub struct DirHandle {
    pub node: Arc<Node>,
    pub entries: Mutex<Arc<Vec<DirEntry>>>,
}

/// The open handles by fh (the kernel's `struct file`s of this mount):
/// files and dirs draw their numbers from one counter.
pub struct Handles {
    files: DashMap<u64, Arc<OpenFile>>,
    dirs: DashMap<u64, Arc<DirHandle>>,
    /// The last listing of recently read dirs, by node id: handle-less
    /// reads (zero-message opendir) go on with it, and lookups in the dir
    /// take from it the layer each name was found in.
    listings: DashMap<u64, Listed>,
    next: AtomicU64,
}

struct Listed {
    /// Not a strong reference: the node goes when the kernel forgets it.
    dir: Weak<Node>,
    entries: Arc<Vec<DirEntry>>,
}

/// With more listings than this kept, they are all dropped (a read goes
/// on with a fresh listing: positions are name cookies).
const MAX_LISTINGS: usize = 16;
/// A listing read to its end is kept (for lookups) up to this size.
const MAX_KEPT_ENTRIES: usize = 10_000;

impl Default for Handles {
    fn default() -> Handles {
        // fh 0 stays unused: some callers read it as "no handle".
        Handles {
            files: DashMap::new(),
            dirs: DashMap::new(),
            listings: DashMap::new(),
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    fn next_fh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn add_file(&self, f: OpenFile) -> u64 {
        let fh = self.next_fh();
        self.files.insert(fh, Arc::new(f));
        fh
    }

    pub fn file(&self, fh: u64) -> Result<Arc<OpenFile>> {
        self.files.get(&fh).map(|f| f.clone()).ok_or(Errno::EBADF)
    }

    /// Removes a file handle; the last clone closes the fd.
    pub fn take_file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.remove(&fh).map(|(_, f)| f)
    }

    /// Every file open on the node `ino`.
    pub fn files_of(&self, ino: u64) -> Vec<Arc<OpenFile>> {
        self.files
            .iter()
            .filter(|f| f.node.ino == ino)
            .map(|f| f.clone())
            .collect()
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn add_dir(&self, node: Arc<Node>) -> u64 {
        let fh = self.next_fh();
        let h = DirHandle {
            node,
            entries: Mutex::new(Arc::new(Vec::new())),
        };
        self.dirs.insert(fh, Arc::new(h));
        fh
    }

    pub fn dir(&self, fh: u64) -> Result<Arc<DirHandle>> {
        self.dirs.get(&fh).map(|h| h.clone()).ok_or(Errno::EBADF)
    }

    pub fn release_dir(&self, fh: u64) {
        self.dirs.remove(&fh);
    }

    /// The last listing of `dir`, if kept.
    pub fn listing(&self, dir: &Arc<Node>) -> Option<Arc<Vec<DirEntry>>> {
        let l = self.listings.get(&dir.ino)?;
        std::ptr::eq(l.dir.as_ptr(), Arc::as_ptr(dir)).then(|| l.entries.clone())
    }

    pub fn keep_listing(&self, dir: &Arc<Node>, entries: Arc<Vec<DirEntry>>) {
        if self.listings.len() >= MAX_LISTINGS {
            self.listings.clear();
        }
        let ino = dir.ino;
        let dir = Arc::downgrade(dir);
        self.listings.insert(ino, Listed { dir, entries });
    }

    /// `dir` was read to its end: a big listing goes.
    pub fn listing_read(&self, dir: &Node) {
        self.listings
            .remove_if(&dir.ino, |_, l| l.entries.len() > MAX_KEPT_ENTRIES);
    }
}
