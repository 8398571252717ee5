#!/usr/bin/env bash
# `ovlfuse diff` against a naive diff (what containers/storage and docker
# commit do without an overlay-aware differ: walk and stat the whole merged
# tree and the whole parent, and compare): FILES lower files, CHANGED of
# them changed through kernel overlayfs. Cold caches for each; median of
# REPEATS; also `ovlfuse diff --tar`.
#
#   bench/diff.sh [--files N] [--changed N] [--repeats N]
set -euo pipefail
FILES=100000 CHANGED=100 REPEATS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES=$2; shift 2 ;;
    --changed) CHANGED=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    *) echo "diff bench: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
. scripts/lib/quiet.sh
BIN="$PWD/target/release/ovlfuse"
T=$(mktemp -d /tmp/ovlfuse-diffbench.XXXXXX)
cleanup() {
  mountpoint -q "$T/m" && umount "$T/m"
  page_reporting_restore
  rm -rf "$T"
}
trap cleanup EXIT
page_reporting_off
mkdir -p "$T/l" "$T/u" "$T/w" "$T/m"
for ((d = 0; d < FILES / 100; d++)); do
  mkdir "$T/l/d$d"
  for ((f = 0; f < 100; f++)); do echo "$d $f" > "$T/l/d$d/f$f"; done
done
mount -t overlay overlay -o "lowerdir=$T/l,upperdir=$T/u,workdir=$T/w" "$T/m"
for ((i = 0; i < CHANGED; i++)); do echo changed >> "$T/m/d$(( i * 7 % (FILES / 100) ))/f$(( i % 100 ))"; done
umount "$T/m"
OPTS="lowerdir=$T/l,upperdir=$T/u"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
naive() {
  mount -t overlay overlay -o "lowerdir=$T/l,upperdir=$T/u,workdir=$T/w" "$T/m"
  (cd "$T/m" && find . -printf '%p %y %s %T@ %m %U %G\n' | sort) > "$T/a"
  (cd "$T/l" && find . -printf '%p %y %s %T@ %m %U %G\n' | sort) > "$T/b"
  comm -3 "$T/a" "$T/b" | wc -l > "$T/n"
  umount "$T/m"
}
declare -A R
for ((r = 0; r < REPEATS; r++)); do
  for k in ovlfuse-diff ovlfuse-diff-tar naive-walk; do
    drop; t0=$(now)
    case $k in
      ovlfuse-diff) "$BIN" diff -o "$OPTS" > "$T/list" ;;
      ovlfuse-diff-tar) "$BIN" diff --tar "$T/layer.tar" -o "$OPTS" > /dev/null ;;
      naive-walk) naive ;;
    esac
    R[$k]+="$(( $(now) - t0 )) "
  done
done
echo "files=$FILES changed=$CHANGED repeats=$REPEATS cores=$(nproc) kernel=$(uname -r)"
echo "ovlfuse diff lists $(wc -l < "$T/list") changes; the naive walk found $(cat "$T/n") differing lines"
base=$(tr ' ' '\n' <<< "${R[naive-walk]}" | grep . | median)
for k in ovlfuse-diff ovlfuse-diff-tar naive-walk; do
  m=$(tr ' ' '\n' <<< "${R[$k]}" | grep . | median)
  printf '%-18s %10.1f ms  %8.3f of the naive walk\n' "$k" "$(bc -l <<< "$m / 1000000")" "$(bc -l <<< "$m / $base")"
done
