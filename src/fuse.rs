//! The thin adapter from fuser's `Filesystem` to the overlay core.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{debug, info};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::dir::{Creds, NewObj};
use crate::inode::SetAttr;
use crate::killpriv::Caller;
use crate::node::{is_split_id, Node, ROOT_INO};
use crate::passthrough::Passthrough;
use crate::sys::{self, Stat};
use crate::{Errno, OvlFs};

pub struct OvlFuse {
    pub fs: Arc<OvlFs>,
    ttl: Duration,
    /// Which opens use FUSE passthrough.
    pt: Passthrough,
    /// POSIX ACLs are on (FUSE_POSIX_ACL with FUSE_DONT_MASK): the kernel
    /// leaves the umask of new objects to us (acl_mode).
    dont_mask: AtomicBool,
}

impl OvlFuse {
    pub fn new(fs: Arc<OvlFs>) -> OvlFuse {
        let ttl = Duration::from_secs_f64(fs.cfg.timeout);
        OvlFuse {
            fs,
            ttl,
            pt: Passthrough::default(),
            dont_mask: AtomicBool::new(false),
        }
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.fs.node(ino.0)
    }
}

fn e(err: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(err.0)
}

fn time(s: i64, ns: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(ns as u64)
    }
}

fn to_ts(t: TimeOrNow) -> (i64, i64) {
    match t {
        TimeOrNow::Now => (0, sys::UTIME_NOW),
        TimeOrNow::SpecificTime(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(neg) => {
                let d = neg.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if n == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - n)
                }
            }
        },
    }
}

