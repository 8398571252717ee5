//! The FUSE wire format (the kernel's include/uapi/linux/fuse.h, protocol
//! 7.27 to 7.42): opcodes, flags, and the byte layout of every struct
//! ovlfuse reads or writes. Everything is native-endian and 8-byte aligned
//! as the kernel lays it out; structs are read and written field by field.

pub const KERNEL_VERSION: u32 = 7;
/// The newest minor version this side speaks.
pub const KERNEL_MINOR_VERSION: u32 = 42;

pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
}

/// INIT flags (flags | flags2 << 32).
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const EXPORT_SUPPORT: u64 = 1 << 4;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DONT_MASK: u64 = 1 << 6;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const ASYNC_DIO: u64 = 1 << 15;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// FOPEN_* flags of an open reply.
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;

/// SETATTR valid bits.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

pub const GETATTR_FH: u32 = 1;
pub const NOTIFY_INVAL_INODE: i32 = 2;
pub const NOTIFY_INVAL_ENTRY: i32 = 3;

pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;
pub const ATTR_LEN: usize = 88;
pub const ENTRY_OUT_LEN: usize = 40 + ATTR_LEN;
pub const DIRENT_LEN: usize = 24;
pub const WRITE_IN_LEN: usize = 40;

/// Reads the fields of an in-struct in order, from one buffer or from two
/// (io_uring puts an op's struct and the rest of its arguments apart); a
/// field never straddles the two.
pub struct Reader<'a> {
    buf: &'a [u8],
    next: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, next: &[] }
    }

    pub fn chain(buf: &'a [u8], next: &'a [u8]) -> Reader<'a> {
        Reader { buf, next }
    }

    fn cur(&mut self) -> &'a [u8] {
        if self.buf.is_empty() {
            self.buf = std::mem::take(&mut self.next);
        }
        self.buf
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let cur = self.cur();
        if cur.len() < n {
            return None;
        }
        let (a, b) = cur.split_at(n);
        self.buf = b;
        Some(a)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .map(|b| u16::from_ne_bytes(b.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }

    /// A NUL-terminated name.
    pub fn name(&mut self) -> Option<&'a [u8]> {
        let cur = self.cur();
        let end = cur.iter().position(|&b| b == 0)?;
        self.buf = &cur[end + 1..];
        Some(&cur[..end])
    }

    /// What is left (a write's data, an xattr's value).
    pub fn rest(&mut self) -> &'a [u8] {
        let cur = self.cur();
        self.buf = &[];
        cur
    }
}

/// Builds an out-struct field by field.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Zero bytes up to the next multiple of 8 (dirents are 8-aligned).
    pub fn pad8(&mut self) -> &mut Self {
        while self.buf.len() % 8 != 0 {
            self.buf.push(0);
        }
        self
    }

    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
}

/// fuse_attr: what a GETATTR or entry reply says of an inode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// Type and permission bits, as st_mode.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

impl Attr {
    pub fn write(&self, w: &mut Writer) {
        w.u64(self.ino).u64(self.size).u64(self.blocks);
        w.u64(self.atime.0 as u64)
            .u64(self.mtime.0 as u64)
            .u64(self.ctime.0 as u64);
        w.u32(self.atime.1).u32(self.mtime.1).u32(self.ctime.1);
        w.u32(self.mode).u32(self.nlink).u32(self.uid).u32(self.gid);
        w.u32(self.rdev).u32(self.blksize).u32(0);
    }
}

/// A (seconds, nanoseconds) validity period.
pub fn split_ttl(d: std::time::Duration) -> (u64, u32) {
    (d.as_secs(), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        let mut w = Writer::default();
        Attr::default().write(&mut w);
        assert_eq!(w.buf.len(), ATTR_LEN);
        let mut r = Reader::new(b"ab\0cd\0rest");
        assert_eq!(r.name(), Some(&b"ab"[..]));
        assert_eq!(r.name(), Some(&b"cd"[..]));
        assert_eq!(r.rest(), b"rest");
        assert_eq!(r.u32(), None);
    }
}
