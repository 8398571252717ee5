//! `ovlfuse check`: an offline consistency check of an upper layer and its
//! work dir against the lowers, as fsck.overlay does, and also of what it
//! does not know: origins, the index, metacopy. One finding per problem,
//! naming the path and the fix; `--repair` applies only fixes that leave
//! the merged view as it was (or as the kernel shows it).
//!
//! The lowers are read through offline.rs's view, which merges them as a
//! mount would, redirects and opaque dirs included.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use crate::config::{Atime, Config};
use crate::format::{self, FileHandle, XattrNames};
use crate::layer::{join, to_c, Layer, Reach};
use crate::offline::Offline;
use crate::sys::{self, Stat};
use crate::workdir::clean_dir;
use crate::SetupError;

/// One problem found, and what was or is to be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: a path in the upper (or `W/...` in the workdir).
    pub path: String,
    pub what: String,
    /// The fix: applied with --repair where `safe`, else to do by hand.
    pub fix: String,
    pub safe: bool,
    pub repaired: bool,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = if self.repaired { "repaired" } else { "fix" };
        write!(f, "{}: {}; {done}: {}", self.path, self.what, self.fix)
    }
}

/// Exit codes, as e2fsck's.
pub const EXIT_CLEAN: i32 = 0;
pub const EXIT_REPAIRED: i32 = 1;
pub const EXIT_PROBLEMS: i32 = 4;
pub const EXIT_USAGE: i32 = 8;

/// The exit code for a list of findings.
pub fn exit_code(findings: &[Finding]) -> i32 {
    match findings {
        [] => EXIT_CLEAN,
        f if f.iter().all(|f| f.repaired) => EXIT_REPAIRED,
        _ => EXIT_PROBLEMS,
    }
}

struct Checker {
    o: Offline,
    index: Option<Layer>,
    work: Option<std::os::fd::OwnedFd>,
    xn: XattrNames,
    out: Out,
    /// Effective lower path of each redirected dir -> the first such dir.
    redirect_targets: HashMap<Vec<u8>, String>,
}

/// Checks the upper and workdir of `cfg` (validated); repairs what is safe
/// when `repair`. Refuses an upper that a mount holds.
pub fn run(cfg: &Config, repair: bool) -> Result<Vec<Finding>, SetupError> {
    let o = Offline::open(cfg)?;
    let dir = libc::O_RDONLY | libc::O_DIRECTORY;
    let wl = o.work.as_ref();
    let work = wl.and_then(|w| sys::open_beneath(w.fd(), c"work", dir, 0).ok());
    let index = match (&cfg.work, wl) {
        (Some(w), Some(_)) if w.join("index").is_dir() => {
            let p = w.join("index");
            let reach = Reach::new(&p, Atime::Never, false);
            Some(Layer::open(&p, 0, false, &reach).map_err(|e| SetupError::io("workdir", &p, e))?)
        }
        _ => None,
    };
    let xn = o.xn.clone();
    let mut c = Checker {
        o,
        index,
        work,
        xn,
        out: Out {
            repair,
            findings: Vec::new(),
        },
        redirect_targets: HashMap::new(),
    };
    c.check_dir(Vec::new());
    c.check_work();
    c.check_index();
    Ok(c.out.findings)
}

fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        format!("/{}", String::from_utf8_lossy(path))
    }
}

/// What a check hands over: the findings, and whether to repair.
struct Out {
    repair: bool,
    findings: Vec<Finding>,
}

impl Out {
    /// Records a finding, repairing it first where asked and `repair` is
    /// given (the fix is safe).
    fn found(&mut self, path: String, what: &str, fix: &str, repair: Option<&dyn Fn() -> bool>) {
        let safe = repair.is_some();
        let repaired = self.repair && repair.is_some_and(|r| r());
        self.findings.push(Finding {
            path,
            what: what.into(),
            fix: fix.into(),
            safe,
            repaired,
        });
    }
}

