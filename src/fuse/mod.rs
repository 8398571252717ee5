//! The thin adapter from FUSE requests (`crate::wire`) to the overlay core:
//! it finds the nodes a request names, calls the core, and turns results
//! into replies. Entry and attribute ops are in entry.rs, open files and
//! dirs in io.rs.

mod entry;
mod io;

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info};

use crate::node::{is_split_id, Node};
use crate::passthrough::Passthrough;
use crate::stats;
use crate::sys::Stat;
use crate::wire::abi::init;
use crate::wire::{Attr, Entry, Handler, InitConfig, Op, Reply, Request};
use crate::{Errno, OvlFs};

pub struct OvlFuse {
    pub fs: Arc<OvlFs>,
    ttl: Duration,
    /// Which opens use FUSE passthrough.
    pt: Passthrough,
    /// POSIX ACLs are on (FUSE_POSIX_ACL with FUSE_DONT_MASK): the kernel
    /// leaves the umask of new objects to us (acl_mode).
    dont_mask: AtomicBool,
    /// The kernel opens dirs without asking (FUSE_NO_OPENDIR_SUPPORT):
    /// OPENDIR is answered ENOSYS once, and reads come with no handle.
    no_opendir: AtomicBool,
}

/// The attributes FUSE carries, from the real object's stat.
pub fn attr(st: &Stat) -> Attr {
    Attr {
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: (st.st_atime, st.st_atime_nsec as u32),
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        ctime: (st.st_ctime, st.st_ctime_nsec as u32),
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
    }
}

/// Answers `$reply` with the errno of an `Err` and returns.
macro_rules! tryr {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return $reply.error(err.0),
        }
    };
}
pub(crate) use tryr;

impl OvlFuse {
    pub fn new(fs: Arc<OvlFs>) -> OvlFuse {
        let ttl = Duration::from_secs_f64(fs.cfg.timeout);
        OvlFuse {
            fs,
            ttl,
            pt: Passthrough::default(),
            dont_mask: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
        }
    }

    fn node(&self, ino: u64) -> Result<Arc<Node>, Errno> {
        self.fs.node(ino)
    }

    /// No attribute caching for a node open for writing (Node::writers):
    /// writes through a shared mapping change its times behind our back;
    /// nor for a name of a lower hard link with a node of its own: a
    /// change through another name changes what it shows.
    fn attr_ttl(&self, node: &Node) -> Duration {
        if is_split_id(node.ino) || node.writers.load(Ordering::Acquire) > 0 {
            Duration::ZERO
        } else {
            self.ttl
        }
    }

    /// The entry reply of `node`: its node id (its own, for a name of a
    /// lower hard link), and the st_ino the merged view reports.
    fn entry_of<'a>(&self, node: &Node, a: &'a Attr) -> Entry<'a> {
        Entry {
            nodeid: node.ino,
            generation: node.generation(),
            entry_ttl: self.ttl,
            attr_ttl: self.attr_ttl(node),
            attr: a,
        }
    }

    fn reply_entry(&self, reply: Reply, r: Result<(Arc<Node>, Stat), Errno>) {
        let (node, st) = tryr!(reply, r);
        let a = attr(&st);
        reply.entry(&self.entry_of(&node, &a))
    }

    /// The mode of a new object in `parent`. With ACLs on, the umask is
    /// ours to apply: not where the parent has a default ACL (the real
    /// filesystem then applies that, as the kernel's posix_acl_create).
    fn acl_mode(&self, parent: &Node, mode: u32, umask: u32) -> u32 {
        if !self.dont_mask.load(Ordering::Relaxed) || self.fs.has_default_acl(parent) {
            return mode;
        }
        mode & !(umask & 0o777)
    }
}

