//! Inside a user namespace (`unshare -rm`, as rootless podman runs it)
//! trusted.* xattrs cannot be written: ovlfuse must pick user.overlay.* by
//! itself, keep working, and read its markers back on the next mount.

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
set -eu
T=$1; BIN=$2
mount -t tmpfs tmpfs "$T"; cd "$T"
mkdir -p l/d u w m; echo lower > l/d/f; echo x > l/g
start() { "$BIN" -f -o lowerdir=l,upperdir=u,workdir=w m 2>/dev/null & PID=$!
  for i in $(seq 200); do grep -q " $T/m " /proc/mounts && return; sleep 0.05; done; echo "no mount"; exit 1; }
stop() { umount m; wait $PID; }
trap 'kill $PID 2>/dev/null || true' EXIT
start
echo appended >> m/d/f; rm m/g; rm -r m/d; mkdir m/d; echo new > m/d/n
echo "opaque=$(getfattr --only-values -n user.overlay.opaque u/d)"
echo "trusted=$(getfattr -d -m 'trusted\.' u/d 2>/dev/null | grep -c trusted || true)"
echo "whiteout=$(stat -c '%F %t:%T' u/g)"
stop
start
echo "after-remount=$(ls m | tr '\n' ' ')|$(ls m/d)"
stop
"#;

/// Runs `script` (args: a scratch dir, the ovlfuse binary) under
/// `unshare -rm`; returns its stdout, which must end in success.
fn run_in_userns(tag: &str, script: &str) -> String {
    let s = Scratch::new(tag);
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(&s.0)
        .arg(bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn user_namespace_picks_user_xattrs_and_reads_them_back() {
    let text = run_in_userns("userns", SCRIPT);
    assert!(text.contains("opaque=y"), "{text}");
    assert!(text.contains("trusted=0"), "{text}");
    assert!(
        text.contains("whiteout=character special file 0:0"),
        "{text}"
    );
    assert!(text.contains("after-remount=d |n"), "{text}");
}

/// The same operation mix on kernel overlayfs (userxattr) and on ovlfuse,
/// both inside one user namespace on a tmpfs (17 entries in the end); the
/// merged views must match, and ovlfuse's after a remount too.
const MIX: &str = r#"
set -eu
T=$1; BIN=$2
mount -t tmpfs tmpfs "$T"; cd "$T"
for s in k o; do
  mkdir -p $s/l/d/sub $s/l/e $s/u $s/w $s/m
  echo lower > $s/l/d/f; echo x > $s/l/g; echo s > $s/l/d/sub/z
  echo h > $s/l/h; ln $s/l/h $s/l/h2; ln -s d/f $s/l/sym; echo t > $s/l/e/t
  chmod 0640 $s/l/g; setfattr -n user.k -v lower $s/l/g
done
mount -t overlay overlay -o lowerdir=k/l,upperdir=k/u,workdir=k/w,userxattr k/m
start() { "$BIN" -f -o lowerdir=o/l,upperdir=o/u,workdir=o/w o/m 2>/dev/null & PID=$!
  for i in $(seq 200); do grep -q " $T/o/m " /proc/mounts && return; sleep 0.05; done; echo "no mount"; exit 1; }
trap 'kill $PID 2>/dev/null || true' EXIT
start
mix() {
  cd "$1"
  echo appended >> d/f; truncate -s 3 g; rm h2; rm -r e; mkdir e; echo new > e/n
  mv d/sub d/sub2; mv g g2; ln h hl; ln -s ../g2 d/s2; chmod 0600 d/f
  setfattr -n user.k -v upper g2; setfattr -n user.new -v 1 d; mkfifo p
  mkdir -p n1/n2; echo deep > n1/n2/f; rm sym; cp -a d d3; rm -r d/sub2
  cd "$T"
}
mix k/m; mix o/m
view() { (cd "$1" && find . -printf '%p %y %m %s %n %l\n' | sort \
  && find . -type f -exec sha256sum {} + | sort -k2 \
  && find . | sort | while read -r f; do getfattr -h -d -m user. "$f" 2>/dev/null; done); }
view k/m > k.view; view o/m > o.view
echo "entries=$(grep -c '^\./' k.view)"
if diff k.view o.view > view.diff; then echo SAME; else echo DIFFERENT; cat view.diff; fi
umount o/m; wait $PID
start
view o/m > o2.view
if diff k.view o2.view > view2.diff; then echo REMOUNT-SAME; else echo REMOUNT-DIFFERENT; cat view2.diff; fi
umount o/m; wait $PID; umount k/m
"#;

#[test]
fn operation_mix_in_a_user_namespace_matches_the_kernel() {
    let text = run_in_userns("userns-mix", MIX);
    assert!(
        text.contains("SAME\n") && !text.contains("DIFFERENT"),
        "{text}"
    );
    assert!(text.contains("REMOUNT-SAME"), "{text}");
    let entries: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("entries="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        entries >= 15,
        "the views list only {entries} entries: {text}"
    );
}
