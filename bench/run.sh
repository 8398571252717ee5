#!/usr/bin/env bash
# Side-by-side benchmark: kernel overlayfs, ovlfuse over /dev/fuse and over
# io_uring, fuse-overlayfs 1.x (apt) and 2.0 (crates.io), on identical
# layers, interleaved in one run, median of REPEATS, ratios to the kernel.
# Then FUSE requests per operation (tracepoint fuse:fuse_request_send) and
# the cost per request above the kernel's time. Sizes are flags; --quick
# runs in a few minutes.
#
# A second image stacks LAYERS lowers (each adds files to one shared dir
# and has one file of its own, the bottom one the only holder of its
# files): deep_ls lists it, deep_read opens and reads names that only the
# bottom layer holds.
#
# A third image holds MILLION empty files in dirs of 1,000: find_million
# walks it cold, and the daemon's peak RSS after that walk is reported.
#
# Then the cold reads of lower files (seq_read, read_small: cat of every
# file of the tree, deep_read) with ovlfuse's lower_passthrough beside its
# default, on each transport.
#
# --rss skips the timed part: only each daemon's peak RSS after the
# `ls -lR` of FILES files and after the walk of the MILLION files.
#
#   bench/run.sh [--files N] [--dirs N] [--mib N] [--layers N] [--million N]
#                [--repeats N] [--quick] [--rss]
set -euo pipefail
shopt -s inherit_errexit
FILES=20000 DIRS=5000 MIB=256 LAYERS=500 MILLION=1000000 REPEATS=3 RSS_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES=$2; shift 2 ;;
    --dirs) DIRS=$2; shift 2 ;;
    --mib) MIB=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --million) MILLION=$2; shift 2 ;;
    --rss) RSS_ONLY=1; shift ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --quick) FILES=5000 DIRS=2000 MIB=64 LAYERS=500 REPEATS=3; shift ;;
    *) echo "bench: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
