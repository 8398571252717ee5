//! Conflicting operations from 8 threads on the same few names: renames
//! against unlinks, copy-ups (appends), creates, mkdirs, rmdirs and
//! readdirs. Each thread must finish in bounded time (no deadlock). Every
//! listing seen on the way must be sane, and the end state must be one the
//! kernel could reach: every file holds whole records, and kernel overlayfs
//! mounting the resulting upper shows exactly the tree ovlfuse showed.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const THREADS: usize = 8;
const OPS: usize = 1000;
const KINDS: usize = 12;
const NAMES: [&str; 6] = ["f0", "f1", "f2", "d0", "d1", "n"];

fn build_lower(l: &Path) {
    for i in 0..3 {
        write(&l.join(format!("f{i}")), format!("base f{i}\n").as_bytes());
    }
    for d in ["d0", "d1"] {
        write(&l.join(d).join("x"), format!("base {d}/x\n").as_bytes());
        write(&l.join(d).join("s/z"), format!("base {d}/s/z\n").as_bytes());
    }
}

/// A file is whole records: lines that each start as one writer wrote them.
fn check_records(p: &Path, data: &[u8], when: &str) {
    let text = String::from_utf8(data.to_vec())
        .unwrap_or_else(|_| panic!("{when}: {} is not text", p.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{when}: {} ends in a partial record: {text:?}",
        p.display()
    );
    for line in text.lines() {
        assert!(
            line.starts_with("base ") || line.starts_with("new ") || line.starts_with("app "),
            "{when}: {} has a torn record {line:?} in {text:?}",
            p.display()
        );
    }
}

/// A path on the shared names: a top-level name or one level below a dir name.
fn pick(m: &Path, r: &mut Rng) -> PathBuf {
    let a = NAMES[r.next() as usize % NAMES.len()];
    match r.next() % 4 {
        0 => m.join(["d0", "d1"][r.next() as usize % 2]).join(a),
        _ => m.join(a),
    }
}

/// Returns how many operations of each kind succeeded.
fn worker(m: PathBuf, t: usize, seed: u64, lower_passthrough: bool) -> [usize; KINDS] {
    let mut r = Rng::new(seed ^ ((t as u64 + 1) * 0x1000_0001));
    let mut ok = [0; KINDS];
    // A read-only fd kept across the other threads' copy-ups, read now and
    // then: what it reads must be whole records too.
    let mut held: Option<(PathBuf, fs::File)> = None;
    for i in 0..ops() {
        let p = pick(&m, &mut r);
        match r.next() % 8 {
            0 => {
                held = fs::File::open(&p)
                    .ok()
                    .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
                    .map(|f| (p.clone(), f))
            }
            1 => {
                if let Some((hp, f)) = held.as_mut() {
                    use std::io::{Read, Seek};
                    let mut data = Vec::new();
                    f.seek(std::io::SeekFrom::Start(0)).unwrap();
                    f.read_to_end(&mut data).unwrap_or_else(|e| {
                        let st = f
                            .metadata()
                            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                        panic!(
                            "thread {t}: read of a held fd ({}, {st:?}): {e}",
                            hp.display()
                        )
                    });
                    check_records(hp, &data, &format!("thread {t}, a held fd"));
                }
            }
            _ => {}
        }
        let op = (r.next() % KINDS as u64) as usize;
        let res = match op {
            0 => fs::rename(&p, pick(&m, &mut r)),
            1 => fs::remove_file(&p),
            2 => fs::remove_dir(&p),
            3 => fs::remove_dir_all(&p),
            4 | 5 => append(&p, format!("app {t}-{i}\n").as_bytes()),
            // Appending, so that a record appended between the create and
            // the write is not overwritten.
            6 => fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&p)
                .and_then(|mut f| {
                    use std::io::Write;
                    f.write_all(format!("new {t}-{i}\n").as_bytes())
                }),
            7 => fs::create_dir(&p),
            8 => fs::hard_link(&p, pick(&m, &mut r)),
            9 => fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
            _ => {
                let dir = if p.parent() == Some(&m) {
                    m.clone()
                } else {
                    p.clone()
                };
                if let Some(names) = list(&dir, t) {
                    let mut seen = names.clone();
                    seen.dedup();
                    assert_eq!(seen, names, "thread {t}: a name listed twice");
                    for n in &names {
                        assert!(!n.starts_with(".wh."), "thread {t}: {n} listed");
                        if let Ok(data) = fs::read(dir.join(n)) {
                            check_records(&dir.join(n), &data, &format!("thread {t}"));
                        }
                    }
                }
                Ok(())
            }
        };
        // Races explain these; anything else (EIO, ENXIO from opening a
        // whiteout, ...) is a bug.
        const RACES: [i32; 8] = [
            libc::ENOENT,
            libc::EEXIST,
            libc::ENOTDIR,
            libc::EISDIR,
            libc::ENOTEMPTY,
            libc::EXDEV,
            libc::EINVAL,
            libc::EPERM,
        ];
        if let Err(e) = &res {
            let n = e.raw_os_error().unwrap_or(0);
            // With lower_passthrough, an open whose retry (after the inode
            // it found was retired) finds another retired inode: the kernel
            // retries once (README, lower_passthrough).
            let retried_twice = lower_passthrough && n == libc::ESTALE && matches!(op, 4 | 5);
            assert!(
                RACES.contains(&n) || retried_twice,
                "thread {t}: op {op} on {}: {e}",
                p.display()
            );
        }
        ok[op] += res.is_ok() as usize;
    }
    ok
}

