//! Copy-up (the kernel's copy_up.c): build the upper copy in `W/work` with
//! data, owner, mode, times and xattrs, sync it, then rename it into place,
//! so a crash leaves either no copy or a whole one.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use log::warn;

use crate::layer::Layer;
use crate::node::Node;
use crate::sys::{self, Stat};
use crate::{Errno, OvlFs, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyUp {
    /// Copy the file's contents too.
    Data,
    /// The caller truncates to zero right after: skip the data.
    NoData,
    /// Only metadata changes (chmod, chown, utimes, xattrs, rename, link):
    /// with metacopy=on a regular file's data stays in the lower.
    Meta,
}

const CHUNK: usize = 8 << 20;

/// Copies `size` bytes from `src` to `dst`, keeping holes: reflink first,
/// then copy_file_range over each data extent, then read/write.
pub fn copy_data(src: BorrowedFd, dst: BorrowedFd, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    if sys::ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut off = 0u64;
    let mut use_cfr = true;
    while off < size {
        let data = match sys::lseek(src, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(_) => off,
        };
        let end = match sys::lseek(src, data as i64, libc::SEEK_HOLE) {
            Ok(h) => (h as u64).min(size),
            Err(_) => size,
        };
        let mut pos = data;
        while pos < end {
            let want = ((end - pos) as usize).min(CHUNK);
            let n = if use_cfr {
                match sys::copy_file_range(src, pos, dst, pos, want) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EXDEV)
                                | Some(libc::EINVAL)
                                | Some(libc::ENOSYS)
                                | Some(libc::EOPNOTSUPP)
                        ) =>
                    {
                        use_cfr = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                copy_by_read(src, dst, pos, want)?
            };
            if n == 0 {
                break;
            }
            pos += n as u64;
        }
        off = end.max(off + 1);
    }
    sys::ftruncate(dst, size)
}

/// Puts a dir's atime and mtime back to `st`'s: copy-up and link-up add an
/// entry that is no change of the merged dir (the kernel does the same).
fn keep_times(dir: &OwnedFd, st: &Stat) {
    let _ = sys::utimensat(
        dir.as_fd(),
        c".",
        [
            (st.st_atime, st.st_atime_nsec),
            (st.st_mtime, st.st_mtime_nsec),
        ],
    );
}

fn copy_by_read(src: BorrowedFd, dst: BorrowedFd, pos: u64, want: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; want.min(1 << 20)];
    let n = sys::pread(src, &mut buf, pos)?;
    let mut done = 0;
    while done < n {
        done += sys::pwrite(dst, &buf[done..n], pos + done as u64)?;
    }
    Ok(n)
}

/// One copy-up's state from start to install (the kernel's
/// ovl_copy_up_ctx).
struct CopyUpCtx<'a> {
    node: &'a Arc<Node>,
    lower: &'a Layer,
    lpath: Vec<u8>,
    /// The lower object's stat.
    st: Stat,
    /// The object's path in the merged view, and its upper parent.
    path: Vec<u8>,
    pfd: OwnedFd,
    name: CString,
    /// The upper parent's stat before (its times are put back).
    pst: Stat,
    fh: Option<crate::format::FileHandle>,
    /// The index entry it goes through, if any.
    index: Option<(&'a Layer, String)>,
    /// A metadata-only copy-up (metacopy=on).
    meta: bool,
    how: CopyUp,
}

impl OvlFs {
    /// Makes sure `node` (and every parent) exists in the upper layer.
    /// Files already open on the lower data read the copy from then on.
    pub fn copy_up(&self, node: &Arc<Node>, how: CopyUp) -> Result<()> {
        let before = node.has_upper() && !node.state.read().metacopy;
        self.copy_up_one(node, how)?;
        if !before && node.opens.load(std::sync::atomic::Ordering::Acquire) > 0 {
            // Now, while the name still leads to it (a rename over it may
            // come before their next read).
            self.switch_open_files(node);
        }
        Ok(())
    }

    fn copy_up_one(&self, node: &Arc<Node>, how: CopyUp) -> Result<()> {
        if node.has_upper() {
            if !node.is_dir() && (node.alias_count() > 1 || node.state.read().index().is_some()) {
                self.link_up_alias(node)?;
            }
            if how != CopyUp::Meta && node.state.read().metacopy {
                self.copy_up_data(node, how)?;
            }
            return Ok(());
        }
        self.upper()?;
        let parent = node.parent().ok_or(Errno::ENOENT)?;
        self.copy_up(&parent, CopyUp::Data)?;
        let _guard = node.copy_up_lock.lock();
        if node.has_upper() {
            return Ok(());
        }
        let start = std::time::Instant::now();
        let c = self.copy_up_ctx(node, how)?;
        if self.copy_up_link_index(&c)? {
            return Ok(());
        }
        let upper_ino = self.copy_up_build(&c)?;
        self.copy_up_install(&c, upper_ino)?;
        let data = c.how == CopyUp::Data && c.st.st_mode & libc::S_IFMT == libc::S_IFREG;
        let bytes = if data { c.st.st_size as u64 } else { 0 };
        crate::stats::STATS.copied_up(bytes, start);
        Ok(())
    }

