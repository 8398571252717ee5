//! Crash safety: the daemon is killed (SIGKILL) at random moments during
//! copy-ups of large files, renames and whiteout creation, 50 times over
//! one upper. After each kill a new mount must show every file with its old
//! or its new content, never torn or missing, with W/work emptied; at the
//! end the kernel mounts the upper and shows the same tree.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const FILES: usize = 50;
const SIZE: usize = 2 << 20;
const TOGGLES: usize = 6;

fn content(i: usize) -> Vec<u8> {
    (0..SIZE).map(|j| ((j * 31 + i * 7) % 251) as u8).collect()
}

/// The files of `which` are whole: the lower content followed by whole
/// "NEW" appends; the renamed pairs exist exactly once.
fn check_view(m: &Path, iter: usize, which: &[usize]) {
    for &i in which {
        let data = read(&m.join(format!("big{i}")))
            .unwrap_or_else(|e| panic!("iteration {iter}: big{i}: errno {e}"));
        let old = content(i);
        assert!(
            data.len() >= old.len() && data[..old.len()] == old[..],
            "iteration {iter}: big{i} torn"
        );
        assert!(
            data[old.len()..].chunks(3).all(|c| c == b"NEW"),
            "iteration {iter}: big{i} has a partial append"
        );
        if let Ok(r) = read(&m.join(format!("r{i}"))) {
            assert_eq!(
                r,
                format!("remove {i}\n").into_bytes(),
                "iteration {iter}: r{i}"
            );
        }
    }
    for i in 0..TOGGLES {
        let (g, h) = (
            m.join(format!("g{i}")).exists(),
            m.join(format!("h{i}")).exists(),
        );
        assert!(
            g ^ h,
            "iteration {iter}: rename of g{i}/h{i} not atomic (g {g}, h {h})"
        );
        let name = if g { format!("g{i}") } else { format!("h{i}") };
        assert_eq!(
            read(&m.join(name)).unwrap(),
            format!("small {i}\n").into_bytes(),
            "iteration {iter}"
        );
    }
}

/// Iteration `iter` copies up files not copied up before, so that kills
/// land in copy-ups, and toggles renames and makes whiteouts.
fn touched(iter: usize) -> [usize; 3] {
    [iter, (iter + 17) % FILES, (iter + 33) % FILES]
}

fn workload(m: PathBuf, iter: usize) {
    for i in touched(iter) {
        let _ = append(&m.join(format!("big{i}")), b"NEW");
        let t = i % TOGGLES;
        let (g, h) = (m.join(format!("g{t}")), m.join(format!("h{t}")));
        let _ = if g.exists() {
            fs::rename(&g, &h)
        } else {
            fs::rename(&h, &g)
        };
        let _ = fs::remove_file(m.join(format!("r{i}")));
    }
}

