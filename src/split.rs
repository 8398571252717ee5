//! Names of a lower hard link, each with a node of its own ("split"
//! nodes): an open or setattr through one name must copy up that name, as
//! the kernel does, and FUSE names no name with those. Their ids are kept
//! by (parent, name), and by st_ino the names of one inode.
//!
//! A node whose passthrough readers hold its lower file after a copy-up
//! (lower_passthrough) is retired: the kernel lets no other open of that
//! inode in, so its names go on as split nodes of the same st_ino.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::{DashMap, DashSet};

use crate::node::{self, Node, NodeTable};

/// The split nodes' keys, beside the node table that holds the nodes.
pub struct Splits {
    /// (parent node id, name) -> split node id.
    ids: DashMap<(u64, OsString), u64>,
    /// st_ino -> the split node ids of that inode's names.
    siblings: DashMap<u64, Vec<u64>>,
    /// Split ids count down from the top of the id space (node::is_split_id).
    next: AtomicU64,
    /// Retired node ids: no lookup hands them out while their node lives.
    retired: DashSet<u64>,
    /// Whether any node was ever retired: one load on the hot paths
    /// (lookup, getattr, read) of mounts that never retire one, where
    /// DashSet::is_empty would lock every shard.
    any_retired: AtomicBool,
    /// Held while a split id is picked for a name (name_id).
    naming: parking_lot::Mutex<()>,
}

impl Default for Splits {
    fn default() -> Splits {
        Splits {
            ids: DashMap::new(),
            siblings: DashMap::new(),
            next: AtomicU64::new(u64::MAX - 1),
            retired: DashSet::new(),
            any_retired: AtomicBool::new(false),
            naming: parking_lot::Mutex::new(()),
        }
    }
}

impl Splits {
    /// The live split node (a name of a lower hard link with a node of its
    /// own) known under (parent, name).
    pub fn live(&self, nodes: &NodeTable, parent: &Node, name: &OsStr, kind: u32) -> Option<u64> {
        let id = *self.ids.get(&(parent.ino, name.to_os_string()))?;
        let n = nodes.get(id)?;
        let s = n.state.read();
        let live = n.kind() == kind
            && !s.dead
            && s.aliases
                .iter()
                .any(|(p, a)| p.ino == parent.ino && a == name);
        live.then_some(id)
    }

    /// A split node moved (rename): its name key moves with it.
    pub fn moved(&self, node: &Node, parent: &Node, name: &OsStr, np: &Node, nn: &OsStr) {
        if !node::is_split_id(node.ino) {
            return;
        }
        self.ids
            .remove_if(&(parent.ino, name.to_os_string()), |_, v| *v == node.ino);
        self.ids.insert((np.ino, nn.to_os_string()), node.ino);
    }

    /// Files `node` (split) under its st_ino, beside the other names of
    /// its inode.
    pub fn note(&self, node: &Node) {
        let mut ids = self.siblings.entry(node.st_ino()).or_default();
        if !ids.contains(&node.ino) {
            ids.push(node.ino);
        }
    }

    /// The kernel forgets `n` lookups of node `ino`; a split node that
    /// leaves the table takes its keys along.
    pub fn forget(&self, nodes: &NodeTable, ino: u64, n: u64) {
        let split = node::is_split_id(ino)
            .then(|| nodes.get(ino))
            .flatten()
            .map(|n| {
                let s = n.state.read();
                let names: Vec<_> = s
                    .aliases
                    .iter()
                    .map(|(p, a)| (p.ino, a.to_os_string()))
                    .collect();
                (n.st_ino(), names)
            });
        nodes.forget(ino, n);
        if nodes.get(ino).is_some() {
            return;
        }
        self.retired.remove(&ino);
        if let Some((st_ino, names)) = split {
            self.drop_split(ino, st_ino, &names);
        }
    }

    /// A split node got one more name (link): lookups of it find the node.
    pub fn linked(&self, node: &Node, np: &Node, nn: &OsStr) {
        if node::is_split_id(node.ino) {
            self.ids.insert((np.ino, nn.to_os_string()), node.ino);
        }
    }

    /// Node `ino` is retired: its id leads nowhere new while it lives.
    pub fn retire(&self, ino: u64) {
        self.retired.insert(ino);
        self.any_retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self, ino: u64) -> bool {
        self.any_retired.load(Ordering::Acquire) && self.retired.contains(&ino)
    }

    /// The id a lookup of (parent, name) gives an object whose id would be
    /// `ino`: a split id of its own where that node is retired.
    pub fn unretired(
        &self,
        nodes: &NodeTable,
        ino: u64,
        parent: &Node,
        name: &OsStr,
        kind: u32,
    ) -> u64 {
        if !self.is_retired(ino) {
            return ino;
        }
        self.name_id(nodes, parent, name, kind)
    }

    /// The split id of (parent, name): the live one, or one a lookup has
    /// just handed out and not yet interned, else a new one. One at a
    /// time, so that two lookups racing on a name do not both make one
    /// (the older node would keep a name that leads elsewhere).
    pub fn name_id(&self, nodes: &NodeTable, parent: &Node, name: &OsStr, kind: u32) -> u64 {
        let _one = self.naming.lock();
        let key = (parent.ino, name.to_os_string());
        if let Some(id) = self.ids.get(&key).map(|r| *r) {
            if nodes.get(id).is_none() || self.live(nodes, parent, name, kind) == Some(id) {
                return id;
            }
        }
        self.new_id(parent, name)
    }

    /// The split node `id` (whose st_ino was `st_ino`) is gone.
    fn drop_split(&self, id: u64, st_ino: u64, names: &[(u64, OsString)]) {
        self.siblings.remove_if_mut(&st_ino, |_, ids| {
            ids.retain(|&i| i != id);
            ids.is_empty()
        });
        if names.is_empty() {
            // Unlinked: its name is not known any more.
            self.ids.retain(|_, v| *v != id);
        }
        for k in names {
            self.ids.remove_if(k, |_, v| *v == id);
        }
    }

    /// The other nodes that are names of `node`'s inode: the one whose id
    /// is the st_ino, and the split ones. (Not a walk of the node table:
    /// copy-ups of hard links with the index need this.)
    pub fn names_of_inode(&self, nodes: &NodeTable, node: &Node) -> Vec<Arc<Node>> {
        let key = node.st_ino();
        let mut ids: Vec<u64> = self
            .siblings
            .get(&key)
            .map(|v| v.clone())
            .unwrap_or_default();
        ids.push(key);
        ids.into_iter()
            .filter(|&i| i != node.ino)
            .filter_map(|i| nodes.get(i))
            .collect()
    }

    fn new_id(&self, parent: &Node, name: &OsStr) -> u64 {
        let id = self.next.fetch_sub(1, Ordering::Relaxed);
        self.ids.insert((parent.ino, name.to_os_string()), id);
        id
    }
}
