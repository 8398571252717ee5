//! `ovlfuse diff`: the changes an upper layer makes to its lowers, from the
//! upper's own entries and markers, as `docker diff` lists them (A added,
//! C changed, D deleted), and optionally as an OCI layer tarball. The
//! lowers are only looked up by name, never walked whole: a change costs
//! the same in a small image as in a large one. Only where content moves
//! (a renamed dir, whose redirect points at its lower content) is the
//! moved subtree read, since the layer must carry all of it.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use crate::format;
use crate::layer::join;
use crate::offline::{LowerDirs, Offline};
use crate::sys;

/// One changed path, `docker diff` style.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: Vec<u8>,
    /// 'A', 'C' or 'D'.
    pub kind: char,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} /{}", self.kind, String::from_utf8_lossy(&self.path))
    }
}

/// Walks the upper; writes the layer tar to `tar` if given.
pub fn run(o: &Offline, tar: Option<Box<dyn Write>>) -> io::Result<Vec<Change>> {
    let mut d = Differ {
        o,
        changes: Vec::new(),
        tar: tar.map(crate::diff_tar::Tar::new),
    };
    let root = o.lower_dirs(b"");
    d.walk(b"", &root)?;
    if let Some(t) = d.tar.take() {
        t.finish()?;
    }
    d.changes.sort();
    Ok(d.changes)
}

struct Differ<'a> {
    o: &'a Offline,
    changes: Vec<Change>,
    tar: Option<crate::diff_tar::Tar>,
}

/// A dir's entries in the upper, in name order, less its own markers.
struct Listing {
    names: Vec<OsString>,
    opaque: bool,
}

impl Differ<'_> {
    fn list(&self, path: &[u8]) -> io::Result<Listing> {
        let mut names: Vec<OsString> = self
            .o
            .upper
            .read_dir(path)?
            .into_iter()
            .map(|e| e.0)
            .collect();
        names.sort();
        let marker = names.iter().any(|n| n.as_bytes() == format::WH_OPAQUE);
        names.retain(|n| n.as_bytes() != format::WH_OPAQUE);
        let xattr = self.o.upper.try_getxattr(path, &self.o.xn.opaque)?;
        let opaque = marker || xattr.is_some_and(|v| v == b"y");
        Ok(Listing { names, opaque })
    }

    fn change(&mut self, kind: char, path: Vec<u8>) {
        self.changes.push(Change { path, kind });
    }

    /// The upper dir at `path`, whose lower dirs are `below`.
    fn walk(&mut self, path: &[u8], below: &LowerDirs) -> io::Result<()> {
        let l = self.list(path)?;
        for name in &l.names {
            let cpath = join(path, name);
            let st = self.o.upper.stat(&cpath)?;
            let target = format::aufs_whiteout_target(name).map(|t| t.to_os_string());
            if target.is_some() || format::is_whiteout(&st) {
                let gone = target.unwrap_or_else(|| name.clone());
                self.whiteout(path, &gone, below)?;
                continue;
            }
            let kind = if self.o.below(below, name) { 'C' } else { 'A' };
            if sys::is_dir(&st) {
                self.dir(path, name, kind, below)?;
            } else {
                self.change(kind, cpath.clone());
                self.emit(&cpath)?;
            }
        }
        Ok(())
    }

    /// A whiteout of `name` in `dir`: a deletion if the name showed below.
    fn whiteout(&mut self, dir: &[u8], name: &OsStr, below: &LowerDirs) -> io::Result<()> {
        if !self.o.below(below, name) {
            return Ok(());
        }
        self.change('D', join(dir, name));
        if let Some(t) = &mut self.tar {
            t.whiteout(dir, name)?;
        }
        Ok(())
    }

    fn dir(
        &mut self,
        parent: &[u8],
        name: &OsStr,
        kind: char,
        below: &LowerDirs,
    ) -> io::Result<()> {
        let path = join(parent, name);
        let redirected = self
            .o
            .upper
            .try_getxattr(&path, &self.o.xn.redirect)?
            .is_some();
        let l = self.list(&path)?;
        self.change(kind, path.clone());
        self.emit(&path)?;
        // What showed at this path below is replaced, not merged.
        if (redirected || l.opaque) && kind == 'C' {
            if let Some(t) = &mut self.tar {
                t.opaque(&path)?;
            }
            self.deleted_below(&path, below, &l)?;
        }
        if redirected {
            // Moved content: all of it goes in the layer, merged.
            return self.moved(&path);
        }
        let next = if l.opaque {
            Vec::new()
        } else {
            self.o.lower_dirs(&path)
        };
        self.walk(&path, &next)
    }

    /// The names an opaque or replaced dir no longer shows, each a D.
    fn deleted_below(&mut self, path: &[u8], below: &LowerDirs, l: &Listing) -> io::Result<()> {
        let (_, name) = crate::layer::split_parent(path);
        let mut seen: BTreeSet<OsString> = BTreeSet::new();
        for (li, dir) in below {
            let layer = &self.o.view.lowers[*li as usize];
            let p = join(dir, name);
            let Some(st) = layer.try_stat(&p)? else {
                continue;
            };
            if !sys::is_dir(&st) {
                break;
            }
            for (n, _, _) in layer.read_dir(&p)? {
                if !format::is_aufs_name(&n) && !l.names.contains(&n) {
                    seen.insert(n);
                }
            }
            if self.o.view.dir_marks(layer, &p)?.opaque {
                break;
            }
        }
        for n in seen {
            self.change('D', join(path, &n));
        }
        Ok(())
    }

    /// Everything the merged view shows below a moved dir, as added.
    fn moved(&mut self, path: &[u8]) -> io::Result<()> {
        let Some(node) = self.o.view_node(path) else {
            return Ok(());
        };
        let fh = self.o.view.opendir(&node).map_err(io::Error::from)?;
        let entries = self.o.view.readdir(fh, 0).map_err(io::Error::from);
        self.o.view.releasedir(fh);
        for e in entries?.iter().skip(2) {
            let cpath = join(path, &e.name);
            self.change('A', cpath.clone());
            self.emit(&cpath)?;
            if e.dtype == libc::DT_DIR {
                self.moved(&cpath)?;
            }
        }
        Ok(())
    }

    /// Writes the merged view's object at `path` into the tar, if any.
    fn emit(&mut self, path: &[u8]) -> io::Result<()> {
        let Some(t) = &mut self.tar else {
            return Ok(());
        };
        let Some(node) = self.o.view_node(path) else {
            return Ok(());
        };
        t.object(&self.o.view, &node, path)
    }
}
