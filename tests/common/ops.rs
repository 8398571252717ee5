//! Differential runs of operation lists on kernel overlayfs and ovlfuse, as
//! users stack layers: every result must match; at each layer rotation and
//! at the end the merged views, the uppers, and each side's layers read back
//! by the other implementation must match too. A failing list can be shrunk
//! and saved in a text form that `replay` runs again (tests/replays/).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

pub const SLOTS: usize = 3;

/// One step. Names are paths relative to the mount root.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Write(String, u8),
    Append(String, u8),
    /// Open without O_TRUNC, write `len` bytes at `off`.
    WriteAt(String, u64, u32, u8),
    Truncate(String, u64),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
    Link(String, String),
    Symlink(String),
    Chmod(String, u32),
    SetXattr(String, u8),
    RemoveXattr(String),
    Read(String),
    Stat(String),
    List(String),
    /// Open `name` and hold the fd in a slot: "ro", "rw" or "trunc".
    Open(usize, String, String),
    FdWrite(usize, u64, u32, u8),
    FdRead(usize),
    FdStat(usize),
    Close(usize),
    /// Unmount; each upper becomes the top lower of a fresh mount.
    Rotate,
}

impl Op {
    /// The op as one line of a replay file.
    pub fn to_line(&self) -> String {
        use Op::*;
        match self {
            Write(n, b) => format!("write {n} {b}"),
            Append(n, b) => format!("append {n} {b}"),
            WriteAt(n, o, l, b) => format!("writeat {n} {o} {l} {b}"),
            Truncate(n, l) => format!("truncate {n} {l}"),
            Unlink(n) => format!("unlink {n}"),
            Mkdir(n) => format!("mkdir {n}"),
            Rmdir(n) => format!("rmdir {n}"),
            Rename(a, b) => format!("rename {a} {b}"),
            Link(a, b) => format!("link {a} {b}"),
            Symlink(n) => format!("symlink {n}"),
            Chmod(n, m) => format!("chmod {n} {m:o}"),
            SetXattr(n, b) => format!("setxattr {n} {b}"),
            RemoveXattr(n) => format!("rmxattr {n}"),
            Read(n) => format!("read {n}"),
            Stat(n) => format!("stat {n}"),
            List(n) => format!("list {n}"),
            Open(s, n, m) => format!("open {s} {n} {m}"),
            FdWrite(s, o, l, b) => format!("fdwrite {s} {o} {l} {b}"),
            FdRead(s) => format!("fdread {s}"),
            FdStat(s) => format!("fdstat {s}"),
            Close(s) => format!("close {s}"),
            Rotate => "rotate".into(),
        }
    }

    pub fn parse(line: &str) -> Result<Op, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("bad op line: {line:?}");
        let s = |i: usize| w.get(i).map(|x| x.to_string()).ok_or_else(bad);
        let n = |i: usize| -> Result<u64, String> {
            w.get(i).and_then(|x| x.parse().ok()).ok_or_else(bad)
        };
        use Op::*;
        Ok(match *w.first().ok_or_else(bad)? {
            "write" => Write(s(1)?, n(2)? as u8),
            "append" => Append(s(1)?, n(2)? as u8),
            "writeat" => WriteAt(s(1)?, n(2)?, n(3)? as u32, n(4)? as u8),
            "truncate" => Truncate(s(1)?, n(2)?),
            "unlink" => Unlink(s(1)?),
            "mkdir" => Mkdir(s(1)?),
            "rmdir" => Rmdir(s(1)?),
            "rename" => Rename(s(1)?, s(2)?),
            "link" => Link(s(1)?, s(2)?),
            "symlink" => Symlink(s(1)?),
            "chmod" => Chmod(s(1)?, u32::from_str_radix(&s(2)?, 8).map_err(|_| bad())?),
            "setxattr" => SetXattr(s(1)?, n(2)? as u8),
            "rmxattr" => RemoveXattr(s(1)?),
            "read" => Read(s(1)?),
            "stat" => Stat(s(1)?),
            "list" => List(s(1)?),
            "open" => Open(n(1)? as usize % SLOTS, s(2)?, s(3)?),
            "fdwrite" => FdWrite(n(1)? as usize % SLOTS, n(2)?, n(3)? as u32, n(4)? as u8),
            "fdread" => FdRead(n(1)? as usize % SLOTS),
            "fdstat" => FdStat(n(1)? as usize % SLOTS),
            "close" => Close(n(1)? as usize % SLOTS),
            "rotate" => Rotate,
            _ => return Err(bad()),
        })
    }
}

