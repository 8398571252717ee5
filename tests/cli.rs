//! The command line: validation errors (one line, exit 1, nothing mounted,
//! no daemon), --version/--help, daemon mode, signals, mount.fuse3, read-only.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn ovlfuse(args: &[&str], cwd: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Pids of processes whose command line names `mnt` (started by this test).
fn daemons_for(mnt: &Path) -> Vec<u32> {
    let needle = mnt.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        // A daemon started with a relative mountpoint holds its layers (in
        // the mountpoint's parent dir here) open.
        let here = cmd.contains(&needle) || holds_files_under(pid, mnt.parent().unwrap());
        let argv0 = cmd.split(' ').next().unwrap_or("");
        let base = argv0.rsplit('/').next().unwrap_or("");
        let is_us = argv0 == bin() || base == "ovlfuse" || base.starts_with("mount.fuse.ovlfuse");
        if is_us && here && pid != std::process::id() {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` holds open a dir that is an entry of `dir` (its layers).
/// Compared by inode: the daemon reaches its layers through private mount
/// views, whose fds' links name paths inside those views.
fn holds_files_under(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let id = |m: fs::Metadata| (m.dev(), m.ino());
    let layers: Vec<_> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok().map(id))
                .collect()
        })
        .unwrap_or_default();
    fds.flatten()
        .any(|f| fs::metadata(f.path()).is_ok_and(|m| layers.contains(&id(m))))
}

/// Unmounts a daemon-mode mount and ends its daemon (found by its command
/// line: it was started by this test) even when an assertion fails.
struct DaemonGuard(PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        umount(&self.0);
        let t = Instant::now();
        while !daemons_for(&self.0).is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in daemons_for(&self.0) {
            // SAFETY: a daemon this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn wait_gone(mnt: &Path) {
    let t = Instant::now();
    while !daemons_for(mnt).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemon for {} did not exit",
            mnt.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Dirs {
    s: Scratch,
}

impl Dirs {
    fn new() -> Dirs {
        let s = Scratch::new("cli");
        for d in ["l1", "l2", "u", "w", "m"] {
            fs::create_dir_all(s.0.join(d)).unwrap();
        }
        write(&s.0.join("l1/f"), b"lower\n");
        write(&s.0.join("l2/g"), b"bottom\n");
        Dirs { s }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.s.0.join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).to_string_lossy().into_owned()
    }
}

#[test]
fn validation_errors_are_one_line_and_exit_1() {
    let d = Dirs::new();
    fs::create_dir_all(d.p("m/inside")).unwrap();
    let shm = Scratch(PathBuf::from(format!(
        "/dev/shm/ovlfuse-cli-{}",
        std::process::id()
    )));
    fs::create_dir_all(&shm.0).unwrap();
    let many: Vec<String> = (0..501).map(|_| d.s("l1")).collect();
    // lowerdir=l1 plus one more option.
    let l1_with = |extra: &str| format!("lowerdir={},{extra}", d.s("l1"));
    let cases: Vec<(String, &str)> = vec![
        (format!("lowerdir={}", d.s("missing")), "lowerdir"),
        (format!("lowerdir={}", d.s("l1/f")), "is not a directory"),
        (
            format!("upperdir={},workdir={}", d.s("u"), d.s("w")),
            "no lowerdir given",
        ),
        (
            format!("lowerdir={},upperdir={}", d.s("l1"), d.s("u")),
            "without workdir",
        ),
        (
            format!("lowerdir={},workdir={}", d.s("l1"), d.s("w")),
            "without upperdir",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d.s("l1"),
                d.s("u"),
                d.s("u")
            ),
            "overlap",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d.s("l1"),
                d.s("l1"),
                d.s("w")
            ),
            "overlaps lowerdir",
        ),
        (
            format!("lowerdir={}", d.s("m/inside")),
            "inside the mountpoint",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d.s("l1"),
                d.s("u"),
                shm.0.display()
            ),
            "same filesystem",
        ),
        (format!("lowerdir={}", many.join(":")), "at most 500"),
        (l1_with("redirect_dir=sometimes"), "redirect_dir"),
        (l1_with("uidmapping=0:1000"), "uidmapping"),
        (l1_with("timeout=soon"), "timeout"),
        (l1_with("threads=0"), "threads"),
        (format!("lowerdir={}:", d.s("l1")), "empty layer path"),
        (format!("lowerdir=:{}", d.s("l1")), "empty layer path"),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d.s("l1"),
                d.s("nou"),
                d.s("w")
            ),
            "upperdir",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d.s("l1"),
                d.s("u"),
                d.s("now")
            ),
            "workdir",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d.s("l1"),
                d.s("l1/f"),
                d.s("w")
            ),
            "is not a directory",
        ),
        (l1_with("xino=sometimes"), "xino"),
        (l1_with("index=maybe"), "index"),
        (l1_with("metacopy=2"), "metacopy"),
        (l1_with("metacopy=on,redirect_dir=off"), "metacopy"),
        (l1_with("gidmapping=0:1000:0"), "gidmapping"),
        (l1_with("squash_to_uid=root"), "squash_to_uid"),
        (l1_with("xattr_permissions=3"), "xattr_permissions"),
        (l1_with("threads=many"), "threads"),
        (l1_with("fsync=sometimes"), "fsync"),
        (l1_with("upperdir"), "needs a value"),
        ("lowerdir=".into(), "lowerdir= is empty"),
    ];
    for (opts, want) in &cases {
        let out = ovlfuse(&["-o", opts, &d.s("m")], &d.s.0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{opts}: exit code, stderr {err}"
        );
        assert_eq!(err.lines().count(), 1, "{opts}: want one line, got {err}");
        assert!(
            err.starts_with("ovlfuse: ") && err.contains(want),
            "{opts}: {err} lacks '{want}'"
        );
        assert!(!is_mounted(&d.p("m")), "{opts}: left a mount");
    }
    let out = ovlfuse(
        &["-o", &format!("lowerdir={}", d.s("l1")), &d.s("nomnt")],
        &d.s.0,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mountpoint"));
    let out = ovlfuse(&[], &d.s.0);
    assert_eq!(out.status.code(), Some(1));
    // Bad command lines: one line too, pointing to --help, exit 1.
    for args in [
        &["--bogus", "m"][..],
        &["-o"][..],
        &["-o", "lowerdir=l1", "a", "b", "c"][..],
        &["-x", "m"][..],
    ] {
        let out = ovlfuse(args, &d.s.0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("ovlfuse: ") && err.contains("--help"),
            "{err}"
        );
    }
    assert!(
        daemons_for(&d.p("m")).is_empty(),
        "a daemon is left running"
    );
}

#[test]
fn version_and_help() {
    let d = Dirs::new();
    let out = ovlfuse(&["--version"], &d.s.0);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with(&format!("ovlfuse version {}\n", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains("FUSE"), "{s}");
    let out = ovlfuse(&["--help"], &d.s.0);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for w in [
        "lowerdir",
        "upperdir",
        "workdir",
        "-f",
        "-d",
        "fusermount3 -u",
    ] {
        assert!(s.contains(w), "--help lacks {w}");
    }
}

#[test]
fn daemon_returns_once_live_and_exits_on_fusermount() {
    let d = Dirs::new();
    // Relative paths, several -o, an empty item and an unknown option.
    let _guard = DaemonGuard(d.p("m"));
    let out = ovlfuse(
        &[
            "-o",
            "lowerdir=l1:l2",
            "-o",
            "upperdir=u,,workdir=w,bogus_opt",
            "m",
        ],
        &d.s.0,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mount failed: {err}");
    assert!(err.contains("unknown option 'bogus_opt'"), "{err}");
    assert!(
        is_mounted(&d.p("m")),
        "not mounted when the command returned"
    );
    assert_eq!(fs::read(d.p("m/f")).unwrap(), b"lower\n");
    assert_eq!(fs::read(d.p("m/g")).unwrap(), b"bottom\n");
    let pids = daemons_for(&d.p("m"));
    assert_eq!(pids.len(), 1, "one daemon: {pids:?}");
    assert_ne!(pids[0], out.status.code().unwrap_or(0) as u32);
    fs::write(d.p("m/new"), b"x").unwrap();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(d.p("m"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!is_mounted(&d.p("m")));
    wait_gone(&d.p("m"));
    assert_eq!(fs::read(d.p("u/new")).unwrap(), b"x");
}

#[test]
fn sigterm_unmounts_cleanly() {
    let d = Dirs::new();
    let mut m = OvlMount::new(
        &format!(
            "lowerdir={},upperdir={},workdir={}",
            d.s("l1"),
            d.s("u"),
            d.s("w")
        ),
        &d.p("m"),
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) };
    let t = Instant::now();
    while is_mounted(&d.p("m")) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still mounted after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = m.stop().unwrap();
    assert!(st.success(), "exit status {st}");
}

#[test]
fn mount_fuse3_helper_runs_us() {
    let d = Dirs::new();
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        panic!("mount.fuse3 missing: install the fuse3 package (scripts/test does)");
    }
    let bindir = d.p("bin");
    fs::create_dir_all(&bindir).unwrap();
    std::os::unix::fs::symlink(bin(), bindir.join("ovlfuse")).unwrap();
    // mount.fuse3 runs `ovlfuse ovlfuse MNT -o rw,...,dev,suid` through PATH.
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        d.s("l1"),
        d.s("u"),
        d.s("w")
    );
    // mount(8) runs exactly this for `mount -t fuse.ovlfuse` (with a PATH of
    // system dirs only, where scripts/install puts ovlfuse).
    let _guard = DaemonGuard(d.p("m"));
    let helper = if Path::new("/sbin/mount.fuse3").exists() {
        "/sbin/mount.fuse3"
    } else {
        "/usr/sbin/mount.fuse3"
    };
    let out = Command::new(helper)
        .arg("ovlfuse#ovlfuse")
        .arg(d.p("m"))
        .args(["-o", &opts])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t fuse.ovlfuse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&d.p("m")));
    assert_eq!(fs::read(d.p("m/f")).unwrap(), b"lower\n");
    let pids = daemons_for(&d.p("m"));
    assert_eq!(pids.len(), 1, "one daemon: {pids:?}");
    umount(&d.p("m"));
    wait_gone(&d.p("m"));
}

#[test]
fn without_upper_the_mount_is_read_only() {
    let d = Dirs::new();
    let _m = OvlMount::new(&format!("lowerdir={}:{}", d.s("l1"), d.s("l2")), &d.p("m"));
    assert_eq!(ls(&d.p("m")).unwrap(), vec!["f", "g"]);
    let e = fs::write(d.p("m/x"), b"1").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = fs::OpenOptions::new()
        .append(true)
        .open(d.p("m/f"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(d.p("m/f")).unwrap(), b"lower\n");
}

/// scripts/install lays out the binary, the man page and the
/// mount.fuse.ovlfuse helper; the helper mounts as mount(8) runs it.
#[test]
fn install_layout_and_mount_helper() {
    let d = Dirs::new();
    let dest = d.p("dest");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/install"))
        .arg("--as-fuse-overlayfs")
        .env("DESTDIR", &dest)
        .env("BIN", bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dest.join("usr/local/bin/ovlfuse").is_file());
    // Docker's fuse-overlayfs driver runs this name from its PATH.
    assert_eq!(
        fs::read_link(dest.join("usr/local/bin/fuse-overlayfs")).unwrap(),
        PathBuf::from("ovlfuse")
    );
    assert!(dest.join("usr/local/share/man/man1/ovlfuse.1").is_file());
    let helper = dest.join("usr/sbin/mount.fuse.ovlfuse");
    assert_eq!(
        fs::read_link(&helper).unwrap(),
        PathBuf::from("/usr/local/bin/ovlfuse")
    );
    // mount(8) runs: mount.fuse.ovlfuse SOURCE MOUNTPOINT [-n] -o OPTIONS
    let staged = dest.join("usr/sbin/mount.fuse.ovlfuse.staged");
    std::os::unix::fs::symlink(dest.join("usr/local/bin/ovlfuse"), &staged).unwrap();
    let _guard = DaemonGuard(d.p("m"));
    let opts = format!(
        "rw,lowerdir={},upperdir={},workdir={},noauto,_netdev",
        d.s("l1"),
        d.s("u"),
        d.s("w")
    );
    let out = Command::new(&staged)
        .arg("ovlfuse")
        .arg(d.p("m"))
        .arg("-n")
        .args(["-o", &opts])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(d.p("m/f")).unwrap(), b"lower\n");
}
