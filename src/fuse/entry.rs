//! Requests on names and inodes: lookup, attributes, creation, removal,
//! rename, links and xattrs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::{attr, tryr, OvlFuse};
use crate::dir::{Creds, NewObj};
use crate::inode::SetAttr;
use crate::killpriv::Caller;
use crate::sys;
use crate::wire::{Attr, Entry, Op, Reply, Request, SetattrIn};
use crate::Errno;

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid,
        gid: req.gid,
        pid: req.pid,
    }
}

pub(super) fn creds(req: &Request) -> Creds {
    Creds {
        uid: req.uid,
        gid: req.gid,
    }
}

impl OvlFuse {
    pub(super) fn handle_entry(&self, req: &Request, reply: Reply) {
        match &req.op {
            Op::Lookup { name } => self.lookup(req, name, reply),
            Op::Getattr { fh } => self.getattr(req, *fh, reply),
            Op::Setattr(a) => self.setattr(req, a, reply),
            Op::Readlink => self.readlink(req, reply),
            Op::Mknod {
                name,
                mode,
                rdev,
                umask,
            } => {
                let p = tryr!(reply, self.node(req.nodeid));
                let mode = self.acl_mode(&p, *mode, *umask);
                let obj = if mode & libc::S_IFMT == libc::S_IFREG {
                    NewObj::File(mode)
                } else {
                    NewObj::Special(mode, *rdev as u64)
                };
                self.reply_entry(reply, self.fs.create_object(&p, name, obj, creds(req)))
            }
            Op::Mkdir { name, mode, umask } => {
                let p = tryr!(reply, self.node(req.nodeid));
                let obj = NewObj::Dir(self.acl_mode(&p, *mode, *umask));
                self.reply_entry(reply, self.fs.create_object(&p, name, obj, creds(req)))
            }
            Op::Symlink { name, target } => {
                let p = tryr!(reply, self.node(req.nodeid));
                let t = tryr!(reply, sys::cstr(target).map_err(Errno::from));
                let obj = NewObj::Symlink(&t);
                self.reply_entry(reply, self.fs.create_object(&p, name, obj, creds(req)))
            }
            Op::Unlink { name } => {
                let p = tryr!(reply, self.node(req.nodeid));
                tryr!(reply, self.fs.unlink(&p, name));
                reply.ok()
            }
            Op::Rmdir { name } => {
                let p = tryr!(reply, self.node(req.nodeid));
                tryr!(reply, self.fs.rmdir(&p, name));
                reply.ok()
            }
            Op::Rename {
                name,
                newparent,
                newname,
                flags,
            } => {
                let p = tryr!(reply, self.node(req.nodeid));
                let np = tryr!(reply, self.node(*newparent));
                tryr!(reply, self.fs.rename(&p, name, &np, newname, *flags));
                reply.ok()
            }
            Op::Link { oldnodeid, newname } => {
                let n = tryr!(reply, self.node(*oldnodeid));
                let np = tryr!(reply, self.node(req.nodeid));
                self.reply_entry(reply, self.fs.link(&n, &np, newname))
            }
            Op::Statfs => self.statfs(reply),
            _ => self.handle_xattr(req, reply),
        }
    }

    fn handle_xattr(&self, req: &Request, reply: Reply) {
        if let Some(prom) = self.stats_xattr(req) {
            // The mount's owner (and root) only: it tells what others do.
            let owner = sys::mount::getuid_gid().0;
            if req.uid != 0 && req.uid != owner {
                return reply.error(libc::EACCES);
            }
            return match &req.op {
                Op::Getxattr { size, .. } => {
                    reply_xattr(reply, self.stats_report(prom).as_bytes(), *size)
                }
                _ => reply.error(libc::EPERM),
            };
        }
        let n = tryr!(reply, self.node(req.nodeid));
        match &req.op {
            Op::Setxattr { name, value, flags } => {
                tryr!(reply, self.fs.setxattr(&n, name, value, *flags));
                reply.ok()
            }
            Op::Getxattr { name, size } => {
                let v = tryr!(reply, self.fs.getxattr(&n, name));
                reply_xattr(reply, &v, *size)
            }
            Op::Listxattr { size } => {
                let v = tryr!(reply, self.fs.listxattr(&n));
                reply_xattr(reply, &v, *size)
            }
            Op::Removexattr { name } => {
                tryr!(reply, self.fs.removexattr(&n, name));
                reply.ok()
            }
            Op::Access { mask } => {
                tryr!(reply, self.fs.access(&n, *mask as i32, req.uid, req.gid));
                reply.ok()
            }
            _ => reply.error(libc::ENOSYS),
        }
    }

    fn lookup(&self, req: &Request, name: &OsStr, reply: Reply) {
        // Sent only to decode file handles (FUSE_EXPORT_SUPPORT).
        match name.as_bytes() {
            b"." => return self.reply_entry(reply, self.fs.lookup_self(req.nodeid)),
            b".." => return self.reply_entry(reply, self.fs.lookup_parent(req.nodeid)),
            _ => {}
        }
        let p = tryr!(reply, self.node(req.nodeid));
        match self.fs.lookup(&p, name, true) {
            // Node id 0: the kernel caches the absence for the entry timeout.
            Err(Errno::ENOENT) => reply.entry(&Entry {
                nodeid: 0,
                generation: 0,
                entry_ttl: self.ttl,
                attr_ttl: self.ttl,
                attr: &Attr::default(),
            }),
            r => self.reply_entry(reply, r),
        }
    }

    fn getattr(&self, req: &Request, fh: Option<u64>, reply: Reply) {
        let n = tryr!(reply, self.node(req.nodeid));
        let st = tryr!(reply, self.fs.getattr(&n, fh));
        reply.attr(self.attr_ttl(&n), &attr(&st))
    }

    fn setattr(&self, req: &Request, a: &SetattrIn, reply: Reply) {
        let n = tryr!(reply, self.node(req.nodeid));
        let set = SetAttr {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            atime: a.atime,
            mtime: a.mtime,
            fh: a.fh,
        };
        let mut st = tryr!(reply, self.fs.setattr(&n, set));
        if a.size.is_some() {
            let c = caller(req);
            tryr!(
                reply,
                match a.fh {
                    Some(f) => self.fs.kill_priv_fh(f, &c),
                    None => self.fs.kill_priv_node(&n, &c),
                }
            );
            st = tryr!(reply, self.fs.getattr(&n, a.fh));
        }
        reply.attr(self.attr_ttl(&n), &attr(&st))
    }

    fn readlink(&self, req: &Request, reply: Reply) {
        let n = tryr!(reply, self.node(req.nodeid));
        let t = tryr!(reply, self.fs.readlink(&n));
        reply.data(&t)
    }

    fn statfs(&self, reply: Reply) {
        let s = tryr!(reply, self.fs.statfs());
        reply.statfs(
            [s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree],
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        )
    }
}

/// size 0 asks how large the value is; a smaller buffer than the value
/// is ERANGE.
fn reply_xattr(reply: Reply, v: &[u8], size: u32) {
    if size == 0 {
        reply.xattr_size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(libc::ERANGE)
    } else {
        reply.data(v)
    }
}