/// A run's setup: mount options (the same for both) and how many lowers
/// the fixture is spread over (1, 3 or 10).
#[derive(Debug, Clone)]
pub struct Setup {
    pub opts: String,
    pub lowers: usize,
}

impl Setup {
    pub fn header(&self) -> String {
        format!("# opts={} lowers={}", self.opts, self.lowers)
    }

    pub fn parse_header(line: &str) -> Option<Setup> {
        let rest = line.strip_prefix("# ")?;
        let mut s = Setup {
            opts: String::new(),
            lowers: 3,
        };
        for w in rest.split_whitespace() {
            if let Some(o) = w.strip_prefix("opts=") {
                s.opts = o.into();
            } else if let Some(l) = w.strip_prefix("lowers=") {
                s.lowers = l.parse().ok()?;
            }
        }
        Some(s)
    }
}

/// The fixture on 1, 3 or 10 lowers.
pub fn build_fixture(base: &Path, n: usize) -> Vec<PathBuf> {
    match n {
        1 => build_one_lower(base),
        10 => build_ten_lowers(base),
        _ => build_lowers(base, false),
    }
}

/// The three-layer fixture flattened into one layer, as the kernel merges it.
fn build_one_lower(base: &Path) -> Vec<PathBuf> {
    let three = build_lowers(&base.join("three"), false);
    let m = base.join("flat");
    let l1 = base.join("l1");
    fs::create_dir_all(&m).unwrap();
    fs::create_dir_all(&l1).unwrap();
    let km = KernelMount::new(&three, None, &m, "");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(m.join("."))
        .arg(&l1)
        .status()
        .unwrap();
    assert!(st.success());
    drop(km);
    fix_times(&l1);
    fs::remove_dir_all(base.join("three")).unwrap();
    vec![l1]
}

/// One implementation's layer stack and mount.
struct Side {
    dir: PathBuf,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    fds: Vec<Option<fs::File>>,
}

impl Side {
    fn new(dir: PathBuf, lowers: Vec<PathBuf>) -> Side {
        let s = Side {
            upper: dir.join("u0"),
            work: dir.join("w0"),
            mnt: dir.join("m"),
            dir,
            lowers,
            fds: (0..SLOTS).map(|_| None).collect(),
        };
        for d in [&s.upper, &s.work, &s.mnt] {
            fs::create_dir_all(d).unwrap();
        }
        s
    }

    /// The upper becomes the top lower; a fresh upper and workdir.
    fn rotate(&mut self, gen: usize) {
        self.lowers.insert(0, self.upper.clone());
        self.upper = self.dir.join(format!("u{gen}"));
        self.work = self.dir.join(format!("w{gen}"));
        fs::create_dir_all(&self.upper).unwrap();
        fs::create_dir_all(&self.work).unwrap();
    }
}

/// Kernel and ovlfuse over identical layer stacks.
pub struct Stack {
    setup: Setup,
    k: Side,
    o: Side,
    kernel: Option<KernelMount>,
    ovl: Option<OvlMount>,
    gen: usize,
    // Declared last: dropped after the mounts above.
    _scratch: Scratch,
}

impl Stack {
    pub fn new(setup: &Setup) -> Stack {
        let scratch = Scratch::new("stack");
        let k = Side::new(
            scratch.0.join("k"),
            build_fixture(&scratch.0.join("k"), setup.lowers),
        );
        let o = Side::new(
            scratch.0.join("o"),
            build_fixture(&scratch.0.join("o"), setup.lowers),
        );
        let mut s = Stack {
            setup: setup.clone(),
            k,
            o,
            kernel: None,
            ovl: None,
            gen: 0,
            _scratch: scratch,
        };
        s.mount();
        s
    }

    fn mount(&mut self) {
        let o = &self.setup.opts;
        let k = &self.k;
        self.kernel = Some(KernelMount::new(
            &k.lowers,
            Some((&k.upper, &k.work)),
            &k.mnt,
            o,
        ));
        let s = &self.o;
        self.ovl = Some(OvlMount::layers(
            &s.lowers,
            Some((&s.upper, &s.work)),
            &s.mnt,
            o,
        ));
    }

    fn unmount(&mut self) {
        for side in [&mut self.k, &mut self.o] {
            side.fds.iter_mut().for_each(|f| *f = None);
        }
        self.kernel = None;
        if let Some(mut m) = self.ovl.take() {
            let st = m.stop();
            assert!(
                st.is_some_and(|s| s.success()),
                "ovlfuse exited with {st:?}"
            );
        }
    }

