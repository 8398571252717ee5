//! The node table: node ids to nodes, as the kernel's inode hash and
//! dcache hold overlay inodes. A node is made or refreshed by each lookup
//! (intern) and freed at the kernel's last FORGET (reap), leaving a ghost
//! for file handles.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{spell_out, Found, Name, Node, NodeState, ROOT_INO};
use crate::ghost::{Ghost, Ghosts};
use crate::nodemap::{Keyed, NodeMap};

impl Keyed for Arc<Node> {
    fn key(&self) -> u64 {
        self.ino
    }
}

#[derive(Debug, Default)]
pub struct NodeTable {
    map: NodeMap<Arc<Node>>,
    generation: AtomicU64,
    /// Where forgotten nodes were, for file handles (export.rs).
    pub ghosts: Ghosts,
}

impl NodeTable {
    pub fn new(root: Node) -> NodeTable {
        let t = NodeTable {
            map: NodeMap::default(),
            generation: AtomicU64::new(1),
            ghosts: Ghosts::default(),
        };
        root.nlookup.store(1, Ordering::Release);
        t.map.insert(Arc::new(root));
        t
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.map.get(ino)
    }

    pub fn root(&self) -> Arc<Node> {
        self.get(ROOT_INO).expect("root node")
    }

    /// Every node in the table (a snapshot).
    pub fn all(&self) -> Vec<Arc<Node>> {
        self.map.all()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Returns the node for a found object under (parent, name), creating
    /// or refreshing it; adds one lookup if `count` is set.
    pub fn intern(&self, parent: &Arc<Node>, name: &OsStr, f: Found, count: bool) -> Arc<Node> {
        use hashbrown::hash_table::Entry;
        let fresh = |f: &Found, nlookup: u64, generation: u64| {
            let n = Node::new(
                f.ino,
                generation,
                f.kind,
                f.upper,
                NodeState::new(smallvec::smallvec![(parent.clone(), Name::new(name))], f),
            );
            n.nlookup.store(nlookup + count as u64, Ordering::Release);
            Arc::new(n)
        };
        self.map.entry(f.ino, |e| match e {
            Entry::Occupied(mut e) => {
                let old = e.get().clone();
                let same = old.kind() == f.kind && !old.state.read().dead;
                if same {
                    if f.upper {
                        old.set_upper();
                    }
                    // A non-dir found under another of its names: "the
                    // path of my first name" would be the wrong lower path.
                    let mut lowers = f.lowers;
                    if !old.is_dir() && !old.is_first_alias(parent, name) {
                        let p = parent.path().map(|p| crate::layer::join(&p, name));
                        spell_out(&mut lowers, p);
                    }
                    {
                        let mut st = old.state.write();
                        st.lowers = lowers;
                        st.set_redirect(f.redirect);
                        st.metacopy = f.metacopy;
                        if f.index.is_some() {
                            st.set_index(f.index);
                        }
                        if f.nlink.is_some() {
                            st.set_nlink(f.nlink);
                        }
                    }
                    old.add_alias(parent, name);
                    if count {
                        old.nlookup.fetch_add(1, Ordering::AcqRel);
                    }
                    old
                } else {
                    // The number now names another object: new generation, and
                    // the kernel's lookups on the old one carry over (it will
                    // FORGET them against this id).
                    let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                    let n = fresh(&f, old.nlookup(), g);
                    *e.get_mut() = n.clone();
                    n
                }
            }
            Entry::Vacant(e) => {
                // A node forgotten before comes back with the generation
                // that handles of it carry.
                let g = self.ghosts.generation(f.ino, f.kind);
                let n = fresh(
                    &f,
                    0,
                    g.unwrap_or_else(|| self.generation.load(Ordering::Acquire)),
                );
                e.insert(n.clone());
                n
            }
        })
    }

    /// Drops `n` lookups; frees the node (and ancestors nobody needs) at zero.
    pub fn forget(&self, ino: u64, n: u64) {
        let Some(node) = self.get(ino) else { return };
        let prev = node
            .nlookup
            .fetch_sub(n.min(node.nlookup()), Ordering::AcqRel);
        if prev > n {
            return;
        }
        drop(node);
        self.reap(ino);
    }

    /// What a forgotten node leaves for file handles: its first name.
    fn leave_ghost(&self, n: &Node) {
        let st = n.state.read();
        if let (Some((p, name)), false) = (st.aliases.first(), st.dead) {
            self.ghosts.put(Ghost {
                ino: n.ino,
                parent: p.ino,
                name: (**name).into(),
                generation: n.generation(),
                kind: n.kind(),
            });
        }
    }

    /// Removes an unreferenced node and walks up its parents.
    pub fn reap(&self, ino: u64) {
        let mut next = Some(ino);
        while let Some(ino) = next.take() {
            if ino == ROOT_INO {
                return;
            }
            // The ghost is left while the shard is still locked, so that
            // a LOOKUP of "." racing this FORGET finds the node or its ghost.
            let removed = self.map.remove_if(ino, |n| {
                let gone = n.nlookup() == 0 && Arc::strong_count(n) == 1;
                if gone {
                    self.leave_ghost(n);
                }
                gone
            });
            if let Some(n) = removed {
                // Only a single parent chain is followed; other aliases' parents
                // are reaped by their own forgets.
                next = n.state.read().aliases.first().map(|(p, _)| p.ino);
            }
        }
    }
}
