//! pjdfstest (POSIX conformance, 382 cases run here) on kernel overlayfs and on
//! ovlfuse over the same lower content: ovlfuse must pass at least as many.
//! scripts/test installs pjdfstest; without it this test fails and says so.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const CONFIG: &str = r#"[settings]
naptime = 0.1

[dummy_auth]
entries = [["nobody","nogroup"],["daemon","daemon"]]

[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}
"#;

fn pjdfstest_bin() -> String {
    if let Ok(p) = std::env::var("PJDFSTEST") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = format!("{home}/.cargo/bin/pjdfstest");
    if Path::new(&cargo_bin).exists() {
        return cargo_bin;
    }
    "pjdfstest".into()
}

/// Runs pjdfstest in `mnt`; returns (passed, failed, failed case names).
fn run(cfg: &Path, mnt: &Path) -> (u32, u32, Vec<String>) {
    run_cases(cfg, mnt, &[])
}

/// Runs pjdfstest (only the cases whose names contain one of `cases`, if
/// any are given: its -e exact match finds nothing in 0.2.2).
fn run_cases(cfg: &Path, mnt: &Path, cases: &[&String]) -> (u32, u32, Vec<String>) {
    let out = Command::new(pjdfstest_bin())
        .arg("-c")
        .arg(cfg)
        .arg("-p")
        .arg(mnt)
        .args(cases)
        .current_dir(mnt)
        .output()
        .expect("pjdfstest not found: run scripts/test, or `cargo install --locked pjdfstest --version 0.2.2`");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    let num = |key: &str| -> u32 {
        let i = summary.find(key).unwrap();
        summary[..i]
            .trim_end()
            .rsplit([' ', ','])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let failed: Vec<String> = text
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    (num(" passed"), num(" failed"), failed)
}

fn lower(base: &Path) -> std::path::PathBuf {
    let l = base.join("l");
    write(&l.join("sub/f"), b"lower file\n");
    write(&l.join("top"), b"top\n");
    fs::create_dir_all(l.join("dir/inner")).unwrap();
    l
}

#[test]
fn pjdfstest_passes_at_least_as_many_as_kernel_overlay() {
    let s = Scratch::new("pjd");
    let cfg = s.0.join("cfg.toml");
    fs::write(&cfg, CONFIG).unwrap();
    // Same path lengths on both sides: pjdfstest's PATH_MAX cases depend on it.
    let (kb, ob) = (s.0.join("k"), s.0.join("o"));
    for b in [&kb, &ob] {
        for d in ["u", "w", "m"] {
            fs::create_dir_all(b.join(d)).unwrap();
        }
    }
    let (kl, ol) = (lower(&kb), lower(&ob));

    let kernel = {
        let _k = KernelMount::new(
            &[kl],
            Some((&kb.join("u"), &kb.join("w"))),
            &kb.join("m"),
            "",
        );
        run(&cfg, &kb.join("m"))
    };
    let ovl = {
        let mut o = OvlMount::layers(
            &[ol],
            Some((&ob.join("u"), &ob.join("w"))),
            &ob.join("m"),
            "",
        );
        let mut r = run(&cfg, &ob.join("m"));
        // A case that fails only here is run once more: one that passes then
        // is reported as flaky (and tracked), one that fails again counts.
        let only: Vec<String> =
            r.2.iter()
                .filter(|f| !kernel.2.contains(f))
                .cloned()
                .collect();
        if !only.is_empty() {
            let again = run_cases(&cfg, &ob.join("m"), &only.iter().collect::<Vec<_>>());
            // Only a retry that really ran the cases can clear them.
            let ran = (again.0 + again.1) as usize >= only.len();
            let flaky: Vec<&String> = only
                .iter()
                .filter(|c| ran && !again.2.contains(c))
                .collect();
            if !flaky.is_empty() {
                println!("FLAKY (failed once, passed on retry): {flaky:?}");
                r.0 += flaky.len() as u32;
                r.1 -= flaky.len() as u32;
                r.2.retain(|c| !flaky.contains(&c));
            }
        }
        let st = o.stop();
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "ovlfuse exited with {st:?}"
        );
        r
    };
    let only_ovl: Vec<&String> = ovl.2.iter().filter(|f| !kernel.2.contains(f)).collect();
    println!(
        "pjdfstest kernel overlay: {} passed, {} failed",
        kernel.0, kernel.1
    );
    println!(
        "pjdfstest ovlfuse:        {} passed, {} failed",
        ovl.0, ovl.1
    );
    println!("failing only on ovlfuse: {only_ovl:?}");
    assert!(
        kernel.0 >= 300,
        "kernel overlay passed only {}: the environment is off",
        kernel.0
    );
    assert!(
        ovl.0 >= kernel.0,
        "ovlfuse passed {} < kernel {}; failing only on ovlfuse: {only_ovl:?}",
        ovl.0,
        kernel.0
    );
}