    /// What a copy-up of `node` starts from: the lower object, the upper
    /// parent, the origin handle, the index entry it goes through (a
    /// hard-linked lower file with index=on, so that every name of the
    /// inode shares one upper inode), and metadata-only or not.
    fn copy_up_ctx<'a>(&'a self, node: &'a Arc<Node>, how: CopyUp) -> Result<CopyUpCtx<'a>> {
        let (lower, lpath) = self.real(node)?;
        let st = lower.stat(&lpath)?;
        let path = self.path_of(node)?;
        let (pfd, name) = self.upper_parent(&path)?;
        let pst = sys::fstatat(pfd.as_fd(), c".")?;
        let fh = self.lower_fh(lower, &lpath);
        let index = match (&fh, self.index_layer()) {
            (Some(f), Some(ix)) if !node.is_dir() && st.st_nlink > 1 => Some((ix, f.index_name())),
            _ => None,
        };
        // With the index too: the index entry is then the metacopy.
        let meta =
            how == CopyUp::Meta && self.cfg.metacopy && st.st_mode & libc::S_IFMT == libc::S_IFREG;
        let how = match how {
            CopyUp::Meta if !meta => CopyUp::Data,
            h => h,
        };
        Ok(CopyUpCtx {
            node,
            lower,
            lpath,
            st,
            path,
            pfd,
            name,
            pst,
            fh,
            index,
            meta,
            how,
        })
    }

    /// Another name was copied up through the index before: this one
    /// links to it. The merged link count stays what it was before the
    /// link. False: no such entry, a full copy-up is needed.
    fn copy_up_link_index(&self, c: &CopyUpCtx) -> Result<bool> {
        let Some((ix, iname)) = &c.index else {
            return Ok(false);
        };
        let Some(ist) = ix.try_stat(iname.as_bytes())? else {
            return Ok(false);
        };
        let n = self.indexed_nlink(ix, iname.as_bytes(), &ist, c.st.st_nlink);
        let iname_c = CString::new(iname.as_str()).expect("hex");
        sys::linkat(ix.fd(), &iname_c, c.pfd.as_fd(), &c.name, 0)?;
        keep_times(&c.pfd, &c.pst);
        c.node
            .state
            .write()
            .set_index(Some(Arc::from(iname.as_str())));
        c.node.set_upper();
        self.store_nlink(c.node, n)?;
        Ok(true)
    }

    /// Builds the copy in W/work with its markers (and its index entry),
    /// then renames it into place; on failure nothing is left behind.
    /// Returns the new upper inode's number.
    fn copy_up_build(&self, c: &CopyUpCtx) -> Result<u64> {
        let wd = self.work()?;
        let (work, tmp) = (wd.fd(), wd.tmp_name());
        let index_c = c
            .index
            .as_ref()
            .map(|(ix, n)| (ix, CString::new(n.as_str()).expect("hex")));
        let res = self.build_copy(c, work, &tmp).and_then(|()| {
            if let Some(f) = &c.fh {
                sys::setxattr(work.as_fd(), &tmp, &self.xn.origin, &f.encode(), 0)?;
            }
            if c.meta {
                sys::setxattr(work.as_fd(), &tmp, &self.xn.metacopy, b"", 0)?;
            }
            if let Some((ix, iname)) = &index_c {
                // After the link and the rename the upper inode has 2 links.
                let v = crate::format::format_nlink(c.st.st_nlink as i64 - 2);
                sys::setxattr(work.as_fd(), &tmp, &self.xn.nlink, &v, 0)?;
                sys::linkat(work.as_fd(), &tmp, ix.fd(), iname, 0)?;
            }
            let ino = sys::fstatat(work.as_fd(), &tmp)?.st_ino;
            let flags = sys::RENAME_NOREPLACE;
            sys::renameat2(work.as_fd(), &tmp, c.pfd.as_fd(), &c.name, flags)?;
            Ok(ino)
        });
        if res.is_err() {
            wd.remove_tmp(&tmp);
            if let Some((ix, iname)) = &index_c {
                let _ = sys::unlinkat(ix.fd(), iname, 0);
            }
        }
        res
    }

