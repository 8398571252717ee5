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
use crate::format;
use crate::layer::join;
use crate::node::Node;
use crate::sys::is_dir;
use crate::sys::{self};
use crate::workdir::clean_dir;
use crate::{Errno, OvlFs, Result};

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

/// The two names of a rename.
#[derive(Clone, Copy)]
struct RenameNames<'a> {
    parent: &'a Arc<Node>,
    name: &'a OsStr,
    newparent: &'a Arc<Node>,
    newname: &'a OsStr,
}

/// One rename's state from check to commit (as the kernel's ovl_rename
/// carries in ovl_renamedata).
struct RenameCtx<'a> {
    n: RenameNames<'a>,
    exchange: bool,
    src: Arc<Node>,
    src_dir: bool,
    dst: Option<(Arc<Node>, crate::sys::Stat)>,
    src_redirect: Option<Vec<u8>>,
    dst_redirect: Option<Vec<u8>>,
}

/// The upper entries a rename commits: source and target, by dir fd.
struct UpperNames<'a> {
    spfd: &'a OwnedFd,
    sname: &'a CStr,
    dpfd: &'a OwnedFd,
    dname: &'a CStr,
}

impl UpperNames<'_> {
    /// Swaps the two upper entries (RENAME_EXCHANGE).
    fn exchange(&self) -> Result<()> {
        let (s, d) = (self.spfd.as_fd(), self.dpfd.as_fd());
        Ok(sys::renameat2(
            s,
            self.sname,
            d,
            self.dname,
            sys::RENAME_EXCHANGE,
        )?)
    }
}

/// A dir with lower content.
fn has_lower_dir(n: &Node) -> bool {
    n.is_dir() && !n.state.read().lowers.is_empty()
}

fn metacopy(n: &Node) -> bool {
    n.state.read().metacopy
}