pub fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dtype_kind(d: u8) -> FileType {
    match d {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

pub fn attr(st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn creds(req: &Request) -> Creds {
    Creds {
        uid: req.uid(),
        gid: req.gid(),
    }
}

macro_rules! tryr {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return $reply.error(e(err)),
        }
    };
}

impl OvlFuse {
    /// Picks the I/O mode of a new open (passthrough.rs).
    fn start_io(
        &self,
        ino: u64,
        fh: u64,
        register: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let fd = self
            .pt
            .enabled()
            .then(|| self.fs.passthrough_fd(fh))
            .flatten();
        self.pt.start(ino, fh, fd, register)
    }

    /// The attributes of an entry reply. fuser sends attr.ino as the node
    /// id, and the kernel takes it as st_ino too: a node whose id is not its
    /// st_ino gets no attribute caching, so that the GETATTR that follows
    /// sets the right number.
    fn entry_attr(&self, node: &Node, st: &Stat) -> (FileAttr, Duration) {
        let mut a = attr(st);
        // fuser sends attr.ino as the node id: the root's ("..") is 1.
        if is_split_id(node.ino) || node.ino == ROOT_INO {
            a.ino = INodeNo(node.ino);
        }
        (a, self.attr_ttl(node))
    }

    /// No attribute caching for a node whose id is not its st_ino (its
    /// entry replies would set the kernel's i_ino to the id), nor for one
    /// open for writing (Node::writers).
    fn attr_ttl(&self, node: &Node) -> Duration {
        if is_split_id(node.ino) || node.writers.load(Ordering::Acquire) > 0 {
            Duration::ZERO
        } else {
            self.ttl
        }
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

    fn reply_entry(&self, reply: ReplyEntry, r: Result<(Arc<Node>, Stat), Errno>) {
        match r {
            Ok((node, st)) => {
                let (a, attr_ttl) = self.entry_attr(&node, &st);
                reply.entry_with_ttls(&attr_ttl, &self.ttl, &a, Generation(node.generation))
            }
            Err(err) => reply.error(e(err)),
        }
    }
}

impl Filesystem for OvlFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Everything here is FUSE 7.27 (Linux 4.18) or older, but symlink
        // caching (7.28) and passthrough (7.40): each is used only where
        // INIT grants it. OVLFUSE_FUSE_PROTO=7.27 (for tests) asks for no
        // more than a 4.18 kernel offers.
        let old = std::env::var("OVLFUSE_FUSE_PROTO").is_ok_and(|v| v == "7.27");
        let mut want = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        if !old {
            want |= InitFlags::FUSE_CACHE_SYMLINKS;
        }
        // The kernel enforces POSIX ACLs itself (with default_permissions)
        // and keeps mode and ACL consistent, as on the kernel's overlay.
        // Set-id bits are dropped by ovlfuse (killpriv.rs, with the kernel's
        // rules) and file capabilities by the real filesystem under the
        // writes ovlfuse or passthrough make: the kernel need not ask for
        // security.capability before every write.
        if !old {
            want |= InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        }
        let acl = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        if !self.fs.cfg.noacl && !self.fs.cfg.noxattrs && config.capabilities().contains(acl) {
            want |= acl;
            self.dont_mask.store(true, Ordering::Relaxed);
        }
        let _ = config.add_capabilities(want & config.capabilities());
        // Large reads for the files that go through ovlfuse (lower files):
        // as much readahead as the kernel allows (it offers its maximum).
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|max| config.set_max_readahead(max));
        if !old
            && self.fs.passthrough_keeps_atime()
            && config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
            && config.set_max_stack_depth(1).is_ok()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
        {
            self.pt.enable();
        } else {
            info!("FUSE passthrough is not available: file I/O goes through ovlfuse");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _paths = self.fs.rename_lock.paths();
        // Sent only to decode file handles (FUSE_EXPORT_SUPPORT).
        if name == "." {
            return self.reply_entry(reply, self.fs.lookup_self(parent.0));
        } else if name == ".." {
            return self.reply_entry(reply, self.fs.lookup_parent(parent.0));
        }
        let p = tryr!(reply, self.node(parent));
        match self.fs.lookup(&p, name, true) {
            // Node id 0: the kernel caches the absence for the entry timeout.
            Err(Errno(libc::ENOENT)) => reply.entry(&self.ttl, &negative_attr(), Generation(0)),
            r => self.reply_entry(reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        let st = tryr!(reply, self.fs.getattr(&n, fh.map(|f| f.0)));
        reply.attr(&self.attr_ttl(&n), &attr(&st));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(to_ts),
            mtime: mtime.map(to_ts),
            fh: fh.map(|f| f.0),
        };
        let mut st = tryr!(reply, self.fs.setattr(&n, a));
        if size.is_some() {
            let c = caller(req);
            tryr!(
                reply,
                match fh {
                    Some(f) => self.fs.kill_priv_fh(f.0, &c),
                    None => self.fs.kill_priv_node(&n, &c),
                }
            );
            st = tryr!(reply, self.fs.getattr(&n, fh.map(|f| f.0)));
        }
        reply.attr(&self.attr_ttl(&n), &attr(&st));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        let t = tryr!(reply, self.fs.readlink(&n));
        reply.data(&t);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let p = tryr!(reply, self.node(parent));
        let mode = self.acl_mode(&p, mode, umask);
        let obj = if mode & libc::S_IFMT == libc::S_IFREG {
            NewObj::File(mode)
        } else {
            NewObj::Special(mode, rdev as u64)
        };
        self.reply_entry(reply, self.fs.create_object(&p, name, obj, creds(req)));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let p = tryr!(reply, self.node(parent));
        let mode = self.acl_mode(&p, mode, umask);
        self.reply_entry(
            reply,
            self.fs
                .create_object(&p, name, NewObj::Dir(mode), creds(req)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        // Takes the rename lock itself.
        let p = tryr!(reply, self.node(parent));
        tryr!(reply, self.fs.unlink(&p, name));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        // Takes the rename lock itself.
        let p = tryr!(reply, self.node(parent));
        tryr!(reply, self.fs.rmdir(&p, name));
        reply.ok();
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let p = tryr!(reply, self.node(parent));
        let t = tryr!(reply, sys::cstr(target.as_os_str()).map_err(Errno::from));
        self.reply_entry(
            reply,
            self.fs
                .create_object(&p, link_name, NewObj::Symlink(&t), creds(req)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let p = tryr!(reply, self.node(parent));
        let np = tryr!(reply, self.node(newparent));
        tryr!(reply, self.fs.rename(&p, name, &np, newname, flags.bits()));
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        let np = tryr!(reply, self.node(newparent));
        self.reply_entry(reply, self.fs.link(&n, &np, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        let fh = tryr!(reply, self.fs.open(&n, flags.0));
        match self.start_io(n.ino, fh, |fd| reply.open_backing(fd)) {
            Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            None => reply.opened(FileHandle(fh), FopenFlags::empty()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let data = tryr!(reply, self.fs.read(fh.0, offset, size));
        reply.data(&data);
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let n = tryr!(reply, self.fs.write(fh.0, offset, data));
        tryr!(reply, self.fs.kill_priv_fh(fh.0, &caller(req)));
        reply.written(n);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush (no write-back here, locks are the kernel's):
        // ENOSYS tells the kernel to send no FLUSH again, a round trip
        // less per close.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.pt.end(ino.0, fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        tryr!(reply, self.fs.fsync(fh.0, datasync));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let n = tryr!(reply, self.node(ino));
        let fh = tryr!(reply, self.fs.opendir(&n));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let entries = tryr!(reply, self.fs.readdir(fh.0, offset));
        for (i, en) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(en.ino),
                (i + 1) as u64,
                dtype_kind(en.dtype),
                &en.name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let entries = tryr!(reply, self.fs.readdir(fh.0, offset));
        let dir = tryr!(reply, self.fs.dir_node(fh.0));
        for (i, en) in entries.iter().enumerate().skip(offset as usize) {
            let off = (i + 1) as u64;
            if en.name == "." || en.name == ".." {
                // The kernel takes no reference for these two and ignores
                // their attributes: no need to stat anything.
                let mut a = negative_attr();
                a.ino = INodeNo(en.ino);
                a.kind = FileType::Directory;
                if reply.add(INodeNo(en.ino), off, &en.name, &self.ttl, &a, Generation(0)) {
                    break;
                }
                continue;
            }
            // Each entry added counts as a lookup; one that does not fit is
            // given back.
            let Ok((node, st)) = self.fs.lookup(&dir, &en.name, true) else {
                // Listed but not found (an xattr whiteout outside an opaque=x
                // dir): node id 0 lists the name without attributes.
                if reply.add(
                    INodeNo(en.ino),
                    off,
                    &en.name,
                    &self.ttl,
                    &negative_attr(),
                    Generation(0),
                ) {
                    break;
                }
                continue;
            };
            let g = Generation(node.generation);
            let (a, ttl) = self.entry_attr(&node, &st);
            if reply.add(INodeNo(st.st_ino), off, &en.name, &ttl, &a, g) {
                self.fs.nodes.forget(node.ino, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        if n.has_upper() && self.fs.fsync_enabled() {
            if let Ok(path) = self.fs.path_of(&n) {
                if let Ok(fd) = tryr!(reply, self.fs.upper()).open_dir(&path) {
                    let _ = sys::fsync(std::os::fd::AsFd::as_fd(&fd), false);
                }
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = tryr!(reply, self.fs.statfs());
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        tryr!(reply, self.fs.setxattr(&n, name, value, flags));
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        let v = tryr!(reply, self.fs.getxattr(&n, name));
        reply_xattr(reply, &v, size);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        let v = tryr!(reply, self.fs.listxattr(&n));
        reply_xattr(reply, &v, size);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        tryr!(reply, self.fs.removexattr(&n, name));
        reply.ok();
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _paths = self.fs.rename_lock.paths();
        let n = tryr!(reply, self.node(ino));
        tryr!(reply, self.fs.access(&n, mask.bits(), req.uid(), req.gid()));
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _paths = self.fs.rename_lock.paths();
        let p = tryr!(reply, self.node(parent));
        let mode = self.acl_mode(&p, mode, umask);
        let (node, st, fh) = tryr!(reply, self.fs.create(&p, name, mode, flags, creds(req)));
        let g = Generation(node.generation);
        match self.start_io(node.ino, fh, |fd| reply.open_backing(fd)) {
            Some(b) => reply.created_passthrough(
                &self.ttl,
                &attr(&st),
                g,
                FileHandle(fh),
                FopenFlags::empty(),
                &b,
            ),
            None => reply.created(
                &self.ttl,
                &attr(&st),
                g,
                FileHandle(fh),
                FopenFlags::empty(),
            ),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        tryr!(reply, self.fs.fallocate(fh.0, offset, length, mode));
        tryr!(reply, self.fs.kill_priv_fh(fh.0, &caller(req)));
        reply.ok();
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let off = tryr!(reply, self.fs.lseek(fh.0, offset, whence));
        reply.offset(off);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let n = tryr!(
            reply,
            self.fs
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        );
        tryr!(reply, self.fs.kill_priv_fh(fh_out.0, &caller(req)));
        reply.written(n);
    }

    fn destroy(&mut self) {
        debug!(
            "destroy: {} nodes, {} open files",
            self.fs.nodes.len(),
            self.fs.files.len()
        );
    }
}

/// The attributes of a negative entry: only node id 0 matters.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn reply_xattr(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(fuser::Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(v);
    }
}
