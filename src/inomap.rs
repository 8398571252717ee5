//! The inode numbers the merged view shows (the kernel's ovl_map_ino and
//! xino): fsid high bits when layers span filesystems, the numbers objects
//! copied up this mount keep, and removed objects pinned open so that
//! their numbers are not reused while the kernel still knows them.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use dashmap::DashMap;

use crate::config::Xino;
use crate::format;
use crate::node::Node;
use crate::sys::{self, is_dir, Stat};

/// A removed object held open until the kernel forgets it (pin_removed).
pub struct Pin {
    fd: OwnedFd,
    /// A regular file nobody has open: its data goes at once.
    truncate: bool,
}

pub struct InoMap {
    /// High bits used for the layer's fs index when layers span filesystems.
    xino_bits: u32,
    /// Distinct st_dev values of the layers, upper first: index = fsid.
    fs_devs: Vec<u64>,
    /// Upper inode number -> overlay inode number, for objects copied up
    /// during this mount (their st_ino stays the lower one).
    copied: DashMap<u64, u64>,
    /// Node id -> the removed pure upper object, until the kernel forgets it.
    pinned: DashMap<u64, OwnedFd>,
}

impl InoMap {
    /// `devs`: st_dev of each layer, upper first.
    pub fn new(devs: impl IntoIterator<Item = u64>, xino: Xino) -> InoMap {
        let mut fs_devs: Vec<u64> = Vec::new();
        for d in devs {
            if !fs_devs.contains(&d) {
                fs_devs.push(d);
            }
        }
        let xino_bits = match (xino, fs_devs.len()) {
            (_, 1) | (Xino::Off, _) => 0,
            (_, n) => 64 - (n as u64).leading_zeros() + 1,
        };
        InoMap {
            xino_bits,
            fs_devs,
            copied: DashMap::new(),
            pinned: DashMap::new(),
        }
    }

    /// st_ino for a real object: the real number when all layers share one
    /// filesystem, else with the layer's fsid in the high bits (a number
    /// that already uses those bits is left as it is).
    pub fn map(&self, st: &Stat) -> u64 {
        if self.xino_bits == 0 {
            return st.st_ino;
        }
        let shift = 64 - self.xino_bits;
        let fsid = self.fs_devs.iter().position(|d| *d == st.st_dev);
        if st.st_ino >> shift != 0 {
            return st.st_ino;
        }
        st.st_ino | ((fsid.unwrap_or(0) as u64) << shift)
    }

    /// The overlay number an upper inode copied up this mount shows.
    pub fn copied(&self, upper_ino: u64) -> Option<u64> {
        self.copied.get(&upper_ino).map(|i| *i)
    }

    pub fn set_copied(&self, upper_ino: u64, shown: u64) {
        self.copied.insert(upper_ino, shown);
    }

    /// The upper inode is gone: its number may be reused for another.
    pub fn forget_copied(&self, upper_ino: u64) {
        self.copied.remove(&upper_ino);
    }

    /// Holds a removed object open until the kernel forgets node `id`.
    pub fn pin(&self, id: u64, fd: OwnedFd) {
        self.pinned.insert(id, fd);
    }

    /// The stat of the removed object node `id` pins.
    pub fn pinned_stat(&self, id: u64) -> Option<Stat> {
        sys::fstat(self.pinned.get(&id)?.as_fd()).ok()
    }

    pub fn is_pinned(&self, id: u64) -> bool {
        self.pinned.contains_key(&id)
    }

    pub fn unpin(&self, id: u64) {
        self.pinned.remove(&id);
    }

    /// Holds a pure upper object that is about to lose its last name while
    /// the kernel still holds its overlay inode, so that the inode number
    /// stays taken until the kernel forgets it. Otherwise a new object could
    /// get the number, and the kernel would retire its old inode: requests
    /// still under way on it would fail with EIO. An open file already
    /// holds it; an unopened regular file is held by a writable fd and
    /// truncated once unlinked (keep_pin), so its space is freed at once.
    pub fn pin_removed(&self, node: &Node, pfd: &OwnedFd, name: &CStr, ust: &Stat) -> Option<Pin> {
        let last = is_dir(ust) || ust.st_nlink <= 1;
        if !last || format::is_whiteout(ust) || node.nlookup() == 0 {
            return None;
        }
        // A copied-up file's number is the lower's, never reused, and its
        // open files answer fstat; other objects stay held for fstat of
        // an fd the kernel opened itself (fifos, devices, dirs).
        let reg = ust.st_mode & libc::S_IFMT == libc::S_IFREG;
        if self.map(ust) != node.st_ino() && reg {
            return None;
        }
        // Open files may keep reading it: then it is kept whole, as the
        // kernel keeps an unlinked file that is open.
        let open = node.opens.load(Ordering::Acquire) > 0;
        let truncate = ust.st_mode & libc::S_IFMT == libc::S_IFREG && !open;
        let flags = match truncate {
            true => libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW,
            false => libc::O_PATH | libc::O_NOFOLLOW,
        };
        let fd = sys::open_beneath(pfd.as_fd(), name, flags, 0).ok()?;
        Some(Pin { fd, truncate })
    }

    /// After the removal: keeps the pin until the kernel forgets the node.
    pub fn keep_pin(&self, node: &Node, pin: Option<Pin>) {
        if let Some(p) = pin {
            if p.truncate {
                // Nobody has it open (checked under the rename lock).
                let _ = sys::ftruncate(p.fd.as_fd(), 0);
            }
            self.pin(node.ino, p.fd);
        }
    }

    /// The upper inode behind `st` lost a name: once it is gone its number
    /// may be reused, so it must no longer map to the old overlay inode.
    pub fn forget_upper(&self, st: &Stat) {
        if is_dir(st) || st.st_nlink <= 1 {
            self.forget_copied(st.st_ino);
        }
    }
}
