//! Test fixtures: identical layer trees mounted with kernel overlayfs and with
//! ovlfuse, helpers to run the same operations on both, and tree dumps.
//! Every mount is undone and every daemon ended (by pid) in Drop.
#![allow(dead_code)]

pub mod ops;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const FIXED_MTIME: i64 = 1_000_000_000;
static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ovlfuse")
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "ovlfuse-t-{}-{}-{}",
            std::process::id(),
            tag,
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let want = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| Path::new(m) == want)
            .unwrap_or(false)
    })
}

pub fn umount(p: &Path) {
    for _ in 0..50 {
        if !is_mounted(p) {
            return;
        }
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscall on a valid path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: lazy detach as the last resort.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Kernel overlayfs mounted on `mnt`; unmounted on drop.
pub struct KernelMount {
    pub mnt: PathBuf,
}

impl KernelMount {
    pub fn new(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &str,
    ) -> KernelMount {
        let o = overlay_opts(lowers, upper, extra);
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &o])
            .arg(mnt)
            .status()
            .unwrap();
        assert!(st.success(), "kernel overlay mount failed: {o}");
        KernelMount {
            mnt: mnt.to_path_buf(),
        }
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        umount(&self.mnt);
    }
}

/// `lowerdir=..[,upperdir=..,workdir=..][,extra]`, the same for both mounts.
pub fn overlay_opts(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, extra: &str) -> String {
    let mut o = format!("lowerdir={}", join_lowers(lowers));
    if let Some((u, w)) = upper {
        o += &format!(",upperdir={},workdir={}", u.display(), w.display());
    }
    if !extra.is_empty() {
        o += ",";
        o += extra;
    }
    o
}

pub fn join_lowers(l: &[PathBuf]) -> String {
    l.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// ovlfuse running in the foreground as our child; unmounted and reaped on drop.
pub struct OvlMount {
    pub mnt: PathBuf,
    pub child: Option<Child>,
}

impl OvlMount {
    pub fn new(opts: &str, mnt: &Path) -> OvlMount {
        OvlMount::new_with(opts, mnt, |_| {})
    }

    /// As new, with `f` adjusting the command first (e.g. a pre_exec hook).
    pub fn new_with(opts: &str, mnt: &Path, f: impl FnOnce(&mut Command)) -> OvlMount {
        let mut cmd = Command::new(bin());
        cmd.args(["-f", "-o", opts]).arg(mnt).stdin(Stdio::null());
        if std::env::var_os("OVLFUSE_TEST_OLD_KERNEL").is_some() {
            old_kernel(&mut cmd);
        }
        f(&mut cmd);
        let child = cmd.spawn().expect("spawn ovlfuse");
        let mut m = OvlMount {
            mnt: mnt.to_path_buf(),
            child: Some(child),
        };
        let t = Instant::now();
        while !is_mounted(mnt) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ovlfuse exited before mounting: {st}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "ovlfuse did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn layers(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &str,
    ) -> OvlMount {
        OvlMount::new(&overlay_opts(lowers, upper, extra), mnt)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The daemon, no longer unmounted or reaped on drop.
    pub fn into_child(mut self) -> Child {
        self.mnt = PathBuf::new();
        self.child.take().expect("running")
    }

    /// Unmounts and waits for the daemon to exit; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        umount(&self.mnt);
        let mut child = self.child.take()?;
        let t = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OvlMount {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- layer building ----

pub fn mknod(p: &Path, mode: u32, dev: u64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscall.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(r, 0, "mknod {}", p.display());
}

pub fn whiteout(p: &Path) {
    mknod(p, libc::S_IFCHR, 0);
}

pub fn set_xattr(p: &Path, name: &str, v: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid pointers.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

pub fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid pointers.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn list_xattr(p: &Path) -> Result<Vec<String>, i32> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 8192];
    // SAFETY: valid pointers.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    let mut v: Vec<String> = buf[..r as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| !s.starts_with("security."))
        .collect();
    v.sort();
    Ok(v)
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn set_mtime(p: &Path, t: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid pointers.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// Sets every object below `root` to FIXED_MTIME, deepest first.
pub fn fix_times(root: &Path) {
    let mut all = Vec::new();
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, FIXED_MTIME);
    }
    set_mtime(root, FIXED_MTIME);
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect(&path, out);
            }
            out.push(path);
        }
    }
}