/// Moves by a redirect to its lower content: a lower or merged dir, or a
/// metacopy file.
fn moves_by_redirect(n: &Node) -> bool {
    has_lower_dir(n) || metacopy(n)
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
            return Err(Errno::EROFS);
        }
        OvlFs::check_name(newname)?;
        if flags & !(sys::RENAME_NOREPLACE | sys::RENAME_EXCHANGE) != 0
            || flags == sys::RENAME_NOREPLACE | sys::RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL);
        }
        // Lookups and copy-ups resolve paths like any request; the commit,
        // from the upper paths to the new aliases, runs alone.
        let paths = self.rename_lock.paths();
        let names = RenameNames {
            parent,
            name,
            newparent,
            newname,
        };
        let Some(mut r) = self.rename_check(names, flags)? else {
            return Ok(());
        };
        self.rename_prepare(&r)?;
        drop(paths);
        let _commit = self.rename_lock.commit();
        self.rename_commit(&mut r)
    }

    /// The checks before anything changes: flags against what exists,
    /// types, emptiness, and the redirects lower dirs need. None: nothing
    /// to do (two names of one object).
    fn rename_check<'a>(&self, n: RenameNames<'a>, flags: u32) -> Result<Option<RenameCtx<'a>>> {
        let exchange = flags & sys::RENAME_EXCHANGE != 0;
        let (src, sst) = self.lookup(n.parent, n.name, false)?;
        let dst = match self.lookup(n.newparent, n.newname, false) {
            Ok(d) => Some(d),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        if flags & sys::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        // A dir with lower content moves only by a redirect to that content.
        let redirects = self.cfg.redirect_dir == RedirectDir::On;
        if has_lower_dir(&src) && !redirects {
            return Err(Errno::EXDEV);
        }
        let src_redirect = match has_lower_dir(&src) {
            true => self.redirect_for(&src, n.parent, n.name, n.newparent)?,
            false => None,
        };
        let mut r = RenameCtx {
            n,
            exchange,
            src_dir: is_dir(&sst),
            src,
            dst,
            src_redirect,
            dst_redirect: None,
        };
        if r.dst.is_some() && !self.rename_check_target(&mut r, redirects)? {
            return Ok(None);
        }
        Ok(Some(r))
    }

    /// The checks on an existing target; false: nothing to do.
    fn rename_check_target(&self, r: &mut RenameCtx, redirects: bool) -> Result<bool> {
        let (dnode, dst_st) = r.dst.as_ref().expect("a target");
        if Arc::ptr_eq(dnode, &r.src) {
            return Ok(false);
        }
        // Two names of one object: the VFS does nothing. With the index the
        // names of a lower hard link are one object for the kernel, though
        // each has a node of its own here; the kernel will move its entry
        // for the old name onto the new one, both names stay.
        let one_inode = self.index.is_some()
            && !dnode.is_dir()
            && dnode.kind() == r.src.kind()
            && dnode.st_ino() == r.src.st_ino();
        if one_inode {
            self.invalidate_entry_later(r.n.newparent.ino, r.n.newname);
            return Ok(false);
        }
        if r.exchange {
            if has_lower_dir(dnode) {
                if !redirects {
                    return Err(Errno::EXDEV);
                }
                r.dst_redirect =
                    self.redirect_for(dnode, r.n.newparent, r.n.newname, r.n.parent)?;
            }
        } else if is_dir(dst_st) {
            if !r.src_dir {
                return Err(Errno::EISDIR);
            }
            // A pure upper target is checked by the upper rename itself,
            // after the source got its markers, as in the kernel.
            if has_lower_dir(dnode) && !self.merged_empty(dnode)? {
                return Err(Errno::ENOTEMPTY);
            }
        } else if r.src_dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(true)
    }

    /// Copy-ups: both parents, the source (its metadata), and an exchanged
    /// target; a replaced hard link first goes into the index.
    fn rename_prepare(&self, r: &RenameCtx) -> Result<()> {
        let n = &r.n;
        self.copy_up(n.parent, CopyUp::Data)?;
        self.copy_up(n.newparent, CopyUp::Data)?;
        self.copy_up_name(&r.src, n.parent, n.name, CopyUp::Meta)?;
        match &r.dst {
            Some((d, _)) if r.exchange => {
                self.copy_up_name(d, n.newparent, n.newname, CopyUp::Meta)
            }
            Some((d, dst_st)) if !d.is_dir() => {
                self.index_before_drop(d, n.newparent, n.newname, dst_st)
            }
            _ => Ok(()),
        }
    }

    /// The commit, under the rename lock alone: redirects, then the upper
    /// rename (or exchange), then the node table.
    fn rename_commit(&self, r: &mut RenameCtx) -> Result<()> {
        let n = &r.n;
        let spath = join(&self.path_of(n.parent)?, n.name);
        let dpath = join(&self.path_of(n.newparent)?, n.newname);
        let (spfd, sname) = self.upper_parent(&spath)?;
        let (dpfd, dname) = self.upper_parent(&dpath)?;
        let up = UpperNames {
            spfd: &spfd,
            sname: &sname,
            dpfd: &dpfd,
            dname: &dname,
        };
        let samedir = Arc::ptr_eq(n.parent, n.newparent);
        // A metacopy file moves like a lower dir: a redirect finds its data.
        if metacopy(&r.src) {
            r.src_redirect = self.redirect_for(&r.src, n.parent, n.name, n.newparent)?;
        }
        if let Some((d, _)) = r.dst.as_ref().filter(|_| r.exchange) {
            if metacopy(d) {
                r.dst_redirect = self.redirect_for(d, n.newparent, n.newname, n.parent)?;
            }
        }
        if moves_by_redirect(&r.src) {
            let v = r.src_redirect.as_deref();
            self.set_redirect(&r.src, &spfd, &sname, v, n.newparent, samedir)?;
        }
        if r.exchange {
            return self.rename_exchange(r, &up, samedir);
        }
        self.rename_move(r, &up, &dpath)
    }

    /// RENAME_EXCHANGE: both entries swap, with their markers.
    fn rename_exchange(&self, r: &RenameCtx, up: &UpperNames, samedir: bool) -> Result<()> {
        let n = &r.n;
        let (d, _) = r.dst.as_ref().expect("checked");
        if moves_by_redirect(d) {
            let v = r.dst_redirect.as_deref();
            self.set_redirect(d, up.dpfd, up.dname, v, n.parent, samedir)?;
        }
        if r.src_dir && !moves_by_redirect(&r.src) && Self::is_merged_dir(n.newparent) {
            self.set_opaque(up.spfd.as_fd(), up.sname)?;
        }
        if d.is_dir() && !moves_by_redirect(d) && Self::is_merged_dir(n.parent) {
            self.set_opaque(up.dpfd.as_fd(), up.dname)?;
        }
        up.exchange()?;
        r.src.rename_alias(n.parent, n.name, n.newparent, n.newname);
        d.rename_alias(n.newparent, n.newname, n.parent, n.name);
        self.splits
            .moved(&r.src, n.parent, n.name, n.newparent, n.newname);
        self.splits
            .moved(d, n.newparent, n.newname, n.parent, n.name);
        Ok(())
    }

    /// A plain rename: the source moves (leaving a whiteout where a lower
    /// name is left to hide) over whatever the target was.
    fn rename_move(&self, r: &RenameCtx, up: &UpperNames, dpath: &[u8]) -> Result<()> {
        let n = &r.n;
        let src_needs_wh = self.lower_positive(n.parent, n.name)?;
        let dup = self.upper()?.try_stat(dpath)?;
        let pin = match (&r.dst, &dup) {
            (Some((d, _)), Some(u)) => self.inos.pin_removed(d, up.dpfd, up.dname, u),
            _ => None,
        };
        // Like the kernel: a pure upper dir moving into a merged dir becomes
        // opaque, so lower entries of its new name can never show through.
        if r.src_dir && !moves_by_redirect(&r.src) && Self::is_merged_dir(n.newparent) {
            self.set_opaque(up.spfd.as_fd(), up.sname)?;
        }
        match dup {
            Some(d) if r.src_dir && format::is_whiteout(&d) => {
                up.exchange()?;
                if !src_needs_wh {
                    sys::unlinkat(up.spfd.as_fd(), up.sname, 0)?;
                }
            }
            _ => {
                let dst_merged = r.dst.as_ref().is_some_and(|(d, _)| moves_by_redirect(d));
                if dup.as_ref().is_some_and(|d| dst_merged && is_dir(d)) {
                    // Merged-empty: it holds whiteouts only.
                    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
                    clean_dir(&sys::open_beneath(up.dpfd.as_fd(), up.dname, flags, 0)?)?;
                }
                self.work()?
                    .rename_whiteout(up.spfd, up.sname, up.dpfd, up.dname, src_needs_wh)?;
            }
        }
        if let Some(ust) = dup.filter(|d| !format::is_whiteout(d)) {
            self.inos.forget_upper(&ust);
        }
        if let Some((d, dst_st)) = &r.dst {
            self.inos.keep_pin(d, pin);
            // Read first: store_nlink takes the state lock for writing.
            let counted = d.state.read().nlink();
            if let Some(nl) = counted {
                self.store_nlink(d, nl.saturating_sub(1))?;
            }
            let last = is_dir(dst_st) || dst_st.st_nlink <= 1;
            self.detach(d, n.newparent, n.newname, last);
        }
        r.src.rename_alias(n.parent, n.name, n.newparent, n.newname);
        self.splits
            .moved(&r.src, n.parent, n.name, n.newparent, n.newname);
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
        let mut existing = node.state.read().redirect().cloned();
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
                let (p, own) = st.aliases.first().ok_or(Errno::ENOENT)?;
                match st.redirect().map(|r| &**r) {
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
            return Err(Errno::EXDEV);
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
            crate::stats::add(&crate::stats::STATS.redirects, 1);
            node.state.write().set_redirect(Some(Arc::from(v)));
        }
        if !samedir {
            self.set_impure(&self.path_of(newparent)?)?;
        }
        for n in self.nodes.all() {
            if !is_under(&n, node) {
                continue;
            }
            n.pin_lower_paths();
        }
        Ok(())
    }
}
