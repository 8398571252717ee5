//! Which opens do their I/O by FUSE passthrough. The kernel wants all opens
//! of one inode either cached (through ovlfuse) or passthrough with one
//! backing file, and fails any other open with EIO. This keeps that count
//! per inode, and the backing ids with the identity of their file: after a
//! copy-up an inode's real file changes, and an open must never be handed
//! a backing id of the file it no longer is.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::wire::{BackingId, OpenIo};
use dashmap::DashMap;
use log::info;

/// A registered backing file: its id, its (dev, ino), and its opens.
struct Backing {
    id: Arc<BackingId>,
    file: (u64, u64),
    opens: usize,
}

#[derive(Default)]
struct InodeIo {
    cached: usize,
    backing: Option<Backing>,
}

#[derive(Default)]
pub struct Passthrough {
    /// The kernel does passthrough I/O and lets us register backing files.
    enabled: AtomicBool,
    /// How each open inode does its I/O.
    io: DashMap<u64, InodeIo>,
    /// The open file handles that are passthrough.
    handles: dashmap::DashSet<u64>,
}

impl Passthrough {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Picks the I/O mode of a new open `fh` of `ino`, whose real file may
    /// be passed through if `fd` (with the file's st_dev and st_ino) is
    /// given, and registers it. None: the
    /// inode's passthrough opens hold a backing file that is not this
    /// open's file (a lower file, copied up since), and the kernel would
    /// fail the open (EIO); the caller gives the name a new inode.
    pub fn start(
        &self,
        ino: u64,
        fh: u64,
        fd: Option<(Arc<OwnedFd>, (u64, u64))>,
        register: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Option<OpenIo> {
        let (fd, file) = fd.filter(|_| self.enabled()).unzip();
        let mut io = self.io.entry(ino).or_default();
        if let Some(b) = io.backing.as_mut() {
            // Passthrough opens of the inode hold a backing file: only the
            // same file may join them.
            if file.is_none() || file != Some(b.file) {
                return None;
            }
            b.opens += 1;
            self.handles.insert(fh);
            return Some(OpenIo::Passthrough(b.id.clone()));
        }
        let (Some(fd), Some(file)) = (fd.filter(|_| io.cached == 0), file) else {
            io.cached += 1;
            return Some(OpenIo::Cached);
        };
        match register(&fd) {
            Ok(b) => {
                let id = Arc::new(b);
                io.backing = Some(Backing {
                    id: id.clone(),
                    file,
                    opens: 1,
                });
                self.handles.insert(fh);
                Some(OpenIo::Passthrough(id))
            }
            Err(e) => {
                // Refused (no privilege, a stacked upper): keep going without.
                if self.enabled.swap(false, Ordering::Relaxed) {
                    info!("FUSE passthrough refused ({e}): file I/O goes through ovlfuse");
                }
                io.cached += 1;
                Some(OpenIo::Cached)
            }
        }
    }

    /// The open `fh` of `ino` was released.
    pub fn end(&self, ino: u64, fh: u64) {
        let passthrough = self.handles.remove(&fh).is_some();
        if let Some(mut io) = self.io.get_mut(&ino) {
            if !passthrough {
                io.cached = io.cached.saturating_sub(1);
            } else if let Some(b) = io.backing.as_mut() {
                b.opens -= 1;
                if b.opens == 0 {
                    io.backing = None;
                }
            }
        }
        self.io
            .remove_if(&ino, |_, io| io.cached == 0 && io.backing.is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_of(p: &std::path::Path) -> (Arc<OwnedFd>, (u64, u64)) {
        let st = std::fs::metadata(p).unwrap();
        use std::os::unix::fs::MetadataExt;
        let fd = Arc::new(std::fs::File::open(p).unwrap().into());
        (fd, (st.dev(), st.ino()))
    }

    #[test]
    fn an_inode_passes_through_to_one_file_at_a_time() {
        let dir = std::env::temp_dir().join(format!("ovlfuse-pt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let dev: Arc<OwnedFd> = fd_of(std::path::Path::new("/dev/null")).0;
        let reg = |_: &OwnedFd| Ok(BackingId::new(7, dev.clone()));
        let pt = Passthrough::default();
        pt.enable();
        let first = pt.start(5, 1, Some(fd_of(&a)), reg);
        assert!(matches!(first, Some(OpenIo::Passthrough(_))));
        // The same file joins; another one (the copy after a copy-up) or
        // none at all is refused, as the kernel would refuse it.
        assert!(matches!(
            pt.start(5, 2, Some(fd_of(&a)), reg),
            Some(OpenIo::Passthrough(_))
        ));
        assert!(pt.start(5, 3, Some(fd_of(&b)), reg).is_none());
        assert!(pt.start(5, 3, None, reg).is_none());
        // Another inode is free to use the other file.
        assert!(matches!(
            pt.start(6, 4, Some(fd_of(&b)), reg),
            Some(OpenIo::Passthrough(_))
        ));
        pt.end(5, 1);
        pt.end(5, 2);
        assert!(matches!(
            pt.start(5, 5, Some(fd_of(&b)), reg),
            Some(OpenIo::Passthrough(_))
        ));
        // A cached open keeps passthrough off the inode until it ends.
        assert!(matches!(pt.start(9, 6, None, reg), Some(OpenIo::Cached)));
        assert!(matches!(
            pt.start(9, 7, Some(fd_of(&a)), reg),
            Some(OpenIo::Cached)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
