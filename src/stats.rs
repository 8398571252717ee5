//! Live counters of a running mount, for `ovlfuse stats MOUNTPOINT` and
//! SIGUSR1: requests per opcode, errors per errno, a latency histogram,
//! copy-ups, whiteouts and redirects written. Relaxed atomic adds only, so
//! the request path never waits on them. What is not a counter (nodes,
//! open files, transport, RSS, fds) is read when a report is made.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The virtual xattrs of a mount's root that hold the report (read by
/// `ovlfuse stats`; never listed, never stored).
pub const XATTR_TEXT: &CStr = c"user.ovlfuse.stats";
pub const XATTR_PROMETHEUS: &CStr = c"user.ovlfuse.stats.prometheus";

/// Opcodes are below 64; CUSE_INIT and io_uring's own are not counted.
const OPS: usize = 64;
/// errnos are below 134 on Linux.
const ERRNOS: usize = 134;
/// Latency buckets: bucket b counts requests answered in under 2^b µs
/// (and at least 2^(b-1) µs, for b > 0).
const BUCKETS: usize = 32;

/// The per-request counters of one shard. Threads count in their own
/// shard, so that no two answer threads bounce one cache line; a report
/// adds the shards up.
#[repr(align(128))]
struct Shard {
    requests: [AtomicU64; OPS],
    errors: [AtomicU64; ERRNOS],
    latency: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
}

// Only ever copied into STATS: each copy is a shard of its own.
#[allow(clippy::declare_interior_mutable_const)]
const SHARD: Shard = Shard {
    requests: [const { AtomicU64::new(0) }; OPS],
    errors: [const { AtomicU64::new(0) }; ERRNOS],
    latency: [const { AtomicU64::new(0) }; BUCKETS],
    latency_sum_us: AtomicU64::new(0),
};

const SHARDS: usize = 16;

/// This thread's shard, handed out round robin at its first request.
fn my_shard() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static MINE: Cell<usize> = const { Cell::new(usize::MAX) });
    MINE.with(|m| {
        if m.get() == usize::MAX {
            m.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
        }
        m.get()
    })
}

pub struct Stats {
    shards: [Shard; SHARDS],
    pub copy_ups: AtomicU64,
    pub copy_up_bytes: AtomicU64,
    pub copy_up_ns: AtomicU64,
    pub whiteouts: AtomicU64,
    pub redirects: AtomicU64,
    pub passthrough_opens: AtomicU64,
    /// Inodes whose names moved on to new ones (lower_passthrough).
    pub retired: AtomicU64,
}

/// The process's counters (one mount per process).
pub static STATS: Stats = Stats {
    shards: [SHARD; SHARDS],
    copy_ups: AtomicU64::new(0),
    copy_up_bytes: AtomicU64::new(0),
    copy_up_ns: AtomicU64::new(0),
    whiteouts: AtomicU64::new(0),
    redirects: AtomicU64::new(0),
    passthrough_opens: AtomicU64::new(0),
    retired: AtomicU64::new(0),
};

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

impl Stats {
    /// A request `opcode` answered with `error` (0 or -errno) after it
    /// arrived at `start`.
    pub fn answered(&self, opcode: u32, error: i32, start: Instant) {
        let s = &self.shards[my_shard()];
        if let Some(c) = s.requests.get(opcode as usize) {
            c.fetch_add(1, Relaxed);
        }
        if error < 0 {
            if let Some(c) = s.errors.get(error.unsigned_abs() as usize) {
                c.fetch_add(1, Relaxed);
            }
        }
        let us = start.elapsed().as_micros() as u64;
        let b = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        s.latency[b].fetch_add(1, Relaxed);
        s.latency_sum_us.fetch_add(us, Relaxed);
    }

    /// One per-request counter summed over the shards.
    fn sum(&self, pick: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| pick(s).load(Relaxed)).sum()
    }

    fn requests(&self) -> Vec<u64> {
        (0..OPS).map(|i| self.sum(|s| &s.requests[i])).collect()
    }

    fn errors(&self) -> Vec<u64> {
        (0..ERRNOS).map(|i| self.sum(|s| &s.errors[i])).collect()
    }

    fn latency(&self) -> Vec<u64> {
        (0..BUCKETS).map(|i| self.sum(|s| &s.latency[i])).collect()
    }

    /// A copy-up of `bytes` of data that took `start.elapsed()`.
    pub fn copied_up(&self, bytes: u64, start: Instant) {
        add(&self.copy_ups, 1);
        add(&self.copy_up_bytes, bytes);
        add(&self.copy_up_ns, start.elapsed().as_nanos() as u64);
    }

    /// The latency (µs, the bucket's upper bound) under which a share
    /// `q` of the requests were answered.
    fn percentile(&self, q: f64) -> Option<u64> {
        let counts = self.latency();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (b, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(1u64 << b);
            }
        }
        None
    }
}

