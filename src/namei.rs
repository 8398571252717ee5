//! Lookup (the kernel's namei.c): find a name top to bottom through the
//! parent's layer stack, stopping at whiteouts, opaque dirs and non-dirs.

use std::ffi::OsStr;
use std::sync::Arc;

use crate::format;
use crate::layer::join;
use crate::node::{Found, LowerRef, Node};
use crate::sys::Stat;
use crate::{errno, OvlFs, Result};

fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl OvlFs {
    /// Resolves `name` in `parent`. None: no such entry in the merged view.
    pub fn lookup_found(&self, parent: &Node, name: &OsStr) -> Result<Option<(Found, Stat)>> {
        if !parent.is_dir() {
            return errno(libc::ENOTDIR);
        }
        OvlFs::check_name(name)?;
        let ppath = self.path_of(parent)?;
        let path = join(&ppath, name);
        let plowers = parent.state.read().lowers.clone();

        let mut top: Option<(Stat, usize)> = None;
        let mut upper = false;
        let mut lowers = Vec::new();
        let mut descend = true;
        if parent.has_upper() {
            let u = self.upper()?;
            if let Some(st) = u.try_stat(&path)? {
                if format::is_whiteout(&st) {
                    return Ok(None);
                }
                upper = true;
                descend = is_dir(&st) && !self.is_opaque(u, &path, false)?;
                top = Some((st, 0));
            }
        }
        if descend {
            for l in &plowers {
                let layer = &self.lowers[l.layer as usize];
                let ldir = match &l.path {
                    Some(p) => p.to_vec(),
                    None => ppath.clone(),
                };
                let lpath = join(&ldir, name);
                let Some(st) = layer.try_stat(&lpath)? else {
                    // An AUFS whiteout hides the name in this layer and below.
                    if format::is_aufs_name(name) {
                        continue;
                    }
                    if layer
                        .try_stat(&join(&ldir, &format::aufs_whiteout_name(name)))?
                        .is_some()
                    {
                        break;
                    }
                    continue;
                };
                if format::is_whiteout(&st) {
                    break;
                }
                let lref = LowerRef {
                    layer: l.layer,
                    path: l.path.as_ref().map(|_| Arc::from(lpath.as_slice())),
                };
                match &top {
                    None => {
                        top = Some((st, layer.idx));
                        lowers.push(lref);
                        if !is_dir(&st) {
                            break;
                        }
                    }
                    // Only dirs merge; a non-dir below a dir ends the stack.
                    Some(_) if !is_dir(&st) => break,
                    Some(_) => lowers.push(lref),
                }
                if self.is_opaque(layer, &lpath, true)? {
                    break;
                }
            }
        }
        let Some((mut st, idx)) = top else {
            return Ok(None);
        };
        // Lower names that spell AUFS markers never show.
        if !upper && format::is_aufs_name(name) {
            return Ok(None);
        }
        let ino = if upper {
            match self.copied.get(&st.st_ino) {
                Some(i) => *i,
                None => self.map_ino(0, &st),
            }
        } else {
            self.map_ino(idx, &st)
        };
        st.st_ino = ino;
        let kind = st.st_mode & libc::S_IFMT;
        Ok(Some((
            Found {
                ino,
                kind,
                upper,
                lowers,
            },
            st,
        )))
    }

    /// Looks up and interns the node; `count` adds a kernel lookup reference.
    pub fn lookup(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        count: bool,
    ) -> Result<(Arc<Node>, Stat)> {
        match self.lookup_found(parent, name)? {
            Some((found, st)) => {
                let merged_dir =
                    found.kind == libc::S_IFDIR && found.upper as usize + found.lowers.len() > 1;
                let found_upper = found.upper;
                let node = self.nodes.intern(parent, name, found, count);
                if node.has_upper() && !found_upper {
                    // Another name of a file already copied up: its data lives there.
                    return Ok((node.clone(), self.getattr(&node, None)?));
                }
                let mut st = st;
                self.fix_stat(&node, &mut st, merged_dir);
                Ok((node, st))
            }
            None => errno(libc::ENOENT),
        }
    }

    /// Whether some lower layer of `parent` still has `name` (so removing the
    /// upper entry needs a whiteout).
    pub fn lower_positive(&self, parent: &Node, name: &OsStr) -> Result<bool> {
        let ppath = self.path_of(parent)?;
        let plowers = parent.state.read().lowers.clone();
        for l in &plowers {
            let layer = &self.lowers[l.layer as usize];
            let ldir = match &l.path {
                Some(p) => p.to_vec(),
                None => ppath.clone(),
            };
            match layer.try_stat(&join(&ldir, name))? {
                Some(st) if format::is_whiteout(&st) => return Ok(false),
                Some(_) => return Ok(true),
                None => {
                    if layer
                        .try_stat(&join(&ldir, &format::aufs_whiteout_name(name)))?
                        .is_some()
                    {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(false)
    }
}
