//! FUSE over io_uring (Linux 6.14+, with fuse's `enable_uring` on): one
//! queue per possible CPU, each served by threads pinned to that CPU, each
//! thread holding one ring entry. A request from a task on CPU n comes on
//! queue n; its reply goes back with the commit that fetches the next.
//! FORGET, INTERRUPT and notifications stay on /dev/fuse, whose workers
//! also serve everything until every queue has an entry, and everything
//! if registering fails: falling back needs nothing more.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use log::warn;
use parking_lot::Mutex;

use super::reply::{Channel, Fill};
use super::session::{dispatch, Acl};
use super::{Handler, Request};
use crate::sys::uring::{pin_to_cpu, possible_cpus, RingEntry};

/// A reply a handler sent, kept for the commit that follows it.
enum Pending {
    Bytes(u64, i32, Vec<u8>),
    /// Data written straight into the entry's payload buffer at commit.
    Fill(u64, usize, Fill),
}

/// Keeps the reply a handler sends, for the commit that follows it.
struct UringChannel {
    reply: Mutex<Option<Pending>>,
    dev: Arc<OwnedFd>,
}

impl Channel for UringChannel {
    fn send(&self, unique: u64, error: i32, payload: &[&[u8]]) -> io::Result<()> {
        let mut v = Vec::with_capacity(payload.iter().map(|p| p.len()).sum());
        for p in payload {
            v.extend_from_slice(p);
        }
        *self.reply.lock() = Some(Pending::Bytes(unique, error, v));
        Ok(())
    }

    fn send_fill(&self, unique: u64, size: usize, fill: Fill) -> io::Result<()> {
        *self.reply.lock() = Some(Pending::Fill(unique, size, fill));
        Ok(())
    }

    fn device(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    fn device_arc(&self) -> Arc<OwnedFd> {
        self.dev.clone()
    }
}

/// What every queue thread needs.
pub struct QueueArgs<H> {
    pub dev: Arc<OwnedFd>,
    pub handler: Arc<H>,
    pub acl: Acl,
    pub owner: u32,
    pub payload_len: usize,
}

impl<H> Clone for QueueArgs<H> {
    fn clone(&self) -> Self {
        QueueArgs {
            dev: self.dev.clone(),
            handler: self.handler.clone(),
            acl: self.acl,
            owner: self.owner,
            payload_len: self.payload_len,
        }
    }
}

/// Starts `per_queue` threads on each CPU's queue.
pub fn start<H: Handler>(a: &QueueArgs<H>, per_queue: usize) -> io::Result<()> {
    for qid in 0..possible_cpus() {
        for i in 0..per_queue.max(1) {
            let a = a.clone();
            std::thread::Builder::new()
                .name(format!("ovlfuse-q{qid}.{i}"))
                .spawn(move || serve_queue(a, qid))?;
        }
    }
    Ok(())
}

/// One ring entry of queue `qid`: take a request, answer it, commit.
fn serve_queue<H: Handler>(a: QueueArgs<H>, qid: usize) {
    pin_to_cpu(qid);
    let mut ent = match RingEntry::new(a.dev.as_fd(), qid as u16, a.payload_len) {
        Ok(e) => e,
        Err(e) => return warn!("io_uring queue {qid}: {e}; /dev/fuse serves"),
    };
    if let Err(e) = ent.register() {
        return warn!("io_uring queue {qid}: cannot register ({e}); /dev/fuse serves");
    }
    let chan = Arc::new(UringChannel {
        reply: Mutex::new(None),
        dev: a.dev.clone(),
    });
    let dchan: Arc<dyn Channel> = chan.clone();
    let mut first = true;
    loop {
        let req = match ent.wait() {
            Ok(r) => r,
            Err(e) => {
                // At the start: refused, unless the connection ended
                // before any request came; later: the connection ended.
                let ended = matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTCONN) | Some(libc::ECANCELED)
                );
                if first && !ended {
                    warn!("io_uring queue {qid}: {e}; /dev/fuse serves");
                }
                return;
            }
        };
        first = false;
        super::count(&super::STATS.io_uring);
        let id = req.commit_id;
        let parsed = Request::parse_parts(req.header, req.op, req.payload);
        dispatch(parsed, Some(id), &*a.handler, &dchan, a.acl, a.owner);
        let pending = chan.reply.lock().take();
        let done = match pending {
            Some(Pending::Bytes(unique, error, data)) => ent.commit(id, unique, error, &data),
            Some(Pending::Fill(unique, size, fill)) => ent.commit_fill(id, unique, size, fill),
            None => ent.commit(id, id, -libc::EIO, &[]),
        };
        if done.is_err() {
            return;
        }
    }
}
