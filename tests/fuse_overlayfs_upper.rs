//! Users who switch from fuse-overlayfs keep their containers' uppers.
//! fuse-overlayfs 1.10 (apt) makes a mix of changes over a lower; it is
//! unmounted, ovlfuse mounts the same dirs, and the merged view must be what
//! fuse-overlayfs showed. (No write through a second name of a lower hard
//! link after a rename of the first: fuse-overlayfs 1.10 writes that into
//! the renamed copy and loses it at its own remount.) As root; inside `unshare -rm` (no trusted.*
//! xattrs: user.fuseoverlayfs.* markers); and there again with mknod refused
//! by a seccomp filter, where fuse-overlayfs writes `.wh.NAME` whiteout
//! files into the upper.

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
set -eu
T=$1; BIN=$2
mount -t tmpfs tmpfs "$T"; cd "$T"
mkdir -p l/d/sub l/e l/keep/in u w m
echo lower > l/d/f; echo x > l/g; echo s > l/d/sub/z; echo h > l/h; ln l/h l/h2
ln -s d/f l/sym; echo t > l/e/t; echo k > l/keep/k; echo i > l/keep/in/i
setfattr -n user.k -v lower l/g; chmod 0640 l/g
wait_mount() { for i in $(seq 200); do grep -q " $T/m " /proc/mounts && return; sleep 0.05; done; echo "no mount"; exit 1; }
view() {
  (cd m && find . -mindepth 1 -printf '%P %y %m %s %l\n' | sort
   find . -type f | sort | xargs md5sum
   find . -mindepth 1 | sort | xargs getfattr -h -d -m 'user\.' 2>/dev/null || true)
}
fuse-overlayfs -f -o lowerdir=l,upperdir=u,workdir=w m 2>/dev/null & PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
wait_mount
rm m/g; rm -rf m/d; mkdir m/d; echo new > m/d/n; mv m/e m/e2; mv m/h m/h3
chmod 600 m/keep/k; setfattr -n user.t -v 1 m/keep/k; echo more >> m/d/n; rm m/sym
mkdir m/nd; echo z > m/nd/z; rm -rf m/keep/in; mkdir m/keep/in; echo j > m/keep/in/j
view > fo.txt
umount m; wait $PID
echo "upper:"; (cd u && find . -mindepth 1 -printf '%P %y\n' | sort)
"$BIN" -f -o lowerdir=l,upperdir=u,workdir=w m 2>/dev/null & PID=$!
wait_mount
view > ovl.txt
umount m; wait $PID
if diff fo.txt ovl.txt; then echo SAME; else echo DIFFERENT; fi
echo "view:"; cat fo.txt
"#;

/// Runs SCRIPT, under `prefix` (e.g. unshare -rm); returns its output.
fn run(tag: &str, prefix: &[&str], mknod_refused: bool) -> String {
    let s = Scratch::new(tag);
    let mut cmd = Command::new(prefix.first().copied().unwrap_or("sh"));
    let rest: Vec<&str> = prefix.iter().skip(1).copied().collect();
    cmd.args(&rest);
    if !prefix.is_empty() {
        cmd.arg("sh");
    }
    cmd.args(["-c", SCRIPT, "sh"]).arg(&s.0).arg(bin());
    if mknod_refused {
        no_mknod(&mut cmd);
    }
    let out = cmd.output().expect("sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tmpfs is gone with the script's mount namespace, or unmount it.
    umount(&s.0);
    text
}

fn check(text: &str, what: &str) {
    assert!(
        text.contains("\nSAME\n"),
        "{what}: ovlfuse shows another view:\n{text}"
    );
    // The view fuse-overlayfs showed: deleted names stay deleted.
    for gone in [
        "g ",
        "sym ",
        "e ",
        "h ",
        "d/f ",
        "d/sub",
        "keep/in/i",
        "keep/k f 644",
    ] {
        let view = text.split("view:").nth(1).unwrap_or("");
        assert!(
            !view.lines().any(|l| l.starts_with(gone)),
            "{what}: {gone} shows:\n{text}"
        );
    }
}

#[test]
fn root_upper_of_fuse_overlayfs() {
    let text = run(
        "fo-root",
        &["unshare", "-m", "--propagation", "private"],
        false,
    );
    check(&text, "root");
    // fuse-overlayfs's opaque marker file beside its xattr.
    assert!(text.contains(".wh..wh..opq"), "{text}");
}

#[test]
fn rootless_upper_of_fuse_overlayfs() {
    let text = run("fo-userns", &["unshare", "-rm"], false);
    check(&text, "unshare -rm");
}

#[test]
fn rootless_upper_with_wh_files_of_fuse_overlayfs() {
    let text = run("fo-wh", &["unshare", "-rm"], true);
    check(&text, "unshare -rm, mknod refused");
    // The whiteouts are .wh. files in this upper.
    assert!(text.contains(".wh.g f"), "{text}");
}
