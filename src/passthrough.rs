//! Which opens do their I/O by FUSE passthrough. The kernel wants all opens
//! of one inode either cached (through ovlfuse) or passthrough with one
//! backing file; direct-I/O opens through ovlfuse may sit beside either.
//! This keeps that count per inode, and the backing ids with the identity
//! of their file: after a copy-up an inode's real file changes, and an
//! open must never be handed a backing id of the file it no longer is.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::sys;
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
    /// Open file handle -> whether it is passthrough (else direct), for
    /// the ones that are not cached.
    handles: DashMap<u64, bool>,
}

impl Passthrough {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Picks the I/O mode of a new open `fh` of `ino`, whose real file may
    /// be passed through if `fd` is given, and registers it.
    pub fn start(
        &self,
        ino: u64,
        fh: u64,
        fd: Option<Arc<OwnedFd>>,
        register: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> OpenIo {
        let fd = fd.filter(|_| self.enabled());
        let file = fd
            .as_ref()
            .and_then(|f| sys::fstat(f.as_fd()).ok())
            .map(|st| (st.st_dev, st.st_ino));
        let mut io = self.io.entry(ino).or_default();
        if let Some(b) = io.backing.as_mut() {
            // Passthrough opens of the inode hold a backing file: the same
            // file joins them. The kernel refuses any other open of the
            // inode (EIO). Backing files are upper files, which a node
            // keeps, so this is not reached; if it were, the open fails
            // rather than read or write a file it is not.
            if file.is_some() && file == Some(b.file) {
                b.opens += 1;
                self.handles.insert(fh, true);
                return OpenIo::Passthrough(b.id.clone());
            }
            self.handles.insert(fh, false);
            return OpenIo::Direct;
        }
        let (Some(fd), Some(file)) = (fd.filter(|_| io.cached == 0), file) else {
            io.cached += 1;
            return OpenIo::Cached;
        };
        match register(&fd) {
            Ok(b) => {
                let id = Arc::new(b);
                io.backing = Some(Backing {
                    id: id.clone(),
                    file,
                    opens: 1,
                });
                self.handles.insert(fh, true);
                OpenIo::Passthrough(id)
            }
            Err(e) => {
                // Refused (no privilege, a stacked upper): keep going without.
                if self.enabled.swap(false, Ordering::Relaxed) {
                    info!("FUSE passthrough refused ({e}): file I/O goes through ovlfuse");
                }
                io.cached += 1;
                OpenIo::Cached
            }
        }
    }

    /// The open `fh` of `ino` was released.
    pub fn end(&self, ino: u64, fh: u64) {
        let mode = self.handles.remove(&fh).map(|(_, p)| p);
        if let Some(mut io) = self.io.get_mut(&ino) {
            match mode {
                Some(true) => {
                    if let Some(b) = io.backing.as_mut() {
                        b.opens -= 1;
                        if b.opens == 0 {
                            io.backing = None;
                        }
                    }
                }
                Some(false) => {}
                None => io.cached = io.cached.saturating_sub(1),
            }
        }
        self.io
            .remove_if(&ino, |_, io| io.cached == 0 && io.backing.is_none());
    }
}
