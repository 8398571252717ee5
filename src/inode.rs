//! Attributes (the kernel's inode.c): st_ino composition, getattr, setattr.

use std::os::fd::AsFd;
use std::sync::Arc;

use crate::copy_up::CopyUp;
use crate::layer::to_c;
use crate::node::{Node, ROOT_INO};
use crate::sys::{self, Stat};
use crate::{Errno, OvlFs, Result};

/// The fields of a setattr; None leaves a field alone. Times are
/// (seconds, nanoseconds) and may use sys::UTIME_NOW.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<(i64, i64)>,
    pub mtime: Option<(i64, i64)>,
    pub fh: Option<u64>,
}

impl OvlFs {
    /// st_ino for an object of layer `layer_idx` (0 = upper): the real number
    /// when all layers share one filesystem, else xino-style fsid high bits.
    pub fn map_ino(&self, _layer_idx: usize, st: &Stat) -> u64 {
        self.inos.map(st)
    }

    /// Turns a real stat into what the merged view reports for `node`.
    pub fn fix_stat(&self, node: &Node, st: &mut Stat, merged_dir: bool) {
        if node.ino != ROOT_INO {
            st.st_ino = node.st_ino();
        }
        self.ids.show(st);
        // Like the kernel: counting a merged dir's subdirs would need a readdir.
        if merged_dir {
            st.st_nlink = 1;
        }
    }

    /// More than one layer makes up this dir (the kernel's OVL_TYPE_MERGE).
    pub fn is_merged_dir(node: &Node) -> bool {
        node.is_dir() && node.has_upper() as usize + node.state.read().lowers.len() > 1
    }

    pub fn getattr(&self, node: &Arc<Node>, fh: Option<u64>) -> Result<Stat> {
        let _paths = self.rename_lock.paths();
        let mut st = match self.real(node) {
            Ok((layer, path)) => match layer.stat(&path) {
                Ok(st) => st,
                Err(e) => self.stat_open(node, fh).ok_or(Errno::from(e))?,
            },
            Err(e) => self.stat_open(node, fh).ok_or(e)?,
        };
        self.fix_stat(node, &mut st, Self::is_merged_dir(node));
        self.apply_override(node, &mut st);
        let (nlink, metacopy) = {
            let s = node.state.read();
            (s.nlink(), s.metacopy)
        };
        if let Some(n) = nlink {
            st.st_nlink = n as _;
        }
        if metacopy {
            // The blocks are where the data is.
            if let Ok((l, p)) = self.real_data(node) {
                if let Ok(lst) = l.stat(&p) {
                    st.st_blocks = lst.st_blocks;
                }
            }
        }
        Ok(st)
    }

    /// fstat through an open file of the node (for objects without a name,
    /// or the fd that holds a removed object until the kernel forgets it).
    fn stat_open(&self, node: &Node, fh: Option<u64>) -> Option<Stat> {
        let f = match fh.and_then(|fh| self.handles.file(fh).ok()) {
            Some(f) if f.node.ino == node.ino => Some(f),
            _ => self.handles.files_of(node.ino).into_iter().next(),
        };
        match f {
            Some(f) => sys::fstat(f.fd().as_fd()).ok(),
            None => self.inos.pinned_stat(node.ino),
        }
    }

    pub fn setattr(&self, node: &Arc<Node>, a: SetAttr) -> Result<Stat> {
        let _paths = self.rename_lock.paths();
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        // Only a size change needs the data; everything else is metadata.
        let how = match a.size {
            Some(0) => CopyUp::NoData,
            Some(_) => CopyUp::Data,
            None => CopyUp::Meta,
        };
        self.copy_up(node, how)?;
        let upper = self.upper()?;
        let path = self.path_of(node)?;
        let cpath = to_c(&path)?;
        // Symlinks take no user.* xattrs: their owner stays in the inode.
        if let Some(name) = self
            .override_xattr
            .clone()
            .filter(|_| node.kind() != libc::S_IFLNK)
        {
            // Owner and mode live in the override xattr, not the inode.
            if a.uid.is_some() || a.gid.is_some() || a.mode.is_some() {
                let cur = self.getattr(node, a.fh)?;
                // Stored ids, as the inode would hold them.
                let (uid, gid) = self.ids.store(
                    Some(a.uid.unwrap_or(cur.st_uid)),
                    Some(a.gid.unwrap_or(cur.st_gid)),
                );
                let o = crate::format::OverrideStat {
                    uid: uid.unwrap_or(cur.st_uid),
                    gid: gid.unwrap_or(cur.st_gid),
                    mode: a.mode.map(|m| m & 0o7777).unwrap_or(cur.st_mode & 0o7777),
                };
                upper.setxattr(&path, &name, &o.encode(), 0)?;
            }
        } else {
            let (uid, gid) = self.ids.unsquashed(a.uid, a.gid);
            let (uid, gid) = self.ids.store(uid, gid);
            if uid.is_some() || gid.is_some() {
                sys::fchownat(
                    upper.fd(),
                    &cpath,
                    uid.unwrap_or(u32::MAX),
                    gid.unwrap_or(u32::MAX),
                )?;
            }
            if let Some(mode) = a.mode {
                if node.kind() == libc::S_IFLNK {
                    return Err(Errno::EOPNOTSUPP);
                }
                sys::fchmodat(upper.fd(), &cpath, mode & 0o7777)?;
            }
        }
        if let Some(size) = a.size {
            if node.is_dir() {
                return Err(Errno::EISDIR);
            }
            let handle = a.fh.and_then(|fh| self.handles.file(fh).ok());
            match handle.filter(|f| f.writable()) {
                Some(f) => sys::ftruncate(f.fd().as_fd(), size)?,
                None => {
                    let fd = upper.open_file(&path, libc::O_WRONLY | libc::O_NONBLOCK, 0)?;
                    sys::ftruncate(fd.as_fd(), size)?;
                }
            }
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let omit = (0, sys::UTIME_OMIT);
            sys::utimensat(
                upper.fd(),
                &cpath,
                [a.atime.unwrap_or(omit), a.mtime.unwrap_or(omit)],
            )?;
        }
        self.getattr(node, a.fh)
    }

    pub fn readlink(&self, node: &Arc<Node>) -> Result<Vec<u8>> {
        let _paths = self.rename_lock.paths();
        if node.kind() != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        let (layer, path) = self.real(node)?;
        Ok(layer.readlink(&path)?)
    }

    pub fn statfs(&self) -> Result<libc::statvfs> {
        let layer = self.upper.as_ref().unwrap_or(&self.lowers[0]);
        Ok(sys::fstatfs(layer.fd())?)
    }

    /// access(2) on the merged object, checked against its mode and owner.
    pub fn access(&self, node: &Arc<Node>, mask: i32, uid: u32, gid: u32) -> Result<()> {
        let _paths = self.rename_lock.paths();
        let st = self.getattr(node, None)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        if mask & libc::W_OK != 0 && self.read_only() {
            return Err(Errno::EROFS);
        }
        let mode = st.st_mode;
        if uid == 0 {
            let any_x = mode & 0o111 != 0 || node.is_dir();
            return if mask & libc::X_OK != 0 && !any_x {
                Err(Errno::EACCES)
            } else {
                Ok(())
            };
        }
        let bits = if st.st_uid == uid {
            (mode >> 6) & 7
        } else if st.st_gid == gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        let want = (mask & 7) as u32;
        if bits & want == want {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }
}
