#!/usr/bin/env bash
# Side-by-side benchmark: kernel overlayfs, ovlfuse and fuse-overlayfs on
# identical layers, interleaved in one run, median of REPEATS, ratios to the
# kernel. Sizes are flags; --quick runs in about a minute.
#
#   bench/run.sh [--files N] [--dirs N] [--mib N] [--repeats N] [--quick]
set -euo pipefail
FILES=20000 DIRS=5000 MIB=256 REPEATS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES=$2; shift 2 ;;
    --dirs) DIRS=$2; shift 2 ;;
    --mib) MIB=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --quick) FILES=5000 DIRS=2000 MIB=64 REPEATS=3; shift ;;
    *) echo "bench: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
OVL="$PWD/target/release/ovlfuse"
FOVL=$(command -v fuse-overlayfs || true)
T=$(mktemp -d /tmp/ovlfuse-bench.XXXXXX)
cleanup() {
  for m in "$T"/*/m; do grep -q " $m " /proc/mounts && umount "$m" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

# One lower layer: FILES small files in dirs of 100, and a big file.
L="$T/lower"
mkdir -p "$L/tree"
for ((d = 0; d < (FILES + 99) / 100; d++)); do
  mkdir -p "$L/tree/d$d"
  for ((f = 0; f < 100 && d * 100 + f < FILES; f++)); do echo "$d $f" > "$L/tree/d$d/f$f"; done
done
dd if=/dev/urandom of="$L/big" bs=1M count="$MIB" status=none
sync

now() { date +%s%N; }
mount_fs() { # kind dir
  local k=$1 d=$2
  rm -rf "$d" && mkdir -p "$d/u" "$d/w" "$d/m"
  case $k in
    kernel) mount -t overlay overlay -o "lowerdir=$L,upperdir=$d/u,workdir=$d/w" "$d/m" ;;
    ovlfuse) "$OVL" -o "lowerdir=$L,upperdir=$d/u,workdir=$d/w" "$d/m" ;;
    ovlfuse-t1) "$OVL" -o "lowerdir=$L,upperdir=$d/u,workdir=$d/w,threads=1" "$d/m" ;;
    fuse-overlayfs) "$FOVL" -o "lowerdir=$L,upperdir=$d/u,workdir=$d/w" "$d/m" ;;
  esac
}
umount_fs() {
  local m=$1/m
  umount "$m"
  for _ in $(seq 100); do grep -q " $m " /proc/mounts || return 0; sleep 0.05; done
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# Each workload runs on a fresh mount; prints nanoseconds.
run() { # kind workload
  local k=$1 w=$2 d="$T/$1" t0 t1
  mount_fs "$k" "$d"
  case $w in
    ls_lR_cold) drop; t0=$(now); ls -lR "$d/m/tree" > /dev/null; t1=$(now) ;;
    stat_warm) ls -lR "$d/m/tree" > /dev/null; t0=$(now); find "$d/m/tree" -type f -printf '%s\n' > /dev/null; t1=$(now) ;;
    mkdir) t0=$(now); (cd "$d/m" && mkdir n && cd n && seq "$DIRS" | xargs mkdir); t1=$(now) ;;
    find_delete) (cd "$d/m" && mkdir n && cd n && seq "$DIRS" | xargs mkdir); t0=$(now); find "$d/m/n" -delete; t1=$(now) ;;
    copy_up) drop; t0=$(now); echo x >> "$d/m/big"; t1=$(now) ;;
    rm_lower) t0=$(now); rm "$d/m/big"; t1=$(now) ;;
    seq_read) drop; t0=$(now); cat "$d/m/big" > /dev/null; t1=$(now) ;;
    seq_write_fsync) t0=$(now); dd if=/dev/zero of="$d/m/out" bs=1M count="$MIB" conv=fsync status=none; t1=$(now) ;;
    parallel_mix)
      # Four long-lived processes stat and read disjoint subtrees (tar).
      drop; t0=$(now)
      for p in 0 1 2 3; do
        (cd "$d/m/tree" && tar cf - $(for ((x = p; x < (FILES + 99) / 100; x += 4)); do echo "d$x"; done) | cat > /dev/null) &
      done
      wait; t1=$(now) ;;
    peak_rss_kb)
      ls -lR "$d/m/tree" > /dev/null
      local pid; pid=$(daemon_pid "$d/m")
      t0=0; t1=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) ;;
  esac
  umount_fs "$d"
  echo $((t1 - t0))
}

# The daemon serving a mount: the process whose cwd or cmdline names it.
daemon_pid() {
  local m=$1 p
  for p in $(pgrep -f "$m" 2>/dev/null); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = ovlfuse ] && { echo "$p"; return; }
  done
  echo 0
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

KINDS=(kernel ovlfuse)
[ -n "$FOVL" ] && KINDS+=(fuse-overlayfs)
WORKLOADS=(ls_lR_cold stat_warm mkdir find_delete copy_up rm_lower seq_read seq_write_fsync parallel_mix)
declare -A R
for w in "${WORKLOADS[@]}"; do
  for k in "${KINDS[@]}"; do R[$k,$w]=""; done
  for ((i = 0; i < REPEATS; i++)); do
    for k in "${KINDS[@]}"; do R[$k,$w]+="$(run "$k" "$w") "; done
  done
done

echo "files=$FILES dirs=$DIRS big=${MIB}MiB repeats=$REPEATS cores=$(nproc) kernel=$(uname -r)"
printf '%-16s' workload
for k in "${KINDS[@]}"; do printf ' %14s' "$k ms"; done
for k in "${KINDS[@]:1}"; do printf ' %16s' "$k/kernel"; done
echo
for w in "${WORKLOADS[@]}"; do
  printf '%-16s' "$w"
  declare -A M
  for k in "${KINDS[@]}"; do
    M[$k]=$(tr ' ' '\n' <<< "${R[$k,$w]}" | grep . | median)
    printf ' %14.1f' "$(bc -l <<< "${M[$k]} / 1000000")"
  done
  for k in "${KINDS[@]:1}"; do printf ' %16.2f' "$(bc -l <<< "${M[$k]} / ${M[kernel]}")"; done
  echo
done

# Threads: the parallel mix on ovlfuse with the default threads and with one.
declare -a T1 TN
for ((i = 0; i < REPEATS; i++)); do
  TN+=("$(run ovlfuse parallel_mix)")
  T1+=("$(run ovlfuse-t1 parallel_mix)")
done
mn=$(printf '%s\n' "${TN[@]}" | median); m1=$(printf '%s\n' "${T1[@]}" | median)
printf 'parallel mix: threads=default %.1f ms, threads=1 %.1f ms, speed-up %.2fx\n' \
  "$(bc -l <<< "$mn / 1000000")" "$(bc -l <<< "$m1 / 1000000")" "$(bc -l <<< "$m1 / $mn")"
printf 'daemon peak RSS after ls -lR of %d files: %d kB\n' "$FILES" "$(run ovlfuse peak_rss_kb)"