/// What a report shows beside the counters.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub nodes: usize,
    pub open_files: usize,
    pub transport: String,
    pub passthrough: bool,
}

/// RSS (kB) and open fds of this process.
fn process_gauges() -> (u64, usize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, fds)
}

/// Name of a FUSE opcode, for reports.
pub fn op_name(op: usize) -> &'static str {
    const NAMES: [&str; 54] = [
        "",
        "lookup",
        "forget",
        "getattr",
        "setattr",
        "readlink",
        "symlink",
        "",
        "mknod",
        "mkdir",
        "unlink",
        "rmdir",
        "rename",
        "link",
        "open",
        "read",
        "write",
        "statfs",
        "release",
        "",
        "fsync",
        "setxattr",
        "getxattr",
        "listxattr",
        "removexattr",
        "flush",
        "init",
        "opendir",
        "readdir",
        "releasedir",
        "fsyncdir",
        "getlk",
        "setlk",
        "setlkw",
        "access",
        "create",
        "interrupt",
        "bmap",
        "destroy",
        "ioctl",
        "poll",
        "notify_reply",
        "batch_forget",
        "fallocate",
        "readdirplus",
        "rename2",
        "lseek",
        "copy_file_range",
        "setupmapping",
        "removemapping",
        "syncfs",
        "tmpfile",
        "statx",
        "copy_file_range_64",
    ];
    NAMES
        .get(op)
        .copied()
        .filter(|n| !n.is_empty())
        .unwrap_or("other")
}

/// The symbolic name of an errno, for reports ("E123" for the rare ones).
pub fn errno_name(e: usize) -> String {
    const NAMES: &[(usize, &str)] = &[
        (1, "EPERM"),
        (2, "ENOENT"),
        (4, "EINTR"),
        (5, "EIO"),
        (9, "EBADF"),
        (11, "EAGAIN"),
        (12, "ENOMEM"),
        (13, "EACCES"),
        (16, "EBUSY"),
        (17, "EEXIST"),
        (18, "EXDEV"),
        (20, "ENOTDIR"),
        (21, "EISDIR"),
        (22, "EINVAL"),
        (27, "EFBIG"),
        (28, "ENOSPC"),
        (30, "EROFS"),
        (31, "EMLINK"),
        (34, "ERANGE"),
        (36, "ENAMETOOLONG"),
        (38, "ENOSYS"),
        (39, "ENOTEMPTY"),
        (40, "ELOOP"),
        (61, "ENODATA"),
        (75, "EOVERFLOW"),
        (95, "EOPNOTSUPP"),
        (116, "ESTALE"),
        (122, "EDQUOT"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == e)
        .map_or_else(|| format!("E{e}"), |(_, s)| s.to_string())
}

/// The report for a person: one `name value` per line.
pub fn render_text(s: &Stats, g: &Gauges) -> String {
    let mut o = String::new();
    let (rss, fds) = process_gauges();
    let _ = writeln!(o, "transport {}", g.transport);
    let _ = writeln!(
        o,
        "passthrough {}",
        if g.passthrough { "on" } else { "off" }
    );
    let _ = writeln!(o, "nodes {}", g.nodes);
    let _ = writeln!(o, "open_files {}", g.open_files);
    let _ = writeln!(o, "rss_kb {rss}");
    let _ = writeln!(o, "fds {fds}");
    let load = |c: &AtomicU64| c.load(Relaxed);
    let _ = writeln!(o, "copy_ups {}", load(&s.copy_ups));
    let _ = writeln!(o, "copy_up_bytes {}", load(&s.copy_up_bytes));
    let _ = writeln!(o, "copy_up_ms {:.3}", load(&s.copy_up_ns) as f64 / 1e6);
    let _ = writeln!(o, "whiteouts {}", load(&s.whiteouts));
    let _ = writeln!(o, "redirects {}", load(&s.redirects));
    let _ = writeln!(o, "passthrough_opens {}", load(&s.passthrough_opens));
    let _ = writeln!(o, "retired_inodes {}", load(&s.retired));
    for (q, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        if let Some(us) = s.percentile(q) {
            let _ = writeln!(o, "latency_{name}_us {us}");
        }
    }
    for (op, n) in s.requests().into_iter().enumerate().filter(|x| x.1 > 0) {
        let _ = writeln!(o, "requests.{} {n}", op_name(op));
    }
    for (e, n) in s.errors().into_iter().enumerate().filter(|x| x.1 > 0) {
        let _ = writeln!(o, "errors.{} {n}", errno_name(e));
    }
    o
}

/// One Prometheus metric: name, type, help, and its (labels, value) lines.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(String, String)>,
);

