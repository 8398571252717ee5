//! A FUSE connection served over /dev/fuse: the INIT handshake, then one
//! worker thread per fd (each extra worker on a clone of the fd, so the
//! kernel queues requests to each), and notifications to the kernel.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use log::{debug, info};

use super::abi::{self, init, op, Writer};
use super::reply::{write_filled, write_reply, Channel, Fill};
use super::uring::{self, QueueArgs};
use super::{Handler, InitConfig, Op, Reply, Request};
use crate::sys::fuse_dev;

/// Who may use the mount beyond what the kernel checks: allow_root is
/// enforced here (the kernel mount then has allow_other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acl {
    All,
    Owner,
    RootAndOwner,
}

/// Writes requests of one fd's replies back to that fd.
struct DevChannel {
    fd: Arc<OwnedFd>,
}

impl Channel for DevChannel {
    fn send(&self, unique: u64, error: i32, payload: &[&[u8]]) -> io::Result<()> {
        write_reply(self.fd.as_fd(), unique, error, payload)
    }

    fn send_fill(&self, unique: u64, size: usize, fill: Fill) -> io::Result<()> {
        write_filled(self.fd.as_fd(), unique, size, fill)
    }

    fn device(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn device_arc(&self) -> Arc<OwnedFd> {
        self.fd.clone()
    }
}

/// Sends notifications (cache invalidations) to the kernel.
#[derive(Clone)]
pub struct Notifier {
    dev: Arc<OwnedFd>,
}

impl Notifier {
    fn notify(&self, code: i32, payload: &[&[u8]]) -> io::Result<()> {
        // A notification is a reply with unique 0 and the code as error.
        write_reply(self.dev.as_fd(), 0, code, payload)
    }

    /// Drops the kernel's cached attributes (and data from `off`, `len`
    /// bytes; len < 0: to the end; off < 0: no data) of `ino`.
    pub fn inval_inode(&self, ino: u64, off: i64, len: i64) -> io::Result<()> {
        let mut w = Writer::with_capacity(24);
        w.u64(ino).u64(off as u64).u64(len as u64);
        self.notify(abi::NOTIFY_INVAL_INODE, &[&w.buf])
    }

    /// Drops the kernel's cached entry `name` in dir `parent`.
    pub fn inval_entry(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let mut w = Writer::with_capacity(16);
        w.u64(parent).u32(name.len() as u32).u32(0);
        self.notify(abi::NOTIFY_INVAL_ENTRY, &[&w.buf, name.as_bytes(), b"\0"])
    }
}

pub struct Session {
    dev: Arc<OwnedFd>,
    acl: Acl,
    owner: u32,
    threads: usize,
    bufsize: usize,
    /// INIT granted FUSE_OVER_IO_URING.
    uring: bool,
}

/// Requests that act on what is already open, or need no permission:
/// served for anyone even with allow_root (as libfuse does).
fn acl_exempt(opcode: u32) -> bool {
    matches!(
        opcode,
        op::READ
            | op::WRITE
            | op::FSYNC
            | op::RELEASE
            | op::READDIR
            | op::READDIRPLUS
            | op::FSYNCDIR
            | op::RELEASEDIR
            | op::FLUSH
            | op::INTERRUPT
    )
}

/// Largest write the kernel may send (max_pages 256 of 4 KiB).
const MAX_WRITE: usize = 1 << 20;
const MAX_PAGES: u16 = 256;

impl Session {
    /// Takes the connection and does the INIT handshake with `h`.
    pub fn new<H: Handler>(dev: OwnedFd, h: &H, acl: Acl, threads: usize) -> io::Result<Session> {
        let s = Session {
            dev: Arc::new(dev),
            acl,
            owner: crate::sys::mount::getuid_gid().0,
            threads: threads.max(1),
            bufsize: MAX_WRITE + 4096,
            uring: false,
        };
        let mut s = s;
        s.uring = s.handshake(h)? & init::OVER_IO_URING != 0;
        super::STATS
            .uring
            .store(s.uring, std::sync::atomic::Ordering::Relaxed);
        // Said before a daemon detaches, so that whoever starts it sees it.
        if s.uring {
            let (q, k) = s.queue_shape();
            info!("FUSE transport: io_uring, {q} queues x {k} threads");
        } else {
            info!("FUSE transport: /dev/fuse, {} threads", s.threads);
        }
        Ok(s)
    }

    pub fn notifier(&self) -> Notifier {
        Notifier {
            dev: self.dev.clone(),
        }
    }

