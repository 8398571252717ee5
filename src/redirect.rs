//! Redirects in lookup (the kernel's ovl_check_redirect and the redirect
//! part of ovl_lookup_layer): where the lookups still to do go, walking an
//! absolute redirect through each layer, and metacopy files' data.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::config::RedirectDir;
use crate::format;
use crate::layer::join;
use crate::sys::is_dir;
use crate::{Errno, OvlFs, Result};

/// What walking a redirected path through one layer found.
pub(crate) enum Walk {
    /// A dir on the way is missing here: this layer adds nothing.
    Missing,
    /// A whiteout or non-dir on the way: no layer below is looked at.
    Stop,
    /// The dir exists here. `rename`: the path the layers below look up
    /// instead; `opaque`: no layer below is looked at.
    Found {
        rename: Option<Vec<u8>>,
        opaque: bool,
    },
}

impl OvlFs {
    /// Points the lookups still to do (`cands[from..]`) at a redirect: a
    /// relative one renames the entry within each layer's dir, an absolute
    /// one restarts from the root of every lower below `layer`.
    pub(crate) fn apply_redirect(
        &self,
        cands: &mut Vec<(u16, Vec<u8>, Vec<u8>)>,
        from: usize,
        layer: Option<u16>,
        r: &[u8],
        data: bool,
    ) {
        if let Some(abs) = r.strip_prefix(b"/") {
            let (dir, name) = crate::layer::split_parent(abs);
            let dir = if dir == b"." {
                Vec::new()
            } else {
                dir.to_vec()
            };
            cands.truncate(from);
            let first = layer.map(|l| l as usize + 1).unwrap_or(0);
            for (j, l) in self.lowers.iter().enumerate().skip(first) {
                if l.data_only && !data {
                    break;
                }
                cands.push((j as u16, dir.clone(), name.as_bytes().to_vec()));
            }
        } else {
            for c in cands.iter_mut().skip(from) {
                c.2 = r.to_vec();
            }
        }
    }

    /// Walks `dir` (from the layer root) in `layer` one component at a
    /// time. A dir on the way that this layer redirects renames the rest of
    /// the path for the layers below: a stack of container layers moves a
    /// dir in one layer and its child in the next.
    pub(crate) fn walk_redirected(&self, layer: &crate::layer::Layer, dir: &[u8]) -> Result<Walk> {
        let comps: Vec<&[u8]> = dir
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let mut phys: Vec<u8> = Vec::new();
        // The path the layers below see, up to the current component.
        let mut logical: Vec<u8> = Vec::new();
        let (mut renamed, mut opaque) = (false, false);
        for comp in &comps {
            let parent = phys.clone();
            let comp = OsStr::from_bytes(comp);
            phys = join(&parent, comp);
            logical = join(&logical, comp);
            let Some(st) = layer.try_stat(&phys)? else {
                let wh = join(&parent, &format::aufs_whiteout_name(comp));
                return Ok(match layer.try_stat(&wh)? {
                    Some(_) => Walk::Stop,
                    None => Walk::Missing,
                });
            };
            if !is_dir(&st) || format::is_whiteout(&st) || self.is_xwhiteout(layer, &phys, &st)? {
                return Ok(Walk::Stop);
            }
            let m = self.dir_marks(layer, &phys)?;
            if m.opaque {
                opaque = true;
                continue;
            }
            let Some(r) = m.redirect.filter(|_| self.follow_redirects()) else {
                continue;
            };
            renamed = true;
            logical = match r.strip_prefix(b"/") {
                Some(abs) => {
                    opaque = false;
                    abs.to_vec()
                }
                None => {
                    let (p, _) = crate::layer::split_parent(&logical);
                    let p = if p == b"." { &b""[..] } else { p };
                    join(p, OsStr::from_bytes(&r))
                }
            };
        }
        let rename = renamed.then_some(logical);
        Ok(Walk::Found { rename, opaque })
    }

    /// Whether a lower regular file is a metacopy (metacopy=on): if so, the
    /// lookups still to do are pointed at its data (its redirect, if any).
    pub(crate) fn lower_metacopy(
        &self,
        layer: &crate::layer::Layer,
        path: &[u8],
        cands: &mut Vec<(u16, Vec<u8>, Vec<u8>)>,
        from: usize,
    ) -> Result<bool> {
        if !self.cfg.metacopy || layer.try_getxattr(path, &self.xn.metacopy)?.is_none() {
            return Ok(false);
        }
        if let Some(r) = layer.try_getxattr(path, &self.xn.redirect)? {
            if !format::redirect_valid(&r) {
                log::warn!(
                    "{}: bad redirect xattr in {}",
                    String::from_utf8_lossy(path),
                    layer.path.display()
                );
                return Err(Errno::EIO);
            }
            let li = (layer.idx - 1) as u16;
            self.apply_redirect(cands, from, Some(li), &r, true);
        }
        Ok(true)
    }

    pub(crate) fn follow_redirects(&self) -> bool {
        self.cfg.redirect_dir != RedirectDir::NoFollow
    }
}