/// The single-valued metrics of a report.
#[rustfmt::skip]
fn plain_metrics(s: &Stats, g: &Gauges) -> Vec<Metric> {
    let (rss, fds) = process_gauges();
    let load = |c: &AtomicU64| c.load(Relaxed).to_string();
    let one = |v: String| vec![(String::new(), v)];
    let transport = vec![(format!("{{transport=\"{}\"}}", g.transport), "1".into())];
    let copy_up_s = (s.copy_up_ns.load(Relaxed) as f64 / 1e9).to_string();
    vec![
        ("up", "gauge", "The daemon answers.", one("1".into())),
        ("nodes", "gauge", "Nodes the daemon holds.", one(g.nodes.to_string())),
        ("open_files", "gauge", "Open file handles.", one(g.open_files.to_string())),
        ("rss_bytes", "gauge", "Resident memory of the daemon.", one((rss * 1024).to_string())),
        ("open_fds", "gauge", "File descriptors the daemon holds.", one(fds.to_string())),
        ("transport_info", "gauge", "The FUSE transport in use.", transport),
        ("passthrough_enabled", "gauge", "Whether FUSE passthrough is on.", one((g.passthrough as u8).to_string())),
        ("copy_ups_total", "counter", "Objects copied up.", one(load(&s.copy_ups))),
        ("copy_up_bytes_total", "counter", "Data bytes copied up.", one(load(&s.copy_up_bytes))),
        ("copy_up_seconds_total", "counter", "Time spent in copy-up.", one(copy_up_s)),
        ("whiteouts_total", "counter", "Whiteouts written.", one(load(&s.whiteouts))),
        ("redirects_total", "counter", "Redirects written.", one(load(&s.redirects))),
        ("passthrough_opens_total", "counter", "Opens served by passthrough.", one(load(&s.passthrough_opens))),
        ("retired_inodes_total", "counter", "Inodes whose names went on as new ones under passthrough readers of the lower file.", one(load(&s.retired))),
    ]
}

/// The latency histogram's lines: cumulative buckets, sum and count.
fn latency_lines(s: &Stats) -> Vec<(String, String)> {
    let mut cum = 0;
    let mut lines = Vec::new();
    for (b, n) in s.latency().into_iter().enumerate() {
        cum += n;
        let le = (1u64 << b) as f64 / 1e6;
        lines.push((format!("_bucket{{le=\"{le}\"}}"), cum.to_string()));
    }
    lines.push(("_bucket{le=\"+Inf\"}".into(), cum.to_string()));
    let sum = s.sum(|x| &x.latency_sum_us) as f64 / 1e6;
    lines.push(("_sum".into(), sum.to_string()));
    lines.push(("_count".into(), cum.to_string()));
    lines
}

/// The counters of `v` that are not zero, labelled `label` by `name`.
fn labelled(v: Vec<u64>, label: &str, name: &dyn Fn(usize) -> String) -> Vec<(String, String)> {
    v.into_iter()
        .enumerate()
        .filter(|(_, n)| *n > 0)
        .map(|(i, n)| (format!("{{{label}=\"{}\"}}", name(i)), n.to_string()))
        .collect()
}

/// The report for a scraper: Prometheus text exposition format.
pub fn render_prometheus(s: &Stats, g: &Gauges) -> String {
    let mut metrics = plain_metrics(s, g);
    let reqs = labelled(s.requests(), "op", &|i| op_name(i).to_string());
    metrics.push((
        "requests_total",
        "counter",
        "Requests answered, by operation.",
        reqs,
    ));
    let errs = labelled(s.errors(), "errno", &errno_name);
    metrics.push((
        "errors_total",
        "counter",
        "Requests answered with an error, by errno.",
        errs,
    ));
    let lat = latency_lines(s);
    metrics.push((
        "request_latency_seconds",
        "histogram",
        "Time from request to answer.",
        lat,
    ));
    let mut o = String::new();
    for (name, kind, help, lines) in metrics {
        let _ = writeln!(
            o,
            "# HELP ovlfuse_{name} {help}\n# TYPE ovlfuse_{name} {kind}"
        );
        for (labels, v) in lines {
            let _ = writeln!(o, "ovlfuse_{name}{labels} {v}");
        }
    }
    o
}
