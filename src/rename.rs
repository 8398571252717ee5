//! rename (the kernel's ovl_rename in dir.c): copy up, check, then commit
//! under the rename lock; redirects for lower and merged dirs and for
//! metacopy files, whiteouts at the old name, opaque dirs moving into
//! merged ones, RENAME_NOREPLACE and RENAME_EXCHANGE.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::config::RedirectDir;
use crate::copy_up::CopyUp;
use crate::dir::is_dir;
use crate::format;
use crate::layer::join;
use crate::node::Node;
use crate::ovl::clean_dir;
use crate::sys::{self};
use crate::{errno, Errno, OvlFs, Result};

/// Whether `n` is `top` or lies below it.
fn is_under(n: &Arc<Node>, top: &Arc<Node>) -> bool {
    let mut cur = Some(n.clone());
    while let Some(c) = cur {
        if Arc::ptr_eq(&c, top) {
            return true;
        }
        cur = c.parent();
    }
    false
}

impl OvlFs {
    pub fn rename(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        newparent: &Arc<Node>,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        if self.read_only() {
            return errno(libc::EROFS);
        }
        OvlFs::check_name(newname)?;
        if flags & !(sys::RENAME_NOREPLACE | sys::RENAME_EXCHANGE) != 0
            || flags == sys::RENAME_NOREPLACE | sys::RENAME_EXCHANGE
        {
            return errno(libc::EINVAL);
        }
        let exchange = flags & sys::RENAME_EXCHANGE != 0;
        // Lookups and copy-ups resolve paths like any request; the commit,
        // from the upper paths to the new aliases, runs alone.
        let paths = self.rename_lock.paths();
        let (src, sst) = self.lookup(parent, name, false)?;
        let dst = match self.lookup(newparent, newname, false) {
            Ok(d) => Some(d),
            Err(Errno(libc::ENOENT)) => None,
            Err(e) => return Err(e),
        };
        if flags & sys::RENAME_NOREPLACE != 0 && dst.is_some() {
            return errno(libc::EEXIST);
        }
        if exchange && dst.is_none() {
            return errno(libc::ENOENT);
        }
        let src_dir = is_dir(&sst);
        // A dir with lower content moves only by a redirect to that content.
        let lower_dir = |n: &Node| n.is_dir() && !n.state.read().lowers.is_empty();
        let redirects = self.cfg.redirect_dir == RedirectDir::On;
        if lower_dir(&src) && !redirects {
            return errno(libc::EXDEV);
        }
        let src_redirect = match lower_dir(&src) {
            true => self.redirect_for(&src, parent, name, newparent)?,
            false => None,
        };
        let mut dst_redirect = None;
        if let Some((dnode, dst_st)) = &dst {
            // Two names of one object: the VFS does nothing. With the index
            // the names of a lower hard link are one object for the kernel,
            // though each has a node of its own here.
            let one_inode = self.index.is_some()
                && !dnode.is_dir()
                && dnode.kind == src.kind
                && dnode.st_ino() == src.st_ino();
            if Arc::ptr_eq(dnode, &src) {
                return Ok(());
            }
            if one_inode {
                // The kernel will move its entry for the old name onto the
                // new one; both names stay, each with its own node.
                self.invalidate_entry_later(newparent.ino, newname);
                return Ok(());
            }
            if exchange {
                if lower_dir(dnode) {
                    if !redirects {
                        return errno(libc::EXDEV);
                    }
                    dst_redirect = self.redirect_for(dnode, newparent, newname, parent)?;
                }
            } else if is_dir(dst_st) {
                if !src_dir {
                    return errno(libc::EISDIR);
                }
                // A pure upper target is checked by the upper rename itself,
                // after the source got its markers, as in the kernel.
                if lower_dir(dnode) && !self.merged_empty(dnode)? {
                    return errno(libc::ENOTEMPTY);
                }
            } else if src_dir {
                return errno(libc::ENOTDIR);
            }
        }
        self.copy_up(parent, CopyUp::Data)?;
        self.copy_up(newparent, CopyUp::Data)?;
        self.copy_up_name(&src, parent, name, CopyUp::Meta)?;
        match &dst {
            Some((d, _)) if exchange => self.copy_up_name(d, newparent, newname, CopyUp::Meta)?,
            Some((d, dst_st)) if !d.is_dir() => {
                self.index_before_drop(d, newparent, newname, dst_st)?
            }
            _ => {}
        }
        drop(paths);
        let _commit = self.rename_lock.commit();
        let spath = join(&self.path_of(parent)?, name);
        let dpath = join(&self.path_of(newparent)?, newname);
        let (spfd, sname) = self.upper_parent(&spath)?;
        let (dpfd, dname) = self.upper_parent(&dpath)?;
        // Swaps the two upper entries (RENAME_EXCHANGE).
        let exchange_upper = || {
            sys::renameat2(
                spfd.as_fd(),
                &sname,
                dpfd.as_fd(),
                &dname,
                sys::RENAME_EXCHANGE,
            )
        };
        let samedir = Arc::ptr_eq(parent, newparent);
        // A metacopy file moves like a lower dir: a redirect finds its data.
        let metacopy = |n: &Node| n.state.read().metacopy;
        let src_redirect = match metacopy(&src) {
            true => self.redirect_for(&src, parent, name, newparent)?,
            false => src_redirect,
        };
        if exchange {
            let (d, _) = dst.as_ref().expect("checked");
            if metacopy(d) {
                dst_redirect = self.redirect_for(d, newparent, newname, parent)?;
            }
        }
        let lower_dir = |n: &Node| lower_dir(n) || metacopy(n);
        if lower_dir(&src) {
            self.set_redirect(
                &src,
                &spfd,
                &sname,
                src_redirect.as_deref(),
                newparent,
                samedir,
            )?;
        }
        if exchange {
            let (d, _) = dst.expect("checked");
            if lower_dir(&d) {
                self.set_redirect(&d, &dpfd, &dname, dst_redirect.as_deref(), parent, samedir)?;
            }
            if src_dir && !lower_dir(&src) && Self::is_merged_dir(newparent) {
                self.set_opaque(spfd.as_fd(), &sname)?;
            }
            if d.is_dir() && !lower_dir(&d) && Self::is_merged_dir(parent) {
                self.set_opaque(dpfd.as_fd(), &dname)?;
            }
            exchange_upper()?;
            src.rename_alias(parent, name, newparent, newname);
            d.rename_alias(newparent, newname, parent, name);
            self.move_split(&src, parent, name, newparent, newname);
            self.move_split(&d, newparent, newname, parent, name);
            return Ok(());
        }
        let src_needs_wh = self.lower_positive(parent, name)?;
        let dup = self.upper()?.try_stat(&dpath)?;
        let pin = match (&dst, &dup) {
            (Some((d, _)), Some(u)) => self.pin_removed(d, &dpfd, &dname, u),
            _ => None,
        };
        // Like the kernel: a pure upper dir moving into a merged dir becomes
        // opaque, so lower entries of its new name can never show through.
        if src_dir && !lower_dir(&src) && Self::is_merged_dir(newparent) {
            self.set_opaque(spfd.as_fd(), &sname)?;
        }
        match dup {
            Some(d) if src_dir && format::is_whiteout(&d) => {
                exchange_upper()?;
                if !src_needs_wh {
                    sys::unlinkat(spfd.as_fd(), &sname, 0)?;
                }
            }
            _ => {
                let dst_merged = dst.as_ref().is_some_and(|(d, _)| lower_dir(d));
                if let Some(d) = dup.as_ref().filter(|_| dst_merged) {
                    if is_dir(d) {
                        // Merged-empty: it holds whiteouts only.
                        let fd = sys::open_beneath(
                            dpfd.as_fd(),
                            &dname,
                            libc::O_RDONLY | libc::O_DIRECTORY,
                            0,
                        )?;
                        clean_dir(&fd)?;
                    }
                }
                self.rename_whiteout(&spfd, &sname, &dpfd, &dname, src_needs_wh)?;
            }
        }
        if let Some(ust) = dup.filter(|d| !format::is_whiteout(d)) {
            self.forget_upper_ino(&ust);
        }
        if let Some((d, _)) = &dst {
            self.keep_pin(d, pin);
        }
        if let Some((d, dst_st)) = &dst {
            let counted = d.state.read().nlink;
            if let Some(n) = counted {
                self.store_nlink(d, n.saturating_sub(1))?;
            }
            self.detach(
                d,
                newparent,
                newname,
                is_dir(dst_st) || dst_st.st_nlink <= 1,
            );
        }
        src.rename_alias(parent, name, newparent, newname);
        self.move_split(&src, parent, name, newparent, newname);
        Ok(())
    }

