//! Tree walks and dumps: what a user sees of a tree, and of an upper as
//! the kernel format has it, as maps to compare.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;

pub fn assert_maps_eq(o: &BTreeMap<String, String>, k: &BTreeMap<String, String>, what: &str) {
    if let Err(e) = maps_eq(o, k, what) {
        panic!("{e}");
    }
}

/// Err lists every path where `o` (ovlfuse) and `k` (kernel) differ.
pub fn maps_eq(
    o: &BTreeMap<String, String>,
    k: &BTreeMap<String, String>,
    what: &str,
) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (p, kv) in k {
        match o.get(p) {
            Some(ov) if ov == kv => {}
            Some(ov) => diffs.push(format!("  {p}:\n    ovlfuse {ov}\n    kernel  {kv}")),
            None => diffs.push(format!("  {p}: missing in ovlfuse (kernel: {kv})")),
        }
    }
    for (p, ov) in o {
        if !k.contains_key(p) {
            diffs.push(format!("  {p}: only in ovlfuse ({ov})"));
        }
    }
    match diffs.is_empty() {
        true => Ok(()),
        false => Err(format!("{what} differs:\n{}", diffs.join("\n"))),
    }
}

fn kind(m: u32) -> &'static str {
    match m & libc::S_IFMT {
        libc::S_IFDIR => "dir",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "link",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        libc::S_IFSOCK => "sock",
        _ => "?",
    }
}

pub fn hash(data: &[u8]) -> u64 {
    // FNV-1a: enough to tell contents apart in a test.
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Everything a user sees of a tree: types, modes, owners, sizes, link
/// counts, contents, targets, xattrs and preserved times.
pub fn dump_tree(root: &Path) -> BTreeMap<String, String> {
    dump_tree_skip(root, &[])
}

pub fn dump_tree_skip(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    dump(root, &mut out, false, skip);
    // Hard-link groups: each multiply linked file names its group's first path.
    let mut groups: BTreeMap<u64, String> = BTreeMap::new();
    for rel in out.keys() {
        if let Ok(m) = fs::symlink_metadata(root.join(rel)) {
            if !m.is_dir() && m.nlink() > 1 {
                groups.entry(m.ino()).or_insert_with(|| rel.clone());
            }
        }
    }
    for (rel, d) in out.iter_mut() {
        if let Ok(m) = fs::symlink_metadata(root.join(rel)) {
            if let Some(first) = groups
                .get(&m.ino())
                .filter(|_| !m.is_dir() && m.nlink() > 1)
            {
                d.push_str(&format!(" linked-with={first}"));
            }
        }
    }
    out
}

/// The upper dir as the kernel format sees it: entries, whiteouts, opaque
/// markers, contents (private xattrs other than opaque are left out).
pub fn dump_upper(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    dump(root, &mut out, true, &[]);
    out
}

/// Every path below `root`, each dir before what it holds, names sorted.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk_into(root, &mut out);
    out
}

fn walk_into(dir: &Path, out: &mut Vec<PathBuf>) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<_> = rd.map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        out.push(p.clone());
        if is_dir {
            walk_into(&p, out);
        }
    }
}

fn dump(root: &Path, out: &mut BTreeMap<String, String>, upper: bool, skip: &[&str]) {
    for p in walk(root) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let skipped = |s: &&str| rel == *s || rel.starts_with(&format!("{s}/"));
        if skip.iter().any(skipped) {
            continue;
        }
        let md = fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{}: listed but lstat fails: {e}", p.display()));
        let m = md.mode();
        let mut d = format!("{} {:o} {}:{}", kind(m), m & 0o7777, md.uid(), md.gid());
        match m & libc::S_IFMT {
            libc::S_IFREG => {
                let mut data = Vec::new();
                let r = fs::File::open(&p).and_then(|mut f| f.read_to_end(&mut data));
                if let Err(e) = r {
                    d += &format!(" read: errno {}", e.raw_os_error().unwrap_or(-1));
                }
                d += &format!(" size={} data={:x}", md.len(), hash(&data));
            }
            libc::S_IFLNK => d += &format!(" -> {}", fs::read_link(&p).unwrap().display()),
            libc::S_IFCHR | libc::S_IFBLK => d += &format!(" rdev={}", md.rdev()),
            _ => {}
        }
        // In the upper, whiteouts may share one inode and dir link counts
        // follow whiteout subdirs: only the merged view's counts are compared.
        let t = m & libc::S_IFMT;
        if !upper || (t != libc::S_IFCHR && t != libc::S_IFDIR) {
            d += &format!(" nlink={}", md.nlink());
        }
        if md.mtime() == FIXED_MTIME {
            d += " mtime=fixed";
        }
        let xs: Vec<String> = list_xattr(&p)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| {
                let kept = [
                    "trusted.overlay.opaque",
                    "trusted.overlay.redirect",
                    "trusted.overlay.metacopy",
                ];
                !upper || !n.starts_with("trusted.overlay.") || kept.contains(&n.as_str())
            })
            .map(|n| {
                format!(
                    "{n}={:?}",
                    String::from_utf8_lossy(&get_xattr(&p, &n).unwrap_or_default())
                )
            })
            .collect();
        if !xs.is_empty() {
            d += &format!(" xattrs[{}]", xs.join(","));
        }
        out.insert(rel, d);
    }
}
