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

#[test]
fn user_namespace_picks_user_xattrs_and_reads_them_back() {
    let s = Scratch::new("userns");
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", SCRIPT, "sh"])
        .arg(&s.0)
        .arg(bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("opaque=y"), "{text}");
    assert!(text.contains("trusted=0"), "{text}");
    assert!(
        text.contains("whiteout=character special file 0:0"),
        "{text}"
    );
    assert!(text.contains("after-remount=d |n"), "{text}");
}
