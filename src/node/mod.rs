//! The in-memory inode table (the kernel's ovl_inode + dcache in one).
//!
//! A node's FUSE node id is the st_ino we report, so a node is keyed by
//! its overlay inode number; only objects that share their st_ino with
//! another (names of a lower hard link) get a node id of their own
//! (is_split_id), and replies carry their st_ino beside it. A node stays in the
//! table while the kernel holds lookups on it or anything (a child, an open
//! file) refers to it; its memory is freed on the last FORGET.

mod table;

pub use table::NodeTable;

use smallvec::SmallVec;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub const ROOT_INO: u64 = 1;

/// Node ids from here up are handed out for objects whose st_ino is shared
/// with another object (names of a lower hard link without the index):
/// counted down from the top, where no xino-composed number reaches (its
/// top bits never are all ones).
pub const SPLIT_FLOOR: u64 = u64::MAX - (1 << 40);

pub fn is_split_id(ino: u64) -> bool {
    ino > SPLIT_FLOOR
}

/// One lower layer in which an object (or a merged dir's part) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerRef {
    /// Index into the lower layer list (0 = top lower).
    pub layer: u16,
    /// Path in that layer, spelt out where it differs from the path of the
    /// object's first name (redirects, renames, removal). A thin pointer:
    /// nearly every node has none, and a stack of one entry fits the node.
    pub path: Option<Arc<Vec<u8>>>,
}

impl LowerRef {
    pub fn new(layer: u16, path: Option<&[u8]>) -> LowerRef {
        LowerRef {
            layer,
            path: path.map(|p| Arc::new(p.to_vec())),
        }
    }

    /// The path in its layer, given the merged path `merged`.
    pub fn path_or(&self, merged: &[u8]) -> Vec<u8> {
        match &self.path {
            Some(p) => p.to_vec(),
            None => merged.to_vec(),
        }
    }
}

/// A name in a dir, kept inline up to 16 bytes (nearly every name), so
/// that a node costs one allocation, not two.
#[derive(Clone, PartialEq, Eq)]
pub struct Name(SmallVec<[u8; 16]>);

impl Name {
    pub fn new(name: &OsStr) -> Name {
        Name(SmallVec::from_slice(name.as_bytes()))
    }
}

