//! The FUSE transport: io_uring where the kernel allows it (fuse's
//! enable_uring on), /dev/fuse by itself where it does not; the same
//! answers on both. The test sets enable_uring and puts it back (a binary
//! of its own: cargo runs test binaries one at a time).

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;

use common::*;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Puts enable_uring back as it was, whatever happens.
struct UringParam(Option<String>);

impl UringParam {
    fn save() -> UringParam {
        UringParam(fs::read_to_string(PARAM).ok())
    }

    fn set(&self, on: bool) -> bool {
        self.0.is_some() && fs::write(PARAM, if on { "Y" } else { "N" }).is_ok()
    }
}

impl Drop for UringParam {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = fs::write(PARAM, v.trim());
        }
    }
}

/// Mounts ovlfuse on the fixture, runs a workload, unmounts; returns what
/// the workload saw and the daemon's log.
fn run(s: &Scratch, tag: &str) -> (String, String) {
    let base = s.0.join(tag);
    for d in ["u", "w", "m"] {
        fs::create_dir_all(base.join(d)).unwrap();
    }
    let lowers = build_lowers(&base, false);
    let opts = overlay_opts(&lowers, Some((&base.join("u"), &base.join("w"))), "");
    let log = base.join("log");
    let f = fs::File::create(&log).unwrap();
    let mut m = OvlMount::new_with(&opts, &base.join("m"), |c| {
        c.stderr(Stdio::from(f));
    });
    let seen = workload(&base.join("m"));
    let st = m.stop();
    assert!(
        st.is_some_and(|s| s.success()),
        "ovlfuse exited with {st:?}"
    );
    (seen, fs::read_to_string(&log).unwrap())
}

fn workload(m: &Path) -> String {
    let script = r#"
set -e
cd "$1"
ls -la | wc -l
cat a/x top
echo new > a/x; echo more >> a/x; cat a/x
mkdir -p d/e; for i in 1 2 3 4 5 6 7 8; do echo $i > d/e/f$i; done; ls d/e | wc -l
mv d/e d/g; rm d/g/f1; ls d/g | tr '\n' ' '; echo
ln top t2; stat -c '%h' top
head -c 3000000 /dev/zero > big; sync big; wc -c < big; cmp big /dev/zero 2>&1 | head -c 0
rm -r d big; ls | tr '\n' ' '
"#;
    output_ok(
        std::process::Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(m),
    )
}

fn served(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("requests served:"))
        .unwrap_or_else(|| panic!("no request count in the log:\n{log}"));
    let num = |after: &str| -> u64 {
        let i = line.find(after).unwrap();
        line[..i]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num(" over io_uring"), num(" over /dev/fuse"))
}

#[test]
fn io_uring_where_the_kernel_allows_and_dev_fuse_otherwise() {
    let s = Scratch::new("transport");
    let param = UringParam::save();
    // Off: /dev/fuse alone.
    assert!(param.0.is_none() || param.set(false));
    let (off, log) = run(&s, "off");
    assert!(log.contains("FUSE transport: /dev/fuse"), "{log}");
    let (u, d) = served(&log);
    assert!(u == 0 && d > 50, "{log}");
    if !param.set(true) {
        // A kernel without FUSE over io_uring: the fallback is all there is.
        assert!(!Path::new(PARAM).exists());
        return;
    }
    let (on, log) = run(&s, "on");
    assert!(log.contains("FUSE transport: io_uring"), "{log}");
    let (u, d) = served(&log);
    // Everything but FORGETs comes over the rings.
    assert!(
        u > 50 && d < u / 4,
        "{u} over io_uring, {d} over /dev/fuse:\n{log}"
    );
    assert_eq!(on, off, "the same answers on both transports");
}
