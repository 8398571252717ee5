# Helpers shared by the scripts (sourced): waiting for a mount to appear
# or go, by its line in /proc/mounts.

# is_mounted DIR
is_mounted() { grep -q " $1 " /proc/mounts; }

# wait_mounted DIR [TENTHS]: until DIR is a mount point (default 10 s).
wait_mounted() {
  local i
  for ((i = 0; i < ${2:-100}; i++)); do is_mounted "$1" && return 0; sleep 0.1; done
  echo "$1: not mounted after $((${2:-100} / 10)) s" >&2
  return 1
}

# wait_unmounted DIR [TENTHS]: until DIR is no mount point (default 10 s).
wait_unmounted() {
  local i
  for ((i = 0; i < ${2:-100}; i++)); do is_mounted "$1" || return 0; sleep 0.1; done
  echo "$1: still mounted after $((${2:-100} / 10)) s" >&2
  return 1
}
