# Sourced by the benches. On a VM whose balloon reports free pages to the
# host (virtio-balloon free page reporting), the host takes back what the
# guest frees, and the guest's next touch of such a page costs a host
# fault: some 7 us per 4 KiB here. Cold-cache runs free their page cache
# and allocate it again, so a run's time would hang on which pages it
# happens to get (a 64 MiB cold read: 42 ms or 150 ms, same I/O). The
# benches stop the reporting while they run and put it back after.
PAGE_REPORTING=/sys/module/page_reporting/parameters/page_reporting_order
SAVED_PAGE_REPORTING=""
page_reporting_off() {
  [ -w "$PAGE_REPORTING" ] || return 0
  SAVED_PAGE_REPORTING=$(cat "$PAGE_REPORTING")
  # An order above the largest free block stops it; kernels that cap the
  # value at MAX_PAGE_ORDER keep reporting only 4 MiB blocks.
  { echo 11 > "$PAGE_REPORTING"; } 2> /dev/null || echo 10 > "$PAGE_REPORTING" || true
}
page_reporting_restore() {
  [ -n "$SAVED_PAGE_REPORTING" ] && echo "$SAVED_PAGE_REPORTING" > "$PAGE_REPORTING"
  SAVED_PAGE_REPORTING=""
}