impl std::ops::Deref for Name {
    type Target = OsStr;
    fn deref(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
}

impl PartialEq<OsStr> for Name {
    fn eq(&self, other: &OsStr) -> bool {
        self.0.as_slice() == other.as_bytes()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// Gives the parts of `lowers` that have no path of their own `path`:
/// where they are, before the name they were relative to changes.
pub fn spell_out(lowers: &mut Lowers, path: Option<Vec<u8>>) {
    let Some(p) = path.filter(|_| lowers.iter().any(|l| l.path.is_none())) else {
        return;
    };
    let p = Arc::new(p);
    for l in lowers.iter_mut().filter(|l| l.path.is_none()) {
        l.path = Some(p.clone());
    }
}

/// The names of an object: one for nearly all, kept in the node itself.
pub type Aliases = SmallVec<[(Arc<Node>, Name); 1]>;
/// A lower stack: one entry for nearly all, kept in the node itself.
pub type Lowers = SmallVec<[LowerRef; 1]>;

#[derive(Debug, Default)]
pub struct NodeState {
    /// (parent, name) pairs under which the object is known. Dirs have one,
    /// the root none; hard-linked files one per name looked up.
    pub aliases: Aliases,
    /// Lower stack, top first. A non-dir has at most one entry.
    pub lowers: Lowers,
    /// Removed through the mount: no name leads to it any more.
    pub dead: bool,
    /// What only redirected dirs and indexed hard links have, boxed so
    /// that the other nodes do not carry room for it.
    extra: Option<Box<Extra>>,
    /// A metacopy upper file: its data is still in lowers[0].
    pub metacopy: bool,
    /// Whether this dir's upper holds `.wh.NAME` markers (an upper that
    /// fuse-overlayfs wrote where mknod was refused); None: not looked yet.
    pub upper_markers: Option<bool>,
    /// Whether this dir has a default POSIX ACL, which decides who applies
    /// the umask to what is made in it; None: not read yet.
    pub default_acl: Option<bool>,
    /// While the object is only in a lower layer (which never changes):
    /// whether it has any xattrs; None: not read yet.
    pub lower_xattrs: Option<bool>,
}

#[derive(Debug, Default, Clone)]
struct Extra {
    /// The upper dir's redirect xattr (where its lower content lives).
    redirect: Option<Arc<[u8]>>,
    /// Name in `W/index` of the upper inode shared by all names of a
    /// copied-up hard-linked lower file.
    index: Option<Arc<str>>,
    /// The link count the merged view shows for an indexed inode.
    nlink: Option<u32>,
    /// The st_ino of a node whose id is not its st_ino (is_split_id).
    shown_ino: Option<u64>,
}

impl NodeState {
    pub fn new(aliases: Aliases, f: &Found) -> NodeState {
        let mut s = NodeState {
            aliases,
            lowers: f.lowers.clone(),
            metacopy: f.metacopy,
            ..Default::default()
        };
        s.set_redirect(f.redirect.clone());
        s.set_index(f.index.clone());
        s.set_nlink(f.nlink);
        s
    }

    /// A node with no name yet (the root).
    pub fn with_lowers(lowers: Lowers) -> NodeState {
        NodeState {
            lowers,
            ..Default::default()
        }
    }

    pub fn redirect(&self) -> Option<&Arc<[u8]>> {
        self.extra.as_ref()?.redirect.as_ref()
    }

    pub fn index(&self) -> Option<&Arc<str>> {
        self.extra.as_ref()?.index.as_ref()
    }

    pub fn nlink(&self) -> Option<u32> {
        self.extra.as_ref()?.nlink
    }

    pub fn set_redirect(&mut self, r: Option<Arc<[u8]>>) {
        self.edit_extra(|e| e.redirect = r);
    }

    pub fn set_index(&mut self, i: Option<Arc<str>>) {
        self.edit_extra(|e| e.index = i);
    }

    pub fn set_nlink(&mut self, n: Option<u32>) {
        self.edit_extra(|e| e.nlink = n);
    }

    /// A lower part with no path of its own is where the first name says.
    /// Before that name changes, its lower parts get `path` spelt out.
    pub fn pin_lowers(&mut self, path: Option<Vec<u8>>) {
        spell_out(&mut self.lowers, path);
    }

    /// Changes the boxed fields; the box goes when they are all empty.
    fn edit_extra(&mut self, f: impl FnOnce(&mut Extra)) {
        let mut e = self.extra.take().unwrap_or_default();
        f(&mut e);
        if e.redirect.is_some() || e.index.is_some() || e.nlink.is_some() || e.shown_ino.is_some() {
            self.extra = Some(e);
        }
    }
}

#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    /// As the kernel's i_generation, 32 bits.
    generation: u32,
    /// S_IFMT bits of the object (they fit in 16).
    kind: u16,
    nlookup: AtomicU64,
    /// Whether the object exists in the upper layer (after copy-up: yes).
    upper: AtomicBool,
    pub state: RwLock<NodeState>,
    /// Serialises copy-up of this object only.
    pub copy_up_lock: Mutex<()>,
    /// Open files (each holds an fd of the real object).
    pub opens: AtomicU32,
    /// Of those, the ones open for writing: while there are any, the kernel
    /// caches no attributes of the node (writes through a shared mapping
    /// change the real file's times behind its back).
    pub writers: AtomicU32,
}

impl Node {
    pub fn new(ino: u64, generation: u64, kind: u32, upper: bool, state: NodeState) -> Node {
        Node {
            ino,
            generation: generation as u32,
            kind: kind as u16,
            nlookup: AtomicU64::new(0),
            upper: AtomicBool::new(upper),
            state: RwLock::new(state),
            copy_up_lock: Mutex::new(()),
            opens: AtomicU32::new(0),
            writers: AtomicU32::new(0),
        }
    }

    /// The st_ino the merged view reports for this object.
    /// (A split node keeps it in its state: callers may hold that for
    /// reading, never for writing.)
    pub fn st_ino(&self) -> u64 {
        if !is_split_id(self.ino) {
            return self.ino;
        }
        let st = self.state.read_recursive();
        st.extra
            .as_ref()
            .and_then(|e| e.shown_ino)
            .unwrap_or(self.ino)
    }

    /// Sets the st_ino of a node whose id is not its st_ino.
    pub fn set_st_ino(&self, ino: u64) {
        // Every lookup of the node sets it: take the write lock only for
        // a change.
        if is_split_id(self.ino) && self.st_ino() != ino {
            self.state.write().edit_extra(|e| e.shown_ino = Some(ino));
        }
    }

    pub fn kind(&self) -> u32 {
        self.kind as u32
    }

    pub fn generation(&self) -> u64 {
        self.generation as u64
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    pub fn has_upper(&self) -> bool {
        self.upper.load(Ordering::Acquire)
    }

    pub fn set_upper(&self) {
        self.upper.store(true, Ordering::Release)
    }

    pub fn nlookup(&self) -> u64 {
        self.nlookup.load(Ordering::Acquire)
    }

    /// The kernel took one more lookup of this node.
    pub fn add_lookup(&self) {
        self.nlookup.fetch_add(1, Ordering::AcqRel);
    }

    /// Merged-view path relative to the root ("" for the root), or None if
    /// the object has no name any more.
    pub fn path(&self) -> Option<Vec<u8>> {
        if self.ino == ROOT_INO {
            return Some(Vec::new());
        }
        let mut parts: Vec<OsString> = Vec::with_capacity(8);
        let mut cur: Option<Arc<Node>>;
        {
            let st = self.state.read();
            let (p, name) = st.aliases.first()?;
            parts.push(name.to_os_string());
            cur = Some(p.clone());
        }
        while let Some(n) = cur {
            if n.ino == ROOT_INO {
                break;
            }
            let st = n.state.read();
            let (p, name) = st.aliases.first()?;
            parts.push(name.to_os_string());
            cur = Some(p.clone());
        }
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(p.as_bytes());
        }
        Some(out)
    }