impl Checker {
    fn check_dir(&mut self, path: Vec<u8>) {
        let Ok(mut entries) = self.o.upper.read_dir(&path) else {
            let p = show(&path);
            self.out
                .found(p, "cannot be read", "check its permissions", None);
            return;
        };
        // In name order: findings come out the same on every run.
        entries.sort();
        // opaque=x (a lower's xwhiteouts mark) leaves the dir merged.
        let opaque = self
            .o
            .upper
            .try_getxattr(&path, &self.xn.opaque)
            .ok()
            .flatten()
            .is_some_and(|v| v == b"y");
        let lowers = if opaque {
            Vec::new()
        } else {
            self.o.lower_dirs(&path)
        };
        let mut needs_impure = false;
        for (name, _, _) in entries {
            let cpath = join(&path, &name);
            let Ok(st) = self.o.upper.stat(&cpath) else {
                continue;
            };
            if name.as_bytes() == format::WH_OPAQUE {
                self.opaque_marker(&path, &cpath, opaque);
            } else if let Some(t) = format::aufs_whiteout_target(&name) {
                let t = t.to_os_string();
                self.whiteout(&cpath, &t, &lowers, true);
            } else if format::is_whiteout(&st) {
                self.whiteout(&cpath, &name, &lowers, false);
            } else {
                needs_impure |= self.check_entry(&cpath, &st);
                if sys::is_dir(&st) {
                    self.check_dir(cpath);
                }
            }
        }
        if needs_impure && !self.has(&path, &self.xn.impure) {
            let (u, name, p) = (&self.o.upper, self.xn.impure.clone(), path.clone());
            let fix = || u.setxattr(&p, &name, b"y", 0).is_ok();
            let what = "children carry origins or redirects, but the dir is not marked impure";
            self.out
                .found(show(&path), what, "set the impure xattr", Some(&fix));
        }
    }

    fn has(&self, path: &[u8], name: &CString) -> bool {
        self.o
            .upper
            .try_getxattr(path, name)
            .ok()
            .flatten()
            .is_some()
    }

    /// `.wh..wh..opq` beside an opaque xattr: the kernel would show it as
    /// a file; the xattr alone makes the dir opaque.
    fn opaque_marker(&mut self, dir: &[u8], marker: &[u8], opaque_xattr: bool) {
        if !opaque_xattr {
            return;
        }
        let u = &self.o.upper;
        let fix = || {
            u.open_dir_path(dir)
                .is_ok_and(|d| sys::unlinkat(d.as_fd(), c".wh..wh..opq", 0).is_ok())
        };
        let what =
            "opaque marker file beside the opaque xattr (kernel overlayfs lists it as a file)";
        self.out
            .found(show(marker), what, "remove the marker file", Some(&fix));
    }

    /// A whiteout of `name` that hides nothing below is an orphan.
    fn whiteout(&mut self, wpath: &[u8], name: &OsStr, lowers: &[(u16, Vec<u8>)], aufs: bool) {
        let hides = self.o.any_below(lowers, name);
        if hides {
            return;
        }
        let (u, p) = (&self.o.upper, wpath.to_vec());
        let fix = || {
            let (dir, n) = crate::layer::split_parent(&p);
            let c = to_c(n.as_bytes());
            u.open_dir_path(dir)
                .is_ok_and(|d| c.is_ok_and(|c| sys::unlinkat(d.as_fd(), &c, 0).is_ok()))
        };
        let what = match aufs {
            true => "orphan .wh. whiteout: no lower layer has the name",
            false => "orphan whiteout: no lower layer has the name",
        };
        self.out
            .found(show(wpath), what, "remove the whiteout", Some(&fix));
    }

