//! Merged directory listing (the kernel's readdir.c): upper first, then each
//! lower; duplicates, whiteouts and AUFS markers removed; stops at opaque.

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::Arc;

use crate::format;
use crate::layer::join;
use crate::node::Node;
pub use crate::open::{DirEntry, DirHandle};
use crate::{OvlFs, Result};

impl OvlFs {
    /// Every visible entry of a merged dir, without "." and "..".
    pub fn merged_entries(&self, node: &Node) -> Result<Vec<DirEntry>> {
        self.merged_listing(node, false)
    }

    /// Whether a dir is empty in the merged view, as rmdir and rename see
    /// it: like the kernel, xattr whiteouts count as entries there.
    pub fn merged_empty(&self, node: &Node) -> Result<bool> {
        Ok(self.merged_listing(node, true)?.is_empty())
    }

    fn merged_listing(&self, node: &Node, keep_xwhiteouts: bool) -> Result<Vec<DirEntry>> {
        let path = self.path_of(node)?;
        let lowers = node.state.read().lowers.clone();
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        if node.has_upper() {
            let markers = self.list_upper(&path, &mut seen, &mut out)?;
            node.state.write().upper_markers = Some(markers);
        }
        for l in &lowers {
            let lpath = l.path_or(&path);
            let from = (l.layer, lpath.as_slice());
            self.list_lower(from, keep_xwhiteouts, &mut seen, &mut out)?;
        }
        Ok(out)
    }

    /// The upper part of a listing; returns whether `.wh.` markers were
    /// found (then lookups in the dir look for them).
    fn list_upper(
        &self,
        path: &[u8],
        seen: &mut HashSet<OsString>,
        out: &mut Vec<DirEntry>,
    ) -> Result<bool> {
        let u = self.upper()?;
        // Children of an impure dir may carry origins: their d_ino is
        // the origin's, as st_ino is (the kernel does the same).
        let impure = u.try_getxattr(path, &self.xn.impure)?.is_some();
        let mut markers = false;
        for (name, ino, dtype) in u.read_dir(path)? {
            // `.wh.` files are markers in the upper too (ovlfuse's AUFS
            // mode, or an upper fuse-overlayfs wrote).
            if format::is_aufs_name(&name) {
                if let Some(t) = format::aufs_whiteout_target(&name) {
                    markers = true;
                    seen.insert(t.to_os_string());
                }
                continue;
            }
            seen.insert(name.clone());
            if (dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN)
                && format::is_whiteout(&u.stat(&join(path, &name))?)
            {
                continue;
            }
            let ino = match self.inos.copied(ino) {
                Some(i) => i,
                None if impure => self
                    .origin_of_entry(&join(path, &name), ino)
                    .unwrap_or_else(|| self.dir_ino(0, u.dev, ino)),
                None => self.dir_ino(0, u.dev, ino),
            };
            out.push(named(name, ino, dtype, None));
        }
        Ok(markers)
    }

    /// One lower's part of a listing: names not `seen` above, less its
    /// whiteouts. Names its `.wh.` files hide are hidden only below it.
    fn list_lower(
        &self,
        (li, lpath): (u16, &[u8]),
        keep_xwhiteouts: bool,
        seen: &mut HashSet<OsString>,
        out: &mut Vec<DirEntry>,
    ) -> Result<()> {
        let layer = &self.lowers[li as usize];
        let entries = layer.read_dir(lpath)?;
        // Only a dir marked opaque=x lists its xattr whiteouts as such.
        let xdir = !keep_xwhiteouts
            && layer
                .try_getxattr(lpath, &self.xn.opaque)?
                .is_some_and(|v| v == b"x");
        let mut hidden = Vec::new();
        for (name, ino, mut dtype) in entries {
            if format::is_aufs_name(&name) {
                if let Some(t) = format::aufs_whiteout_target(&name) {
                    hidden.push(t.to_os_string());
                }
                continue;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            let xcheck = xdir && dtype == libc::DT_REG;
            if xcheck || dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN {
                let cpath = join(lpath, &name);
                let st = layer.stat(&cpath)?;
                if format::is_whiteout(&st) || (xdir && self.is_xwhiteout(layer, &cpath, &st)?) {
                    continue;
                }
                dtype = dtype_of(st.st_mode);
            }
            let ino = self.dir_ino(layer.idx, layer.dev, ino);
            out.push(named(name, ino, dtype, Some(li)));
        }
        seen.extend(hidden);
        Ok(())
    }

    fn dir_ino(&self, idx: usize, dev: u64, ino: u64) -> u64 {
        // SAFETY-free: a zeroed stat carrying only dev and ino.
        let mut st: crate::sys::Stat = unsafe_zeroed_stat();
        st.st_dev = dev;
        st.st_ino = ino;
        self.map_ino(idx, &st)
    }

    pub fn opendir(&self, node: &Arc<Node>) -> Result<u64> {
        if !node.is_dir() {
            return Err(crate::Errno::ENOTDIR);
        }
        Ok(self.handles.add_dir(node.clone()))
    }

    /// The snapshot to read from `offset` on: offset 0 takes a fresh one,
    /// as does the first read of a handle at any offset (the kernel goes on
    /// from where its cached listing ends, on a new handle). "." and ".."
    /// come first (offsets 1 and 2), then the names in cookie order; read
    /// on with `entries_after`.
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        let _paths = self.rename_lock.paths();
        let h = self.handles.dir(fh)?;
        if offset == 0 || h.entries.lock().is_empty() {
            *h.entries.lock() = self.snapshot(&h.node)?;
        }
        let e = h.entries.lock().clone();
        Ok(e)
    }