/// The sorted names in `dir`, or None if it is gone or no dir (as it may
/// be, with renames and removals racing). Any other error is a bug.
fn list(dir: &Path, t: usize) -> Option<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).ok()? {
        match e {
            Ok(e) => v.push(e.file_name().to_string_lossy().into_owned()),
            // getdents of a dir removed after it was opened.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None,
            Err(e) => panic!("thread {t}: reading {}: {e}", dir.display()),
        }
    }
    v.sort();
    Some(v)
}

fn ops() -> usize {
    std::env::var("OVLFUSE_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(OPS)
}

fn run(extra: &str) {
    let seeds: Vec<u64> = std::env::var("OVLFUSE_SEEDS")
        .ok()
        .map(|v| (1..=v.parse().unwrap()).collect())
        .unwrap_or(vec![1, 2]);
    for seed in seeds {
        run_seed(extra, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
}

fn run_seed(extra: &str, seed: u64) {
    let s = Scratch::new("conflicts");
    let l = s.0.join("l");
    build_lower(&l);
    for d in ["u", "w", "m", "wk", "mk"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let lowers = vec![l];
    let mut g = OvlMount::layers(&lowers, Some((&u, &w)), &m, extra);
    let (tx, rx) = mpsc::channel();
    let lp = extra.contains("lower_passthrough");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (mc, tx) = (m.clone(), tx.clone());
            std::thread::spawn(move || {
                // A panic is reported at once, not mistaken for a deadlock.
                let r = std::panic::catch_unwind(|| worker(mc, t, seed, lp));
                let _ = tx.send(r.map_err(|_| t));
            })
        })
        .collect();
    let mut ok = [0; KINDS];
    for _ in 0..THREADS {
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(Ok(n)) => (0..KINDS).for_each(|i| ok[i] += n[i]),
            Ok(Err(t)) => panic!("[{extra}] thread {t} failed"),
            Err(_) => {
                // Unmount first so that stuck threads get errors and exit.
                g.stop();
                panic!("[{extra}] a thread did not finish in 180 s: deadlock");
            }
        }
    }
    eprintln!("[{extra}] seed {seed:x}: successes per op kind {ok:?}");
    // Every kind of conflict happened, not just failures.
    assert!(
        ok.iter().all(|&n| n > 0),
        "[{extra}] some op never succeeded: {ok:?}"
    );
    for h in handles {
        if let Err(e) = h.join() {
            std::panic::resume_unwind(e);
        }
    }
    let live = dump_tree(&m);
    check_files(&m, &live, extra);
    if extra.contains("lower_passthrough") {
        let out = output_ok(std::process::Command::new(bin()).arg("stats").arg(&m));
        eprintln!(
            "[{extra}] {}",
            out.lines()
                .filter(|l| l.starts_with("retired") || l.starts_with("passthrough_opens"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    g.stop();
    assert_eq!(
        fs::read_dir(w.join("work")).unwrap().count(),
        0,
        "[{extra}] W/work not empty after unmount"
    );
    let again = OvlMount::layers(&lowers, Some((&u, &w)), &m, extra);
    assert_maps_eq(&dump_tree(&m), &live, &format!("[{extra}] after remount"));
    drop(again);
    // ovlfuse's own options are none of the kernel's business.
    let kextra: Vec<&str> = extra
        .split(',')
        .filter(|o| *o != "lower_passthrough")
        .collect();
    let k = KernelMount::new(
        &lowers,
        Some((&u, &s.0.join("wk"))),
        &s.0.join("mk"),
        &kextra.join(","),
    );
    assert_maps_eq(
        &dump_tree(&k.mnt),
        &live,
        &format!("[{extra}] kernel over the upper vs ovlfuse"),
    );
}

fn check_files(m: &Path, tree: &BTreeMap<String, String>, extra: &str) {
    for (rel, d) in tree {
        if d.starts_with("file ") {
            let p = m.join(rel);
            check_records(&p, &fs::read(&p).unwrap(), &format!("[{extra}] end"));
        }
    }
}

#[test]
fn eight_threads_of_conflicting_ops_default_options() {
    // ovlfuse's defaults: redirect_dir=on, index=on.
    run("");
}

#[test]
fn eight_threads_of_conflicting_ops_without_redirects_or_index() {
    // Lower dirs cannot move (EXDEV) and hard links are not indexed.
    run("redirect_dir=off,index=off");
}

#[test]
fn eight_threads_of_conflicting_ops_with_lower_passthrough() {
    // Readers of lower files pass through, and copy-ups under them give
    // the name a new inode: no open may fail for it (ESTALE, EIO).
    run("lower_passthrough");
}