    /// Checks the markers of one upper entry; returns whether it carries
    /// an origin or redirect (its parent must be impure then).
    fn check_entry(&mut self, path: &[u8], st: &Stat) -> bool {
        let origin = self
            .o
            .upper
            .try_getxattr(path, &self.xn.origin)
            .ok()
            .flatten();
        if let Some(v) = &origin {
            self.check_origin(path, v);
        }
        let redirect = self
            .o
            .upper
            .try_getxattr(path, &self.xn.redirect)
            .ok()
            .flatten();
        if let Some(r) = &redirect {
            self.check_redirect(path, r);
        }
        if let Some(v) = self
            .o
            .upper
            .try_getxattr(path, &self.xn.metacopy)
            .ok()
            .flatten()
        {
            let ok = st.st_mode & libc::S_IFMT == libc::S_IFREG && metacopy_valid(&v);
            if !ok {
                let what =
                    "bad metacopy xattr (not a regular file, or a value the kernel does not know)";
                self.out.found(
                    show(path),
                    what,
                    "copy the file's data up by hand, then remove the xattr",
                    None,
                );
            }
        }
        if let Some(v) = self
            .o
            .upper
            .try_getxattr(path, &self.xn.nlink)
            .ok()
            .flatten()
        {
            if sys::is_dir(st) || format::parse_nlink(&v).is_none() {
                self.out.found(
                    show(path),
                    "bad nlink xattr",
                    "remove the nlink xattr",
                    None,
                );
            }
        }
        origin.is_some() || redirect.is_some()
    }
}

/// Removes an entry of `l`'s root, a tree for a dir.
fn remove_tree(l: &Layer, name: &OsStr) -> bool {
    let Ok(c) = to_c(name.as_bytes()) else {
        return false;
    };
    if sys::unlinkat(l.fd(), &c, 0).is_ok() {
        return true;
    }
    let dir = libc::O_RDONLY | libc::O_DIRECTORY;
    sys::open_beneath(l.fd(), &c, dir, 0).is_ok_and(|d| clean_dir(&d).is_ok())
        && sys::unlinkat(l.fd(), &c, libc::AT_REMOVEDIR).is_ok()
}

/// The kernel's metacopy xattr: empty, or its versioned struct (version 0,
/// its own length first).
fn metacopy_valid(v: &[u8]) -> bool {
    v.is_empty() || (v.len() >= 4 && v[0] == 0 && v[1] as usize == v.len())
}

impl Checker {
    fn check_origin(&mut self, path: &[u8], v: &[u8]) {
        let (u, p, name) = (&self.o.upper, path.to_vec(), self.xn.origin.clone());
        let drop_it = || u.removexattr(&p, &name).is_ok();
        let Some(fh) = FileHandle::decode(v) else {
            self.out.found(
                show(path),
                "bad origin xattr",
                "remove the origin xattr",
                Some(&drop_it),
            );
            return;
        };
        let mut stale = true;
        let mut devs = Vec::new();
        for l in self.o.view.lowers.iter().skip(1) {
            if devs.contains(&l.dev) {
                continue;
            }
            devs.push(l.dev);
            match sys::open_by_handle_at(l.fd(), fh.kind as i32, &fh.bytes, libc::O_PATH) {
                Ok(_) => stale = false,
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {}
                // No handles here (or no privilege to use them): unknown.
                Err(_) => stale = false,
            }
        }
        if stale && !path.is_empty() {
            let what = "origin no longer resolves in any lower layer";
            self.out.found(
                show(path),
                what,
                "remove the origin xattr (st_ino becomes the upper's)",
                Some(&drop_it),
            );
        } else if stale {
            let what = "the upper root's origin no longer resolves (index=on mounts refuse it)";
            self.out.found(
                show(path),
                what,
                "mount with the lowers it was made on, or index=off",
                None,
            );
        }
    }