pub fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// Three lowers with files, dirs, symlinks, hard links, a fifo, xattrs,
/// whiteouts and an opaque dir; `aufs` writes `.wh.` markers instead of the
/// kernel's char 0/0 and opaque xattr.
pub fn build_lowers(base: &Path, aufs: bool) -> Vec<PathBuf> {
    build_lowers_with(base, aufs, "trusted.overlay.")
}

/// The fixture with its private xattrs under `prefix` (user.overlay. for
/// userxattr mounts).
pub fn build_lowers_with(base: &Path, aufs: bool, prefix: &str) -> Vec<PathBuf> {
    let l1 = base.join("l1");
    let l2 = base.join("l2");
    let l3 = base.join("l3");
    for l in [&l1, &l2, &l3] {
        fs::create_dir_all(l).unwrap();
    }
    // bottom
    write(&l3.join("a/x"), b"x from l3\n");
    write(&l3.join("a/y"), b"y from l3\n");
    write(&l3.join("a/sub/z"), b"z\n");
    write(&l3.join("hard1"), b"linked\n");
    fs::hard_link(l3.join("hard1"), l3.join("hard2")).unwrap();
    write(&l3.join("deep/1/2/3/file"), b"deep\n");
    mknod(&l3.join("fifo"), libc::S_IFIFO | 0o644, 0);
    std::os::unix::fs::symlink("a/x", l3.join("sym")).unwrap();
    write(&l3.join("xat"), b"with xattr\n");
    set_xattr(&l3.join("xat"), "user.test", b"value");
    write(&l3.join("opq/hidden"), b"hidden\n");
    write(&l3.join("wh-me"), b"to be whited out\n");
    write(&l3.join("gone-dir/inner"), b"i\n");
    write(&l3.join("ro"), b"read only\n");
    fs::set_permissions(l3.join("ro"), fs::Permissions::from_mode(0o444)).unwrap();
    {
        let f = fs::File::create(l3.join("sparse")).unwrap();
        f.set_len(1 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_at(b"middle", 512 * 1024).unwrap();
    }
    // middle
    write(&l2.join("a/w"), b"w from l2\n");
    write(&l2.join("opq/visible"), b"visible\n");
    write(&l2.join("emptyish/.keep"), b"");
    if aufs {
        write(&l2.join("a/.wh.y"), b"");
        write(&l2.join(".wh.wh-me"), b"");
        write(&l2.join(".wh.gone-dir"), b"");
        write(&l2.join("opq/.wh..wh..opq"), b"");
    } else {
        whiteout(&l2.join("a/y"));
        whiteout(&l2.join("wh-me"));
        whiteout(&l2.join("gone-dir"));
        set_xattr(&l2.join("opq"), &format!("{prefix}opaque"), b"y");
    }
    // top
    write(&l1.join("top"), b"top file\n");
    write(&l1.join("a/x"), b"x from l1\n");
    fs::create_dir_all(l1.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", l1.join("abs")).unwrap();
    write(&l1.join("owned"), b"owned by 1000\n");
    std::os::unix::fs::chown(l1.join("owned"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(l1.join("owned"), fs::Permissions::from_mode(0o640)).unwrap();
    for l in [&l1, &l2, &l3] {
        fix_times(l);
    }
    vec![l1, l2, l3]
}

/// The three-layer fixture spread over ten lowers: its top layer stays on
/// top, its middle becomes layer 5 and its bottom layer 10, and the layers in
/// between add entries to the merged dirs.
pub fn build_ten_lowers(base: &Path) -> Vec<PathBuf> {
    let three = build_lowers(&base.join("three"), false);
    let ten: Vec<PathBuf> = (1..=10).map(|i| base.join(format!("l{i}"))).collect();
    fs::rename(&three[0], &ten[0]).unwrap();
    fs::rename(&three[1], &ten[4]).unwrap();
    fs::rename(&three[2], &ten[9]).unwrap();
    for (i, l) in ten.iter().enumerate() {
        if [0, 4, 9].contains(&i) {
            continue;
        }
        write(
            &l.join(format!("a/from{}", i + 1)),
            format!("layer {}\n", i + 1).as_bytes(),
        );
        write(&l.join(format!("deep/1/in{}", i + 1)), b"deep\n");
        if i == 6 {
            whiteout(&l.join("a/x"));
        }
        fix_times(l);
    }
    ten
}

/// Kernel and ovlfuse mounted over identical copies of the fixture.
pub struct Pair {
    pub kernel: Option<KernelMount>,
    pub ovl: Option<OvlMount>,
    pub k_upper: PathBuf,
    pub o_upper: PathBuf,
    pub k_lowers: Vec<PathBuf>,
    pub o_lowers: Vec<PathBuf>,
    pub k_mnt: PathBuf,
    pub o_mnt: PathBuf,
    pub k_opts: String,
    pub o_opts: String,
    /// Last: removed only after the mounts above are gone.
    pub scratch: Scratch,
}

impl Pair {
    /// Kernel mounted with `k_opts`, ovlfuse with `o_opts` (extra options).
    pub fn new(k_opts: &str, o_opts: &str) -> Pair {
        Self::with_lowers(
            k_opts,
            o_opts,
            |b| build_lowers(b, false),
            |b| build_lowers(b, false),
        )
    }

    pub fn with_lowers(
        k_opts: &str,
        o_opts: &str,
        kb: impl Fn(&Path) -> Vec<PathBuf>,
        ob: impl Fn(&Path) -> Vec<PathBuf>,
    ) -> Pair {
        let scratch = Scratch::new("pair");
        let k = scratch.0.join("k");
        let o = scratch.0.join("o");
        for d in [&k, &o] {
            for s in ["u", "w", "m"] {
                fs::create_dir_all(d.join(s)).unwrap();
            }
        }
        let k_lowers = kb(&k);
        let o_lowers = ob(&o);
        let mut p = Pair {
            k_upper: k.join("u"),
            o_upper: o.join("u"),
            k_mnt: k.join("m"),
            o_mnt: o.join("m"),
            k_lowers,
            o_lowers,
            scratch,
            kernel: None,
            ovl: None,
            k_opts: k_opts.into(),
            o_opts: o_opts.into(),
        };
        p.mount();
        p
    }

    pub fn mount(&mut self) {
        let k = self.scratch.0.join("k");
        let o = self.scratch.0.join("o");
        self.kernel = Some(KernelMount::new(
            &self.k_lowers,
            Some((&self.k_upper, &k.join("w"))),
            &self.k_mnt,
            &self.k_opts,
        ));
        self.ovl = Some(OvlMount::layers(
            &self.o_lowers,
            Some((&self.o_upper, &o.join("w"))),
            &self.o_mnt,
            &self.o_opts,
        ));
    }

    pub fn unmount(&mut self) {
        self.kernel = None;
        if let Some(mut o) = self.ovl.take() {
            let st = o.stop();
            assert!(
                st.map(|s| s.success()).unwrap_or(false),
                "ovlfuse exited with {st:?}"
            );
        }
    }

    /// Runs `f` on both mounts and asserts the same outcome.
    pub fn both<T: PartialEq + std::fmt::Debug>(&self, what: &str, f: impl Fn(&Path) -> T) -> T {
        let k = f(&self.k_mnt);
        let o = f(&self.o_mnt);
        assert_eq!(o, k, "{what}: ovlfuse (left) differs from kernel (right)");
        o
    }

    /// Mounts ovlfuse's layers (lowers + the upper it wrote) with the kernel
    /// and checks the kernel shows what the kernel's own run shows.
    pub fn assert_kernel_reads_ovlfuse_upper(&self) {
        assert!(
            self.ovl.is_none() && self.kernel.is_some(),
            "unmount ovlfuse first"
        );
        // The same workdir: W/index is part of what ovlfuse wrote.
        let o = self.scratch.0.join("o");
        let m = o.join("m-kernel");
        let w = o.join("w");
        fs::create_dir_all(&m).unwrap();
        let km = KernelMount::new(&self.o_lowers, Some((&self.o_upper, &w)), &m, &self.k_opts);
        let seen = dump_tree(&km.mnt);
        drop(km);
        assert_maps_eq(
            &seen,
            &dump_tree(&self.k_mnt),
            "kernel over ovlfuse's upper vs kernel's own",
        );
    }

    /// Mounts the kernel's layers (lowers + the upper and workdir the kernel
    /// wrote) with ovlfuse and checks it shows what ovlfuse's own run shows.
    pub fn assert_ovlfuse_reads_kernel_upper(&self) {
        assert!(
            self.ovl.is_none() && self.kernel.is_none(),
            "unmount both first"
        );
        let k = self.scratch.0.join("k");
        let m = k.join("m-ovlfuse");
        fs::create_dir_all(&m).unwrap();
        let mut om = OvlMount::layers(
            &self.k_lowers,
            Some((&self.k_upper, &k.join("w"))),
            &m,
            &self.o_opts,
        );
        let seen = dump_tree(&om.mnt);
        om.stop();
        let mut own = OvlMount::layers(
            &self.o_lowers,
            Some((&self.o_upper, &self.scratch.0.join("o/w"))),
            &self.o_mnt,
            &self.o_opts,
        );
        let mine = dump_tree(&own.mnt);
        own.stop();
        assert_maps_eq(
            &seen,
            &mine,
            "ovlfuse over the kernel's upper vs ovlfuse's own",
        );
    }

    /// After the operations: same merged trees, same upper, the same again
    /// after a remount, and each reads the other's upper.
    pub fn check_all(mut self) {
        self.assert_same_tree();
        self.unmount();
        if self.o_opts.contains("index=on") {
            self.assert_same_upper_but_index_names();
        } else {
            self.assert_same_upper();
        }
        self.mount();
        self.assert_same_tree();
        self.unmount();
        let w = self.scratch.0.join("k/w");
        self.kernel = Some(KernelMount::new(
            &self.k_lowers,
            Some((&self.k_upper, &w)),
            &self.k_mnt,
            &self.k_opts,
        ));
        self.assert_kernel_reads_ovlfuse_upper();
        self.kernel = None;
        self.assert_ovlfuse_reads_kernel_upper();
    }

    pub fn assert_same_tree(&self) {
        self.assert_same_tree_except(&[]);
    }

    /// As assert_same_tree, leaving out names that are listed but cannot be
    /// looked up (the dump cannot stat them on either side).
    pub fn assert_same_tree_except(&self, skip: &[&str]) {
        let k = dump_tree_skip(&self.k_mnt, skip);
        let o = dump_tree_skip(&self.o_mnt, skip);
        assert_maps_eq(&o, &k, "merged view");
    }

    pub fn assert_same_upper(&self) {
        let k = dump_upper(&self.k_upper);
        let o = dump_upper(&self.o_upper);
        assert_maps_eq(&o, &k, "upper dir");
    }

    /// As assert_same_upper, but names of indexed inodes (hard links of
    /// lower files, reachable through W/index) may be materialized in one
    /// upper and not the other: FUSE does not say which name an open or
    /// chmod went through, the kernel's VFS does.
    pub fn assert_same_upper_but_index_names(&self) {
        let strip = |side: &str, upper: &Path| {
            let index = self.scratch.0.join(side).join("w/index");
            let inos: Vec<u64> = fs::read_dir(&index)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.ino())
                        .collect()
                })
                .unwrap_or_default();
            let mut d = dump_upper(upper);
            // Regular files only: the kernel also links its whiteouts to one
            // inode, which a dead index entry can share.
            d.retain(|rel, _| match fs::symlink_metadata(upper.join(rel)) {
                Ok(m) => !(m.file_type().is_file() && inos.contains(&m.ino())),
                Err(_) => true,
            });
            d
        };
        assert_maps_eq(
            &strip("o", &self.o_upper),
            &strip("k", &self.k_upper),
            "upper dir (index names aside)",
        );
    }
}

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
    dump(root, root, &mut out, false, skip);
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
    dump(root, root, &mut out, true, &[]);
    out
}