    /// The copy is in place: the node's state, the parent's times and
    /// impure mark, and the st_ino the object reports from now on.
    fn copy_up_install(&self, c: &CopyUpCtx, upper_ino: u64) -> Result<()> {
        let node = c.node;
        if let Some((_, iname)) = &c.index {
            {
                let mut s = node.state.write();
                s.set_index(Some(Arc::from(iname.as_str())));
                s.set_nlink(Some(c.st.st_nlink as u32));
            }
            self.share_index(node, iname, c.st.st_nlink as u32, c.meta);
        }
        // The copy's ACLs are read afresh (the upper may keep fewer).
        node.state.write().default_acl = None;
        if !c.meta {
            // A lower metacopy file's data came up with it.
            node.state.write().metacopy = false;
        } else {
            // The data stays where it is now, whatever the file's name becomes.
            let mut s = node.state.write();
            s.metacopy = true;
            s.pin_lowers(Some(c.path.clone()));
        }
        // A copy-up is no change of the parent: keep its times as they were.
        keep_times(&c.pfd, &c.pst);
        self.sync_dir(&c.pfd);
        if c.fh.is_some() {
            self.set_impure(crate::layer::split_parent(&c.path).0)?;
        }
        // What the object reports from now on: a name of a lower hard link
        // copied up on its own (no index) shows the upper's number, as in
        // the kernel; everything else keeps its number.
        let shown = match c.index {
            None if crate::node::is_split_id(node.ino) => {
                self.map_ino(0, &sys::fstatat(c.pfd.as_fd(), &c.name)?)
            }
            _ => node.st_ino(),
        };
        node.set_st_ino(shown);
        self.inos.set_copied(upper_ino, shown);
        node.set_upper();
        if node.is_dir() {
            // A dir that gains an upper becomes merged: its nlink shows as 1.
            self.invalidate_attr(node.ino);
        }
        Ok(())
    }

    /// The other names of a lower hard link that have nodes of their own
    /// reach the new index entry from now on, as a lookup would find it.
    fn share_index(&self, node: &Node, iname: &str, nlink: u32, meta: bool) {
        for n in self.names_of_inode(node) {
            let same = crate::node::is_split_id(n.ino)
                && !n.has_upper()
                && n.kind() == node.kind()
                && n.st_ino() == node.st_ino();
            if same {
                let mut s = n.state.write();
                s.set_index(Some(Arc::from(iname)));
                s.set_nlink(Some(nlink));
                s.metacopy = meta;
                drop(s);
                n.set_upper();
            }
        }
    }

    /// Brings the data of a metacopy file up into its upper inode, in place,
    /// then drops the metacopy mark (as the kernel does).
    fn copy_up_data(&self, node: &Arc<Node>, how: CopyUp) -> Result<()> {
        let _guard = node.copy_up_lock.lock();
        if !node.state.read().metacopy {
            return Ok(());
        }
        let (upper, path) = self.real(node)?;
        // Another name of the inode (through the index) brought the data up
        // already: copying the lower data now would undo its writes.
        if upper.try_getxattr(&path, &self.xn.metacopy)?.is_none() {
            node.state.write().metacopy = false;
            return Ok(());
        }
        if how == CopyUp::Data {
            let (lower, lpath) = self.real_data(node)?;
            let src = lower.open_file(&lpath, libc::O_RDONLY, 0)?;
            let size = sys::fstat(src.as_fd())?.st_size as u64;
            // The copy moves mtime, as the kernel's data copy-up of a
            // metacopy file does (it keeps no times here).
            let dst = upper.open_file(&path, libc::O_WRONLY, 0)?;
            copy_data(src.as_fd(), dst.as_fd(), size)?;
            if self.fsync_enabled() {
                sys::fsync(dst.as_fd(), false)?;
            }
        }
        upper.removexattr(&path, &self.xn.metacopy)?;
        node.state.write().metacopy = false;
        // Other names of the inode (their own nodes, through the index)
        // read the data from the upper inode from now on.
        let index = node.state.read().index().cloned();
        if let Some(iname) = index {
            for n in self.names_of_inode(node) {
                if n.state.read().index().map(|i| &**i) == Some(&*iname) {
                    n.state.write().metacopy = false;
                    self.invalidate_attr(n.ino);
                }
            }
        }
        Ok(())
    }

    /// Copies up the name `name` in `parent` of a (possibly hard-linked) object.
    pub fn copy_up_name(
        &self,
        node: &Arc<Node>,
        parent: &Arc<Node>,
        name: &std::ffi::OsStr,
        how: CopyUp,
    ) -> Result<()> {
        node.promote_alias(parent, name);
        self.copy_up(node, how)
    }

