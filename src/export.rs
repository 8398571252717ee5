//! File handles (the kernel's export.c, by FUSE's rules). With
//! FUSE_EXPORT_SUPPORT a handle is (node id, generation); to decode one of
//! an inode it no longer holds, the kernel sends LOOKUP "." under the id,
//! and to reconnect a dir, LOOKUP ".." under it. A node still in the table
//! answers at once; a forgotten one is found again by the name it had
//! (`ghost::Ghosts`), if its slot was not reused and the name still leads
//! to the same object.

use std::sync::Arc;

use crate::node::{Node, ROOT_INO};
use crate::ovl::OvlFs;
use crate::sys::Stat;
use crate::{Errno, Result};

/// How many forgotten ancestors a decode may bring back.
const MAX_DEPTH: usize = 256;

impl OvlFs {
    /// LOOKUP "." under `ino`: the object itself, one more lookup counted.
    pub fn lookup_self(&self, ino: u64) -> Result<(Arc<Node>, Stat)> {
        let _paths = self.rename_lock.paths();
        if let Some(n) = self.nodes.get(ino) {
            if n.state.read().dead {
                return Err(Errno::ESTALE);
            }
            let st = self.getattr(&n, None)?;
            n.add_lookup();
            return Ok((n, st));
        }
        self.lookup_ghost(ino, true, 0)
    }

    /// LOOKUP ".." under `ino` (a dir): its parent, one more lookup counted.
    pub fn lookup_parent(&self, ino: u64) -> Result<(Arc<Node>, Stat)> {
        let _paths = self.rename_lock.paths();
        let n = self.nodes.get(ino).ok_or(Errno::ESTALE)?;
        let p = match n.state.read().aliases.first() {
            Some((p, _)) => p.clone(),
            None if ino == ROOT_INO => n.clone(),
            None => return Err(Errno::ESTALE),
        };
        let st = self.getattr(&p, None)?;
        p.add_lookup();
        Ok((p, st))
    }

    /// Finds a forgotten node again under the name it had; ESTALE if that
    /// name is gone or leads elsewhere by now.
    fn lookup_ghost(&self, ino: u64, count: bool, depth: usize) -> Result<(Arc<Node>, Stat)> {
        let stale = Errno::ESTALE;
        let g = self.nodes.ghosts.get(ino).ok_or(stale)?;
        if depth > MAX_DEPTH {
            return Err(stale);
        }
        let parent = match self.nodes.get(g.parent) {
            Some(p) => p,
            None => self.lookup_ghost(g.parent, false, depth + 1)?.0,
        };
        let found = self.lookup(&parent, &g.name, count);
        let pino = parent.ino;
        drop(parent);
        match found {
            Ok((n, st)) if n.ino == ino && n.kind() == g.kind => Ok((n, st)),
            Ok((n, _)) => {
                let nino = n.ino;
                drop(n);
                if count {
                    self.forget(nino, 1);
                } else {
                    self.nodes.reap(nino);
                }
                self.nodes.reap(pino);
                Err(stale)
            }
            Err(_) => {
                self.nodes.reap(pino);
                Err(stale)
            }
        }
    }
}
