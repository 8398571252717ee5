//! What is left of nodes the kernel forgot, for file handles (export.rs):
//! bounded caches of their names and generations.

use std::ffi::OsStr;

use parking_lot::Mutex;

/// What is left of a node the kernel forgot: its name, to find it again
/// when the kernel decodes a file handle of it (a LOOKUP of "." under its
/// id), and its generation, which the handle carries.
#[derive(Debug, Clone)]
pub struct Ghost {
    pub ino: u64,
    pub parent: u64,
    pub name: Box<OsStr>,
    pub generation: u64,
    pub kind: u32,
}

/// Direct-mapped caches of ghosts, one for dirs and one for the rest: a
/// later forget of a colliding id evicts, so memory stays bounded on any
/// walk, and a walk over many files does not evict the dirs above the
/// ones it passed (a decode needs its parent's ghost when the parent is
/// forgotten too). Allocated at the first forget.
#[derive(Debug, Default)]
pub struct Ghosts {
    dirs: std::sync::OnceLock<Box<[Mutex<Option<Ghost>>]>>,
    others: std::sync::OnceLock<Box<[Mutex<Option<Ghost>>]>>,
}

impl Ghosts {
    pub const SLOTS: usize = 1 << 13;

    fn table(&self, dir: bool) -> &std::sync::OnceLock<Box<[Mutex<Option<Ghost>>]>> {
        if dir {
            &self.dirs
        } else {
            &self.others
        }
    }

    /// Fibonacci hashing: neighbouring inode numbers spread out.
    fn index(ino: u64) -> usize {
        (ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) as usize % Self::SLOTS
    }

    pub fn put(&self, g: Ghost) {
        let table = self.table(g.kind == libc::S_IFDIR);
        let table = table.get_or_init(|| (0..Self::SLOTS).map(|_| Mutex::new(None)).collect());
        let slot = &table[Self::index(g.ino)];
        *slot.lock() = Some(g);
    }

    /// The ghost of `ino` in the dir or the other table; nothing is
    /// allocated before the first forget, and lookups do not allocate.
    fn find(&self, ino: u64, dir: bool, kind: Option<u32>) -> Option<Ghost> {
        let slot = self.table(dir).get()?[Self::index(ino)].lock();
        slot.as_ref()
            .filter(|g| g.ino == ino && kind.is_none_or(|k| g.kind == k))
            .cloned()
    }

    pub fn get(&self, ino: u64) -> Option<Ghost> {
        self.find(ino, true, None)
            .or_else(|| self.find(ino, false, None))
    }

    /// The generation a node of `ino` and `kind` had when it was forgotten.
    pub fn generation(&self, ino: u64, kind: u32) -> Option<u64> {
        self.find(ino, kind == libc::S_IFDIR, Some(kind))
            .map(|g| g.generation)
    }
}
