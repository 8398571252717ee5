//! Replies: one per request (but FORGET), built here and handed to the
//! transport that carried the request. A reply dropped unsent answers EIO,
//! so that no request is left waiting.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use super::abi::{self, split_ttl, Attr, Writer};
use super::BackingId;

/// Writes a reply's payload in place (a READ's data): the bytes written,
/// or the errno to answer instead.
pub type Fill = Box<dyn FnOnce(&mut [u8]) -> Result<usize, i32> + Send>;

/// Where replies go: the /dev/fuse fd, or an io_uring queue entry.
pub trait Channel: Send + Sync {
    /// Sends one whole reply: the out header, then `payload` parts.
    fn send(&self, unique: u64, error: i32, payload: &[&[u8]]) -> io::Result<()>;
    /// Sends a reply of up to `size` bytes that `fill` writes into the
    /// transport's own buffer, so that data is copied once.
    fn send_fill(&self, unique: u64, size: usize, fill: Fill) -> io::Result<()>;
    /// The connection's device fd (passthrough backing files).
    fn device(&self) -> BorrowedFd<'_>;
    /// Keeps the device alive as long as a backing id needs it.
    fn device_arc(&self) -> Arc<std::os::fd::OwnedFd>;
}

/// Builds the out header and sends header + parts in one write.
pub fn write_reply(fd: BorrowedFd, unique: u64, error: i32, payload: &[&[u8]]) -> io::Result<()> {
    let len = abi::OUT_HEADER_LEN + payload.iter().map(|p| p.len()).sum::<usize>();
    let mut h = Writer::with_capacity(abi::OUT_HEADER_LEN);
    h.u32(len as u32).u32(error as u32).u64(unique);
    let mut parts = Vec::with_capacity(payload.len() + 1);
    parts.push(IoSlice::new(&h.buf));
    parts.extend(payload.iter().map(|p| IoSlice::new(p)));
    crate::sys::fuse_dev::write_message(fd, &parts).map(drop)
}

/// Fills up to `size` bytes of a per-thread buffer kept for replies, then
/// sends them: the /dev/fuse side of [`Channel::send_fill`].
pub fn write_filled(fd: BorrowedFd, unique: u64, size: usize, fill: Fill) -> io::Result<()> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        if buf.len() < size {
            buf.resize(size, 0);
        }
        match fill(&mut buf[..size]) {
            Ok(n) => write_reply(fd, unique, 0, &[&buf[..n.min(size)]]),
            Err(errno) => write_reply(fd, unique, -errno, &[]),
        }
    })
}

/// How an open does its I/O.
#[derive(Debug, Clone)]
pub enum OpenIo {
    /// Through the daemon, with the kernel's page cache.
    Cached,
    /// The kernel does the I/O on the backing file.
    Passthrough(Arc<BackingId>),
    /// A dir whose listing the kernel may keep in its page cache across
    /// opens; it drops it when the dir changes through the mount.
    CachedDir,
}

/// The answer to one request.
pub struct Reply {
    unique: u64,
    chan: Arc<dyn Channel>,
    sent: bool,
    /// For the statistics: the request's kind and arrival.
    opcode: u32,
    start: std::time::Instant,
}

/// What an entry reply tells: node id, generation, and attributes with
/// their validity.
pub struct Entry<'a> {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_ttl: Duration,
    pub attr_ttl: Duration,
    pub attr: &'a Attr,
}

impl Entry<'_> {
    pub fn write(&self, w: &mut Writer) {
        let (es, ens) = split_ttl(self.entry_ttl);
        let (asec, ans) = split_ttl(self.attr_ttl);
        w.u64(self.nodeid)
            .u64(self.generation)
            .u64(es)
            .u64(asec)
            .u32(ens)
            .u32(ans);
        self.attr.write(w);
    }
}

impl Reply {
    /// The answer to request `unique` of kind `opcode`, which arrived now.
    pub fn new(unique: u64, opcode: u32, chan: Arc<dyn Channel>) -> Reply {
        Reply {
            unique,
            chan,
            sent: false,
            opcode,
            start: std::time::Instant::now(),
        }
    }

    fn send(mut self, error: i32, payload: &[&[u8]]) {
        self.sent = true;
        crate::stats::STATS.answered(self.opcode, error, self.start);
        let r = self.chan.send(self.unique, error, payload);
        self.sent_log(r);
    }

