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

/// A new file's attributes come with its CREATE and hold until it is
/// written: the fstat a shell's printf (stdio) does after the open needs no
/// GETATTR. What is left is the dir's, which the kernel re-reads after each
/// change in it (default_permissions).
#[test]
fn a_created_file_needs_no_getattr_before_its_first_write() {
    let s = Scratch::new("create-getattr");
    for d in ["l", "u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let mnt = OvlMount::layers(&[l], Some((&u, &w)), &m, "");
    fs::create_dir(m.join("c")).unwrap();
    let before = stats(&m);
    let script =
        r#"cd "$1/c" && for i in $(seq 20); do printf '%100s' '' > f$i; done; stat -c %s f7"#;
    let out = output_ok(Command::new("bash").args(["-c", script, "bash"]).arg(&m));
    assert_eq!(out.trim(), "100", "the size after the write");
    let after = stats(&m);
    let d = |k: &str| num(&after, k) - num(&before, k);
    assert_eq!(d("requests.create"), 20, "{after:?}");
    // 20 for the dir, 1 for the stat of f7 (written since), a few to spare
    // for the shell's own path walks; 40 if every create's fstat asked.
    assert!(
        d("requests.getattr") <= 24,
        "GETATTRs: {}",
        d("requests.getattr")
    );
    drop(mnt);
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

/// The sorted names `m/dir` lists.
fn names(m: &Path, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(m.join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// On a kernel that opens dirs without asking (5.1+), ovlfuse answers the
/// first OPENDIR with ENOSYS and serves reads with no handle: no OPENDIR or
/// RELEASEDIR after that, and listings stay whole and right across reads
/// of several replies, a listing left part-read, and changes in between.
#[test]
fn dirs_are_listed_without_opendir() {
    let s = Scratch::new("noopendir");
    let l = s.0.join("l");
    let mut big: Vec<String> = (0..600).map(|i| format!("a-longer-name-{i:04}")).collect();
    for n in &big {
        write(&l.join("big").join(n), b"x");
    }
    write(&l.join("small/a"), b"a");
    for d in ["u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let opts = overlay_opts(&[l], Some((&u, &w)), "");
    let mnt = OvlMount::new(&opts, &m);
    big.sort();
    assert_eq!(names(&m, "big"), big);
    // Part of a listing, then the dir changes through the mount.
    let part: Vec<_> = fs::read_dir(m.join("big")).unwrap().take(5).collect();
    assert_eq!(part.len(), 5);
    drop(part);
    fs::remove_file(m.join("big/a-longer-name-0007")).unwrap();
    write(&m.join("big/new"), b"n");
    big.retain(|n| n != "a-longer-name-0007");
    big.push("new".into());
    big.sort();
    assert_eq!(names(&m, "big"), big);
    assert_eq!(names(&m, "small"), ["a"]);
    for _ in 0..3 {
        assert_eq!(names(&m, "big").len(), big.len());
    }
    let st = stats(&m);
    assert!(num(&st, "requests.opendir") <= 1, "{st:?}");
    assert_eq!(num(&st, "requests.releasedir"), 0, "{st:?}");
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

/// Runs `ovlfuse check` on the layers; (exit status, stdout).
fn check(opts: &str, repair: bool) -> (i32, String) {
    let mut c = Command::new(bin());
    c.args(["check", "-o", opts]);
    if repair {
        c.arg("--repair");
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty() || !out.status.success(), "stderr: {err}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const OVL: &str = "trusted.overlay.";

/// A lower with plain files, dirs and hard links, and an upper the kernel
/// wrote over it (redirect_dir=on,index=on): a whiteout, a renamed dir
/// (redirect), copy-ups with origins, index entries for hard links.
fn kernel_made(
    s: &Scratch,
) -> (
    String,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    write(&l.join("keep"), b"keep");
    write(&l.join("dir1/f"), b"f");
    write(&l.join("dir1/g"), b"g");
    write(&l.join("src/f"), b"moved");
    write(&l.join("gone"), b"to be deleted below");
    for (a, b) in [("h1", "h2"), ("k1", "k2")] {
        write(&l.join(a), b"linked");
        fs::hard_link(l.join(a), l.join(b)).unwrap();
    }
    for d in [&u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    let extra = "redirect_dir=on,index=on";
    {
        let _k = KernelMount::new(std::slice::from_ref(&l), Some((&u, &w)), &m, extra);
        fs::remove_file(m.join("dir1/f")).unwrap();
        fs::rename(m.join("src"), m.join("dst")).unwrap();
        for f in ["gone", "h1", "k1"] {
            fs::set_permissions(m.join(f), fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let opts = overlay_opts(std::slice::from_ref(&l), Some((&u, &w)), extra);
    (opts, l, u, w)
}

#[test]
fn check_names_every_kind_of_corruption() {
    let s = Scratch::new("check");
    let (opts, l, u, w) = kernel_made(&s);
    assert_eq!(
        check(&opts, false),
        (0, String::new()),
        "the kernel's upper is clean"
    );
    // opaque=x marks a dir with xattr whiteouts, not an opaque one: the
    // whiteout of dir1/f still hides the lower f.
    set_xattr(&u.join("dir1"), &format!("{OVL}opaque"), b"x");
    assert_eq!(
        check(&opts, false),
        (0, String::new()),
        "opaque=x is not opaque"
    );
    let x = format!("{OVL}opaque");
    let _ = Command::new("setfattr")
        .args(["-x", &x])
        .arg(u.join("dir1"))
        .status();
    whiteout(&u.join("nothing-below"));
    write(&u.join(".wh.nothing-either"), b"");
    for d in ["nowhere", "loop", "bad", "dst2", "opq"] {
        fs::create_dir(u.join(d)).unwrap();
    }
    set_xattr(
        &u.join("nowhere"),
        &format!("{OVL}redirect"),
        b"/no/such/dir",
    );
    set_xattr(&u.join("loop"), &format!("{OVL}redirect"), b"/loop/inner");
    set_xattr(&u.join("bad"), &format!("{OVL}redirect"), b"../escape");
    let r = get_xattr(&u.join("dst"), &format!("{OVL}redirect")).unwrap();
    set_xattr(&u.join("dst2"), &format!("{OVL}redirect"), &r);
    fs::remove_file(l.join("gone")).unwrap();
    fs::remove_file(u.join("h1")).unwrap();
    let k_index = fs::read_dir(w.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            !p.file_name().unwrap().to_string_lossy().starts_with('#')
                && fs::metadata(p).unwrap().nlink_of() > 1
        })
        .expect("an index entry with an upper name");
    set_xattr(&k_index, &format!("{OVL}nlink"), b"garbage");
    write(&w.join("work/leftover"), b"half a copy-up");
    let _ = fs::remove_dir(w.join("work/#1"));
    set_xattr(&u.join("opq"), &format!("{OVL}opaque"), b"y");
    write(&u.join("opq/.wh..wh..opq"), b"");
    set_xattr(&u.join("dst"), &format!("{OVL}metacopy"), b"");
    // The root's children carry origins; its impure mark goes.
    let _ = Command::new("setfattr")
        .args(["-x", &format!("{OVL}impure")])
        .arg(&u)
        .status();
    let (code, out) = check(&opts, false);
    assert_eq!(code, 4, "{out}");
    for want in [
        "/nothing-below: orphan whiteout",
        "/.wh.nothing-either: orphan .wh. whiteout",
        "/nowhere: redirect leads nowhere",
        "/loop: redirect loops",
        "/bad: bad redirect xattr",
        "/dst2: redirects to the same lower dir as /dst",
        "/gone: origin no longer resolves",
        "W/index/",
        "index entry whose upper inode has no name left",
        "bad nlink xattr on the index entry",
        "W/work: 1 leftover entries",
        "/: children carry origins or redirects, but the dir is not marked impure",
        "/opq/.wh..wh..opq: opaque marker file beside the opaque xattr",
        "/dst: bad metacopy xattr",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // One line each, naming the fix.
    assert!(out.lines().all(|l| l.contains("; fix: ")), "{out}");
}

trait Nlink {
    fn nlink_of(&self) -> u64;
}

impl Nlink for fs::Metadata {
    fn nlink_of(&self) -> u64 {
        std::os::unix::fs::MetadataExt::nlink(self)
    }
}

#[test]
fn check_repair_fixes_what_is_safe_and_the_kernel_agrees() {
    let s = Scratch::new("repair");
    let (opts, l, u, w) = kernel_made(&s);
    whiteout(&u.join("nothing-below"));
    write(&u.join("dir1/.wh.nothing-either"), b"");
    fs::create_dir(u.join("nowhere")).unwrap();
    write(&u.join("nowhere/kept"), b"kept");
    set_xattr(
        &u.join("nowhere"),
        &format!("{OVL}redirect"),
        b"/no/such/dir",
    );
    fs::remove_file(u.join("h1")).unwrap();
    fs::create_dir(u.join("opq")).unwrap();
    set_xattr(&u.join("opq"), &format!("{OVL}opaque"), b"y");
    write(&u.join("opq/.wh..wh..opq"), b"");
    let _ = Command::new("setfattr")
        .args(["-x", &format!("{OVL}impure")])
        .arg(&u)
        .status();
    let m = s.0.join("m");
    let view = |what: &str| {
        let _o = OvlMount::new(&opts, &m);
        let mut d = dump_tree(&m);
        // The removed name's index entry: ovlfuse shows the lower h1 again.
        d.retain(|k, _| !k.starts_with("h"));
        (what.to_string(), d)
    };
    let before = view("ovlfuse before");
    // After that mount, which empties W/work itself.
    write(&w.join("work/leftover"), b"half a copy-up");
    let (code, out) = check(&opts, true);
    assert_eq!(code, 1, "all repaired:\n{out}");
    assert_eq!(out.lines().count(), 7, "{out}");
    assert!(out.lines().all(|l| l.contains("; repaired: ")), "{out}");
    assert_eq!(
        check(&opts, false),
        (0, String::new()),
        "clean after the repair"
    );
    let after = view("ovlfuse after");
    assert_maps_eq(&after.1, &before.1, "ovlfuse's view is what it was");
    let k = {
        let _k = KernelMount::new(
            std::slice::from_ref(&l),
            Some((&u, &w)),
            &m,
            "redirect_dir=on,index=on",
        );
        let mut d = dump_tree(&m);
        d.retain(|k, _| !k.starts_with("h"));
        d
    };
    assert_maps_eq(
        &after.1,
        &k,
        "the kernel shows the repaired upper as ovlfuse",
    );
}

#[test]
fn check_usage_errors_exit_8() {
    let out = Command::new(bin()).args(["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(8));
    let out = Command::new(bin())
        .args(["check", "-o", "lowerdir=/nonexistent-dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let s = Scratch::new("check-usage");
    fs::create_dir(s.0.join("l")).unwrap();
    let o = format!("lowerdir={}", s.0.join("l").display());
    let out = Command::new(bin())
        .args(["check", "-o", &o])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "no upper to check");
}

/// Applies an OCI layer tarball to `dst` by the image-spec's rules:
/// whiteouts first (they act on what was there before the layer), then
/// every other entry, with owners, modes, xattrs and hard links.
fn oci_apply(layer: &Path, dst: &Path) {
    let mut gone = Vec::new();
    let mut ar = tar::Archive::new(fs::File::open(layer).unwrap());
    for e in ar.entries().unwrap() {
        let p = e.unwrap().path().unwrap().into_owned();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == ".wh..wh..opq" {
            for c in fs::read_dir(dst.join(p.parent().unwrap())).unwrap() {
                gone.push(c.unwrap().path());
            }
        } else if let Some(n) = name.strip_prefix(".wh.") {
            gone.push(dst.join(p.parent().unwrap()).join(n));
        }
    }
    for g in gone {
        if fs::symlink_metadata(&g).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&g).unwrap();
        } else {
            fs::remove_file(&g).unwrap();
        }
    }
    let mut ar = tar::Archive::new(fs::File::open(layer).unwrap());
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().into_owned();
        if p.file_name().unwrap().to_string_lossy().starts_with(".wh.") {
            continue;
        }
        if e.header().entry_type() == tar::EntryType::Fifo {
            // The tar crate makes fifos regular files.
            let mode = e.header().mode().unwrap();
            mknod(&dst.join(&p), libc::S_IFIFO | mode, 0);
            fs::set_permissions(dst.join(&p), fs::Permissions::from_mode(mode)).unwrap();
            continue;
        }
        assert!(e.unpack_in(dst).unwrap(), "{}", p.display());
    }
}

/// A tree dump without times (extraction sets dir times as it goes) or
/// dir link counts (a merged dir shows 1).
fn dump_timeless(root: &Path) -> BTreeMap<String, String> {
    let mut d = dump_tree(root);
    for v in d.values_mut() {
        *v = v.replace(" mtime=fixed", "");
        if v.starts_with("dir ") {
            if let Some(i) = v.find(" nlink=") {
                let end = v[i + 1..].find(' ').map_or(v.len(), |j| i + 1 + j);
                v.replace_range(i..end, "");
            }
        }
    }
    d
}

#[test]
fn diff_tar_over_the_lowers_gives_the_merged_view() {
    let s = Scratch::new("diff");
    let (l1, l2, u, w, m) = (
        s.0.join("l1"),
        s.0.join("l2"),
        s.0.join("u"),
        s.0.join("w"),
        s.0.join("m"),
    );
    write(&l2.join("a"), b"a below");
    write(&l2.join("b"), b"b");
    write(&l2.join("src/sub/f"), b"moved with its dir");
    write(&l2.join("opq/old"), b"hidden by an opaque dir");
    write(&l1.join("dir/x"), b"x");
    write(&l1.join("meta"), &[b'm'; 5000]);
    write(&l1.join("src/top"), b"top of the moved dir");
    set_xattr(&l1.join("dir/x"), "user.kept", b"1");
    fix_times(&l1);
    fix_times(&l2);
    for d in [&u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    let lowers = [l1.clone(), l2.clone()];
    let extra = "redirect_dir=on,metacopy=on";
    {
        let _k = KernelMount::new(&lowers, Some((&u, &w)), &m, extra);
        append(&m.join("a"), b" and more").unwrap();
        fs::remove_file(m.join("b")).unwrap();
        fs::rename(m.join("src"), m.join("moved")).unwrap();
        fs::remove_dir_all(m.join("opq")).unwrap();
        write(&m.join("opq/new"), b"new in a re-made dir");
        write(&m.join("dir/new"), b"new");
        set_xattr(&m.join("dir/new"), "user.k", b"v");
        fs::hard_link(m.join("dir/new"), m.join("linked")).unwrap();
        std::os::unix::fs::symlink("dir/x", m.join("sym")).unwrap();
        mknod(&m.join("fifo"), libc::S_IFIFO | 0o640, 0);
        // metacopy: the upper gets the new mode, the data stays below.
        fs::set_permissions(m.join("meta"), fs::Permissions::from_mode(0o600)).unwrap();
        write(&m.join("deep/er/file"), b"deep");
    }
    assert!(
        get_xattr(&u.join("meta"), "trusted.overlay.metacopy").is_ok(),
        "a metacopy upper"
    );
    let opts = overlay_opts(&lowers, Some((&u, &w)), extra);
    let layer = s.0.join("layer.tar");
    let out = output_ok(
        Command::new(bin())
            .args(["diff", "--tar"])
            .arg(&layer)
            .args(["-o", &opts]),
    );
    for want in [
        "C /a",
        "D /b",
        "D /src",
        "A /moved",
        "A /moved/sub/f",
        "A /moved/top",
        "C /opq",
        "D /opq/old",
        "A /opq/new",
        "C /dir",
        "A /dir/new",
        "A /linked",
        "A /sym",
        "A /fifo",
        "C /meta",
        "A /deep/er/file",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    assert!(
        !out.contains("/dir/x"),
        "untouched lower files are not changes:\n{out}"
    );
    // The lowers as one image, then the layer over it.
    let image = s.0.join("image");
    {
        let _k = KernelMount::new(&lowers, None, &m, "");
        let cp = Command::new("cp")
            .args(["-a", "--preserve=all"])
            .arg(&m)
            .arg(&image)
            .status()
            .unwrap();
        assert!(cp.success());
    }
    oci_apply(&layer, &image);
    let merged = {
        let _k = KernelMount::new(&lowers, Some((&u, &w)), &m, extra);
        dump_timeless(&m)
    };
    assert_maps_eq(
        &dump_timeless(&image),
        &merged,
        "the layer applied over the lowers",
    );
}

#[test]
fn diff_list_needs_no_workdir_and_refuses_a_live_upper() {
    let s = Scratch::new("diff-live");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    write(&l.join("f"), b"f");
    for d in [&u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    let opts = overlay_opts(std::slice::from_ref(&l), Some((&u, &w)), "");
    let mnt = OvlMount::new(&opts, &m);
    write(&m.join("g"), b"g");
    let live = Command::new(bin())
        .args(["diff", "-o", &opts])
        .output()
        .unwrap();
    assert_eq!(live.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&live.stderr).contains("in use"),
        "{live:?}"
    );
    let busy = Command::new(bin())
        .args(["check", "-o", &opts])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(8), "{busy:?}");
    drop(mnt);
    let o = format!("lowerdir={},upperdir={}", l.display(), u.display());
    assert_eq!(
        output_ok(Command::new(bin()).args(["diff", "-o", &o])),
        "A /g\n"
    );
}

#[test]
fn each_subcommand_has_help_and_a_man_page_section() {
    let man = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/ovlfuse.1")).unwrap();
    for (sub, words) in [
        ("check", "e2fsck"),
        ("diff", "OCI layer"),
        ("stats", "prometheus"),
    ] {
        let out = output_ok(Command::new(bin()).args([sub, "--help"]));
        assert!(out.contains(words), "ovlfuse {sub} --help:\n{out}");
        assert!(
            man.contains(&format!(".SS ovlfuse {sub} ")),
            "no man section for {sub}"
        );
    }
    let top = output_ok(Command::new(bin()).arg("--help"));
    for sub in ["ovlfuse check", "ovlfuse diff", "ovlfuse stats"] {
        assert!(top.contains(sub), "ovlfuse --help does not name {sub}");
    }
}
