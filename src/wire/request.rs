//! Requests as the kernel sends them: the header, and the arguments of
//! each operation ovlfuse serves, parsed without copying.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::abi::{self, op, Reader};

/// One request: who asks, about which node, and what.
#[derive(Debug)]
pub struct Request<'a> {
    pub unique: u64,
    pub opcode: u32,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub op: Op<'a>,
}

/// SETATTR's arguments: each field is set if the kernel asks for it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetattrIn {
    pub fh: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// (seconds, nanoseconds); UTIME_NOW in the nanoseconds for "now".
    pub atime: Option<(i64, i64)>,
    pub mtime: Option<(i64, i64)>,
}

#[derive(Debug)]
pub enum Op<'a> {
    Lookup {
        name: &'a OsStr,
    },
    Forget {
        nlookup: u64,
    },
    /// (node id, lookups) pairs.
    BatchForget {
        nodes: Vec<(u64, u64)>,
    },
    Getattr {
        fh: Option<u64>,
    },
    Setattr(SetattrIn),
    Readlink,
    Symlink {
        name: &'a OsStr,
        target: &'a OsStr,
    },
    Mknod {
        name: &'a OsStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    },
    Mkdir {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
    },
    Unlink {
        name: &'a OsStr,
    },
    Rmdir {
        name: &'a OsStr,
    },
    Rename {
        name: &'a OsStr,
        newparent: u64,
        newname: &'a OsStr,
        flags: u32,
    },
    Link {
        oldnodeid: u64,
        newname: &'a OsStr,
    },
    Open {
        flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Write {
        fh: u64,
        offset: u64,
        data: &'a [u8],
    },
    Statfs,
    Release {
        fh: u64,
    },
    Fsync {
        fh: u64,
        datasync: bool,
    },
    Setxattr {
        name: &'a OsStr,
        value: &'a [u8],
        flags: i32,
    },
    Getxattr {
        name: &'a OsStr,
        size: u32,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a OsStr,
    },
    Flush {
        fh: u64,
    },
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
        flags: u64,
    },
    Opendir {
        flags: u32,
    },
    Readdir {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Readdirplus {
        fh: u64,
        offset: u64,
        size: u32,
    },
    Releasedir {
        fh: u64,
    },
    Fsyncdir {
        fh: u64,
        datasync: bool,
    },
    Access {
        mask: u32,
    },
    Create {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
        flags: u32,
    },
    Interrupt,
    Destroy,
    Fallocate {
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    },
    Lseek {
        fh: u64,
        offset: i64,
        whence: u32,
    },
    CopyFileRange {
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    },
    /// An operation ovlfuse does not serve: answered ENOSYS.
    Unknown,
}

/// Why a request could not be read: too short, or a name without NUL.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

fn name(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

impl<'a> Request<'a> {
    /// Parses one message read from the device.
    pub fn parse(buf: &'a [u8]) -> Result<Request<'a>, Malformed> {
        let (len, h) = parse_header(buf)?;
        if len < abi::IN_HEADER_LEN || len > buf.len() {
            return Err(Malformed);
        }
        h.with_op(Reader::new(&buf[abi::IN_HEADER_LEN..len]))
    }

    /// Parses a request as an io_uring entry holds it: the in header, the
    /// op's fixed struct, and the rest of its arguments.
    pub fn parse_parts(
        header: &'a [u8],
        op: &'a [u8],
        payload: &'a [u8],
    ) -> Result<Request<'a>, Malformed> {
        parse_header(header)?.1.with_op(Reader::chain(op, payload))
    }
}

/// The in header's fields but its length.
struct Header {
    opcode: u32,
    unique: u64,
    nodeid: u64,
    uid: u32,
    gid: u32,
    pid: u32,
}

impl Header {
    fn with_op(self, args: Reader) -> Result<Request, Malformed> {
        let op = parse_op(self.opcode, args).ok_or(Malformed)?;
        Ok(Request {
            unique: self.unique,
            opcode: self.opcode,
            nodeid: self.nodeid,
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
            op,
        })
    }
}

fn parse_header(buf: &[u8]) -> Result<(usize, Header), Malformed> {
    let mut h = Reader::new(buf);
    let mut read = || -> Option<(usize, Header)> {
        let (len, opcode, unique, nodeid) = (h.u32()?, h.u32()?, h.u64()?, h.u64()?);
        let (uid, gid, pid) = (h.u32()?, h.u32()?, h.u32()?);
        let hdr = Header {
            opcode,
            unique,
            nodeid,
            uid,
            gid,
            pid,
        };
        Some((len as usize, hdr))
    };
    read().ok_or(Malformed)
}

fn parse_op(opcode: u32, mut r: Reader) -> Option<Op> {
    Some(match opcode {
        op::LOOKUP => Op::Lookup {
            name: name(r.name()?),
        },
        op::FORGET => Op::Forget { nlookup: r.u64()? },
        op::BATCH_FORGET => {
            let count = r.u32()?;
            r.skip(4)?;
            let nodes = (0..count)
                .map(|_| Some((r.u64()?, r.u64()?)))
                .collect::<Option<_>>()?;
            Op::BatchForget { nodes }
        }
        op::GETATTR => {
            let flags = r.u32()?;
            r.skip(4)?;
            let fh = r.u64()?;
            Op::Getattr {
                fh: (flags & abi::GETATTR_FH != 0).then_some(fh),
            }
        }
        op::SETATTR => Op::Setattr(parse_setattr(&mut r)?),
        op::READLINK => Op::Readlink,
        op::SYMLINK => Op::Symlink {
            name: name(r.name()?),
            target: name(r.name()?),
        },
        op::MKNOD => {
            let (mode, rdev, umask) = (r.u32()?, r.u32()?, r.u32()?);
            r.skip(4)?;
            Op::Mknod {
                mode,
                rdev,
                umask,
                name: name(r.name()?),
            }
        }
        op::MKDIR => {
            let (mode, umask) = (r.u32()?, r.u32()?);
            Op::Mkdir {
                mode,
                umask,
                name: name(r.name()?),
            }
        }
        op::UNLINK => Op::Unlink {
            name: name(r.name()?),
        },
        op::RMDIR => Op::Rmdir {
            name: name(r.name()?),
        },
        op::RENAME | op::RENAME2 => {
            let newparent = r.u64()?;
            let flags = if opcode == op::RENAME2 {
                let f = r.u32()?;
                r.skip(4)?;
                f
            } else {
                0
            };
            Op::Rename {
                newparent,
                flags,
                name: name(r.name()?),
                newname: name(r.name()?),
            }
        }
        op::LINK => Op::Link {
            oldnodeid: r.u64()?,
            newname: name(r.name()?),
        },
        _ => return parse_io_op(opcode, r),
    })
}

/// Requests on open files and dirs.
fn parse_io_op(opcode: u32, mut r: Reader) -> Option<Op> {
    Some(match opcode {
        op::OPEN => Op::Open { flags: r.u32()? },
        op::OPENDIR => Op::Opendir { flags: r.u32()? },
        op::READ | op::READDIR | op::READDIRPLUS => {
            let (fh, offset, size) = (r.u64()?, r.u64()?, r.u32()?);
            match opcode {
                op::READ => Op::Read { fh, offset, size },
                op::READDIR => Op::Readdir { fh, offset, size },
                _ => Op::Readdirplus { fh, offset, size },
            }
        }
        op::WRITE => {
            let (fh, offset, size) = (r.u64()?, r.u64()?, r.u32()? as usize);
            r.skip(abi::WRITE_IN_LEN - 20)?;
            let data = r.rest();
            Op::Write {
                fh,
                offset,
                data: data.get(..size)?,
            }
        }
        op::RELEASE => Op::Release { fh: r.u64()? },
        op::RELEASEDIR => Op::Releasedir { fh: r.u64()? },
        op::FSYNC | op::FSYNCDIR => {
            let (fh, datasync) = (r.u64()?, r.u32()? & 1 != 0);
            match opcode {
                op::FSYNC => Op::Fsync { fh, datasync },
                _ => Op::Fsyncdir { fh, datasync },
            }
        }
        op::FLUSH => Op::Flush { fh: r.u64()? },
        op::CREATE => {
            let (flags, mode, umask) = (r.u32()?, r.u32()?, r.u32()?);
            r.skip(4)?;
            Op::Create {
                flags,
                mode,
                umask,
                name: name(r.name()?),
            }
        }
        op::FALLOCATE => Op::Fallocate {
            fh: r.u64()?,
            offset: r.u64()?,
            length: r.u64()?,
            mode: r.u32()?,
        },
        op::LSEEK => Op::Lseek {
            fh: r.u64()?,
            offset: r.u64()? as i64,
            whence: r.u32()?,
        },
        op::COPY_FILE_RANGE => {
            let (fh_in, off_in) = (r.u64()?, r.u64()?);
            r.skip(8)?; // the output node: its handle says it all
            Op::CopyFileRange {
                fh_in,
                off_in,
                fh_out: r.u64()?,
                off_out: r.u64()?,
                len: r.u64()?,
            }
        }
        _ => return parse_other_op(opcode, r),
    })
}

/// xattrs, and requests about the connection itself.
fn parse_other_op(opcode: u32, mut r: Reader) -> Option<Op> {
    Some(match opcode {
        op::SETXATTR => {
            let (size, flags) = (r.u32()? as usize, r.u32()? as i32);
            let n = name(r.name()?);
            Op::Setxattr {
                name: n,
                flags,
                value: r.rest().get(..size)?,
            }
        }
        op::GETXATTR => {
            let size = r.u32()?;
            r.skip(4)?;
            Op::Getxattr {
                size,
                name: name(r.name()?),
            }
        }
        op::LISTXATTR => Op::Listxattr { size: r.u32()? },
        op::REMOVEXATTR => Op::Removexattr {
            name: name(r.name()?),
        },
        op::ACCESS => Op::Access { mask: r.u32()? },
        op::STATFS => Op::Statfs,
        op::INIT => parse_init(&mut r)?,
        op::INTERRUPT => Op::Interrupt,
        op::DESTROY => Op::Destroy,
        _ => Op::Unknown,
    })
}

fn parse_init(r: &mut Reader) -> Option<Op<'static>> {
    let (major, minor, max_readahead, flags) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    let mut flags = flags as u64;
    // flags2 exists from 7.36 on, and counts only with FUSE_INIT_EXT.
    if flags & abi::init::INIT_EXT != 0 {
        flags |= (r.u32().unwrap_or(0) as u64) << 32;
    }
    Some(Op::Init {
        major,
        minor,
        max_readahead,
        flags,
    })
}

fn parse_setattr(r: &mut Reader) -> Option<SetattrIn> {
    use abi::fattr::*;
    let valid = r.u32()?;
    r.skip(4)?;
    let (fh, size, _lock_owner) = (r.u64()?, r.u64()?, r.u64()?);
    let (atime, mtime, _ctime) = (r.u64()? as i64, r.u64()? as i64, r.u64()?);
    let (atimensec, mtimensec, _ctimensec) = (r.u32()?, r.u32()?, r.u32()?);
    let mode = r.u32()?;
    r.skip(4)?;
    let (uid, gid) = (r.u32()?, r.u32()?);
    let has = |bit| valid & bit != 0;
    let time = |set, now, s: i64, ns: u32| match (has(set), has(now)) {
        (_, true) => Some((0, libc::UTIME_NOW)),
        (true, false) => Some((s, ns as i64)),
        _ => None,
    };
    Some(SetattrIn {
        fh: has(FH).then_some(fh),
        mode: has(MODE).then_some(mode),
        uid: has(UID).then_some(uid),
        gid: has(GID).then_some(gid),
        size: has(SIZE).then_some(size),
        atime: time(ATIME, ATIME_NOW, atime, atimensec),
        mtime: time(MTIME, MTIME_NOW, mtime, mtimensec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::abi::Writer;

    fn header(w: &mut Writer, opcode: u32, len: usize) {
        w.u32(len as u32)
            .u32(opcode)
            .u64(7)
            .u64(42)
            .u32(1000)
            .u32(100)
            .u32(9)
            .u32(0);
    }

    #[test]
    fn parses_names_and_args() {
        let mut w = Writer::default();
        header(&mut w, op::RENAME2, 40 + 16 + 4 + 4);
        w.u64(5)
            .u32(libc::RENAME_NOREPLACE)
            .u32(0)
            .bytes(b"old\0new\0");
        let r = Request::parse(&w.buf).unwrap();
        assert_eq!(
            (r.unique, r.nodeid, r.uid, r.gid, r.pid),
            (7, 42, 1000, 100, 9)
        );
        match r.op {
            Op::Rename {
                name,
                newparent,
                newname,
                flags,
            } => {
                assert_eq!(
                    (name, newparent, newname),
                    (OsStr::new("old"), 5, OsStr::new("new"))
                );
                assert_eq!(flags, libc::RENAME_NOREPLACE);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn write_data_is_exactly_its_size_and_short_input_is_refused() {
        let mut w = Writer::default();
        header(&mut w, op::WRITE, 40 + 40 + 5);
        w.u64(3)
            .u64(4096)
            .u32(5)
            .u32(0)
            .u64(0)
            .u32(0)
            .u32(0)
            .bytes(b"hello");
        match Request::parse(&w.buf).unwrap().op {
            Op::Write { fh, offset, data } => {
                assert_eq!((fh, offset, data), (3, 4096, &b"hello"[..]))
            }
            o => panic!("{o:?}"),
        }
        let mut short = Writer::default();
        header(&mut short, op::LOOKUP, 40 + 3);
        short.bytes(b"abc");
        assert_eq!(Request::parse(&short.buf).unwrap_err(), Malformed);
        assert_eq!(Request::parse(&w.buf[..30]).unwrap_err(), Malformed);
    }

    #[test]
    fn parts_as_io_uring_gives_them() {
        let mut w = Writer::default();
        header(&mut w, op::MKDIR, 40 + 8 + 4);
        w.u32(0o755).u32(0o022).bytes(b"dir\0");
        let (h, rest) = w.buf.split_at(40);
        let (opin, payload) = rest.split_at(8);
        match Request::parse_parts(h, opin, payload).unwrap().op {
            Op::Mkdir { name, mode, umask } => {
                assert_eq!((name, mode, umask), (OsStr::new("dir"), 0o755, 0o022))
            }
            o => panic!("{o:?}"),
        }
        // A name-only op has an empty struct: the name is in the payload.
        let mut w = Writer::default();
        header(&mut w, op::LOOKUP, 40 + 2);
        match Request::parse_parts(&w.buf, &[], b"x\0").unwrap().op {
            Op::Lookup { name } => assert_eq!(name, OsStr::new("x")),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn setattr_now_and_fh() {
        use crate::wire::abi::fattr::*;
        let mut w = Writer::default();
        header(&mut w, op::SETATTR, 40 + 88);
        w.u32(FH | SIZE | ATIME | ATIME_NOW | MTIME)
            .u32(0)
            .u64(11)
            .u64(99)
            .u64(0);
        w.u64(1)
            .u64(2)
            .u64(3)
            .u32(0)
            .u32(500)
            .u32(0)
            .u32(0o644)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0);
        match Request::parse(&w.buf).unwrap().op {
            Op::Setattr(s) => {
                assert_eq!((s.fh, s.size, s.mode), (Some(11), Some(99), None));
                assert_eq!(s.atime, Some((0, libc::UTIME_NOW)));
                assert_eq!(s.mtime, Some((2, 500)));
            }
            o => panic!("{o:?}"),
        }
    }
}
