//! Randomized operation lists run on kernel overlayfs and ovlfuse as users
//! stack layers (tests/common/ops.rs): every few dozen operations both
//! unmount, each upper becomes the next top lower, and each side's layers
//! are read back by the other implementation. fds are held across copy-ups
//! and written through other names of the same lower inode. Every option
//! combination runs on 1, 3 and 10 lowers.
//!
//! OVLFUSE_SEEDS=1,2,.. or OVLFUSE_SEED_COUNT=N pick the seeds,
//! OVLFUSE_STEPS=N the length. A failure is shrunk and saved as a replay
//! (target/ovlfuse-replays/); tests/replays/*.ops run in `replays_match_kernel`
//! (OVLFUSE_REPLAY=FILE runs one file).

mod common;

use common::ops::*;
use common::Rng;

/// Names the lists work on: fixture objects in every layer (hard1 and hard2
/// are two names of one lower inode), and new ones.
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
    "deep/1/2",
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
    "hard1",
    "hard2",
    "hard1",
    "hard2",
    "n1",
    "n2",
    "a/n3",
    "emptydir/n4",
    "gone-dir/n5",
    "opq/n6",
    "deep/1/n7",
    "n8",
    "a/sub/n9",
    "n1/n10",
    "a/n3/n11",
];

/// What random_ops draws, on the common Rng.
trait Draw {
    fn name(&mut self) -> String;
    fn byte(&mut self) -> u8;
    fn len(&mut self) -> u32;
}

impl Draw for Rng {
    fn name(&mut self) -> String {
        self.pick(NAMES).to_string()
    }
    fn byte(&mut self) -> u8 {
        self.below(256) as u8
    }
    fn len(&mut self) -> u32 {
        self.pick(&[1, 100, 4096, 9963, 50651])
    }
}

fn gen(r: &mut Rng) -> Op {
    let s = r.below(SLOTS);
    match r.below(22) {
        0 => Op::Write(r.name(), r.byte()),
        1 => Op::Append(r.name(), r.byte()),
        2 => Op::WriteAt(r.name(), r.below(8000) as u64, r.len(), r.byte()),
        3 => Op::Truncate(r.name(), r.below(20) as u64),
        4 => Op::Unlink(r.name()),
        5 => Op::Mkdir(r.name()),
        6 => Op::Rmdir(r.name()),
        7 | 8 => Op::Rename(r.name(), r.name()),
        9 => Op::Link(r.name(), r.name()),
        10 => Op::Symlink(r.name()),
        11 => Op::Chmod(r.name(), [0o600, 0o755, 0o644, 0o700, 0o1777][r.below(5)]),
        12 => Op::SetXattr(r.name(), r.byte()),
        13 => Op::RemoveXattr(r.name()),
        14 => Op::Read(r.name()),
        15 => Op::Stat(r.name()),
        16 => Op::List(r.name()),
        17 => Op::Open(s, r.name(), ["ro", "rw", "trunc"][r.below(3)].into()),
        18 => Op::FdWrite(s, r.below(8000) as u64, r.len(), r.byte()),
        19 => Op::FdRead(s),
        20 => Op::FdStat(s),
        _ => Op::Close(s),
    }
}

/// A list of `steps` ops with a rotation every 30–70 ops, while the stack
/// has room (at most 10 lowers, or 2 more than it started with).
fn list(seed: u64, steps: usize, lowers: usize) -> Vec<Op> {
    let mut r = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let max = (lowers + 2).max(10);
    let (mut n, mut next) = (lowers, 30 + r.below(40));
    let mut ops = Vec::with_capacity(steps + 10);
    for i in 0..steps {
        if i == next && n < max {
            ops.push(Op::Rotate);
            n += 1;
            next = i + 30 + r.below(40);
        }
        ops.push(gen(&mut r));
    }
    ops
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("OVLFUSE_SEEDS") {
        return s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let n = std::env::var("OVLFUSE_SEED_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    (1..=n).collect()
}

fn sequences(opts: &str, lowers: usize) {
    let steps = std::env::var("OVLFUSE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let setup = Setup {
        opts: opts.into(),
        lowers,
    };
    for seed in seeds() {
        let ops = list(seed, steps, lowers);
        if let Err(e) = run_list(&setup, &ops) {
            fail_with_replay(
                &setup,
                &ops,
                &format!("{opts} lowers={lowers} seed={seed}"),
                &e,
            );
        }
    }
}

/// redirect_dir × index × metacopy (metacopy needs redirect_dir) on 1, 3
/// and 10 lowers.
macro_rules! matrix {
    ($($name:ident: $opts:expr;)*) => {
        $(
            mod $name {
                #[test]
                fn one_lower() {
                    super::sequences($opts, 1);
                }
                #[test]
                fn three_lowers() {
                    super::sequences($opts, 3);
                }
                #[test]
                fn ten_lowers() {
                    super::sequences($opts, 10);
                }
            }
        )*
    };
}

matrix! {
    plain: "redirect_dir=off,index=off,metacopy=off";
    index: "redirect_dir=off,index=on,metacopy=off";
    redirect: "redirect_dir=on,index=off,metacopy=off";
    redirect_index: "redirect_dir=on,index=on,metacopy=off";
    metacopy: "redirect_dir=on,index=off,metacopy=on";
    metacopy_index: "redirect_dir=on,index=on,metacopy=on";
}

/// Every saved list in tests/replays/ (regressions, most from the shrinker).
#[test]
fn replays_match_kernel() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replays");
    // OVLFUSE_REPLAY=FILE replays just that file (one the shrinker saved).
    let mut files: Vec<_> = match std::env::var_os("OVLFUSE_REPLAY") {
        Some(f) => vec![std::path::PathBuf::from(f)],
        None => std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "ops"))
            .collect(),
    };
    files.sort();
    assert!(!files.is_empty(), "no replays in {}", dir.display());
    let mut failed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let (setup, ops) = from_text(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if let Err(e) = run_list(&setup, &ops) {
            failed.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "replays that diverge:\n{}",
        failed.join("\n")
    );
}
