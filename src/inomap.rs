//! The inode numbers the merged view shows (the kernel's ovl_map_ino and
//! xino): fsid high bits when layers span filesystems, the numbers objects
//! copied up this mount keep, and removed objects pinned open so that
//! their numbers are not reused while the kernel still knows them.

use std::os::fd::{AsFd, OwnedFd};

use dashmap::DashMap;

use crate::config::Xino;
use crate::sys::{self, Stat};

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
}