    /// The redirect a lower/merged dir needs when it moves from (parent, name)
    /// to `newparent`, as the kernel writes it: the old name when it stays in
    /// its dir, else the absolute path of its lower content. None: the one it
    /// has still holds.
    fn redirect_for(
        &self,
        node: &Arc<Node>,
        parent: &Arc<Node>,
        name: &OsStr,
        newparent: &Arc<Node>,
    ) -> Result<Option<Vec<u8>>> {
        // As the kernel's ovl_need_absolute_redirect: names of a lower hard
        // link may end up in different dirs, so theirs are absolute.
        let abs = !node.is_dir() && self.lower_nlink(node)? > 1;
        self.redirect_for_abs(node, parent, name, newparent, abs)
    }

    /// The link count of the object's top lower, 0 for a pure upper one.
    fn lower_nlink(&self, node: &Node) -> Result<u64> {
        let Some(l) = node.state.read().lowers.first().cloned() else {
            return Ok(0);
        };
        let Some(path) = node.lower_path(&l) else {
            return Ok(0);
        };
        let layer = &self.lowers[l.layer as usize];
        Ok(layer.try_stat(&path)?.map_or(0, |st| st.st_nlink))
    }

    pub(crate) fn redirect_for_abs(
        &self,
        node: &Arc<Node>,
        parent: &Arc<Node>,
        name: &OsStr,
        newparent: &Arc<Node>,
        abs: bool,
    ) -> Result<Option<Vec<u8>>> {
        let samedir = Arc::ptr_eq(parent, newparent) && !abs;
        // The redirect belongs to the inode: another name of it (through
        // the index) may have set one already, which then holds.
        let mut existing = node.state.read().redirect.clone();
        if existing.is_none() && node.has_upper() && !node.is_dir() {
            let (layer, path) = self.real(node)?;
            existing = layer
                .try_getxattr(&path, &self.xn.redirect)?
                .map(|v| Arc::from(v.as_slice()));
        }
        if let Some(r) = &existing {
            if samedir || r.first() == Some(&b'/') {
                return Ok(None);
            }
        }
        let v = if samedir {
            name.as_bytes().to_vec()
        } else {
            let mut parts: Vec<Vec<u8>> = Vec::new();
            let mut cur = Some(node.clone());
            while let Some(n) = cur.filter(|n| n.ino != crate::node::ROOT_INO) {
                let st = n.state.read();
                let (p, own) = st.aliases.first().ok_or(Errno(libc::ENOENT))?;
                match st.redirect.as_deref() {
                    Some(r) if r.first() == Some(&b'/') => {
                        parts.push(r[1..].to_vec());
                        break;
                    }
                    Some(r) => parts.push(r.to_vec()),
                    None => parts.push(own.as_bytes().to_vec()),
                }
                cur = Some(p.clone());
            }
            let mut v = Vec::new();
            for p in parts.iter().rev() {
                v.push(b'/');
                v.extend_from_slice(p);
            }
            v
        };
        // The kernel's redirect_max: longer ones fall back to a copy (EXDEV).
        if v.len() > 256 {
            return errno(libc::EXDEV);
        }
        Ok(Some(v))
    }

    /// Writes the redirect of a moving lower/merged dir and pins the lower
    /// paths of everything below it, which no longer follow its merged path.
    fn set_redirect(
        &self,
        node: &Arc<Node>,
        pfd: &OwnedFd,
        cname: &CStr,
        value: Option<&[u8]>,
        newparent: &Arc<Node>,
        samedir: bool,
    ) -> Result<()> {
        if let Some(v) = value {
            sys::setxattr(pfd.as_fd(), cname, &self.xn.redirect, v, 0)?;
            node.state.write().redirect = Some(Arc::from(v));
        }
        if !samedir {
            let np = self.path_of(newparent)?;
            self.upper()?.setxattr(&np, &self.xn.impure, b"y", 0)?;
        }
        for n in self.nodes.all() {
            if !is_under(&n, node) {
                continue;
            }
            let Some(path) = n.path() else { continue };
            let mut st = n.state.write();
            for l in st.lowers.iter_mut().filter(|l| l.path.is_none()) {
                l.path = Some(Arc::from(path.as_slice()));
            }
        }
        Ok(())
    }
}
