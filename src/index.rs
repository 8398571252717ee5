//! Origin file handles and the index (the kernel's export.c and the index
//! parts of namei.c/util.c): `origin` records which lower inode an upper
//! object was copied from, which keeps st_ino across copy-up and remount;
//! `W/index/<hex handle>` holds the upper inode of a copied-up hard-linked
//! lower file so that all its names share it; `nlink` keeps the link count.

use std::ffi::CString;
use std::os::fd::AsFd;

use log::warn;

use crate::format::{self, FileHandle};
use crate::layer::{to_c, Layer};
use crate::node::Node;
use crate::sys::{self, Stat};
use crate::{OvlFs, Result};

impl OvlFs {
    /// The origin handle of a lower object, or None where the filesystem has
    /// no file handles.
    pub fn lower_fh(&self, layer: &Layer, path: &[u8]) -> Option<FileHandle> {
        let c = to_c(path).ok()?;
        match sys::name_to_handle_at(layer.fd(), &c) {
            Ok((kind, bytes)) if kind > 0 && kind < 256 && bytes.len() <= 255 - 21 => {
                Some(FileHandle {
                    kind: kind as u8,
                    uuid: [0; 16],
                    bytes,
                })
            }
            _ => None,
        }
    }

    /// The overlay inode number of the lower inode an origin names, if it
    /// still exists in one of the lower filesystems.
    ///
    /// As the kernel's getattr: a non-dir whose lower has other names keeps
    /// its origin's number only through the index (without it, each name
    /// may have been copied up on its own): None then.
    pub fn origin_ino(&self, fh: &FileHandle, indexed: bool) -> Option<u64> {
        let mut tried: Vec<u64> = Vec::new();
        for (i, l) in self.lowers.iter().enumerate() {
            if tried.contains(&l.dev) {
                continue;
            }
            tried.push(l.dev);
            let Ok(fd) = sys::open_by_handle_at(l.fd(), fh.kind as i32, &fh.bytes, libc::O_PATH)
            else {
                continue;
            };
            let st = sys::fstat(fd.as_fd()).ok()?;
            let dir = crate::sys::is_dir(&st);
            if !dir && !indexed && st.st_nlink > 1 {
                return None;
            }
            return Some(self.map_ino(i + 1, &st));
        }
        None
    }

    /// The overlay inode number from the origin of an upper entry, cached
    /// like a lookup's; None when it has none.
    pub fn origin_of_entry(&self, path: &[u8], upper_ino: u64) -> Option<u64> {
        let v = self
            .upper
            .as_ref()?
            .try_getxattr(path, &self.xn.origin)
            .ok()
            .flatten()?;
        // With the index on, a hard-linked lower was copied up through it.
        let indexed = self.index_layer().is_some();
        let ino = self.origin_ino(&self.decode_origin(&v, path)?, indexed)?;
        self.inos.set_copied(upper_ino, ino);
        Some(ino)
    }

    /// Reads and checks an origin xattr value.
    pub fn decode_origin(&self, v: &[u8], what: &[u8]) -> Option<FileHandle> {
        let fh = FileHandle::decode(v);
        if fh.is_none() {
            warn!(
                "{}: bad origin xattr ignored",
                String::from_utf8_lossy(what)
            );
        }
        fh
    }

    pub fn index_layer(&self) -> Option<&Layer> {
        self.index.as_ref()
    }

    /// The index entry of a lower non-dir with several links, if one exists.
    pub fn lookup_index(
        &self,
        layer: &Layer,
        path: &[u8],
        st: &Stat,
    ) -> Result<Option<(String, Stat)>> {
        let Some(index) = self.index_layer() else {
            return Ok(None);
        };
        if crate::sys::is_dir(st) || st.st_nlink < 2 {
            return Ok(None);
        }
        let Some(fh) = self.lower_fh(layer, path) else {
            return Ok(None);
        };
        let name = fh.index_name();
        Ok(index.try_stat(name.as_bytes())?.map(|ist| (name, ist)))
    }

    /// The overlay link count of an indexed inode from its `nlink` xattr.
    pub fn indexed_nlink(
        &self,
        layer: &Layer,
        path: &[u8],
        st: &Stat,
        lower_nlink: libc::nlink_t,
    ) -> u32 {
        let v = layer.try_getxattr(path, &self.xn.nlink).ok().flatten();
        let n = match v.as_deref().and_then(format::parse_nlink) {
            Some((true, d)) => st.st_nlink as i64 + d,
            Some((false, d)) => lower_nlink as i64 + d,
            None => lower_nlink.max(st.st_nlink) as i64,
        };
        n.clamp(0, u32::MAX as i64) as u32
    }

    /// Stores an indexed node's link count as the kernel does ("U+n").
    pub fn store_nlink(&self, node: &Node, nlink: u32) -> Result<()> {
        let Some(name) = node.state.read().index().cloned() else {
            return Ok(());
        };
        node.state.write().set_nlink(Some(nlink));
        // Other names of the inode with nodes of their own see it too.
        for n in self.names_of_inode(node) {
            if n.state.read().index().map(|i| &**i) == Some(&*name) {
                n.state.write().set_nlink(Some(nlink));
                self.invalidate_attr(n.ino);
            }
        }
        let Some(index) = self.index_layer() else {
            return Ok(());
        };
        let Some(ist) = index.try_stat(name.as_bytes())? else {
            return Ok(());
        };
        if nlink == 0 {
            // No name is left: the index entry goes too, and with it the
            // upper inode, whose number may then be reused.
            let _ = sys::unlinkat(index.fd(), &CString::new(name.as_bytes()).expect("hex"), 0);
            if ist.st_nlink <= 1 {
                self.inos.forget_copied(ist.st_ino);
            }
            return Ok(());
        }
        let v = format::format_nlink(nlink as i64 - ist.st_nlink as i64);
        index.setxattr(name.as_bytes(), &self.xn.nlink, &v, 0)?;
        Ok(())
    }

    /// Marks an upper dir impure: some child carries an origin or redirect.
    pub fn set_impure(&self, dir_path: &[u8]) -> Result<()> {
        let upper = self.upper()?;
        if upper.try_getxattr(dir_path, &self.xn.impure)?.is_none() {
            upper.setxattr(dir_path, &self.xn.impure, b"y", 0)?;
        }
        Ok(())
    }
}