    /// A read of dir `node` with no open handle (the kernel's zero-message
    /// opendir, which spares OPENDIR and RELEASEDIR per dir): offset 0
    /// takes a fresh snapshot, a read further on goes on with the one the
    /// last read took (the kernel reads a dir in order) or a fresh one
    /// (positions are name cookies); a big snapshot goes once read out.
    pub fn readdir_unopened(&self, node: &Arc<Node>, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        if !node.is_dir() {
            return Err(crate::Errno::ENOTDIR);
        }
        let _paths = self.rename_lock.paths();
        let v = match self.handles.listing(node).filter(|_| offset > 0) {
            Some(v) => v,
            None => self.snapshot(node)?,
        };
        if entries_after(&v, offset).is_empty() {
            self.handles.listing_read(node);
        }
        Ok(v)
    }

    /// The lower layer the last listing of `dir` found `name` in: a lookup
    /// starts there (lookup_listed), so a dir listed and then looked up
    /// name by name (`ls -l` past the first reply) does not ask every
    /// layer again per name.
    pub fn listed_in(&self, dir: &Arc<Node>, name: &std::ffi::OsStr) -> Option<u16> {
        let v = self.handles.listing(dir)?;
        let c = cookie(name);
        let i = v.partition_point(|e| e.off < c);
        // Colliding cookies were moved up by one each.
        v[i..].iter().take(8).find(|e| e.name == name)?.layer
    }

    /// "." and "..", then the merged names in cookie order; kept for the
    /// reads and lookups that follow.
    fn snapshot(&self, node: &Arc<Node>) -> Result<Arc<Vec<DirEntry>>> {
        let parent = node.parent().map(|p| p.ino).unwrap_or(node.ino);
        let mut v = vec![
            DirEntry {
                name: ".".into(),
                ino: node.ino,
                dtype: libc::DT_DIR,
                layer: None,
                off: 1,
            },
            DirEntry {
                name: "..".into(),
                ino: parent,
                dtype: libc::DT_DIR,
                layer: None,
                off: 2,
            },
        ];
        // A removed dir lists nothing, as on the kernel's overlay.
        if !node.state.read().dead {
            let mut names = self.merged_entries(node)?;
            in_cookie_order(&mut names);
            v.extend(names);
        }
        let v = Arc::new(v);
        self.handles.keep_listing(node, v.clone());
        Ok(v)
    }

    /// The dir an open dir handle reads.
    pub fn dir_node(&self, fh: u64) -> Result<Arc<Node>> {
        Ok(self.handles.dir(fh)?.node.clone())
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.release_dir(fh);
    }
}

/// A name's position cookie, as a hashed-dir filesystem gives: it depends
/// on the name only, so a position means the same in every listing of the
/// dir while its set of names stays, whatever order the layers list them
/// in (a copy-up moves a name from a lower's part to the upper's). The
/// kernel's cached listings resume at such positions on a new handle.
/// Below 2^62 (offsets are signed in the kernel), above "." and "..".
fn cookie(name: &std::ffi::OsStr) -> u64 {
    use std::hash::Hasher;
    use std::os::unix::ffi::OsStrExt;
    let mut h = std::hash::DefaultHasher::new();
    h.write(name.as_bytes());
    (h.finish() >> 2).max(3)
}

/// A listed name, with its cookie.
fn named(name: std::ffi::OsString, ino: u64, dtype: u8, layer: Option<u16>) -> DirEntry {
    let off = cookie(&name);
    DirEntry {
        name,
        ino,
        dtype,
        layer,
        off,
    }
}

/// Sorts names by cookie, moving a colliding one up to the next free
/// value (the same names always get the same cookies).
fn in_cookie_order(v: &mut [DirEntry]) {
    v.sort_unstable_by(|a, b| (a.off, &a.name).cmp(&(b.off, &b.name)));
    for i in 1..v.len() {
        if v[i].off <= v[i - 1].off {
            v[i].off = v[i - 1].off + 1;
        }
    }
}

/// The entries of a snapshot after position `offset`.
pub fn entries_after(v: &[DirEntry], offset: u64) -> &[DirEntry] {
    &v[v.partition_point(|e| e.off <= offset)..]
}

pub fn dtype_of(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        _ => libc::DT_UNKNOWN,
    }
}

fn unsafe_zeroed_stat() -> crate::sys::Stat {
    crate::sys::zeroed_stat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, off: u64) -> DirEntry {
        DirEntry {
            name: name.into(),
            ino: 0,
            dtype: 0,
            layer: None,
            off,
        }
    }

    #[test]
    fn cookies_depend_on_the_name_only_and_stay_unique() {
        assert_eq!(cookie("a".as_ref()), cookie("a".as_ref()));
        assert_ne!(cookie("a".as_ref()), cookie("b".as_ref()));
        assert!(cookie("x".as_ref()) >= 3 && cookie("x".as_ref()) < 1 << 62);
        // Colliding cookies move up, in name order.
        let mut v = vec![entry("b", 7), entry("a", 7), entry("c", 5)];
        in_cookie_order(&mut v);
        let got: Vec<_> = v
            .iter()
            .map(|e| (e.name.to_str().unwrap(), e.off))
            .collect();
        assert_eq!(got, [("c", 5), ("a", 7), ("b", 8)]);
        // Reading on after a position skips what came before it.
        let names: Vec<_> = entries_after(&v, 5).iter().map(|e| e.off).collect();
        assert_eq!(names, [7, 8]);
        assert!(entries_after(&v, 8).is_empty());
        assert_eq!(entries_after(&v, 0).len(), 3);
    }
}
