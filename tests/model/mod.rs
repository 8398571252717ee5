//! The overlay core driven by a sequence of operations, without FUSE,
//! against an in-memory model of what kernel overlayfs shows. Shared by
//! tests/model_ops.rs (fixed random sequences) and the `ops` fuzz target.
//!
//! Each operation is 3 bytes: kind, path, argument. Like the VFS, the
//! harness calls the core only for what the VFS would pass on (the parent
//! exists, the types fit, no rename into its own subtree); the core's
//! answer must then be the model's, and the whole tree must match it.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use ovlfuse::config::Config;
use ovlfuse::dir::{Creds, NewObj};
use ovlfuse::inode::SetAttr;
use ovlfuse::node::Node;
use ovlfuse::{Errno, OvlFs};

/// The caller's own ids: what a rootless daemon can give new objects.
fn me() -> Creds {
    // SAFETY: no arguments.
    unsafe {
        Creds {
            uid: libc::geteuid(),
            gid: libc::getegid(),
        }
    }
}
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug, PartialEq)]
enum Obj {
    Dir,
    /// An inode number of the model: hard links share one.
    File(usize),
}

#[derive(Default)]
struct Model {
    tree: BTreeMap<String, Obj>,
    data: Vec<Vec<u8>>,
    /// Dirs with lower content: with redirect_dir=off they cannot move.
    lower_dirs: BTreeSet<String>,
}

/// Paths: the 4 top-level names and the 16 one level below them.
fn path_of(i: u8) -> String {
    let i = i as usize % 20;
    if i < 4 {
        NAMES[i].to_string()
    } else {
        format!("{}/{}", NAMES[(i - 4) / 4], NAMES[(i - 4) % 4])
    }
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn name_of(p: &str) -> &OsStr {
    OsStr::new(p.rsplit('/').next().unwrap())
}

impl Model {
    fn is_dir(&self, p: &str) -> bool {
        p.is_empty() || self.tree.get(p) == Some(&Obj::Dir)
    }

    fn children(&self, p: &str) -> Vec<String> {
        let pre = format!("{p}/");
        self.tree
            .keys()
            .filter(|k| k.starts_with(&pre))
            .cloned()
            .collect()
    }

    fn new_file(&mut self, p: &str, data: Vec<u8>) {
        self.data.push(data);
        self.tree.insert(p.into(), Obj::File(self.data.len() - 1));
    }

    /// Moves `from` and everything below it to `to`.
    fn move_tree(&mut self, from: &str, to: &str) {
        let mut moved = vec![(to.to_string(), self.tree.remove(from).unwrap())];
        for k in self.children(from) {
            let v = self.tree.remove(&k).unwrap();
            moved.push((format!("{to}{}", &k[from.len()..]), v));
        }
        self.tree.extend(moved);
    }
}

struct Core {
    fs: OvlFs,
}

impl Core {
    fn walk(&self, p: &str) -> Result<Arc<Node>, Errno> {
        let mut n = self.fs.nodes.root();
        for part in p.split('/').filter(|s| !s.is_empty()) {
            n = self.fs.lookup(&n, OsStr::new(part), false)?.0;
        }
        Ok(n)
    }

    fn read_all(&self, p: &str) -> Result<Vec<u8>, Errno> {
        let n = self.walk(p)?;
        let fh = self.fs.open(&n, libc::O_RDONLY)?;
        let r = self.fs.read(fh, 0, 1 << 16);
        self.fs.release(fh);
        r
    }

    fn write_at(&self, p: &str, off: u64, data: &[u8]) -> Result<(), Errno> {
        let n = self.walk(p)?;
        let fh = self.fs.open(&n, libc::O_WRONLY)?;
        let r = self.fs.write(fh, off, data);
        self.fs.release(fh);
        r.map(|_| ())
    }

    /// The merged tree: path -> "dir" or the file's content.
    fn dump(&self, p: &str, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let n = self.walk(p).unwrap();
        for e in self.fs.merged_entries(&n).unwrap() {
            let name = e.name.to_string_lossy().into_owned();
            let child = if p.is_empty() {
                name
            } else {
                format!("{p}/{name}")
            };
            let c = self.walk(&child).unwrap();
            if c.is_dir() {
                out.insert(child.clone(), None);
                self.dump(&child, out);
            } else {
                out.insert(child.clone(), Some(self.read_all(&child).unwrap()));
            }
        }
    }
}

fn build(base: &Path, redirects: bool) -> Core {
    let l = base.join("l");
    fs::create_dir_all(l.join("a")).unwrap();
    fs::create_dir_all(l.join("c")).unwrap();
    fs::write(l.join("a/b"), b"lower a/b\n").unwrap();
    fs::write(l.join("b"), b"lower b\n").unwrap();
    for d in ["u", "w", "m"] {
        fs::create_dir_all(base.join(d)).unwrap();
    }
    let mut c = Config::default();
    c.apply_options(&format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir={},volatile",
        l.display(),
        base.join("u").display(),
        base.join("w").display(),
        if redirects { "on" } else { "off" }
    ))
    .unwrap();
    c.validate(base, &base.join("m")).unwrap();
    Core {
        fs: OvlFs::new(c).unwrap(),
    }
}