impl Handler for OvlFuse {
    fn init(&self, c: &mut InitConfig) {
        // Everything here is FUSE 7.27 (Linux 4.18) or older, but symlink
        // caching (7.28), killpriv v2 (7.33) and passthrough (7.40): each
        // is used only where INIT grants it. OVLFUSE_FUSE_PROTO=7.27 (for
        // tests) asks for no more than a 4.18 kernel offers.
        let old = std::env::var("OVLFUSE_FUSE_PROTO").is_ok_and(|v| v == "7.27");
        for f in [
            init::ATOMIC_O_TRUNC,
            init::PARALLEL_DIROPS,
            init::EXPORT_SUPPORT,
            init::DO_READDIRPLUS | init::READDIRPLUS_AUTO,
        ] {
            c.want(f);
        }
        if !old {
            // Requests over io_uring where the kernel offers it (Linux
            // 6.14+, fuse.enable_uring=1); /dev/fuse otherwise.
            c.want(init::OVER_IO_URING);
            c.want(init::CACHE_SYMLINKS);
            // Set-id bits are dropped by ovlfuse (killpriv.rs, with the
            // kernel's rules), file capabilities by the real filesystem
            // under our writes: no security.capability GETXATTR per write.
            c.want(init::HANDLE_KILLPRIV_V2);
            // No OPENDIR and RELEASEDIR per dir: a dir read needs no
            // state of its own here (positions are name cookies), and the
            // kernel then caches listings as CachedDir asks (5.1+).
            if c.want(init::NO_OPENDIR_SUPPORT) {
                self.no_opendir.store(true, Ordering::Relaxed);
            }
        }
        // The kernel enforces POSIX ACLs itself (with default_permissions)
        // and keeps mode and ACL consistent, as on the kernel's overlay.
        if !self.fs.cfg.noacl && !self.fs.cfg.noxattrs && c.want(init::POSIX_ACL | init::DONT_MASK)
        {
            self.dont_mask.store(true, Ordering::Relaxed);
        }
        // Large reads for the files that go through ovlfuse (lower files):
        // as much readahead as the kernel allows (it offers its maximum).
        c.max_readahead = c.max_readahead.min(1 << 20);
        if !old && self.fs.passthrough_keeps_atime() && c.want(init::PASSTHROUGH) {
            c.max_stack_depth = 1;
            self.pt.enable();
        } else {
            info!("FUSE passthrough is not available: file I/O goes through ovlfuse");
        }
    }

    fn handle(&self, req: &Request, reply: Reply) {
        match &req.op {
            Op::Open { flags } => self.open(req, *flags, reply),
            Op::Read { fh, offset, size } => self.read(*fh, *offset, *size, reply),
            Op::Write { fh, offset, data } => self.write(req, *fh, *offset, data, reply),
            // Nothing to flush (no write-back here, locks are the kernel's):
            // ENOSYS tells the kernel to send no FLUSH again.
            Op::Flush { .. } => reply.error(libc::ENOSYS),
            Op::Release { fh } => self.release(req, *fh, reply),
            Op::Fsync { fh, datasync } => self.fsync(*fh, *datasync, reply),
            Op::Opendir { .. } => self.opendir(req, reply),
            Op::Readdir { fh, offset, size } => self.readdir(req, *fh, *offset, *size, reply),
            Op::Readdirplus { fh, offset, size } => {
                self.readdirplus(req, *fh, *offset, *size, reply)
            }
            Op::Releasedir { fh } => self.releasedir(*fh, reply),
            Op::Fsyncdir { .. } => self.fsyncdir(req, reply),
            Op::Create {
                name,
                mode,
                umask,
                flags,
            } => self.create(req, name, *mode, *umask, *flags, reply),
            Op::Fallocate {
                fh,
                offset,
                length,
                mode,
            } => self.fallocate(req, *fh, *offset, *length, *mode, reply),
            Op::Lseek { fh, offset, whence } => self.lseek(*fh, *offset, *whence, reply),
            Op::CopyFileRange {
                fh_in,
                off_in,
                fh_out,
                off_out,
                len,
            } => self.copy_file_range(req, (*fh_in, *off_in), (*fh_out, *off_out), *len, reply),
            _ => self.handle_entry(req, reply),
        }
    }

    fn forget(&self, nodes: &[(u64, u64)]) {
        for &(ino, n) in nodes {
            self.fs.forget(ino, n);
        }
    }

    fn destroy(&self) {
        debug!(
            "destroy: {} nodes, {} open files",
            self.fs.nodes.len(),
            self.fs.handles.file_count()
        );
    }
}

impl OvlFuse {
    /// Whether `req` names the statistics xattr on the root (Some(true):
    /// the Prometheus form).
    fn stats_xattr(&self, req: &Request) -> Option<bool> {
        let name = match &req.op {
            Op::Getxattr { name, .. } | Op::Setxattr { name, .. } | Op::Removexattr { name } => {
                name
            }
            _ => return None,
        };
        if req.nodeid != crate::node::ROOT_INO {
            return None;
        }
        let b = name.as_bytes();
        (b == stats::XATTR_TEXT.to_bytes() || b == stats::XATTR_PROMETHEUS.to_bytes())
            .then(|| b == stats::XATTR_PROMETHEUS.to_bytes())
    }

    /// The statistics report (stats.rs) with this mount's gauges.
    pub fn stats_report(&self, prometheus: bool) -> String {
        let g = stats::Gauges {
            nodes: self.fs.nodes.len(),
            open_files: self.fs.handles.file_count(),
            transport: crate::wire::transport().into(),
            passthrough: self.pt.enabled(),
        };
        match prometheus {
            true => stats::render_prometheus(&stats::STATS, &g),
            false => stats::render_text(&stats::STATS, &g),
        }
    }
}
