//! Extended attributes as users see them: private overlay names hidden and
//! refused, user-set `overlay.*` names escaped as the kernel does.

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::copy_up::CopyUp;
use crate::node::Node;
use crate::sys;
use crate::{Errno, OvlFs, Result};

const DEFAULT_ACL: &CStr = c"system.posix_acl_default";

impl OvlFs {
    pub fn getxattr(&self, node: &Arc<Node>, name: &OsStr) -> Result<Vec<u8>> {
        let _paths = self.rename_lock.paths();
        self.check_xattr_name(name)?;
        if self.hidden_xattr(name) || self.cfg.noxattrs || self.lower_has_none(node) {
            return Err(Errno::ENODATA);
        }
        let (layer, path) = self.real(node)?;
        if !node.has_upper() && layer.idx != 0 && node.state.read().lower_xattrs.is_none() {
            // One listxattr answers every later ask of an xattr-less file.
            if let Ok(names) = layer.listxattr(&path) {
                node.state.write().lower_xattrs = Some(!names.is_empty());
                if names.is_empty() {
                    return Err(Errno::ENODATA);
                }
            }
        }
        let stored = sys::cstr(&self.xn.escape(name))?;
        Ok(layer.getxattr(&path, &stored)?)
    }

    /// A lower object known to have no xattrs: its layer never changes,
    /// and a copy-up (which any change of its xattrs makes first) ends it.
    /// `ls -l` asks two xattrs of every file, which most image files lack.
    fn lower_has_none(&self, node: &Node) -> bool {
        !node.has_upper() && node.state.read().lower_xattrs == Some(false) && !self.is_retired(node)
    }

    /// NUL-separated list of the names a user sees.
    pub fn listxattr(&self, node: &Arc<Node>) -> Result<Vec<u8>> {
        let _paths = self.rename_lock.paths();
        if self.cfg.noxattrs {
            return Ok(Vec::new());
        }
        if self.lower_has_none(node) {
            return Ok(Vec::new());
        }
        let (layer, path) = self.real(node)?;
        let mut out = Vec::new();
        let names = layer.listxattr(&path)?;
        if !node.has_upper() && layer.idx != 0 {
            node.state.write().lower_xattrs = Some(!names.is_empty());
        }
        for n in names {
            if self.hidden_xattr(&n) {
                continue;
            }
            if let Some(shown) = self.xn.unescape(&n) {
                out.extend_from_slice(shown.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, node: &Arc<Node>, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let _paths = self.rename_lock.paths();
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        self.check_xattr_name(name)?;
        if self.hidden_xattr(name) {
            return Err(Errno::EPERM);
        }
        if self.cfg.noxattrs {
            return Err(Errno::EOPNOTSUPP);
        }
        let (layer, path) = self.xattr_target(node)?;
        let stored = sys::cstr(&self.xn.escape(name))?;
        let r = layer.setxattr(&path, &stored, value, flags);
        self.xattr_changed(node, name);
        Ok(r?)
    }

    pub fn removexattr(&self, node: &Arc<Node>, name: &OsStr) -> Result<()> {
        let _paths = self.rename_lock.paths();
        if self.read_only() {
            return Err(Errno::EROFS);
        }
        self.check_xattr_name(name)?;
        if self.hidden_xattr(name) {
            return Err(Errno::ENODATA);
        }
        // Nothing to remove: fail without copying up.
        self.getxattr(node, name)?;
        let (layer, path) = self.xattr_target(node)?;
        let stored = sys::cstr(&self.xn.escape(name))?;
        let r = layer.removexattr(&path, &stored);
        self.xattr_changed(node, name);
        Ok(r?)
    }

    /// Where an xattr change goes: the upper inode, copied up first if
    /// there is none. As the kernel's ovl_xattr_set, a name of an inode
    /// that is already up through the index is not linked up for it.
    fn xattr_target(&self, node: &Arc<Node>) -> Result<(&crate::layer::Layer, Vec<u8>)> {
        if !node.has_upper() {
            self.copy_up(node, CopyUp::Meta)?;
        }
        self.real(node)
    }

    /// Whether a dir has a default POSIX ACL (its upper, else its lower).
    /// Every mkdir and create asks it of the parent, so the answer is kept
    /// in the node: only a set or removal through the mount changes it.
    pub fn has_default_acl(&self, dir: &Node) -> bool {
        let _paths = self.rename_lock.paths();
        if let Some(v) = dir.state.read().default_acl {
            return v;
        }
        let Ok((layer, path)) = self.real(dir) else {
            return false;
        };
        // Kept only if no default ACL changed while it was read: a change
        // counts after it is on disk and forgets the answer after that, so
        // an older answer is never kept (and no lock is held over the read).
        let seen = self.acl_changes.load(Ordering::Acquire);
        let Ok(v) = layer.try_getxattr(&path, DEFAULT_ACL) else {
            return false;
        };
        let mut s = dir.state.write();
        if self.acl_changes.load(Ordering::Acquire) == seen {
            s.default_acl = Some(v.is_some());
        }
        v.is_some()
    }

    /// After a change of `name` on `node`: forget a kept default ACL answer.
    fn xattr_changed(&self, node: &Node, name: &OsStr) {
        if name.as_bytes() == DEFAULT_ACL.to_bytes() {
            self.acl_changes.fetch_add(1, Ordering::AcqRel);
            node.state.write().default_acl = None;
        }
    }

    /// The bare overlay prefix names nothing: the kernel's xattr handler for
    /// it answers EINVAL, where escaping would make it a valid name.
    fn check_xattr_name(&self, name: &OsStr) -> Result<()> {
        if name.as_bytes() == self.xn.prefix().as_bytes() {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}
