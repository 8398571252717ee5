//! The subcommands beside the mount: `ovlfuse stats` counted against a
//! known workload (and SIGUSR1), `ovlfuse check` on uppers corrupted on
//! purpose, with `--repair` checked by kernel overlayfs mounting the
//! repaired upper.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `ovlfuse stats` of `m` as name -> value.
fn stats(m: &Path) -> BTreeMap<String, String> {
    let out = output_ok(Command::new(bin()).arg("stats").arg(m));
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(s: &BTreeMap<String, String>, k: &str) -> u64 {
    s.get(k)
        .map_or(0, |v| v.parse().unwrap_or_else(|_| panic!("{k}: {v}")))
}

#[test]
fn stats_count_a_known_workload() {
    let s = Scratch::new("stats");
    let l = s.0.join("l");
    write(&l.join("a"), &[b'a'; 100]);
    write(&l.join("b"), &[b'b'; 200]);
    write(&l.join("c"), b"c");
    write(&l.join("d/inner"), b"i");
    for d in ["u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let log = s.0.join("daemon.log");
    let err = fs::File::create(&log).unwrap();
    let opts = overlay_opts(&[l], Some((&u, &w)), "redirect_dir=on");
    let mnt = OvlMount::new_with(&opts, &m, |c| {
        c.stderr(err);
    });
    let before = stats(&m);
    assert_eq!(num(&before, "copy_ups"), 0);
    // Two file copy-ups (data: 100 + 200 bytes), one dir copy-up (rename),
    // whiteouts for c and for d's old name, one redirect, three mkdirs,
    // one ENOTEMPTY.
    append(&m.join("a"), b"!").unwrap();
    fs::set_permissions(m.join("b"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(m.join("c")).unwrap();
    fs::rename(m.join("d"), m.join("e")).unwrap();
    for d in ["x", "y", "z"] {
        fs::create_dir(m.join(d)).unwrap();
    }
    assert!(fs::remove_dir(m.join("e")).is_err());
    let after = stats(&m);
    assert_eq!(num(&after, "copy_ups"), 3, "{after:?}");
    assert_eq!(num(&after, "copy_up_bytes"), 300, "{after:?}");
    assert_eq!(num(&after, "whiteouts"), 2, "{after:?}");
    assert_eq!(num(&after, "redirects"), 1, "{after:?}");
    assert_eq!(num(&after, "requests.mkdir"), 3, "{after:?}");
    assert_eq!(num(&after, "requests.rename"), 1, "{after:?}");
    assert_eq!(num(&after, "errors.ENOTEMPTY"), 1, "{after:?}");
    assert!(num(&after, "nodes") >= 6, "{after:?}");
    assert!(num(&after, "rss_kb") > 0 && num(&after, "fds") > 0);
    assert!(after.contains_key("latency_p99_us"));
    assert!(["/dev/fuse", "io_uring"].contains(&after["transport"].as_str()));
    // The Prometheus form carries the same counters.
    let prom = output_ok(
        Command::new(bin())
            .args(["stats", "--format", "prometheus"])
            .arg(&m),
    );
    assert!(prom.contains("ovlfuse_copy_ups_total 3\n"), "{prom}");
    assert!(
        prom.contains("ovlfuse_requests_total{op=\"mkdir\"} 3\n"),
        "{prom}"
    );
    assert!(prom.contains("ovlfuse_request_latency_seconds_bucket{le=\"+Inf\"}"));
    // Never listed, never stored.
    assert!(!list_xattr(&m)
        .unwrap()
        .iter()
        .any(|n| n.contains("ovlfuse")));
    assert!(!list_xattr(&u)
        .unwrap_or_default()
        .iter()
        .any(|n| n.contains("ovlfuse")));
    // Only the owner (and root) may read them.
    let other = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "stats",
        ])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other.stderr).contains("is not yours"));
    // SIGUSR1 logs the same report.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(mnt.pid() as i32, libc::SIGUSR1) };
    let t = Instant::now();
    let logged = loop {
        let text = fs::read_to_string(&log).unwrap();
        if text.contains("stats: copy_ups 3") || t.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(logged.contains("stats: copy_ups 3"), "{logged}");
    assert!(logged.contains("stats: redirects 1"), "{logged}");
    drop(mnt);
}

#[test]
fn stats_of_something_else_say_what_it_is() {
    let out = Command::new(bin()).args(["stats", "/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.starts_with("ovlfuse: /: is not an ovlfuse mount"), "{e}");
    let out = Command::new(bin()).args(["stats"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