    /// Runs one op on both sides; the two results must be the same.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        if *op == Op::Rotate {
            self.check_layers()?;
            self.gen += 1;
            self.k.rotate(self.gen);
            self.o.rotate(self.gen);
            self.mount();
            return Ok(());
        }
        let k = run(op, &mut self.k);
        let o = run(op, &mut self.o);
        if o != k {
            return Err(format!("{}: ovlfuse {o} / kernel {k}", op.to_line()));
        }
        Ok(())
    }

    /// Merged views the same; then, unmounted, the same uppers, and each
    /// side's layers mounted by the other implementation show that view.
    pub fn check_layers(&mut self) -> Result<(), String> {
        let view = dump_tree(&self.k.mnt);
        maps_eq(&dump_tree(&self.o.mnt), &view, "merged view")?;
        self.unmount();
        // With the index too: each name of a lower hard link is copied up
        // (linked to the index entry) when written through, as in the kernel.
        let (ku, ou) = (dump_upper(&self.k.upper), dump_upper(&self.o.upper));
        maps_eq(&ou, &ku, "upper dir")?;
        let opts = self.setup.opts.clone();
        let m = self.o.dir.join("m-kernel");
        fs::create_dir_all(&m).unwrap();
        let km = KernelMount::new(
            &self.o.lowers,
            Some((&self.o.upper, &self.o.work)),
            &m,
            &opts,
        );
        let seen = dump_tree(&m);
        drop(km);
        maps_eq(&seen, &view, "kernel over ovlfuse's layers")?;
        for (side, what) in [
            (&self.k, "ovlfuse over the kernel's layers"),
            (&self.o, "ovlfuse over its own layers"),
        ] {
            let m = side.dir.join("m-ovlfuse");
            fs::create_dir_all(&m).unwrap();
            let mut om = OvlMount::layers(&side.lowers, Some((&side.upper, &side.work)), &m, &opts);
            let seen = dump_tree(&m);
            om.stop();
            maps_eq(&seen, &view, what)?;
        }
        Ok(())
    }

    /// The final check, then nothing stays mounted.
    pub fn finish(mut self) -> Result<(), String> {
        self.check_layers()
    }
}

/// Opens without blocking on the fixture's fifo (ENXIO without a reader).
fn open(p: &Path, o: &mut fs::OpenOptions) -> std::io::Result<fs::File> {
    o.custom_flags(libc::O_NONBLOCK).open(p)
}

fn xattr_op(p: &Path, set: Option<u8>) -> String {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        match set {
            Some(b) => libc::lsetxattr(c.as_ptr(), c"user.r".as_ptr(), [b].as_ptr().cast(), 1, 0),
            None => libc::lremovexattr(c.as_ptr(), c"user.r".as_ptr()),
        }
    };
    if r < 0 {
        format!("errno {}", errno())
    } else {
        "ok".into()
    }
}

