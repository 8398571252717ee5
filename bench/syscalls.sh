#!/usr/bin/env bash
# Daemon syscalls per listed entry, against the depth of the layer stack:
# one dir of ENTRIES files spread evenly over N lowers (each layer adds its
# share), listed cold with `ls -l` through ovlfuse. The daemon's syscalls
# are counted with perf (raw_syscalls:sys_enter on its pid, all threads).
# A flat count per entry means a name costs the same at any depth.
#
#   bench/syscalls.sh [--entries N] [--layers "1 10 500"] [--bin PATH]
set -euo pipefail
ENTRIES=1000 LAYERS="1 10 500"
cd "$(dirname "$0")/.."
BIN="$PWD/target/release/ovlfuse"
while [ $# -gt 0 ]; do
  case "$1" in
    --entries) ENTRIES=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "syscalls: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
. scripts/lib/mount.sh
command -v perf >/dev/null || { echo "syscalls: needs perf (apt-get install linux-perf)" >&2; exit 1; }
T=$(mktemp -d /tmp/ovlfuse-syscalls.XXXXXX)
DAEMON=0
cleanup() {
  is_mounted "$T/m" && umount "$T/m" 2>/dev/null || true
  [ "$DAEMON" != 0 ] && kill "$DAEMON" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
printf '%8s %10s %12s\n' layers syscalls per-entry
for n in $LAYERS; do
  rm -rf "$T/l" "$T/u" "$T/w" && mkdir -p "$T/u" "$T/w" "$T/m"
  for ((i = 1; i <= n; i++)); do mkdir -p "$T/l/$i/d"; done
  for ((e = 0; e < ENTRIES; e++)); do echo "$e" > "$T/l/$(( e % n + 1 ))/d/f$e"; done
  # cd first, alone, so that $! is the daemon itself.
  (cd "$T/l"; "$BIN" -f -o "lowerdir=$(seq -s: 1 "$n"),upperdir=$T/u,workdir=$T/w" "$T/m" \
    < /dev/null > /dev/null 2>&1 & echo $! > "$T/pid")
  DAEMON=$(cat "$T/pid")
  wait_mounted "$T/m"
  sync; echo 3 > /proc/sys/vm/drop_caches
  perf stat -x, -e raw_syscalls:sys_enter -p "$DAEMON" -o "$T/perf" &
  perf_pid=$!
  sleep 0.5
  ls -l "$T/m/d" > /dev/null
  sleep 0.2
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  count=$(awk -F, '/raw_syscalls/ {print $1}' "$T/perf")
  printf '%8d %10d %12.2f\n' "$n" "$count" "$(bc -l <<< "$count / $ENTRIES")"
  umount "$T/m"; wait_unmounted "$T/m"
  for _ in $(seq 100); do kill -0 "$DAEMON" 2>/dev/null || break; sleep 0.05; done
  DAEMON=0
done
