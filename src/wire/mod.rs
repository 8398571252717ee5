//! ovlfuse's own side of the FUSE protocol: requests in, replies and
//! notifications out, INIT negotiation, passthrough backing ids, and the
//! worker threads that serve /dev/fuse. One `Handler` (the adapter in
//! fuse.rs) serves every transport.
//!
//! Why not fuser: it sends the node id as d_ino in READDIRPLUS and as
//! attr.ino in every entry reply, so a node id had to be the st_ino; and
//! it has no FUSE-over-io_uring transport.

pub mod abi;
pub mod reply;
pub mod request;
pub mod session;
pub mod uring;

use std::os::fd::OwnedFd;
use std::sync::Arc;

pub use abi::Attr;
pub use reply::{DirBuf, Entry, OpenIo, Reply};
pub use request::{Op, Request, SetattrIn};
pub use session::{Acl, Notifier, Session};

/// Requests served per transport, since the start.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub dev_fuse: std::sync::atomic::AtomicU64,
    pub io_uring: std::sync::atomic::AtomicU64,
    /// INIT settled on io_uring.
    pub uring: std::sync::atomic::AtomicBool,
}

pub static STATS: TransportStats = TransportStats {
    dev_fuse: std::sync::atomic::AtomicU64::new(0),
    io_uring: std::sync::atomic::AtomicU64::new(0),
    uring: std::sync::atomic::AtomicBool::new(false),
};

/// The transport in use, for reports.
pub fn transport() -> &'static str {
    match STATS.uring.load(std::sync::atomic::Ordering::Relaxed) {
        true => "io_uring",
        false => "/dev/fuse",
    }
}

fn count(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// What the filesystem answers; called from every worker thread.
pub trait Handler: Send + Sync + 'static {
    /// INIT: pick the flags and limits to use from what the kernel offers.
    fn init(&self, c: &mut InitConfig);
    /// Every request but INIT, FORGET, INTERRUPT and DESTROY.
    fn handle(&self, req: &Request, reply: Reply);
    /// FORGET and BATCH_FORGET: (node id, lookups) pairs; no reply.
    fn forget(&self, nodes: &[(u64, u64)]);
    /// The connection ends (DESTROY, or the mount is gone).
    fn destroy(&self) {}
}

/// The INIT negotiation: the kernel's offer, and what the handler wants.
#[derive(Debug, Clone)]
pub struct InitConfig {
    /// The kernel's protocol minor version.
    pub minor: u32,
    /// Flags the kernel offers (flags | flags2 << 32).
    pub offered: u64,
    /// Flags to use; only offered ones are sent back.
    pub wanted: u64,
    /// The kernel's maximum; the handler may lower it.
    pub max_readahead: u32,
    /// Stacking depth of passthrough backing files (with PASSTHROUGH).
    pub max_stack_depth: u32,
}

impl InitConfig {
    pub fn offers(&self, flags: u64) -> bool {
        self.offered & flags == flags
    }

    /// Asks for `flags` if the kernel offers them all; says whether it does.
    pub fn want(&mut self, flags: u64) -> bool {
        let ok = self.offers(flags);
        if ok {
            self.wanted |= flags;
        }
        ok
    }
}

/// A passthrough backing file registered with the kernel; unregistered on
/// drop (the kernel keeps it for the opens that use it).
#[derive(Debug)]
pub struct BackingId {
    id: u32,
    dev: Arc<OwnedFd>,
}

impl BackingId {
    pub fn new(id: u32, dev: Arc<OwnedFd>) -> BackingId {
        BackingId { id, dev }
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for BackingId {
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        let _ = crate::sys::fuse_dev::backing_close(self.dev.as_fd(), self.id);
    }
}