fn stat_str(md: std::io::Result<fs::Metadata>) -> String {
    match md {
        Ok(md) => format!(
            "{:o} {} {}:{} nlink={}",
            md.mode(),
            md.len(),
            md.uid(),
            md.gid(),
            md.nlink()
        ),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

fn run(op: &Op, side: &mut Side) -> String {
    let m = side.mnt.clone();
    let p = |n: &str| m.join(n);
    use Op::*;
    match op {
        Write(n, b) => res(open(
            &p(n),
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
        .and_then(|mut f| f.write_all(&[*b; 3]))),
        Append(n, b) => {
            res(open(&p(n), fs::OpenOptions::new().append(true))
                .and_then(|mut f| f.write_all(&[*b])))
        }
        WriteAt(n, off, len, b) => res(open(&p(n), fs::OpenOptions::new().write(true))
            .and_then(|f| f.write_all_at(&vec![*b; *len as usize], *off))),
        Truncate(n, l) => {
            res(open(&p(n), fs::OpenOptions::new().write(true)).and_then(|f| f.set_len(*l)))
        }
        Unlink(n) => res(fs::remove_file(p(n))),
        Mkdir(n) => res(fs::create_dir(p(n))),
        Rmdir(n) => res(fs::remove_dir(p(n))),
        Rename(a, b) => res(fs::rename(p(a), p(b))),
        Link(a, b) => res(fs::hard_link(p(a), p(b))),
        Symlink(n) => res(std::os::unix::fs::symlink("target/x", p(n))),
        Chmod(n, mode) => res(fs::set_permissions(p(n), fs::Permissions::from_mode(*mode))),
        SetXattr(n, b) => xattr_op(&p(n), Some(*b)),
        RemoveXattr(n) => xattr_op(&p(n), None),
        Read(n) => {
            let mut v = Vec::new();
            let r = open(&p(n), fs::OpenOptions::new().read(true))
                .and_then(|mut f| f.read_to_end(&mut v));
            format!("{} {} {:x}", res(r), v.len(), hash(&v))
        }
        Stat(n) => stat_str(fs::symlink_metadata(p(n))),
        List(n) => format!("{:?}", ls(&p(n))),
        Open(s, n, mode) => {
            let mut o = fs::OpenOptions::new();
            match mode.as_str() {
                "ro" => o.read(true),
                "trunc" => o.read(true).write(true).truncate(true),
                _ => o.read(true).write(true),
            };
            match open(&p(n), &mut o) {
                Ok(f) => {
                    side.fds[*s] = Some(f);
                    "ok".into()
                }
                Err(e) => res::<()>(Err(e)),
            }
        }
        FdWrite(s, off, len, b) => match &side.fds[*s] {
            Some(f) => res(f.write_all_at(&vec![*b; *len as usize], *off)),
            None => "closed".into(),
        },
        FdRead(s) => match &side.fds[*s] {
            Some(f) => {
                let mut v = vec![0u8; 1 << 17];
                let r = f.read_at(&mut v, 0).map(|n| v.truncate(n));
                format!("{} {} {:x}", res(r), v.len(), hash(&v))
            }
            None => "closed".into(),
        },
        FdStat(s) => match &side.fds[*s] {
            Some(f) => stat_str(f.metadata()),
            None => "closed".into(),
        },
        Close(s) => {
            side.fds[*s] = None;
            "ok".into()
        }
        Rotate => unreachable!("handled by Stack::step"),
    }
}

/// Runs a whole list; Err names the first divergence (with its step).
pub fn run_list(setup: &Setup, ops: &[Op]) -> Result<(), String> {
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let mut st = Stack::new(setup);
        for (i, op) in ops.iter().enumerate() {
            st.step(op).map_err(|e| format!("step {i}: {e}"))?;
        }
        st.finish().map_err(|e| format!("after the last step: {e}"))
    }));
    match r {
        Ok(r) => r,
        Err(e) => Err(e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    }
}

/// Shortest failing list found within `budget` (delta debugging over
/// chunks, then single ops). Any divergence counts as failing.
pub fn shrink(setup: &Setup, ops: &[Op], budget: Duration) -> Vec<Op> {
    let t = Instant::now();
    let mut cur = ops.to_vec();
    let mut chunk = cur.len().div_ceil(2).max(1);
    while t.elapsed() < budget {
        let mut removed = false;
        let mut i = 0;
        while i < cur.len() && t.elapsed() < budget {
            let mut trial = cur.clone();
            trial.drain(i..(i + chunk).min(cur.len()));
            if !trial.is_empty() && run_list(setup, &trial).is_err() {
                cur = trial;
                removed = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !removed {
            break;
        }
        if !removed {
            chunk = chunk.div_ceil(2);
        }
    }
    cur
}

/// The replay file text of a list.
pub fn to_text(setup: &Setup, ops: &[Op]) -> String {
    let mut s = setup.header() + "\n";
    for op in ops {
        s += &op.to_line();
        s.push('\n');
    }
    s
}

pub fn from_text(text: &str) -> Result<(Setup, Vec<Op>), String> {
    let mut lines = text.lines();
    let setup = lines
        .next()
        .and_then(Setup::parse_header)
        .ok_or("a replay starts with '# opts=... lowers=N'")?;
    let ops = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Op::parse)
        .collect::<Result<_, _>>()?;
    Ok((setup, ops))
}

/// On a failure: shrink, save the replay under target/, and panic with it.
pub fn fail_with_replay(setup: &Setup, ops: &[Op], what: &str, err: &str) -> ! {
    let secs = std::env::var("OVLFUSE_SHRINK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let small = shrink(setup, ops, Duration::from_secs(secs));
    let why = run_list(setup, &small)
        .err()
        .unwrap_or_else(|| err.to_string());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ovlfuse-replays");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.ops", what.replace(['/', ' ', ',', '='], "_")));
    let text = to_text(setup, &small);
    fs::write(&file, &text).unwrap();
    panic!(
        "{what}: {err}\nshrunk to {} ops ({why}), saved as {} (copy it to tests/replays/ to keep it):\n{text}",
        small.len(),
        file.display()
    );
}