fn initial_model() -> Model {
    let mut m = Model::default();
    m.tree.insert("a".into(), Obj::Dir);
    m.tree.insert("c".into(), Obj::Dir);
    m.new_file("a/b", b"lower a/b\n".to_vec());
    m.new_file("b", b"lower b\n".to_vec());
    m.lower_dirs.extend(["a".to_string(), "c".to_string()]);
    m
}

/// Runs `ops` in a fresh overlay under `base` and checks it against the
/// model. The first byte picks redirect_dir=on (odd) or off.
pub fn run(base: &Path, ops: &[u8]) {
    let Some((&mode, ops)) = ops.split_first() else {
        return;
    };
    let redirects = mode & 1 == 1;
    let _ = fs::remove_dir_all(base);
    let core = build(base, redirects);
    let mut m = initial_model();
    let fs = &core.fs;
    for (step, op) in ops.chunks_exact(3).enumerate() {
        let (kind, p, arg) = (op[0] % 9, path_of(op[1]), op[2]);
        let parent = parent_of(&p).to_string();
        let here = format!("step {step}: op {kind} on {p} (arg {arg})");
        let exists = m.tree.get(&p).cloned();
        if !m.is_dir(&parent) {
            continue; // ENOENT or ENOTDIR from the VFS.
        }
        let pn = || core.walk(&parent).unwrap();
        if std::env::var_os("OVLFUSE_TRACE").is_some() {
            eprintln!("{here} exists={exists:?}");
        }
        match kind {
            0 if exists.is_none() => {
                let data = vec![b'A' + arg % 26; arg as usize % 7];
                let (_, _, fh) = fs
                    .create(&pn(), name_of(&p), 0o644, libc::O_RDWR, me())
                    .unwrap_or_else(|e| panic!("{here}: create: {e}"));
                fs.write(fh, 0, &data).unwrap();
                fs.release(fh);
                m.new_file(&p, data);
            }
            1 if exists.is_none() => {
                fs.create_object(&pn(), name_of(&p), NewObj::Dir(0o755), me())
                    .unwrap_or_else(|e| panic!("{here}: mkdir: {e}"));
                m.tree.insert(p.clone(), Obj::Dir);
            }
            2 if matches!(exists, Some(Obj::File(_))) => {
                fs.unlink(&pn(), name_of(&p))
                    .unwrap_or_else(|e| panic!("{here}: unlink: {e}"));
                m.tree.remove(&p);
            }
            3 if exists == Some(Obj::Dir) => {
                let r = fs.rmdir(&pn(), name_of(&p));
                if m.children(&p).is_empty() {
                    r.unwrap_or_else(|e| panic!("{here}: rmdir: {e}"));
                    m.tree.remove(&p);
                    m.lower_dirs.remove(&p);
                } else {
                    assert_eq!(r, Err(Errno(libc::ENOTEMPTY)), "{here}: rmdir");
                }
            }
            4 if exists.is_some() => {
                let q = path_of(arg);
                let qparent = parent_of(&q).to_string();
                let target = m.tree.get(&q).cloned();
                let src_dir = exists == Some(Obj::Dir);
                // What the VFS refuses, or does itself: a rename onto the
                // same inode (the same name, or two names of one file).
                if !m.is_dir(&qparent)
                    || p == q
                    || (!src_dir && target == exists)
                    || q.starts_with(&format!("{p}/"))
                    || p.starts_with(&format!("{q}/"))
                    || target.as_ref().is_some_and(|t| (*t == Obj::Dir) != src_dir)
                {
                    continue;
                }
                let r = fs.rename(
                    &pn(),
                    name_of(&p),
                    &core.walk(&qparent).unwrap(),
                    name_of(&q),
                    0,
                );
                let want = if src_dir && m.lower_dirs.contains(&p) && !redirects {
                    Err(Errno(libc::EXDEV))
                } else if target == Some(Obj::Dir) && !m.children(&q).is_empty() {
                    Err(Errno(libc::ENOTEMPTY))
                } else {
                    Ok(())
                };
                assert_eq!(r, want, "{here}: rename to {q}");
                if want.is_ok() {
                    m.lower_dirs.remove(&q);
                    let under = format!("{p}/");
                    let moved: Vec<String> = m
                        .lower_dirs
                        .iter()
                        .filter(|d| **d == p || d.starts_with(&under))
                        .cloned()
                        .collect();
                    for d in moved {
                        m.lower_dirs.remove(&d);
                        m.lower_dirs.insert(format!("{q}{}", &d[p.len()..]));
                    }
                    m.tree.remove(&q);
                    m.move_tree(&p, &q);
                }
            }
            5 if matches!(exists, Some(Obj::File(_))) => {
                let q = path_of(arg);
                if !m.is_dir(parent_of(&q)) || m.tree.contains_key(&q) {
                    continue;
                }
                let n = core.walk(&p).unwrap();
                fs.link(&n, &core.walk(parent_of(&q)).unwrap(), name_of(&q))
                    .unwrap_or_else(|e| panic!("{here}: link to {q}: {e}"));
                m.tree.insert(q, exists.clone().unwrap());
            }
            6 => {
                if let Some(Obj::File(i)) = exists {
                    let off = (arg % 12) as usize;
                    let data = vec![b'a' + arg % 26; 1 + arg as usize % 5];
                    core.write_at(&p, off as u64, &data)
                        .unwrap_or_else(|e| panic!("{here}: write: {e}"));
                    let f = &mut m.data[i];
                    if f.len() < off + data.len() {
                        f.resize(off + data.len(), 0);
                    }
                    f[off..off + data.len()].copy_from_slice(&data);
                }
            }
            7 => {
                if let Some(Obj::File(i)) = exists {
                    let size = arg as usize % 16;
                    let n = core.walk(&p).unwrap();
                    let a = SetAttr {
                        size: Some(size as u64),
                        ..Default::default()
                    };
                    fs.setattr(&n, a)
                        .unwrap_or_else(|e| panic!("{here}: truncate: {e}"));
                    m.data[i].resize(size, 0);
                }
            }
            8 => {
                let r = core.walk(&p).map(|n| n.is_dir());
                match &exists {
                    None => assert_eq!(r.err(), Some(Errno(libc::ENOENT)), "{here}: lookup"),
                    Some(Obj::Dir) => assert_eq!(r, Ok(true), "{here}: lookup"),
                    Some(Obj::File(i)) => {
                        let got = core.read_all(&p);
                        assert_eq!(got.as_ref(), Ok(&m.data[*i]), "{here}: read");
                    }
                }
            }
            _ => {}
        }
    }
    let mut got = BTreeMap::new();
    core.dump("", &mut got);
    let want: BTreeMap<String, Option<Vec<u8>>> = m
        .tree
        .iter()
        .map(|(k, v)| {
            let d = match v {
                Obj::Dir => None,
                Obj::File(i) => Some(m.data[*i].clone()),
            };
            (k.clone(), d)
        })
        .collect();
    assert_eq!(got, want, "the merged tree after {} ops", ops.len() / 3);
    drop(core);
    let _ = fs::remove_dir_all(base);
}
