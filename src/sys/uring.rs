//! One FUSE-over-io_uring ring entry (the kernel's fuse_ring_ent): an
//! io_uring with 128-byte SQEs, the entry's header and payload buffers, and
//! the two commands, REGISTER and COMMIT_AND_FETCH. The kernel writes a
//! request into the buffers and completes the command; we write the reply
//! there and commit it, which also asks for the next request. Used only by
//! `crate::wire::uring`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// struct fuse_uring_req_header: in_out (128), op_in (128), ent_in_out (32).
pub const HEADER_LEN: usize = 288;
const OP_IN: usize = 128;
const ENT_IN_OUT: usize = 256;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

pub struct RingEntry {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    dev: RawFd,
    qid: u16,
    header: Box<[u8]>,
    payload: Box<[u8]>,
    /// The two iovecs the kernel reads at REGISTER: header, payload.
    iov: Box<[libc::iovec; 2]>,
}

// SAFETY: the raw pointers in `iov` point into buffers this entry owns.
unsafe impl Send for RingEntry {}

/// A request as the entry holds it: the in header, the op's fixed
/// struct, the rest of its arguments, and the id to commit its reply with.
pub struct RingRequest<'a> {
    pub header: &'a [u8],
    pub op: &'a [u8],
    pub payload: &'a [u8],
    pub commit_id: u64,
}

impl RingEntry {
    /// A ring for one entry of queue `qid` on connection `dev`.
    pub fn new(dev: BorrowedFd, qid: u16, payload_len: usize) -> io::Result<RingEntry> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_single_issuer()
            .build(2)?;
        let mut header = vec![0u8; HEADER_LEN].into_boxed_slice();
        let mut payload = vec![0u8; payload_len].into_boxed_slice();
        let iov = Box::new([
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ]);
        Ok(RingEntry {
            ring,
            dev: dev.as_raw_fd(),
            qid,
            header,
            payload,
            iov,
        })
    }

    fn submit(&mut self, cmd_op: u32, commit_id: u64) -> io::Result<()> {
        // struct fuse_uring_cmd_req: flags, commit_id, qid, padding.
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        let sqe = opcode::UringCmd80::new(types::Fd(self.dev), cmd_op)
            .cmd(cmd)
            .addr(Some(self.iov.as_ptr() as u64))
            .build();
        let sqe = with_len(sqe, 2);
        // SAFETY: the iovecs and the buffers they point to live as long as
        // this entry, which outlives the command (dropping the ring ends it).
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        Ok(())
    }

    /// Offers the entry to the kernel (FUSE_IO_URING_CMD_REGISTER).
    pub fn register(&mut self) -> io::Result<()> {
        self.submit(CMD_REGISTER, 0)?;
        self.ring.submit()?;
        Ok(())
    }

    /// Waits until the kernel has put a request into the entry. An error
    /// (ENOTCONN, ECANCELED) means the connection or the ring is gone.
    pub fn wait(&mut self) -> io::Result<RingRequest<'_>> {
        let res = loop {
            if let Some(c) = self.ring.completion().next() {
                break c.result();
            }
            match self.ring.submit_and_wait(1) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                r => r?,
            };
        };
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        let h = &self.header;
        let commit_id =
            u64::from_ne_bytes(h[ENT_IN_OUT + 8..ENT_IN_OUT + 16].try_into().expect("8"));
        let payload_sz =
            u32::from_ne_bytes(h[ENT_IN_OUT + 16..ENT_IN_OUT + 20].try_into().expect("4"));
        let len = u32::from_ne_bytes(h[0..4].try_into().expect("4")) as usize;
        // The op's struct is what the total length leaves beside the
        // header and the payload.
        let payload_sz = (payload_sz as usize).min(self.payload.len());
        let op_len = len.saturating_sub(40 + payload_sz).min(OP_IN);
        Ok(RingRequest {
            header: &h[..40],
            op: &h[OP_IN..OP_IN + op_len],
            payload: &self.payload[..payload_sz],
            commit_id,
        })
    }

    /// Writes the reply (out header fields and payload parts) and commits
    /// it, which also fetches the next request.
    pub fn commit(
        &mut self,
        commit_id: u64,
        unique: u64,
        error: i32,
        reply: &[u8],
    ) -> io::Result<()> {
        let n = reply.len().min(self.payload.len());
        self.payload[..n].copy_from_slice(&reply[..n]);
        self.commit_len(commit_id, unique, error, n)
    }

    /// Commits a reply whose payload `fill` writes in place (up to `size`
    /// bytes), or the errno it returns.
    pub fn commit_fill(
        &mut self,
        commit_id: u64,
        unique: u64,
        size: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, i32>,
    ) -> io::Result<()> {
        let size = size.min(self.payload.len());
        match fill(&mut self.payload[..size]) {
            Ok(n) => self.commit_len(commit_id, unique, 0, n.min(size)),
            Err(errno) => self.commit_len(commit_id, unique, -errno, 0),
        }
    }

    fn commit_len(&mut self, commit_id: u64, unique: u64, error: i32, n: usize) -> io::Result<()> {
        let h = &mut self.header;
        h[0..4].copy_from_slice(&((16 + n) as u32).to_ne_bytes());
        h[4..8].copy_from_slice(&error.to_ne_bytes());
        h[8..16].copy_from_slice(&unique.to_ne_bytes());
        h[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&(n as u32).to_ne_bytes());
        self.submit(CMD_COMMIT_AND_FETCH, commit_id)?;
        self.ring.submit()?;
        Ok(())
    }
}

/// Sets the SQE's len field (the iovec count), which the io-uring crate's
/// UringCmd80 builder has no setter for.
fn with_len(e: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is repr(C): the kernel's 64-byte io_uring_sqe and 64
    // more bytes, all plain data; len is the u32 at offset 24.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(e) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above; any bytes are a valid Entry128.
    unsafe { std::mem::transmute(raw) }
}

/// The number of possible CPUs: the kernel has one queue per possible CPU.
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .filter_map(|r| r.rsplit('-').next()?.parse::<usize>().ok())
                .max()
        })
        .map(|m| m + 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs the calling thread on `cpu` only (best effort): requests from a
/// CPU come on that CPU's queue.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data, set up by the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