    /// Reads INIT, lets `h` choose, answers; returns the flags in use.
    fn handshake<H: Handler>(&self, h: &H) -> io::Result<u64> {
        let mut buf = vec![0u8; self.bufsize];
        let n = loop {
            match fuse_dev::read_request(self.dev.as_fd(), &mut buf) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                r => break r?,
            }
        };
        let req = Request::parse(&buf[..n]).map_err(|_| io::Error::other("malformed INIT"))?;
        let Op::Init {
            major,
            minor,
            max_readahead,
            flags,
        } = req.op
        else {
            return Err(io::Error::other("the kernel did not start with INIT"));
        };
        let chan = DevChannel {
            fd: self.dev.clone(),
        };
        if major != abi::KERNEL_VERSION || minor < 27 {
            let _ = chan.send(req.unique, -libc::EPROTO, &[]);
            return Err(io::Error::other(format!(
                "FUSE protocol {major}.{minor} is too old (7.27, Linux 4.18, or newer needed)"
            )));
        }
        let mut c = InitConfig {
            minor,
            offered: flags,
            wanted: 0,
            max_readahead,
            max_stack_depth: 0,
        };
        for f in [init::ASYNC_READ, init::BIG_WRITES, init::MAX_PAGES] {
            c.want(f);
        }
        h.init(&mut c);
        let wanted = c.wanted & flags;
        let mut w = Writer::with_capacity(64);
        w.u32(abi::KERNEL_VERSION)
            .u32(minor.min(abi::KERNEL_MINOR_VERSION));
        w.u32(c.max_readahead.min(max_readahead))
            .u32(wanted as u32 | (init::INIT_EXT & flags) as u32);
        w.u16(16)
            .u16(12)
            .u32(MAX_WRITE as u32)
            .u32(1)
            .u16(MAX_PAGES)
            .u16(0);
        w.u32((wanted >> 32) as u32)
            .u32(c.max_stack_depth)
            .zeros(24);
        chan.send(req.unique, 0, &[&w.buf])?;
        debug!("INIT: FUSE {major}.{minor}, flags {wanted:#x} of {flags:#x}");
        Ok(wanted)
    }

    /// Serves requests until the connection ends: on io_uring queues where
    /// INIT granted them, and always on /dev/fuse (FORGET, INTERRUPT, and
    /// everything before the queues are up or if they cannot be).
    pub fn run<H: Handler>(&self, h: Arc<H>) -> io::Result<()> {
        let mut workers = Vec::new();
        let mut dev_threads = self.threads;
        if self.uring {
            let args = QueueArgs {
                dev: self.dev.clone(),
                handler: h.clone(),
                acl: self.acl,
                owner: self.owner,
                payload_len: MAX_WRITE,
            };
            // Not joined: a queue thread ends when the kernel ends its
            // entry, which the end of the connection need not wait for.
            uring::start(&args, self.queue_shape().1)?;
            dev_threads = 1;
        }
        for i in 1..dev_threads {
            // A clone gets its own queue; without one, workers share the fd.
            let fd = match fuse_dev::clone_fd(self.dev.as_fd()) {
                Ok(fd) => Arc::new(fd),
                Err(e) => {
                    debug!("cannot clone the FUSE fd ({e}); threads share it");
                    self.dev.clone()
                }
            };
            let (h, s) = (h.clone(), self.worker_args());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ovlfuse-{i}"))
                    .spawn(move || {
                        let _ = serve(fd, &*h, s);
                    })?,
            );
        }
        let r = serve(self.dev.clone(), &*h, self.worker_args());
        for w in workers {
            let _ = w.join();
        }
        h.destroy();
        let s = &super::STATS;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        info!(
            "requests served: {} over io_uring, {} over /dev/fuse",
            n(&s.io_uring),
            n(&s.dev_fuse)
        );
        r
    }

    /// io_uring queues (one per possible CPU) and threads per queue.
    fn queue_shape(&self) -> (usize, usize) {
        let queues = crate::sys::uring::possible_cpus();
        (queues, self.threads.div_ceil(queues))
    }

    fn worker_args(&self) -> (Acl, u32, usize) {
        (self.acl, self.owner, self.bufsize)
    }
}

/// One worker: read a request, answer it, until the device says the
/// connection is gone (ENODEV).
fn serve<H: Handler>(
    fd: Arc<OwnedFd>,
    h: &H,
    (acl, owner, bufsize): (Acl, u32, usize),
) -> io::Result<()> {
    let chan: Arc<dyn Channel> = Arc::new(DevChannel { fd: fd.clone() });
    let mut buf = vec![0u8; bufsize];
    loop {
        let n = match fuse_dev::read_request(fd.as_fd(), &mut buf) {
            Ok(n) => n,
            // Interrupted before we read it, or nothing (yet).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EAGAIN)) => {
                continue
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) => return Err(e),
        };
        super::count(&super::STATS.dev_fuse);
        // The unique is the second field; a malformed request is answered.
        let unique = buf
            .get(8..16)
            .map(|u| u64::from_ne_bytes(u.try_into().expect("8 bytes")));
        dispatch(Request::parse(&buf[..n]), unique, h, &chan, acl, owner);
    }
}

/// Answers one request read from any transport. `unique`: the request's
/// id where a malformed one can still be answered.
pub fn dispatch<H: Handler>(
    parsed: Result<Request, super::request::Malformed>,
    unique: Option<u64>,
    h: &H,
    chan: &Arc<dyn Channel>,
    acl: Acl,
    owner: u32,
) {
    let req = match parsed {
        Ok(r) => r,
        Err(_) => {
            if let Some(u) = unique {
                let _ = chan.send(u, -libc::EIO, &[]);
            }
            return;
        }
    };
    let reply = Reply::new(req.unique, req.opcode, chan.clone());
    match &req.op {
        Op::Forget { nlookup } => {
            reply.forget_done();
            h.forget(&[(req.nodeid, *nlookup)]);
        }
        Op::BatchForget { nodes } => {
            reply.forget_done();
            h.forget(nodes);
        }
        Op::Interrupt => reply.forget_done(),
        Op::Destroy => reply.ok(),
        Op::Init { .. } => reply.error(libc::EIO),
        Op::Unknown => reply.error(libc::ENOSYS),
        _ if acl == Acl::RootAndOwner
            && req.uid != 0
            && req.uid != owner
            && !acl_exempt(req.opcode) =>
        {
            reply.error(libc::EACCES)
        }
        _ => h.handle(&req, reply),
    }
}