    /// A hard-linked lower file was copied up through another name: give
    /// the first name the same upper inode by linking it.
    fn link_up_alias(&self, node: &Arc<Node>) -> Result<()> {
        let upper = self.upper()?;
        let path = self.path_of(node)?;
        if upper.try_stat(&path)?.is_some() {
            return Ok(());
        }
        let iname = node.state.read().index().cloned();
        if let (Some(iname), Some(ix)) = (iname, self.index_layer()) {
            self.copy_up(&node.parent().ok_or(Errno::ENOENT)?, CopyUp::Data)?;
            let (pfd, cname) = self.upper_parent(&path)?;
            let pst = sys::fstatat(pfd.as_fd(), c".")?;
            sys::linkat(
                ix.fd(),
                &CString::new(iname.as_bytes()).expect("hex"),
                pfd.as_fd(),
                &cname,
                0,
            )?;
            keep_times(&pfd, &pst);
            // The upper inode gained a link, the merged view did not.
            let n = node.state.read().nlink();
            if let Some(n) = n {
                self.store_nlink(node, n)?;
            }
            return Ok(());
        }
        let others: Vec<(Arc<Node>, crate::node::Name)> =
            node.state.read().aliases.iter().skip(1).cloned().collect();
        for (p, n) in others {
            let Ok(pp) = self.path_of(&p) else { continue };
            let src = crate::layer::join(&pp, &n);
            if upper.try_stat(&src)?.is_some() {
                self.copy_up(&node.parent().ok_or(Errno::ENOENT)?, CopyUp::Data)?;
                let (pfd, cname) = self.upper_parent(&path)?;
                let pst = sys::fstatat(pfd.as_fd(), c".")?;
                sys::linkat(
                    upper.fd(),
                    &crate::layer::to_c(&src)?,
                    pfd.as_fd(),
                    &cname,
                    0,
                )?;
                keep_times(&pfd, &pst);
                return Ok(());
            }
        }
        Err(Errno::EIO)
    }

    /// The copy of `c`'s object as `tmp` in the work dir: data (unless
    /// metacopy), owner, mode, xattrs and times.
    fn build_copy(&self, c: &CopyUpCtx, work: &OwnedFd, tmp: &CStr) -> Result<()> {
        let (node, lower, lpath, st, how) = (c.node, c.lower, &c.lpath[..], &c.st, c.how);
        let w = work.as_fd();
        let kind = st.st_mode & libc::S_IFMT;
        match kind {
            libc::S_IFDIR => sys::mkdirat(w, tmp, 0o700)?,
            libc::S_IFREG => {
                let dst =
                    sys::openat(w, tmp, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600)?;
                match how {
                    CopyUp::Data if st.st_size > 0 => {
                        // A lower metacopy file's data is further down.
                        let (dl, dp) = self.real_data(node)?;
                        let src = dl.open_file(&dp, libc::O_RDONLY, 0)?;
                        copy_data(src.as_fd(), dst.as_fd(), st.st_size as u64)?;
                    }
                    // Metacopy: the size without the data (a hole).
                    CopyUp::Meta => sys::ftruncate(dst.as_fd(), st.st_size as u64)?,
                    _ => {}
                }
                if self.fsync_enabled() {
                    sys::fsync(dst.as_fd(), false)?;
                }
            }
            libc::S_IFLNK => {
                let target = lower.readlink(lpath)?;
                sys::symlinkat(&crate::layer::to_c(&target)?, w, tmp)?;
            }
            _ => sys::mknodat(w, tmp, kind | 0o600, st.st_rdev)?,
        }
        self.copy_xattrs(lower, lpath, w, tmp)?;
        sys::fchownat(w, tmp, st.st_uid, st.st_gid)?;
        if kind != libc::S_IFLNK {
            sys::fchmodat(w, tmp, st.st_mode & 0o7777)?;
        }
        sys::utimensat(
            w,
            tmp,
            [
                (st.st_atime, st.st_atime_nsec),
                (st.st_mtime, st.st_mtime_nsec),
            ],
        )?;
        Ok(())
    }

    /// Copies every xattr but the private overlay ones.
    fn copy_xattrs(&self, lower: &Layer, lpath: &[u8], w: BorrowedFd, tmp: &CStr) -> Result<()> {
        let names = match lower.listxattr(lpath) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for n in names {
            if !self.xn.copy_up_keeps(&n) {
                continue;
            }
            let c = sys::cstr(&n)?;
            let Some(v) = lower.try_getxattr(lpath, &c)? else {
                continue;
            };
            if let Err(e) = sys::setxattr(w, tmp, &c, &v, 0) {
                // The upper may not take every namespace (security.*, system.*).
                if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM)) {
                    warn!("copy-up: xattr {:?} not copied: {e}", n);
                    continue;
                }
                return Err(e.into());
            }
        }
        Ok(())
    }
}
