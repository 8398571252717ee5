//! The OCI layer tarball `ovlfuse diff --tar` writes, by the image-spec's
//! rules: a deleted name is an empty `.wh.NAME`, a dir that replaces what
//! was below it carries `.wh..wh..opq`, hard links are tar links, xattrs
//! are PAX `SCHILY.xattr.` records, and a metacopy file carries its data
//! (read from where the merged view finds it).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use tar::{Builder, EntryType, Header};

use crate::format;
use crate::layer::join;
use crate::node::Node;
use crate::sys::{self, Stat};
use crate::OvlFs;

/// Hard links: the first tar path of each real inode with several names.
type Links = HashMap<(u64, u64), Vec<u8>>;

/// The real object's identity, when it has other names.
fn link_key(st: &Stat) -> Option<(u64, u64)> {
    (!sys::is_dir(st) && st.st_nlink > 1).then_some((st.st_dev, st.st_ino))
}

pub struct Tar {
    b: Builder<Box<dyn Write>>,
    links: Links,
}

fn header(kind: EntryType, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(0);
    h
}

fn os_path(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

impl Tar {
    pub fn new(w: Box<dyn Write>) -> Tar {
        Tar {
            b: Builder::new(w),
            links: Links::new(),
        }
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.b.finish()?;
        self.b.get_mut().flush()
    }

    /// `dir/.wh.NAME`: NAME is gone.
    pub fn whiteout(&mut self, dir: &[u8], name: &OsStr) -> io::Result<()> {
        let p = join(dir, &format::aufs_whiteout_name(name));
        let mut h = header(EntryType::Regular, 0o644);
        self.b.append_data(&mut h, os_path(&p), io::empty())
    }

    /// `dir/.wh..wh..opq`: what was below `dir` does not show.
    pub fn opaque(&mut self, dir: &[u8]) -> io::Result<()> {
        let p = join(dir, OsStr::from_bytes(format::WH_OPAQUE));
        let mut h = header(EntryType::Regular, 0o644);
        self.b.append_data(&mut h, os_path(&p), io::empty())
    }

    /// The merged view's object `node` at `path`, with its xattrs.
    pub fn object(&mut self, view: &OvlFs, node: &Arc<Node>, path: &[u8]) -> io::Result<()> {
        let st = view.getattr(node, None).map_err(io::Error::from)?;
        self.xattrs(view, node)?;
        let (layer, real) = view.real(node).map_err(io::Error::from)?;
        let key = layer.try_stat(&real)?.as_ref().and_then(link_key);
        if let Some(first) = key.and_then(|k| self.links.get(&k)) {
            let mut h = header(EntryType::Link, 0);
            let first = first.clone();
            return self.b.append_link(&mut h, os_path(path), os_path(&first));
        }
        if let Some(k) = key {
            self.links.insert(k, path.to_vec());
        }
        let fmt = st.st_mode & libc::S_IFMT;
        let kind = match fmt {
            libc::S_IFDIR => EntryType::Directory,
            libc::S_IFLNK => EntryType::Symlink,
            libc::S_IFCHR => EntryType::Char,
            libc::S_IFBLK => EntryType::Block,
            libc::S_IFIFO => EntryType::Fifo,
            _ => EntryType::Regular,
        };
        let mut h = header(kind, st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        match fmt {
            libc::S_IFLNK => {
                let t = view.readlink(node).map_err(io::Error::from)?;
                self.b.append_link(&mut h, os_path(path), os_path(&t))
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                h.set_device_major(libc::major(st.st_rdev))?;
                h.set_device_minor(libc::minor(st.st_rdev))?;
                self.b.append_data(&mut h, os_path(path), io::empty())
            }
            libc::S_IFREG => {
                let (dl, dp) = view.real_data(node).map_err(io::Error::from)?;
                let f = File::from(dl.open_file(&dp, libc::O_RDONLY, 0)?);
                h.set_size(st.st_size as u64);
                self.b.append_data(&mut h, os_path(path), f)
            }
            _ => self.b.append_data(&mut h, os_path(path), io::empty()),
        }
    }

    /// A PAX header with the object's xattrs, as the user sees them.
    fn xattrs(&mut self, view: &OvlFs, node: &Arc<Node>) -> io::Result<()> {
        let names = view.listxattr(node).map_err(io::Error::from)?;
        let mut records = Vec::new();
        for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = OsStr::from_bytes(n);
            if let Ok(v) = view.getxattr(node, name) {
                let key = format!("SCHILY.xattr.{}", name.to_string_lossy());
                pax_record(&mut records, &key, &v);
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut h = header(EntryType::XHeader, 0o644);
        h.set_size(records.len() as u64);
        self.b.append_data(&mut h, "././@PaxHeader", &records[..])
    }
}

/// One PAX record: "LEN key=value\n", LEN counting its own digits.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    #[test]
    fn pax_records_count_their_own_length() {
        let mut v = Vec::new();
        super::pax_record(&mut v, "SCHILY.xattr.user.a", b"1");
        assert_eq!(v, b"25 SCHILY.xattr.user.a=1\n");
        let mut v = Vec::new();
        super::pax_record(&mut v, "k", &[b'x'; 95]);
        // 1 + 95 + 3 = 99 bytes of body: 2 digits make 101, which has 3: 102.
        assert_eq!(&v[..4], b"102 ");
        assert_eq!(v.len(), 102);
    }
}