    fn check_redirect(&mut self, path: &[u8], r: &[u8]) {
        if !format::redirect_valid(r) {
            let what = "bad redirect xattr (malformed, or escapes with ..)";
            self.out.found(
                show(path),
                what,
                "restore the dir's lower path by hand",
                None,
            );
            return;
        }
        if let Some(abs) = r.strip_prefix(b"/") {
            let (a, p) = (abs, path);
            let inside =
                a == p || a.starts_with(&[p, b"/"].concat()) || p.starts_with(&[a, b"/"].concat());
            if inside {
                self.out.found(
                    show(path),
                    "redirect loops: it points into its own path",
                    "restore the dir's lower path by hand",
                    None,
                );
                return;
            }
        }
        let lowers = self.o.lower_dirs(path);
        let Some((_, target)) = lowers.first().cloned() else {
            let (u, p, xn) = (&self.o.upper, path.to_vec(), self.xn.clone());
            // Opaque and without the redirect, it shows what it showed.
            let fix = || {
                u.setxattr(&p, &xn.opaque, b"y", 0).is_ok()
                    && u.removexattr(&p, &xn.redirect).is_ok()
            };
            let what = "redirect leads nowhere: no lower layer has its target";
            self.out.found(
                show(path),
                what,
                "make the dir opaque and remove the redirect",
                Some(&fix),
            );
            return;
        };
        if let Some(first) = self.redirect_targets.get(&target).cloned() {
            let what = format!("redirects to the same lower dir as {first}");
            self.out
                .found(show(path), &what, "keep one of the two redirects", None);
        } else {
            self.redirect_targets.insert(target, show(path));
        }
    }

    /// Whatever is left in W/work was a copy-up or whiteout under way when
    /// a mount ended: a mount would remove it.
    fn check_work(&mut self) {
        let Some(work) = self.work.take() else { return };
        let left = sys::read_dir(work.as_fd()).map_or(0, |v| v.len());
        if left > 0 {
            let fix = || clean_dir(&work).is_ok();
            let what = format!("{left} leftover entries (an interrupted copy-up or whiteout)");
            self.out
                .found("W/work".into(), &what, "empty W/work", Some(&fix));
        }
        self.work = Some(work);
    }

    /// W/index: each entry a hex handle naming an upper inode that still
    /// has a name in the upper, with a well-formed nlink.
    fn check_index(&mut self) {
        let Some(ix) = self.index.take() else { return };
        for (name, _, _) in ix.read_dir(b"").unwrap_or_default() {
            self.check_index_entry(&ix, &name);
        }
        self.index = Some(ix);
    }

    fn check_index_entry(&mut self, ix: &Layer, name: &OsString) {
        let p = format!("W/index/{}", name.to_string_lossy());
        let hex = name.as_bytes().iter().all(|b| b.is_ascii_hexdigit());
        let Ok(st) = ix.stat(name.as_bytes()) else {
            return;
        };
        let unlink = || {
            let c = to_c(name.as_bytes());
            c.is_ok_and(|c| sys::unlinkat(ix.fd(), &c, 0).is_ok())
        };
        if name.as_bytes().starts_with(b"#") {
            // The kernel's shared whiteout (index=on keeps temp objects
            // here) is left between mounts; other temps are leftovers.
            if !format::is_whiteout(&st) {
                let what = "leftover temp entry (an interrupted copy-up)";
                self.out
                    .found(p, what, "remove it", Some(&|| remove_tree(ix, name)));
            }
            return;
        }
        if !hex || sys::is_dir(&st) {
            self.out
                .found(p, "stray entry (not an index entry)", "remove it", None);
            return;
        }
        if st.st_nlink <= 1 {
            let what = "index entry whose upper inode has no name left";
            self.out
                .found(p, what, "remove the index entry", Some(&unlink));
            return;
        }
        if let Ok(Some(v)) = ix.try_getxattr(name.as_bytes(), &self.xn.nlink) {
            // Relative to the upper inode (less the index's own link), the
            // count must stay positive; relative to the lower it cannot be
            // checked here.
            let bad = match format::parse_nlink(&v) {
                None => true,
                Some((true, d)) => st.st_nlink as i64 - 1 + d < 1,
                Some((false, _)) => false,
            };
            if bad {
                self.out.found(
                    p,
                    "bad nlink xattr on the index entry",
                    "remove the nlink xattr",
                    None,
                );
            }
        }
    }
}