    fn sent_log(&self, r: io::Result<()>) {
        // ENOENT: the request was interrupted and is gone; nothing to do.
        if let Err(e) = r {
            if e.raw_os_error() != Some(libc::ENOENT) {
                log::debug!("reply to request {}: {e}", self.unique);
            }
        }
    }

    /// For requests that get no reply (FORGET, INTERRUPT).
    pub fn forget_done(mut self) {
        self.sent = true;
    }

    /// An errno (positive, as errno values are).
    pub fn error(self, errno: i32) {
        self.send(-errno, &[])
    }

    pub fn ok(self) {
        self.send(0, &[])
    }

    pub fn entry(self, e: &Entry) {
        let mut w = Writer::with_capacity(abi::ENTRY_OUT_LEN);
        e.write(&mut w);
        self.send(0, &[&w.buf])
    }

    pub fn attr(self, ttl: Duration, a: &Attr) {
        let (s, ns) = split_ttl(ttl);
        let mut w = Writer::with_capacity(16 + abi::ATTR_LEN);
        w.u64(s).u32(ns).u32(0);
        a.write(&mut w);
        self.send(0, &[&w.buf])
    }

    fn open_out(w: &mut Writer, fh: u64, io: &OpenIo) {
        let (flags, id) = match io {
            OpenIo::Cached => (0, 0),
            OpenIo::Passthrough(b) => (abi::FOPEN_PASSTHROUGH, b.id()),
            OpenIo::CachedDir => (abi::FOPEN_KEEP_CACHE | abi::FOPEN_CACHE_DIR, 0),
        };
        w.u64(fh).u32(flags).u32(id);
    }

    pub fn opened(self, fh: u64, io: &OpenIo) {
        let mut w = Writer::with_capacity(16);
        Self::open_out(&mut w, fh, io);
        self.send(0, &[&w.buf])
    }

    pub fn created(self, e: &Entry, fh: u64, io: &OpenIo) {
        let mut w = Writer::with_capacity(abi::ENTRY_OUT_LEN + 16);
        e.write(&mut w);
        Self::open_out(&mut w, fh, io);
        self.send(0, &[&w.buf])
    }

    pub fn data(self, d: &[u8]) {
        self.send(0, &[d])
    }

    /// Data of up to `size` bytes that `fill` writes straight into the
    /// transport's buffer (READ), or the errno it returns.
    pub fn data_fill(mut self, size: usize, fill: Fill) {
        self.sent = true;
        // The statistics count a READ as answered when its data is read.
        crate::stats::STATS.answered(self.opcode, 0, self.start);
        let r = self.chan.send_fill(self.unique, size, fill);
        self.sent_log(r);
    }

    pub fn written(self, n: u32) {
        let mut w = Writer::with_capacity(8);
        w.u32(n).u32(0);
        self.send(0, &[&w.buf])
    }

    pub fn xattr_size(self, n: u32) {
        let mut w = Writer::with_capacity(8);
        w.u32(n).u32(0);
        self.send(0, &[&w.buf])
    }

    pub fn offset(self, off: i64) {
        self.send(0, &[&off.to_ne_bytes()])
    }

    /// fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize.
    pub fn statfs(self, s: [u64; 5], bsize: u32, namelen: u32, frsize: u32) {
        let mut w = Writer::with_capacity(80);
        for v in s {
            w.u64(v);
        }
        w.u32(bsize).u32(namelen).u32(frsize).u32(0).zeros(24);
        self.send(0, &[&w.buf])
    }

    pub fn dir(self, d: DirBuf) {
        self.send(0, &[&d.w.buf])
    }

    /// Registers `file` as the backing file of a passthrough open.
    pub fn open_backing(&self, file: impl AsFd) -> io::Result<BackingId> {
        let id = crate::sys::fuse_dev::backing_open(self.chan.device(), file.as_fd())?;
        Ok(BackingId::new(id, self.chan.device_arc()))
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.sent {
            self.sent = true;
            crate::stats::STATS.answered(self.opcode, -libc::EIO, self.start);
            let _ = self.chan.send(self.unique, -libc::EIO, &[]);
        }
    }
}

/// The entries of a READDIR or READDIRPLUS reply, up to the size the
/// kernel asked for.
pub struct DirBuf {
    w: Writer,
    max: usize,
}