. scripts/lib/mount.sh
. scripts/lib/quiet.sh
OVL="$PWD/target/release/ovlfuse"
FOVL=$(command -v fuse-overlayfs || true)
FOVL2="$PWD/target/fuse-overlayfs-2.0/bin/fuse-overlayfs"
URING=/sys/module/fuse/parameters/enable_uring
TR=/sys/kernel/tracing
T=$(mktemp -d /tmp/ovlfuse-bench.XXXXXX)
# Kernel settings this script changes, put back on exit.
SAVED_URING=$(cat "$URING" 2>/dev/null || true)
SAVED_TRACE=$(cat "$TR/tracing_on" 2>/dev/null || true)
SAVED_BUF=$(cat "$TR/buffer_size_kb" 2>/dev/null || true)
DAEMON=0
cleanup() {
  for m in "$T"/*/m; do is_mounted "$m" && umount "$m" 2>/dev/null || true; done
  [ "$DAEMON" != 0 ] && kill "$DAEMON" 2>/dev/null || true
  [ -n "$SAVED_URING" ] && echo "$SAVED_URING" > "$URING"
  if [ -n "$SAVED_TRACE" ]; then
    echo 0 > "$TR/events/fuse/fuse_request_send/enable"
    echo "$SAVED_BUF" > "$TR/buffer_size_kb"
    echo "$SAVED_TRACE" > "$TR/tracing_on"
  fi
  page_reporting_restore
  rm -rf "$T"
}
trap cleanup EXIT
page_reporting_off

# One lower layer: FILES small files in dirs of 100, and a big file.
L="$T/lower"
mkdir -p "$L/tree"
for ((d = 0; d < (FILES + 99) / 100; d++)); do
  mkdir -p "$L/tree/d$d"
  for ((f = 0; f < 100 && d * 100 + f < FILES; f++)); do echo "$d $f" > "$L/tree/d$d/f$f"; done
done
dd if=/dev/urandom of="$L/big" bs=1M count="$MIB" status=none
# The deep image: layer 1 on top. Every layer adds 10 files to stack/, and
# the bottom one also holds stack/bottom/ with 100 files no other has.
S="$T/stack"
for ((i = 1; i <= LAYERS; i++)); do
  mkdir -p "$S/$i/stack"
  for ((f = 0; f < 10; f++)); do echo "$i $f" > "$S/$i/stack/l${i}_$f"; done
done
mkdir -p "$S/$LAYERS/stack/bottom"
for ((f = 0; f < 100; f++)); do echo "bottom $f" > "$S/$LAYERS/stack/bottom/b$f"; done
# Relative to $S: 500 absolute paths would not fit in mount(2)'s one page.
DEEP=$(seq -s: 1 "$LAYERS")
# The million image: empty files, made by one process.
MIL="$T/million"
python3 - "$MIL/mil" "$MILLION" << 'PY'
import os, sys
base, n = sys.argv[1], int(sys.argv[2])
for d in range((n + 999) // 1000):
    p = f"{base}/d{d}"
    os.makedirs(p)
    for f in range(min(1000, n - d * 1000)):
        os.close(os.open(f"{p}/f{f}", os.O_CREAT | os.O_WRONLY, 0o644))
PY
sync

now() { date +%s%N; }
# Mounts kind $1 in dir $2. A FUSE daemon runs in the foreground, started
# from a subshell that exits at once, so that it is no child of ours (a
# shell waits for its children in odd places) and holds none of our pipes;
# it is tracked by its pid (DAEMON).
mount_fs() {
  local k=$1 d=$2 w=${3:-} o cmd
  rm -rf "$d" && mkdir -p "$d/u" "$d/w" "$d/m"
  o="lowerdir=$L,upperdir=$d/u,workdir=$d/w"
  # The deep image, by paths relative to $S (daemons and mount run there).
  [[ $w == deep_* ]] && o="lowerdir=$DEEP,upperdir=$d/u,workdir=$d/w"
  [[ $w == find_million ]] && o="lowerdir=$MIL,upperdir=$d/u,workdir=$d/w"
  [ -n "$SAVED_URING" ] && { [[ $k == ovlfuse-uring* ]] && echo Y || echo N; } > "$URING"
  case $k in
    kernel) (cd "$S" && mount -t overlay overlay -o "$o" "$d/m"); return ;;
    ovlfuse | ovlfuse-uring) cmd=("$OVL" -f -o "$o") ;;
    ovlfuse-t1 | ovlfuse-uring-t1) cmd=("$OVL" -f -o "$o,threads=1") ;;
    ovlfuse-lp | ovlfuse-uring-lp) cmd=("$OVL" -f -o "$o,lower_passthrough") ;;
    fuse-overlayfs) cmd=("$FOVL" -f -o "$o") ;;
    fuse-overlayfs-2.0) cmd=("$FOVL2" -f -o "$o") ;;
  esac
  # cd first, alone: `cd && cmd &` would background a subshell, not cmd.
  (cd "$S"; "${cmd[@]}" "$d/m" < /dev/null > /dev/null 2>&1 & echo $! > "$d/pid")
  DAEMON=$(cat "$d/pid")
  wait_mounted "$d/m"
}
umount_fs() {
  umount "$1/m"
  wait_unmounted "$1/m"
  if [ "$DAEMON" != 0 ]; then
    # The daemon ends once its mount is gone.
    for _ in $(seq 100); do kill -0 "$DAEMON" 2> /dev/null || break; sleep 0.05; done
    DAEMON=0
  fi
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# The operations each workload does, for requests per operation.
declare -A OPS=([ls_lR_cold]=$FILES [stat_warm]=$FILES [mkdir]=$DIRS [find_delete]=$DIRS
  [create]=$FILES [copy_up]=1 [rm_lower]=1 [seq_read]=$MIB [seq_write_fsync]=$MIB
  [parallel_mix]=$FILES [deep_ls]=$((LAYERS * 10 + 100)) [deep_read]=100 [read_small]=$FILES
  [find_million]=$MILLION)

# The timed part of workload $2 on mount dir $1.
workload() {
  local m=$1/m
  case $2 in
    ls_lR_cold) ls -lR "$m/tree" > /dev/null ;;
    stat_warm) find "$m/tree" -type f -printf '%s\n' > /dev/null ;;
    mkdir) (cd "$m" && mkdir n && cd n && seq "$DIRS" | xargs mkdir) ;;
    find_delete) find "$m/n" -delete ;;
    # FILES new 4 KiB files, written by one process (as an untar would):
    # the shell's own printf, so no process per file.
    create) (cd "$m" && mkdir c && for ((i = 0; i < FILES; i++)); do printf '%4096s' '' > "c/f$i"; done) ;;
    deep_ls) ls -lR "$m/stack" > /dev/null ;;
    deep_read) cat "$m"/stack/bottom/* > /dev/null ;;
    find_million) find "$m/mil" > /dev/null ;;
    copy_up) echo x >> "$m/big" ;;
    rm_lower) rm "$m/big" ;;
    seq_read) cat "$m/big" > /dev/null ;;
    read_small) find "$m/tree" -type f -exec cat {} + > /dev/null ;;
    seq_write_fsync) dd if=/dev/zero of="$m/out" bs=1M count="$MIB" conv=fsync status=none ;;
    parallel_mix)
      # Four long-lived processes stat and read disjoint subtrees (tar).
      for p in 0 1 2 3; do
        (cd "$m/tree" && tar cf - $(for ((x = p; x < (FILES + 99) / 100; x += 4)); do echo "d$x"; done) | cat > /dev/null) &
      done
      wait ;;
  esac
}
# What comes before the timed part.
prepare() {
  case $2 in
    ls_lR_cold | copy_up | seq_read | read_small | parallel_mix | deep_ls | deep_read | find_million) drop ;;
    stat_warm) ls -lR "$1/m/tree" > /dev/null ;;
    find_delete) (cd "$1/m" && mkdir n && cd n && seq "$DIRS" | xargs mkdir) ;;
  esac
}

# Each workload runs on a fresh mount; prints nanoseconds.
run() { # kind workload
  local d="$T/$1" t0 t1
  mount_fs "$1" "$d" "$2"
  prepare "$d" "$2"
  t0=$(now); workload "$d" "$2"; t1=$(now)
  umount_fs "$d"
  echo $((t1 - t0))
}

# FUSE requests the timed part of a workload sends.
count_requests() { # kind workload
  local d="$T/$1" n
  mount_fs "$1" "$d" "$2"
  prepare "$d" "$2"
  echo > "$TR/trace"
  echo 1 > "$TR/events/fuse/fuse_request_send/enable"
  workload "$d" "$2"
  echo 0 > "$TR/events/fuse/fuse_request_send/enable"
  n=$(grep -c fuse_request_send "$TR/trace" || true)
  umount_fs "$d"
  echo "$n"
}

peak_rss_kb() { # kind workload
  local d="$T/$1" kb
  mount_fs "$1" "$d" "$2"
  prepare "$d" "$2"
  case $2 in
    ls_lR_cold) ls -lR "$d/m/tree" > /dev/null ;;
    *) workload "$d" "$2" ;;
  esac
  kb=$(awk '/VmHWM/ {print $2}' "/proc/$DAEMON/status")
  umount_fs "$d"
  echo "$kb"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

KINDS=(kernel ovlfuse)
[ -n "$SAVED_URING" ] && KINDS+=(ovlfuse-uring)
[ -n "$FOVL" ] && KINDS+=(fuse-overlayfs)
[ -x "$FOVL2" ] && KINDS+=(fuse-overlayfs-2.0)
WORKLOADS=(ls_lR_cold stat_warm mkdir find_delete create copy_up rm_lower seq_read seq_write_fsync
  parallel_mix deep_ls deep_read)
[ "$MILLION" -gt 0 ] && WORKLOADS+=(find_million)
# The timed part (skipped with --rss).
if [ "$RSS_ONLY" = 0 ]; then
  declare -A R M
  for w in "${WORKLOADS[@]}"; do
    for k in "${KINDS[@]}"; do R[$k,$w]=""; done
    for ((i = 0; i < REPEATS; i++)); do
      for k in "${KINDS[@]}"; do R[$k,$w]+="$(run "$k" "$w") "; done
    done
    for k in "${KINDS[@]}"; do M[$k,$w]=$(tr ' ' '\n' <<< "${R[$k,$w]}" | grep . | median); done
  done

  echo "files=$FILES dirs=$DIRS big=${MIB}MiB layers=$LAYERS repeats=$REPEATS cores=$(nproc) kernel=$(uname -r)"
  [ -n "$SAVED_PAGE_REPORTING" ] && echo "free page reporting stopped for the run (page_reporting_order was $SAVED_PAGE_REPORTING)"
  echo "fuse-overlayfs: $($FOVL --version 2>&1 | head -1)${FOVL2:+; $([ -x "$FOVL2" ] && "$FOVL2" --version 2>&1 | head -1)}"
  printf '%-16s' workload
  for k in "${KINDS[@]}"; do printf ' %19s' "$k ms"; done
  echo
  for w in "${WORKLOADS[@]}"; do
    printf '%-16s' "$w"
    for k in "${KINDS[@]}"; do printf ' %19.1f' "$(bc -l <<< "${M[$k,$w]} / 1000000")"; done
    echo
  done
  echo
  echo "ratio to the kernel (lower is better)"
  printf '%-16s' workload
  for k in "${KINDS[@]:1}"; do printf ' %19s' "$k"; done
  echo
  for w in "${WORKLOADS[@]}"; do
    printf '%-16s' "$w"
    for k in "${KINDS[@]:1}"; do printf ' %19.2f' "$(bc -l <<< "${M[$k,$w]} / ${M[kernel,$w]}")"; done
    echo
  done

  if [ -n "$SAVED_TRACE" ]; then
    echo 65536 > "$TR/buffer_size_kb"
    echo 1 > "$TR/tracing_on"
    echo
    echo "FUSE requests per operation, and microseconds per request above the kernel's time"
    printf '%-16s' workload
    for k in "${KINDS[@]:1}"; do printf ' %19s' "$k"; done
    echo
    for w in "${WORKLOADS[@]}"; do
      printf '%-16s' "$w"
      for k in "${KINDS[@]:1}"; do
        n=$(count_requests "$k" "$w")
        if [ "$n" -gt 0 ]; then
          printf ' %8.2f %7.1fus' "$(bc -l <<< "$n / ${OPS[$w]}")" \
            "$(bc -l <<< "(${M[$k,$w]} - ${M[kernel,$w]}) / $n / 1000")"
        else
          printf ' %19s' "-"
        fi
      done
      echo
    done
fi

# Threads: the parallel mix with the default threads and with one, on
# each transport.
echo
for k in ovlfuse ovlfuse-uring; do
  [[ " ${KINDS[*]} " == *" $k "* ]] || continue
  TN=() T1=()
  for ((i = 0; i < REPEATS; i++)); do
    TN+=("$(run "$k" parallel_mix)")
    T1+=("$(run "$k-t1" parallel_mix)")
  done
  mn=$(printf '%s\n' "${TN[@]}" | median); m1=$(printf '%s\n' "${T1[@]}" | median)
  printf 'parallel mix, %s: threads=default %.1f ms, threads=1 %.1f ms, speed-up %.2fx\n' \
    "$k" "$(bc -l <<< "$mn / 1000000")" "$(bc -l <<< "$m1 / 1000000")" "$(bc -l <<< "$m1 / $mn")"
done
# Cold reads of lower files with lower_passthrough (-lp) beside the
# default, on each transport: ratios to the kernel.
LP=(kernel)
for k in ovlfuse ovlfuse-uring; do
  [[ " ${KINDS[*]} " == *" $k "* ]] && LP+=("$k" "$k-lp")
done
echo
echo "cold reads of lower files, lower_passthrough (-lp) against the default: ratio to the kernel"
printf '%-16s' workload
for k in "${LP[@]:1}"; do printf ' %19s' "$k"; done
echo
for w in seq_read read_small deep_read; do
  # Interleaved, as the main table: the machine's noise comes in spells.
  # At least 5 repeats: one cold read of the quick mode's 64 MiB moves by
  # half between runs.
  declare -A LPR=() LPM=()
  for ((i = 0; i < (REPEATS > 5 ? REPEATS : 5); i++)); do
    for k in "${LP[@]}"; do LPR[$k]+="$(run "$k" "$w") "; done
  done
  for k in "${LP[@]}"; do LPM[$k]=$(tr ' ' '\n' <<< "${LPR[$k]}" | grep . | median); done
  printf '%-16s' "$w"
  for k in "${LP[@]:1}"; do printf ' %19.2f' "$(bc -l <<< "${LPM[$k]} / ${LPM[kernel]}")"; done
  echo
done
fi
for k in "${KINDS[@]:1}"; do
  printf 'daemon peak RSS after ls -lR of %d files: %-19s %d kB\n' "$FILES" "$k" \
    "$(peak_rss_kb "$k" ls_lR_cold)"
done
if [ "$MILLION" -gt 0 ]; then
  for k in "${KINDS[@]:1}"; do
    printf 'daemon peak RSS after find of %d files: %-19s %d kB\n' "$MILLION" "$k" \
      "$(peak_rss_kb "$k" find_million)"
  done
fi