#[test]
fn sigkill_during_copy_up_rename_and_whiteout_leaves_old_or_new() {
    let s = Scratch::new("crash");
    let l = s.0.join("l");
    for i in 0..FILES {
        write(&l.join(format!("big{i}")), &content(i));
        if i < TOGGLES {
            write(&l.join(format!("g{i}")), format!("small {i}\n").as_bytes());
        }
        write(&l.join(format!("r{i}")), format!("remove {i}\n").as_bytes());
    }
    for d in ["u", "w", "m", "wk", "mk"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let lowers = vec![l.clone()];
    let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
    let mut interrupted = 0;
    for iter in 0..50 {
        let mut g = OvlMount::layers(&lowers, Some((&u, &w)), &m, "");
        assert_eq!(
            fs::read_dir(w.join("work")).unwrap().count(),
            0,
            "iteration {iter}: W/work not emptied"
        );
        if iter > 0 {
            check_view(&m, iter, &touched(iter - 1));
        }
        let mc = m.clone();
        let client = std::thread::spawn(move || workload(mc, iter));
        std::thread::sleep(Duration::from_micros(rng.next() % 12_000));
        // SAFETY: killing our own child.
        unsafe { libc::kill(g.pid() as i32, libc::SIGKILL) };
        g.stop();
        client.join().unwrap();
        // A temp file left in W/work: the kill hit a copy-up or whiteout.
        if fs::read_dir(w.join("work")).unwrap().count() > 0 {
            interrupted += 1;
        }
    }
    eprintln!("{interrupted} of 50 kills interrupted a copy-up or whiteout");
    assert!(
        interrupted >= 3,
        "only {interrupted} kills hit an operation in progress"
    );
    let mut g = OvlMount::layers(&lowers, Some((&u, &w)), &m, "");
    let all: Vec<usize> = (0..FILES).collect();
    check_view(&m, 50, &all);
    let ours = dump_tree(&m);
    g.stop();
    let k = KernelMount::new(&lowers, Some((&u, &s.0.join("wk"))), &s.0.join("mk"), "");
    check_view(&k.mnt, 51, &all);
    assert_maps_eq(
        &dump_tree(&k.mnt),
        &ours,
        "kernel over the crashed upper vs ovlfuse",
    );
}

/// Clients killed (SIGKILL) while their requests are in flight: reads,
/// appends that copy up large files, copies, listings, tree copies and
/// removals. The daemon keeps serving, files are whole, and it unmounts
/// cleanly with W/work empty.
#[test]
fn clients_killed_mid_request_leave_the_daemon_serving() {
    const BIG: usize = 4;
    let s = Scratch::new("client-kill");
    let l = s.0.join("l");
    let big = |i: usize| -> Vec<u8> { (0..24 << 20).map(|j| ((j / 7 + i) % 251) as u8).collect() };
    for i in 0..BIG {
        write(&l.join(format!("big{i}")), &big(i));
    }
    for d in 0..20 {
        for f in 0..20 {
            write(
                &l.join(format!("t/d{d}/f{f}")),
                format!("{d}/{f}\n").as_bytes(),
            );
        }
    }
    for d in ["u", "w", "m", "wk", "mk"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let lowers = vec![l.clone()];
    let mut g = OvlMount::layers(&lowers, Some((&u, &w)), &m, "");
    let ms = m.display().to_string();
    let mut rng = Rng::new(0x5DEE_CE66_D1CE_4E5B);
    let mut running = 0;
    for iter in 0..40 {
        let i = iter % BIG;
        let script = match iter % 5 {
            0 => format!("exec cat {ms}/big{i} > /dev/null"),
            // The shell's open of the file does the copy-up.
            1 => format!("echo NEW >> {ms}/big{i}"),
            2 => format!("exec cp {ms}/big{i} {ms}/copy{iter}"),
            3 => format!("exec ls -lR {ms}/t > /dev/null"),
            _ => format!("cp -r {ms}/t {ms}/t{iter} && rm -rf {ms}/t{iter}"),
        };
        let mut c = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next() % 30_000));
        if c.try_wait().unwrap().is_none() {
            running += 1;
        }
        let _ = c.kill();
        c.wait().unwrap();
        let alive = g.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            alive.is_none(),
            "iteration {iter}: the daemon exited: {alive:?}"
        );
        assert_eq!(
            read(&m.join("t/d3/f4")).unwrap(),
            b"3/4\n",
            "iteration {iter}: the mount stopped serving"
        );
    }
    assert!(
        running >= 20,
        "only {running} of 40 clients were killed while running"
    );
    let check = |root: &Path, when: &str| {
        for i in 0..BIG {
            let data = read(&root.join(format!("big{i}"))).unwrap();
            let old = big(i);
            assert!(
                data.len() >= old.len() && data[..old.len()] == old[..],
                "{when}: big{i} torn"
            );
            assert!(
                data[old.len()..].chunks(4).all(|c| c == b"NEW\n"),
                "{when}: big{i} has a partial append"
            );
        }
        assert_eq!(ls(&root.join("t")).unwrap().len(), 20, "{when}: t changed");
    };
    check(&m, "after the kills");
    let ours = dump_tree(&m);
    let st = g.stop().expect("daemon status");
    assert!(st.success(), "daemon exit after unmount: {st}");
    assert_eq!(
        fs::read_dir(w.join("work")).unwrap().count(),
        0,
        "W/work not empty"
    );
    let k = KernelMount::new(&lowers, Some((&u, &s.0.join("wk"))), &s.0.join("mk"), "");
    check(&k.mnt, "kernel over the upper");
    assert_maps_eq(
        &dump_tree(&k.mnt),
        &ours,
        "kernel vs ovlfuse after the kills",
    );
}