impl DirBuf {
    pub fn new(max: u32) -> DirBuf {
        DirBuf {
            w: Writer::with_capacity((max as usize).min(1 << 16)),
            max: max as usize,
        }
    }

    fn fits(&self, extra: usize, name: &[u8]) -> bool {
        self.w.buf.len() + Self::len(extra, name.len()) <= self.max
    }

    fn len(extra: usize, name_len: usize) -> usize {
        (extra + abi::DIRENT_LEN + name_len).next_multiple_of(8)
    }

    /// Whether READDIRPLUS entries for all of `names` fit in `max` bytes.
    pub fn plus_fit(max: u32, names: impl IntoIterator<Item = usize>) -> bool {
        let mut left = max as usize;
        for n in names {
            let need = Self::len(abi::ENTRY_OUT_LEN, n);
            let Some(l) = left.checked_sub(need) else {
                return false;
            };
            left = l;
        }
        true
    }

    fn dirent(&mut self, ino: u64, off: u64, dtype: u32, name: &[u8]) {
        self.w
            .u64(ino)
            .u64(off)
            .u32(name.len() as u32)
            .u32(dtype)
            .bytes(name)
            .pad8();
    }

    /// A READDIR entry; false once the buffer is full (not added).
    pub fn add(&mut self, ino: u64, off: u64, dtype: u32, name: &[u8]) -> bool {
        if !self.fits(0, name) {
            return false;
        }
        self.dirent(ino, off, dtype, name);
        true
    }

    /// A READDIRPLUS entry: the entry reply for the name (node id 0: no
    /// lookup taken), and d_ino, which need not be the node id.
    pub fn add_plus(&mut self, e: &Entry, ino: u64, off: u64, dtype: u32, name: &[u8]) -> bool {
        if !self.fits(abi::ENTRY_OUT_LEN, name) {
            return false;
        }
        e.write(&mut self.w);
        self.dirent(ino, off, dtype, name);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_reply_carries_what_fill_wrote_or_its_errno() {
        let (mut r, w) = std::io::pipe().unwrap();
        let fill: Fill = Box::new(|b: &mut [u8]| {
            assert_eq!(b.len(), 8);
            b[..3].copy_from_slice(b"abc");
            Ok(3)
        });
        write_filled(w.as_fd(), 7, 8, fill).unwrap();
        write_filled(w.as_fd(), 8, 1 << 20, Box::new(|_| Err(libc::EIO))).unwrap();
        drop(w);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut got).unwrap();
        // Out header (len, error, unique), then the data; then EIO alone.
        assert_eq!(&got[..4], &19u32.to_ne_bytes());
        assert_eq!(&got[4..8], &0i32.to_ne_bytes());
        assert_eq!(&got[8..16], &7u64.to_ne_bytes());
        assert_eq!(&got[16..19], b"abc");
        assert_eq!(&got[19..23], &16u32.to_ne_bytes());
        assert_eq!(&got[23..27], &(-libc::EIO).to_ne_bytes());
        assert_eq!(got.len(), 35);
    }

    #[test]
    fn dir_entries_are_aligned_and_bounded() {
        let mut d = DirBuf::new(64);
        assert!(d.add(5, 1, 4, b"abc"));
        assert_eq!(d.w.buf.len(), 32);
        assert!(d.add(6, 2, 8, b"defghijk"));
        assert_eq!(d.w.buf.len(), 64);
        assert!(!d.add(7, 3, 8, b"x"));
        let a = Attr::default();
        let e = Entry {
            nodeid: 9,
            generation: 1,
            entry_ttl: Duration::ZERO,
            attr_ttl: Duration::ZERO,
            attr: &a,
        };
        let mut p = DirBuf::new(4096);
        assert!(p.add_plus(&e, 77, 1, 8, b"n"));
        assert_eq!(p.w.buf.len(), abi::ENTRY_OUT_LEN + 32);
        assert!(DirBuf::plus_fit(
            2 * (abi::ENTRY_OUT_LEN as u32 + 32),
            [1, 8]
        ));
        assert!(!DirBuf::plus_fit(
            2 * (abi::ENTRY_OUT_LEN as u32 + 32),
            [1, 9]
        ));
        assert_eq!(&p.w.buf[..8], &9u64.to_ne_bytes());
        assert_eq!(
            &p.w.buf[abi::ENTRY_OUT_LEN..abi::ENTRY_OUT_LEN + 8],
            &77u64.to_ne_bytes()
        );
    }
}