    /// The parent through the first alias.
    pub fn parent(&self) -> Option<Arc<Node>> {
        self.state.read().aliases.first().map(|(p, _)| p.clone())
    }

    /// Path of this object inside lower `l` of its stack.
    pub fn lower_path(&self, l: &LowerRef) -> Option<Vec<u8>> {
        match &l.path {
            Some(p) => Some(p.to_vec()),
            None => self.path(),
        }
    }

    pub fn add_alias(&self, parent: &Arc<Node>, name: &OsStr) {
        let mut st = self.state.write();
        st.dead = false;
        if !st
            .aliases
            .iter()
            .any(|(p, n)| Arc::ptr_eq(p, parent) && n == name)
        {
            if self.is_dir() {
                st.aliases.clear();
            }
            st.aliases.push((parent.clone(), Name::new(name)));
        }
    }

    /// Forgets one name; marks the node dead when it was the last known one
    /// and `last_link` says the object itself is gone.
    pub fn remove_alias(&self, parent: &Arc<Node>, name: &OsStr, last_link: bool) {
        let mut st = self.state.write();
        st.aliases
            .retain(|(p, n)| !(Arc::ptr_eq(p, parent) && n == name));
        if last_link && st.aliases.is_empty() {
            st.dead = true;
        }
    }

    /// Spells out the lower paths of its present first name, which is
    /// about to change or go (NodeState::pin_lowers).
    pub fn pin_lower_paths(&self) {
        let path = self.path();
        self.state.write().pin_lowers(path);
    }

    /// The lower stack for a `Found` under (parent, name), which intern
    /// reads as relative to that name: spelt out unless it is the first.
    pub fn lowers_for(&self, parent: &Node, name: &OsStr) -> Lowers {
        let mut lowers = self.state.read().lowers.clone();
        if self.is_first_alias(parent, name) || lowers.iter().all(|l| l.path.is_some()) {
            return lowers;
        }
        spell_out(&mut lowers, self.path());
        lowers
    }

    /// Makes (parent, name) the name that path() uses.
    pub fn promote_alias(&self, parent: &Arc<Node>, name: &OsStr) {
        if self.is_first_alias(parent, name) {
            return;
        }
        let old_path = self.path();
        let mut st = self.state.write();
        st.pin_lowers(old_path);
        if let Some(i) = st
            .aliases
            .iter()
            .position(|(p, n)| Arc::ptr_eq(p, parent) && n == name)
        {
            let a = st.aliases.remove(i);
            st.aliases.insert(0, a);
        }
    }

    fn is_first_alias(&self, parent: &Node, name: &OsStr) -> bool {
        let st = self.state.read();
        st.aliases
            .first()
            .is_some_and(|(p, n)| std::ptr::eq(p.as_ref(), parent) && n == name)
    }

    pub fn alias_count(&self) -> usize {
        self.state.read().aliases.len()
    }

    pub fn rename_alias(
        &self,
        old_parent: &Arc<Node>,
        old: &OsStr,
        new_parent: &Arc<Node>,
        new: &OsStr,
    ) {
        let old_path = self.path();
        let mut st = self.state.write();
        st.pin_lowers(old_path);
        st.aliases
            .retain(|(p, n)| !(Arc::ptr_eq(p, old_parent) && n == old));
        st.aliases
            .retain(|(p, n)| !(Arc::ptr_eq(p, new_parent) && n == new));
        st.aliases.insert(0, (new_parent.clone(), Name::new(new)));
        st.dead = false;
    }
}

/// What a lookup found, to be turned into a node.
#[derive(Debug)]
pub struct Found {
    pub ino: u64,
    pub kind: u32,
    pub upper: bool,
    pub lowers: Lowers,
    pub redirect: Option<Arc<[u8]>>,
    pub index: Option<Arc<str>>,
    pub nlink: Option<u32>,
    pub metacopy: bool,
}

#[cfg(test)]
mod size {
    /// The memory target (issue 14: 30,000 listed files in 10 MiB) holds
    /// with a node that fits a 144-byte malloc chunk beside Arc's counts.
    #[test]
    fn a_node_fits_its_malloc_chunk() {
        assert!(std::mem::size_of::<super::Node>() <= 120);
        assert!(std::mem::size_of::<super::Name>() <= 24);
        assert!(std::mem::size_of::<super::LowerRef>() <= 16);
    }
}
