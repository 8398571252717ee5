//! Randomized operation sequences (fixed seeds; OVLFUSE_SEEDS=1,2,.. to pick
//! others) run on kernel overlayfs and ovlfuse over the same layers: every
//! result must match, then the merged tree and the upper dir.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

/// Names the sequence works on: fixture objects in every layer, and new ones.
/// (The fixture's lower hard links are left out: with index=off the kernel
/// splits them on copy-up; tests/compare.rs covers them with index=on.)
const NAMES: &[&str] = &[
    "a",
    "a/x",
    "a/y",
    "a/w",
    "a/sub",
    "a/sub/z",
    "top",
    "deep",
    "deep/1",
    "deep/1/2/3/file",
    "opq",
    "opq/visible",
    "opq/hidden",
    "emptydir",
    "gone-dir",
    "wh-me",
    "sym",
    "fifo",
    "xat",
    "owned",
    "ro",
    "n1",
    "n2",
    "a/n3",
    "emptydir/n4",
    "gone-dir/n5",
    "opq/n6",
    "deep/1/n7",
    "n8",
    "a/sub/n9",
];

const HARD: &[&str] = &["hard1", "hard2"];

struct Rng(u64, bool);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn name(&mut self) -> &'static str {
        // With index=on the fixture's lower hard links join in.
        let hard = self.1 as usize * HARD.len();
        let i = self.below(NAMES.len() + hard);
        if i < NAMES.len() {
            NAMES[i]
        } else {
            HARD[i - NAMES.len()]
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(&'static str, u8),
    Append(&'static str, u8),
    Truncate(&'static str, u64),
    Unlink(&'static str),
    Mkdir(&'static str),
    Rmdir(&'static str),
    Rename(&'static str, &'static str),
    Link(&'static str, &'static str),
    Symlink(&'static str),
    Chmod(&'static str, u32),
    SetXattr(&'static str, u8),
    RemoveXattr(&'static str),
    Read(&'static str),
    Stat(&'static str),
    List(&'static str),
}

fn gen(r: &mut Rng) -> Op {
    match r.below(15) {
        0 => Op::Write(r.name(), r.below(256) as u8),
        1 => Op::Append(r.name(), r.below(256) as u8),
        2 => Op::Truncate(r.name(), r.below(20) as u64),
        3 => Op::Unlink(r.name()),
        4 => Op::Mkdir(r.name()),
        5 => Op::Rmdir(r.name()),
        6 => Op::Rename(r.name(), r.name()),
        7 => Op::Link(r.name(), r.name()),
        8 => Op::Symlink(r.name()),
        9 => Op::Chmod(r.name(), [0o600, 0o755, 0o644, 0o700, 0o1777][r.below(5)]),
        10 => Op::SetXattr(r.name(), r.below(256) as u8),
        11 => Op::RemoveXattr(r.name()),
        12 => Op::Read(r.name()),
        13 => Op::Stat(r.name()),
        _ => Op::List(r.name()),
    }
}

/// Opens without blocking on the fixture's fifo (ENXIO without a reader).
fn open(p: &Path, o: &mut fs::OpenOptions) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    o.custom_flags(libc::O_NONBLOCK).open(p)
}

fn run(op: &Op, m: &Path) -> String {
    use std::io::{Read, Write};
    let p = |n: &str| m.join(n);
    match op {
        Op::Write(n, b) => res(open(
            &p(n),
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
        .and_then(|mut f| f.write_all(&[*b; 3]))),
        Op::Append(n, b) => {
            res(open(&p(n), fs::OpenOptions::new().append(true))
                .and_then(|mut f| f.write_all(&[*b])))
        }
        Op::Truncate(n, l) => {
            res(open(&p(n), fs::OpenOptions::new().write(true)).and_then(|f| f.set_len(*l)))
        }
        Op::Unlink(n) => res(fs::remove_file(p(n))),
        Op::Mkdir(n) => res(fs::create_dir(p(n))),
        Op::Rmdir(n) => res(fs::remove_dir(p(n))),
        Op::Rename(a, b) => res(fs::rename(p(a), p(b))),
        Op::Link(a, b) => res(fs::hard_link(p(a), p(b))),
        Op::Symlink(n) => res(std::os::unix::fs::symlink("target/x", p(n))),
        Op::Chmod(n, mode) => res(fs::set_permissions(p(n), fs::Permissions::from_mode(*mode))),
        Op::SetXattr(n, b) => {
            let c = std::ffi::CString::new(p(n).into_os_string().into_encoded_bytes()).unwrap();
            // SAFETY: valid C strings and buffer.
            let r = unsafe {
                libc::lsetxattr(c.as_ptr(), c"user.r".as_ptr(), [*b].as_ptr().cast(), 1, 0)
            };
            if r < 0 {
                format!("errno {}", errno())
            } else {
                "ok".into()
            }
        }
        Op::RemoveXattr(n) => {
            let c = std::ffi::CString::new(p(n).into_os_string().into_encoded_bytes()).unwrap();
            // SAFETY: valid C strings.
            let r = unsafe { libc::lremovexattr(c.as_ptr(), c"user.r".as_ptr()) };
            if r < 0 {
                format!("errno {}", errno())
            } else {
                "ok".into()
            }
        }
        Op::Read(n) => {
            let mut v = Vec::new();
            let r = open(&p(n), fs::OpenOptions::new().read(true))
                .and_then(|mut f| f.read_to_end(&mut v));
            format!("{} {v:?}", res(r))
        }
        Op::Stat(n) => match fs::symlink_metadata(p(n)) {
            Ok(md) => format!(
                "{:o} {} {}:{} nlink={}",
                md.mode(),
                md.len(),
                md.uid(),
                md.gid(),
                md.nlink()
            ),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        },
        Op::List(n) => format!("{:?}", ls(&p(n))),
    }
}

#[test]
fn random_sequences_match_kernel() {
    sequences("redirect_dir=off,index=off");
}

/// The same with dir renames through redirects, checked after a remount and
/// through the kernel reading the upper ovlfuse wrote.
#[test]
fn random_sequences_with_redirects_match_kernel() {
    sequences("redirect_dir=on,index=off");
}

/// index=on: hard links of lower files (the fixture's hard1/hard2) too.
#[test]
fn random_sequences_with_index_match_kernel() {
    sequences("redirect_dir=on,index=on");
}

/// metacopy=on: metadata changes leave the data below until it is written.
#[test]
fn random_sequences_with_metacopy_match_kernel() {
    sequences("metacopy=on,redirect_dir=on,index=off");
}

/// Ten lowers, the fixture's objects spread over them.
#[test]
fn random_sequences_on_ten_lowers_match_kernel() {
    sequences_on("redirect_dir=on,index=on", build_ten_lowers);
}

fn sequences(opts: &str) {
    sequences_on(opts, |b| build_lowers(b, false))
}

fn sequences_on(opts: &str, build: fn(&Path) -> Vec<std::path::PathBuf>) {
    let seeds: Vec<u64> = match std::env::var("OVLFUSE_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => (1..=6).collect(),
    };
    let steps: usize = std::env::var("OVLFUSE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in seeds {
        let p = Pair::with_lowers(opts, opts, build, build);
        let mut r = Rng(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            opts.contains("index=on"),
        );
        for step in 0..steps {
            let op = gen(&mut r);
            let k = run(&op, &p.k_mnt);
            let o = run(&op, &p.o_mnt);
            if std::env::var("OVLFUSE_TRACE").is_ok() {
                eprintln!("seed {seed} step {step}: {op:?} -> {k}");
            }
            assert_eq!(
                o, k,
                "seed {seed} step {step}: {op:?}: ovlfuse (left) vs kernel (right)"
            );
            // Debug aid: find the first step after which the uppers differ.
            if std::env::var("OVLFUSE_UPPER_EACH").is_ok() {
                let (ku, ou) = (dump_upper(&p.k_upper), dump_upper(&p.o_upper));
                let diff: Vec<_> = ku.iter().filter(|(k, v)| ou.get(*k) != Some(*v)).collect();
                assert!(
                    diff.is_empty(),
                    "seed {seed} step {step}: {op:?}: uppers differ: {diff:?}"
                );
            }
        }
        if let Ok(secs) = std::env::var("OVLFUSE_PAUSE") {
            eprintln!("pausing: {}", p.o_mnt.display());
            std::thread::sleep(std::time::Duration::from_secs(secs.parse().unwrap_or(30)));
        }
        p.check_all();
    }
}
