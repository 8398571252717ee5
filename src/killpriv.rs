//! Set-id bits dropped on modification, as the kernel's
//! setattr_should_drop_suidgid: a write, truncate, fallocate (any mode) or
//! copy_file_range by a caller without CAP_FSETID drops S_ISUID, and
//! S_ISGID too when the file is group-executable or the caller is not in
//! its group. The kernel's FUSE side applies only the older rule (S_ISGID
//! with S_IXGRP), so ovlfuse finishes the job; files with set-id bits are
//! never passthrough, so that every modification reaches it.

use std::os::fd::AsFd;

use crate::file::OpenFile;
use crate::sys;
use crate::OvlFs;

/// Who made a request: the kernel's ids and the caller's pid (for its
/// capabilities and supplementary groups).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

const CAP_FSETID: u32 = 4;

/// CapEff and Groups of a process from /proc; None when it is gone (or in
/// a pid namespace we cannot see): then it counts as unprivileged.
fn privs(pid: u32) -> Option<(bool, Vec<u32>)> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
    };
    let cap = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
    let groups = field("Groups:")?
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    Some((cap & (1 << CAP_FSETID) != 0, groups))
}

/// The set-id bits to drop from `mode` (group `gid`, as the view shows it)
/// for a modification by `c`.
pub fn bits_to_drop(mode: u32, gid: u32, c: &Caller) -> u32 {
    if mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return 0;
    }
    // A caller we cannot see counts as unprivileged: dropping is safe.
    let (fsetid, groups) = privs(c.pid).unwrap_or_default();
    if fsetid {
        return 0;
    }
    let mut kill = mode & libc::S_ISUID;
    let in_group = c.gid == gid || groups.contains(&gid);
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group) {
        kill |= libc::S_ISGID;
    }
    kill
}

impl OvlFs {
    /// After `f` was modified by `c`: drops the set-id bits the kernel
    /// would, on the real file, and tells the kernel its mode changed.
    pub fn kill_priv(&self, f: &OpenFile, c: &Caller) -> crate::Result<()> {
        if !f.may_be_setid() {
            return Ok(());
        }
        if !self.kill_priv_fd(f.fd().as_fd(), &f.node, c)? {
            f.clear_setid();
        }
        Ok(())
    }

    /// kill_priv for an open file handle.
    pub fn kill_priv_fh(&self, fh: u64, c: &Caller) -> crate::Result<()> {
        let _paths = self.rename_lock.paths();
        let f = self.file(fh)?;
        self.kill_priv(&f, c)
    }

    /// After a truncate by path (no handle): the same on the upper file.
    pub fn kill_priv_node(&self, node: &crate::node::Node, c: &Caller) -> crate::Result<()> {
        let _paths = self.rename_lock.paths();
        let (layer, path) = self.real(node)?;
        let mut st = layer.stat(&path)?;
        let stored_mode = st.st_mode;
        self.ids.show(&mut st);
        let kill = bits_to_drop(stored_mode, st.st_gid, c);
        if kill != 0 {
            let cpath = crate::layer::to_c(&path)?;
            sys::fchmodat(layer.fd(), &cpath, stored_mode & 0o7777 & !kill)?;
            self.invalidate_attr(node.ino);
        }
        Ok(())
    }

    /// The same on any fd of the real file; false if it has no set-id bit.
    pub fn kill_priv_fd(
        &self,
        fd: std::os::fd::BorrowedFd,
        node: &crate::node::Node,
        c: &Caller,
    ) -> crate::Result<bool> {
        let mut st = sys::fstat(fd)?;
        let stored_mode = st.st_mode;
        if stored_mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
            return Ok(false);
        }
        self.ids.show(&mut st);
        let kill = bits_to_drop(stored_mode, st.st_gid, c);
        if kill != 0 {
            sys::fchmod(fd, stored_mode & 0o7777 & !kill)?;
            self.invalidate_attr(node.ino);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_rule() {
        // An unknown process: no CAP_FSETID, no supplementary groups.
        let other = Caller {
            uid: 1000,
            gid: 1000,
            pid: u32::MAX,
        };
        assert_eq!(bits_to_drop(0o4666, 0, &other), libc::S_ISUID);
        assert_eq!(bits_to_drop(0o2666, 0, &other), libc::S_ISGID);
        assert_eq!(
            bits_to_drop(0o2666, 1000, &other),
            0,
            "in the group, no g+x"
        );
        assert_eq!(bits_to_drop(0o2676, 1000, &other), libc::S_ISGID, "g+x");
        assert_eq!(
            bits_to_drop(0o6666, 0, &other),
            libc::S_ISUID | libc::S_ISGID
        );
        assert_eq!(bits_to_drop(0o0666, 0, &other), 0);
        // This test process (root in the test runs, or not): whatever its
        // CapEff says about CAP_FSETID decides.
        let me = Caller {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        };
        let (fsetid, _) = privs(me.pid).unwrap();
        assert_eq!(bits_to_drop(0o4666, 5, &me) == 0, fsetid);
    }
}