fn dump(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>, upper: bool, skip: &[&str]) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if skip.contains(&rel.as_str()) {
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
        if m & libc::S_IFMT == libc::S_IFDIR {
            dump(root, &p, out, upper, skip);
        }
    }
}

/// Result of a syscall-ish op as a comparable string.
pub fn res<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

pub fn append(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(p)?;
    f.write_all(data)
}

pub fn read(p: &Path) -> Result<Vec<u8>, i32> {
    fs::read(p).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn ls(p: &Path) -> Result<Vec<String>, i32> {
    let mut v: Vec<String> = fs::read_dir(p)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A busybox rootfs (its applets as links, /srv/conf.d/old, /img with a
/// hard link, /img/low/f) as a tar to import as a container image.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    fs::create_dir_all(rootfs.join("srv/conf.d")).unwrap();
    fs::write(rootfs.join("srv/conf.d/old"), b"old\n").unwrap();
    fs::create_dir_all(rootfs.join("img/low")).unwrap();
    fs::write(rootfs.join("img/low/f"), b"low\n").unwrap();
    fs::write(rootfs.join("img/a"), b"a\n").unwrap();
    fs::hard_link(rootfs.join("img/a"), rootfs.join("img/hard")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static missing: run scripts/test");
    for c in [
        "sh", "ls", "cat", "echo", "rm", "mkdir", "mv", "ln", "chmod", "stat", "cp", "true", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(c)).unwrap();
    }
    let tar = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

/// OVLFUSE_TEST_OLD_KERNEL=1: every ovlfuse the tests start behaves as on
/// Linux 4.18, fuse-overlayfs's oldest kernel: a seccomp filter fails what
/// came later (openat2, close_range, io_uring: ENOSYS; renameat2
/// RENAME_WHITEOUT: EINVAL; FICLONE: EOPNOTSUPP; the passthrough ioctl:
/// ENOTTY), copy_file_range answers EXDEV as across filesystems, and
/// ovlfuse asks INIT for FUSE 7.27 features only.
pub fn old_kernel(cmd: &mut Command) {
    const FICLONE: u32 = 0x4004_9409;
    const FUSE_DEV_IOC_BACKING_OPEN: u32 = 0x4010_e501;
    let err = |e: i32| 0x0005_0000 | e as u32;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let (ld, jeq, jset, ret) = (0x20, 0x15, 0x45, 0x06);
    // Offsets are counted from the instruction after the arch check.
    let filter = vec![
        ins(ld, 0, 0, 0), // 0: syscall number
        ins(jeq, 8, 0, libc::SYS_openat2 as u32),
        ins(jeq, 7, 0, libc::SYS_close_range as u32),
        ins(jeq, 6, 0, libc::SYS_io_uring_setup as u32),
        ins(jeq, 5, 0, libc::SYS_open_tree as u32),
        ins(jeq, 4, 0, libc::SYS_mount_setattr as u32),
        ins(jeq, 4, 0, libc::SYS_copy_file_range as u32),
        ins(jeq, 4, 0, libc::SYS_renameat2 as u32),
        ins(jeq, 7, 0, libc::SYS_ioctl as u32),
        ins(ret, 0, 0, SECCOMP_ALLOW),     // 9
        ins(ret, 0, 0, err(libc::ENOSYS)), // 10
        ins(ret, 0, 0, err(libc::EXDEV)),  // 11
        ins(ld, 0, 0, 16 + 8 * 4),         // 12: renameat2 flags
        ins(jset, 0, 1, libc::RENAME_WHITEOUT),
        ins(ret, 0, 0, err(libc::EINVAL)), // 14
        ins(ret, 0, 0, SECCOMP_ALLOW),     // 15
        ins(ld, 0, 0, 16 + 8),             // 16: ioctl request
        ins(jeq, 2, 0, FICLONE),
        ins(jeq, 2, 0, FUSE_DEV_IOC_BACKING_OPEN),
        ins(ret, 0, 0, SECCOMP_ALLOW),         // 19
        ins(ret, 0, 0, err(libc::EOPNOTSUPP)), // 20
        ins(ret, 0, 0, err(libc::ENOTTY)),     // 21
    ];
    cmd.env("OVLFUSE_FUSE_PROTO", "7.27");
    seccomp(cmd, filter);
}

const SECCOMP_ALLOW: u32 = 0x7fff_0000;

/// seccomp: mknod and mknodat fail with EPERM (as where whiteout devices
/// cannot be made); everything else is allowed.
pub fn no_mknod(cmd: &mut Command) {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let (ld, jeq, ret) = (0x20, 0x15, 0x06);
    let filter = vec![
        ins(ld, 0, 0, 0), // syscall number
        ins(jeq, 2, 0, libc::SYS_mknodat as u32),
        ins(jeq, 1, 0, libc::SYS_mknod as u32),
        ins(ret, 0, 0, SECCOMP_ALLOW),
        ins(ret, 0, 0, 0x0005_0000 | libc::EPERM as u32),
    ];
    seccomp(cmd, filter);
}

/// Runs `cmd` under a seccomp filter: `body` (BPF on seccomp_data) after a
/// check that lets other architectures through untouched.
pub fn seccomp(cmd: &mut Command, body: Vec<libc::sock_filter>) {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut filter = vec![
        ins(0x20, 0, 0, 4), // arch
        ins(0x15, 1, 0, AUDIT_ARCH_X86_64),
        ins(0x06, 0, 0, SECCOMP_ALLOW),
    ];
    filter.extend(body);
    // SAFETY: only async-signal-safe prctl calls run between fork and exec;
    // the filter is moved into the closure.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut _,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, 2, &prog as *const _ as usize, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Unmounts a mount the test made (or that a daemon made for it) on drop.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

/// Runs `cmd`, which must succeed; returns its stdout.
pub fn output_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
