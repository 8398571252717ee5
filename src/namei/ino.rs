//! Lookup's inode-number step (the kernel's ovl_get_inode and
//! ovl_map_ino at the end of ovl_lookup): which node a found object is,
//! from copy-up records, origins, the index, or a split of a lower hard link.

use std::ffi::OsStr;
use std::sync::Arc;

use super::LookupData;
use crate::node::{self, Found, Node};
use crate::sys::{is_dir, Stat};
use crate::{OvlFs, Result};

impl OvlFs {
    /// The node id (and, for a split node, the st_ino it shows) of an
    /// object found in the upper.
    pub(super) fn lookup_upper_ino(
        &self,
        d: &mut LookupData,
        parent: &Node,
        name: &OsStr,
        st: &Stat,
    ) -> Result<(u64, u64)> {
        let fh = match &d.origin {
            Some(v) if d.indexed || self.inos.copied(st.st_ino).is_none() => {
                self.decode_origin(v, &d.path)
            }
            _ => None,
        };
        // Indexed only if W/index holds this very inode under the name of
        // its origin; otherwise an nlink xattr is stray and ignored.
        let iname = fh.as_ref().filter(|_| d.indexed).map(|f| f.index_name());
        if let (Some(iname), Some(ix)) = (iname, self.index_layer()) {
            if ix
                .try_stat(iname.as_bytes())?
                .is_some_and(|i| i.st_ino == st.st_ino)
            {
                d.index = Some(Arc::from(iname.as_str()));
                d.nlink = Some(self.indexed_nlink(self.upper()?, &d.path, st, st.st_nlink));
            }
        }
        // A name of a lower hard link copied up through its own node.
        let kind = st.st_mode & libc::S_IFMT;
        let split = (!is_dir(st))
            .then(|| self.splits.live(&self.nodes, parent, name, kind))
            .flatten();
        Ok(match split.and_then(|s| self.nodes.get(s)) {
            Some(n) => (n.ino, n.st_ino()),
            None => {
                let ino = self.upper_ino(st, fh.as_ref(), d.index.is_some());
                let id = if is_dir(st) {
                    ino
                } else {
                    self.splits.unretired(&self.nodes, ino, parent, name, kind)
                };
                (id, ino)
            }
        })
    }

    /// The node id and shown st_ino of an object found in a lower layer;
    /// another name of its inode may have brought it into the index.
    pub(super) fn lookup_lower_ino(
        &self,
        d: &mut LookupData,
        parent: &Node,
        name: &OsStr,
        st: &mut Stat,
        idx: usize,
    ) -> Result<(u64, u64)> {
        let shown = self.map_ino(idx, st);
        let mut ino = shown;
        if !is_dir(st) && st.st_nlink > 1 && !self.read_only() {
            // Each name of a lower hard link gets a node of its own, so
            // that an open or setattr tells which name it went through:
            // that name is the one copied up (index=off: on its own; with
            // the index: linked to the index entry), as in the kernel. It
            // reports the lower's number.
            let kind = st.st_mode & libc::S_IFMT;
            ino = self.splits.name_id(&self.nodes, parent, name, kind);
        } else if !is_dir(st) {
            let kind = st.st_mode & libc::S_IFMT;
            ino = self.splits.unretired(&self.nodes, ino, parent, name, kind);
        }
        // Another name of a lower hard link whose inode was copied up
        // through the index: the data and link count live there.
        let layer = &self.lowers[d.lowers[0].layer as usize];
        if let Some((iname, ist)) = self.lookup_index(layer, &d.top_lower_path, st)? {
            let ix = self.index_layer().expect("index");
            d.nlink = Some(self.indexed_nlink(ix, iname.as_bytes(), &ist, st.st_nlink));
            // A metadata-only copy-up in the index (metacopy=on): the data
            // is still below. Otherwise the index has the data, even when
            // the lower name is itself a metacopy.
            d.metacopy = ix
                .try_getxattr(iname.as_bytes(), &self.xn.metacopy)?
                .is_some();
            d.index = Some(Arc::from(iname.as_str()));
            d.upper = true;
            let blocks = st.st_blocks;
            *st = ist;
            if d.metacopy {
                st.st_blocks = blocks;
            }
        }
        Ok((ino, shown))
    }

    /// An upper object this name already leads to in the node table: what
    /// the first lookup found still holds (its markers change only through
    /// ovlfuse, which keeps the node up to date), so one stat suffices.
    pub(super) fn known_upper(
        &self,
        parent: &Node,
        name: &OsStr,
        st: &Stat,
    ) -> Option<(Found, Stat)> {
        let ino = self
            .inos
            .copied(st.st_ino)
            .unwrap_or_else(|| self.map_ino(0, st));
        let node = self.nodes.get(ino)?;
        if self.splits.is_retired(ino) {
            return None;
        }
        let s = node.state.read();
        let same = node.kind() == st.st_mode & libc::S_IFMT
            && node.has_upper()
            && !s.dead
            && !s.metacopy
            && s.index().is_none()
            && s.aliases
                .iter()
                .any(|(p, n)| std::ptr::eq(p.as_ref(), parent) && n == name);
        let redirect = s.redirect().cloned();
        drop(s);
        if !same {
            return None;
        }
        let mut st = *st;
        if !node::is_split_id(ino) {
            st.st_ino = ino;
        }
        let found = Found {
            ino,
            kind: node.kind(),
            upper: true,
            lowers: node.lowers_for(parent, name),
            redirect,
            index: None,
            nlink: None,
            metacopy: false,
        };
        Some((found, st))
    }

    /// The st_ino (and node id) of a non-split upper object: what copy-up
    /// recorded this mount, else its origin's number where that holds.
    pub(super) fn upper_ino(
        &self,
        st: &Stat,
        fh: Option<&crate::format::FileHandle>,
        indexed: bool,
    ) -> u64 {
        if let Some(i) = self.inos.copied(st.st_ino) {
            return i;
        }
        match fh.and_then(|f| self.origin_ino(f, indexed)) {
            Some(i) => {
                self.inos.set_copied(st.st_ino, i);
                i
            }
            None => self.map_ino(0, st),
        }
    }
}
