//! Namespace operations (the kernel's dir.c): create, link, unlink and rmdir,
//! with whiteouts and opaque dirs in the kernel's format (rename: rename.rs).

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::copy_up::CopyUp;
use crate::format;
use crate::layer::{join, to_c};
use crate::node::{Found, Node};
use crate::sys::{self, is_dir, Stat};
use crate::workdir::{clean_dir, Whiteouts};
use crate::{Errno, OvlFs, Result};

/// The caller's ids: new objects belong to them.
#[derive(Debug, Clone, Copy)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

/// What to create.
#[derive(Debug, Clone, Copy)]
pub enum NewObj<'a> {
    Dir(u32),
    File(u32),
    Special(u32, u64),
    Symlink(&'a CStr),
}

/// What a new name goes over in the upper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Nothing,
    /// A char 0/0 whiteout at the name: replaced atomically.
    Device,
    /// A `.wh.NAME` marker beside it: dropped once the name is taken.
    Marker,
}

impl OvlFs {
    /// Checks that `name` is free in the merged view, copies the parent up,
    /// and tells whether the upper holds a whiteout there.
    fn prepare_create(&self, parent: &Arc<Node>, name: &OsStr) -> Result<(Vec<u8>, Over)> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        if format::is_aufs_name(name) {
            // `.wh.` names are whiteout markers in every layer, never entries.
            return Err(Errno::EINVAL);
        }
        let parent_had_upper = parent.has_upper();
        let mut over_whiteout = false;
        if self
            .lookup_found_ex(parent, name, &mut over_whiteout, None)?
            .is_some()
        {
            return Err(Errno::EEXIST);
        }
        self.copy_up(parent, CopyUp::Data)?;
        let path = join(&self.path_of(parent)?, name);
        if !parent_had_upper || !over_whiteout {
            // A parent just copied up holds no whiteouts.
            return Ok((path, Over::Nothing));
        }
        // A char 0/0 at the name, or a `.wh.` marker beside it (this upper's
        // form, or one fuse-overlayfs left).
        let device = self.whiteouts() == Whiteouts::Device
            && self
                .upper()?
                .try_stat(&path)?
                .is_some_and(|st| format::is_whiteout(&st));
        Ok((path, if device { Over::Device } else { Over::Marker }))
    }

    /// Makes `obj`; a file comes with the fd it was made by, opened with
    /// `open` (the access mode and flags of create(2), whose open keeps it,
    /// as the kernel's create opens what it made whatever its mode says).
    fn make_obj(dir: BorrowedFd, name: &CStr, obj: NewObj, open: i32) -> Result<Option<OwnedFd>> {
        match obj {
            NewObj::Dir(mode) => sys::mkdirat(dir, name, mode & 0o7777)?,
            NewObj::File(mode) => {
                let flags = open | libc::O_CREAT | libc::O_EXCL;
                return Ok(Some(sys::openat(dir, name, flags, mode & 0o7777)?));
            }
            NewObj::Special(mode, rdev) => sys::mknodat(dir, name, mode, rdev)?,
            NewObj::Symlink(target) => sys::symlinkat(target, dir, name)?,
        }
        Ok(None)
    }

    /// Gives a new object to the caller, keeping the set-id bits asked for.
    /// `parent`: the dir it will end up in, when it was built elsewhere
    /// (W/work); None: `dir` is that dir. A setgid parent gives its group,
    /// and to a dir its setgid bit, as creating there directly does.
    fn set_owner(
        dir: BorrowedFd,
        name: &CStr,
        obj: NewObj,
        c: Creds,
        parent: Option<&Stat>,
    ) -> Result<Option<Stat>> {
        let mut st = sys::fstatat(dir, name)?;
        // Made in place with the caller's ids: the kernel applied any setgid.
        let (gid, sgid) = match parent {
            None if st.st_uid == c.uid && st.st_gid == c.gid => (c.gid, st.st_mode & libc::S_ISGID),
            _ => {
                let p = match parent {
                    Some(p) => *p,
                    None => sys::fstatat(dir, c".")?,
                };
                match p.st_mode & libc::S_ISGID != 0 {
                    true => (p.st_gid, libc::S_ISGID),
                    false => (c.gid, 0),
                }
            }
        };
        if st.st_uid != c.uid || st.st_gid != gid {
            sys::fchownat(dir, name, c.uid, gid)?;
            st = sys::fstatat(dir, name)?;
        }
        let mut want = match obj {
            NewObj::Dir(m) => (m & 0o7777) | sgid,
            NewObj::File(m) | NewObj::Special(m, _) => m & 0o7777,
            NewObj::Symlink(_) => return Ok(Some(st)),
        };
        // A default ACL of the dir it was made in (the parent's, or its
        // copy in W/work) set the permission bits (the real filesystem's
        // posix_acl_create): keep them.
        if st.st_mode & 0o777 != want & 0o777
            && sys::getxattr(dir, c".", c"system.posix_acl_default").is_ok()
        {
            want = (want & !0o777) | (st.st_mode & 0o777);
        }
        // chown drops set-id bits; put back what was asked for.
        if st.st_mode & 0o7777 != want {
            sys::fchmodat(dir, name, want)?;
            return Ok(None);
        }
        Ok(Some(st))
    }

    /// The owner of a new object (stored ids): its inode, or with
    /// xattr_permissions the override xattr. Some: its stat, if nothing
    /// changed it after that was taken (so it need not be taken again).
    fn own_new(
        &self,
        dir: BorrowedFd,
        name: &CStr,
        obj: NewObj,
        host: Creds,
        parent: Option<&Stat>,
    ) -> Result<Option<Stat>> {
        // Symlinks take no user.* xattrs: their owner stays in the inode.
        let (Some(x), false) = (&self.override_xattr, matches!(obj, NewObj::Symlink(_))) else {
            return Self::set_owner(dir, name, obj, host, parent);
        };
        let mode = match obj {
            NewObj::Dir(m) | NewObj::File(m) | NewObj::Special(m, _) => m & 0o7777,
            NewObj::Symlink(_) => 0o777,
        };
        let o = crate::format::OverrideStat {
            uid: host.uid,
            gid: host.gid,
            mode,
        };
        sys::setxattr(dir, name, x, &o.encode(), 0)?;
        Ok(None)
    }

    pub(crate) fn set_opaque(&self, dir: BorrowedFd, name: &CStr) -> Result<()> {
        sys::setxattr(dir, name, &self.xn.opaque, b"y", 0)?;
        Ok(())
    }

    /// mkdir, mknod and symlink.
    pub fn create_object(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        obj: NewObj,
        c: Creds,
    ) -> Result<(Arc<Node>, Stat)> {
        let (node, st, _) = self.create_object_open(parent, name, obj, libc::O_WRONLY, c)?;
        Ok((node, st))
    }

    /// create_object that also gives a new file's fd, opened with `open`.
    pub(crate) fn create_object_open(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        obj: NewObj,
        open: i32,
        c: Creds,
    ) -> Result<(Arc<Node>, Stat, Option<OwnedFd>)> {
        let _paths = self.rename_lock.paths();
        if let NewObj::Special(mode, rdev) = obj {
            // char 0/0 is the whiteout and is reserved.
            if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
                return Err(Errno::EPERM);
            }
        }
        let (uid, gid) = self.ids.creator(c.uid, c.gid);
        let c = Creds { uid, gid };
        let (path, over) = self.prepare_create(parent, name)?;
        let (pfd, cname) = self.upper_parent(&path)?;
        let dir = matches!(obj, NewObj::Dir(_));
        let parent_merged = !parent.state.read().lowers.is_empty();
        let over_whiteout = over != Over::Nothing;
        let opaque = dir && (over_whiteout || (parent_merged && !self.cfg.allow_offline_changes()));
        let (made, fd);
        if over == Over::Device {
            made = None;
            fd = self.create_over_whiteout(&pfd, &cname, (obj, open), c, opaque)?;
        } else {
            fd = Self::make_obj(pfd.as_fd(), &cname, obj, open)?;
            let finish = || -> Result<Option<Stat>> {
                let st = self.own_new(pfd.as_fd(), &cname, obj, c, None)?;
                if opaque {
                    self.set_opaque(pfd.as_fd(), &cname)?;
                    return Ok(None);
                }
                Ok(st)
            };
            match finish() {
                Ok(st) => made = st,
                Err(e) => {
                    let _ = sys::unlinkat(
                        pfd.as_fd(),
                        &cname,
                        if dir { libc::AT_REMOVEDIR } else { 0 },
                    );
                    return Err(e);
                }
            }
            if over == Over::Marker {
                self.work()?.drop_aufs_whiteout(&pfd, &cname)?;
            }
        }
        let (node, st) = self.intern_new(parent, name, &pfd, &cname, made)?;
        Ok((node, st, fd))
    }

    /// Builds `obj` in W/work and moves it over the whiteout (pfd, cname),
    /// as the kernel's ovl_create_over_whiteout does. Where the parent has
    /// a default ACL, it is built in a dir of W/work that carries the same
    /// one, so the real filesystem gives it the ACL and mode that creating
    /// in the parent gives (posix_acl_create).
    fn create_over_whiteout(
        &self,
        pfd: &OwnedFd,
        cname: &CStr,
        (obj, open): (NewObj, i32),
        c: Creds,
        opaque: bool,
    ) -> Result<Option<OwnedFd>> {
        const DEFAULT_ACL: &CStr = c"system.posix_acl_default";
        let wd = self.work()?;
        let (work, tmp) = (wd.fd(), wd.tmp_name());
        let pst = sys::fstatat(pfd.as_fd(), c".")?;
        let acl = sys::getxattr(pfd.as_fd(), c".", DEFAULT_ACL).ok();
        let build = || -> Result<Option<OwnedFd>> {
            let holder;
            let (dir, name) = match &acl {
                Some(a) => {
                    sys::mkdirat(work.as_fd(), &tmp, 0o700)?;
                    sys::setxattr(work.as_fd(), &tmp, DEFAULT_ACL, a, 0)?;
                    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
                    holder = sys::open_beneath(work.as_fd(), &tmp, flags, 0)?;
                    (holder.as_fd(), c"new")
                }
                None => (work.as_fd(), tmp.as_c_str()),
            };
            let fd = Self::make_obj(dir, name, obj, open)?;
            self.own_new(dir, name, obj, c, Some(&pst))?;
            if opaque {
                self.set_opaque(dir, name)?;
            }
            if matches!(obj, NewObj::Dir(_)) {
                // The whiteout comes back here and goes.
                sys::renameat2(dir, name, pfd.as_fd(), cname, sys::RENAME_EXCHANGE)?;
                sys::unlinkat(dir, name, 0)?;
            } else {
                sys::renameat2(dir, name, pfd.as_fd(), cname, 0)?;
            }
            if acl.is_some() {
                sys::unlinkat(work.as_fd(), &tmp, libc::AT_REMOVEDIR)?;
            }
            Ok(fd)
        };
        build().inspect_err(|_| wd.remove_tmp(&tmp))
    }

    fn intern_new(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        pfd: &OwnedFd,
        cname: &CStr,
        made: Option<Stat>,
    ) -> Result<(Arc<Node>, Stat)> {
        let mut st = match made {
            Some(st) => st,
            None => sys::fstatat(pfd.as_fd(), cname)?,
        };
        let ino = self.map_ino(0, &st);
        let found = Found {
            ino,
            kind: st.st_mode & libc::S_IFMT,
            upper: true,
            lowers: Default::default(),
            redirect: None,
            index: None,
            nlink: None,
            metacopy: false,
        };
        let node = self.nodes.intern(parent, name, found, true);
        self.fix_stat(&node, &mut st, false);
        Ok((node, st))
    }

    pub fn link(
        &self,
        node: &Arc<Node>,
        newparent: &Arc<Node>,
        newname: &OsStr,
    ) -> Result<(Arc<Node>, Stat)> {
        let _paths = self.rename_lock.paths();
        if node.is_dir() {
            return Err(Errno::EPERM);
        }
        let (path, over) = self.prepare_create(newparent, newname)?;
        self.copy_up(node, CopyUp::Meta)?;
        if node.state.read().metacopy {
            // Every name of a metacopy file must find its data: an absolute
            // redirect on the inode, as the kernel's ovl_set_link_redirect.
            let (sp, sn) = node
                .state
                .read()
                .aliases
                .first()
                .cloned()
                .ok_or(Errno::ENOENT)?;
            if let Some(v) = self.redirect_for_abs(node, &sp, &sn, newparent, true)? {
                let (spfd, sname) = self.upper_parent(&self.path_of(node)?)?;
                sys::setxattr(spfd.as_fd(), &sname, &self.xn.redirect, &v, 0)?;
                node.state
                    .write()
                    .set_redirect(Some(Arc::from(v.as_slice())));
            }
        }
        let upper = self.upper()?;
        let src = to_c(&self.path_of(node)?)?;
        let (pfd, cname) = self.upper_parent(&path)?;
        if over == Over::Marker {
            sys::linkat(upper.fd(), &src, pfd.as_fd(), &cname, 0)?;
            self.work()?.drop_aufs_whiteout(&pfd, &cname)?;
        } else if over == Over::Device {
            let wd = self.work()?;
            let (work, tmp) = (wd.fd(), wd.tmp_name());
            sys::linkat(upper.fd(), &src, work.as_fd(), &tmp, 0)?;
            if let Err(e) = sys::renameat2(work.as_fd(), &tmp, pfd.as_fd(), &cname, 0) {
                wd.remove_tmp(&tmp);
                return Err(e.into());
            }
        } else {
            sys::linkat(upper.fd(), &src, pfd.as_fd(), &cname, 0)?;
        }
        // The same object under one more name: its state carries over (a
        // metacopy file's redirect to its data among it).
        let lowers = node.lowers_for(newparent, newname);
        let found = {
            let s = node.state.read();
            Found {
                ino: node.ino,
                kind: node.kind(),
                upper: true,
                lowers,
                redirect: s.redirect().cloned(),
                index: s.index().cloned(),
                nlink: None,
                metacopy: s.metacopy,
            }
        };
        let n = self.nodes.intern(newparent, newname, found, true);
        self.splits.linked(&n, newparent, newname);
        let counted = n.state.read().nlink();
        if let Some(c) = counted {
            self.store_nlink(&n, c + 1)?;
        }
        let st = self.getattr(&n, None)?;
        Ok((n, st))
    }

    pub fn unlink(&self, parent: &Arc<Node>, name: &OsStr) -> Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: &Arc<Node>, name: &OsStr) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: &Arc<Node>, name: &OsStr, want_dir: bool) -> Result<()> {
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        // As in rename: the switch of the name to a whiteout (or nothing)
        // and the alias removal run alone, or a request on this node could
        // open the whiteout by its old path.
        let c = {
            let _paths = self.rename_lock.paths();
            self.remove_prepare(parent, name, want_dir)?
        };
        let _commit = self.rename_lock.commit();
        self.remove_commit(parent, name, &c)
    }

    /// The checks and copy-ups a removal needs, under the path lock.
    fn remove_prepare(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        want_dir: bool,
    ) -> Result<RemoveCtx> {
        let (node, st) = self.lookup(parent, name, false)?;
        match (want_dir, is_dir(&st)) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        // Found by this name in a lower (no redirect): a whiteout is needed;
        // otherwise ask the parent's lowers about the name, as the kernel.
        let has_lower = {
            let s = node.state.read();
            !s.lowers.is_empty()
                && s.redirect().is_none()
                && s.lowers.iter().all(|l| l.path.is_none())
        };
        let needs_whiteout = has_lower || self.lower_positive(parent, name)?;
        // Only a pure upper dir that leaves no whiteout may be left to the
        // upper rmdir's own ENOTEMPTY: a whiteout replaces the dir whole.
        let merged = !node.state.read().lowers.is_empty();
        if want_dir && (merged || needs_whiteout) && !self.merged_empty(&node)? {
            return Err(Errno::ENOTEMPTY);
        }
        self.copy_up(parent, CopyUp::Data)?;
        if !want_dir {
            self.index_before_drop(&node, parent, name, &st)?;
        }
        let indexed = node.state.read().nlink();
        let path = join(&self.path_of(parent)?, name);
        let in_upper = node.has_upper() && self.upper()?.try_stat(&path)?.is_some();
        if in_upper && !want_dir && node.alias_count() > 1 && indexed.is_none() {
            // Other names may still be lower-only: give one of them the upper
            // inode first, so the data survives this unlink.
            let other = node
                .state
                .read()
                .aliases
                .iter()
                .find(|(p, n)| !(Arc::ptr_eq(p, parent) && n == name))
                .cloned();
            if let Some((op, on)) = other {
                self.copy_up_name(&node, &op, &on, CopyUp::Meta)?;
            }
        }
        Ok(RemoveCtx {
            node,
            st,
            want_dir,
            needs_whiteout,
            merged,
            in_upper,
            indexed,
        })
    }

    /// Swaps the name for a whiteout (or nothing) and drops the alias,
    /// alone under the commit lock.
    fn remove_commit(&self, parent: &Arc<Node>, name: &OsStr, c: &RemoveCtx) -> Result<()> {
        let path = join(&self.path_of(parent)?, name);
        let (pfd, cname) = self.upper_parent(&path)?;
        let upper_st = match c.in_upper {
            true => self.upper()?.try_stat(&path)?,
            false => None,
        };
        let pin = upper_st
            .as_ref()
            .and_then(|u| self.inos.pin_removed(&c.node, &pfd, &cname, u));
        match (c.in_upper, c.needs_whiteout) {
            (true, true) => self.work()?.whiteout_over(&pfd, &cname, c.want_dir)?,
            (true, false) => remove_upper(&pfd, &cname, c.want_dir, c.merged)?,
            (false, _) => self.work()?.create_whiteout(&pfd, &cname)?,
        }
        if let Some(ust) = upper_st {
            self.inos.forget_upper(&ust);
        }
        self.inos.keep_pin(&c.node, pin);
        if let Some(n) = c.indexed {
            self.store_nlink(&c.node, n.saturating_sub(1))?;
        }
        let last_link = c.want_dir || c.st.st_nlink <= 1;
        self.detach(&c.node, parent, name, last_link);
        Ok(())
    }

    /// A name of `node` went away: forget it, and when no name is left keep
    /// the paths of its lower parts, so an fd still open on it can fstat.
    pub(crate) fn detach(&self, node: &Node, parent: &Arc<Node>, name: &OsStr, last_link: bool) {
        if last_link {
            node.pin_lower_paths();
        }
        node.remove_alias(parent, name, last_link);
    }

    /// Before one name of a hard-linked lower file goes away, copy it up into
    /// the index (as the kernel's ovl_nlink_start), so the remaining names
    /// find the upper inode that carries the lowered link count.
    pub(crate) fn index_before_drop(
        &self,
        node: &Arc<Node>,
        parent: &Arc<Node>,
        name: &OsStr,
        st: &Stat,
    ) -> Result<()> {
        if self.index_layer().is_some() && !node.has_upper() && st.st_nlink > 1 {
            // Metadata only where metacopy=on, as the kernel's copy-up there.
            self.copy_up_name(node, parent, name, CopyUp::Meta)?;
        }
        Ok(())
    }
}

/// What a removal learned before its commit (the kernel's ovl_do_remove).
struct RemoveCtx {
    node: Arc<Node>,
    st: Stat,
    want_dir: bool,
    /// A lower object of the name shows once the upper one goes.
    needs_whiteout: bool,
    /// A dir with lower parts: what is left in its upper are whiteouts.
    merged: bool,
    in_upper: bool,
    /// The nlink the index keeps for it, if indexed.
    indexed: Option<u32>,
}

/// Removes a pure upper entry that leaves no whiteout.
fn remove_upper(pfd: &OwnedFd, cname: &CStr, dir: bool, merged: bool) -> Result<()> {
    if !dir {
        return Ok(sys::unlinkat(pfd.as_fd(), cname, 0)?);
    }
    match sys::unlinkat(pfd.as_fd(), cname, libc::AT_REMOVEDIR) {
        // Merged-empty: what is left are whiteouts.
        Err(e) if merged && e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            clean_dir(&sys::open_beneath(pfd.as_fd(), cname, flags, 0)?)?;
            Ok(sys::unlinkat(pfd.as_fd(), cname, libc::AT_REMOVEDIR)?)
        }
        r => Ok(r?),
    }
}
