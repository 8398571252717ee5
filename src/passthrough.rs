//! Which opens do their I/O by FUSE passthrough. The kernel wants all opens
//! of one inode either cached (through ovlfuse) or passthrough with one
//! backing id; this keeps that count per inode and the backing ids.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::wire::BackingId;
use dashmap::DashMap;
use log::info;

#[derive(Default)]
struct InodeIo {
    cached: usize,
    backing: Option<(Arc<BackingId>, usize)>,
}

#[derive(Default)]
pub struct Passthrough {
    /// The kernel does passthrough I/O and lets us register backing files.
    enabled: AtomicBool,
    /// How each open inode does its I/O.
    io: DashMap<u64, InodeIo>,
    /// Open file handle -> inode, for the ones that use passthrough.
    handles: DashMap<u64, u64>,
}

impl Passthrough {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Picks the I/O mode of a new open `fh` of `ino`, whose real file may
    /// be passed through if `fd` is given, and registers it. Returns the
    /// backing id to answer with, or None for I/O through ovlfuse.
    pub fn start(
        &self,
        ino: u64,
        fh: u64,
        fd: Option<Arc<OwnedFd>>,
        register: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let fd = fd.filter(|_| self.enabled());
        let mut io = self.io.entry(ino).or_default();
        let Some(fd) = fd.filter(|_| io.cached == 0) else {
            io.cached += 1;
            return None;
        };
        if let Some((b, n)) = io.backing.as_mut() {
            *n += 1;
            self.handles.insert(fh, ino);
            return Some(b.clone());
        }
        match register(&fd) {
            Ok(b) => {
                let b = Arc::new(b);
                io.backing = Some((b.clone(), 1));
                self.handles.insert(fh, ino);
                Some(b)
            }
            Err(e) => {
                // Refused (no privilege, a stacked upper): keep going without.
                if self.enabled.swap(false, Ordering::Relaxed) {
                    info!("FUSE passthrough refused ({e}): file I/O goes through ovlfuse");
                }
                io.cached += 1;
                None
            }
        }
    }

    /// The open `fh` of `ino` was released.
    pub fn end(&self, ino: u64, fh: u64) {
        let passthrough = self.handles.remove(&fh).is_some();
        if let Some(mut io) = self.io.get_mut(&ino) {
            if passthrough {
                if let Some((_, n)) = io.backing.as_mut() {
                    *n -= 1;
                    if *n == 0 {
                        io.backing = None;
                    }
                }
            } else {
                io.cached = io.cached.saturating_sub(1);
            }
        }
        self.io
            .remove_if(&ino, |_, io| io.cached == 0 && io.backing.is_none());
    }
}
