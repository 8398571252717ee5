//! The subcommands beside the mount: `ovlfuse check`, `ovlfuse diff` and
//! `ovlfuse stats`. Each parses its own arguments; the work is in the
//! library (check.rs, diff.rs, stats.rs).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use ovlfuse::config::Config;

const CHECK_HELP: &str = "\
Checks an upper layer and its workdir against the lowers, offline (the
overlay must not be mounted). One line per finding: the path, the problem,
and the fix. Checked: orphan whiteouts, redirects (malformed, leading
nowhere, looping, two to one dir), origins that no longer resolve, W/index
entries (no upper name left, nlink), metacopy and nlink xattrs, leftovers
in W/work, missing impure marks, and .wh..wh..opq files beside an opaque
xattr. --repair applies the fixes that keep the merged view as it is.
Exit status, as e2fsck's: 0 clean, 1 all found problems repaired,
4 problems left, 8 usage or operational error.";

#[derive(Parser, Debug)]
#[command(name = "ovlfuse check", about = "Check (and repair) an overlay's upper layer offline", after_help = CHECK_HELP)]
struct CheckCli {
    /// lowerdir=..,upperdir=..,workdir=.. and the mount's other options
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append, required = true)]
    options: Vec<String>,
    /// Apply the fixes that are safe
    #[arg(long)]
    repair: bool,
}

/// Parses `args` (the subcommand first) or exits with `usage` and a line.
fn parse<T: Parser>(args: &[OsString], usage: i32) -> T {
    T::try_parse_from(args).unwrap_or_else(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = e.print();
            std::process::exit(0);
        }
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("bad arguments");
        let first = first.strip_prefix("error: ").unwrap_or(first);
        eprintln!(
            "ovlfuse: {first}; see ovlfuse {} --help",
            args[0].to_string_lossy()
        );
        std::process::exit(usage)
    })
}

/// The options as a validated config of layers; exits with `usage` on
/// a bad one.
fn layers(options: &[String], usage: i32, need_work: bool) -> Config {
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("ovlfuse: {e}");
        std::process::exit(usage)
    };
    let mut cfg = Config::default();
    for o in options {
        cfg.apply_options(o).unwrap_or_else(|e| fail(&e));
    }
    let cwd = std::env::current_dir().unwrap_or_else(|e| fail(&e));
    cfg.validate_offline(&cwd, need_work)
        .unwrap_or_else(|e| fail(&e));
    cfg
}

/// `ovlfuse check`; returns the exit status.
pub fn check(args: &[OsString]) -> i32 {
    use ovlfuse::check::{self, EXIT_USAGE};
    let cli: CheckCli = parse(args, EXIT_USAGE);
    let cfg = layers(&cli.options, EXIT_USAGE, true);
    if cfg.upper.is_none() {
        eprintln!("ovlfuse: check needs upperdir= and workdir=: it checks an upper layer");
        return EXIT_USAGE;
    }
    match check::run(&cfg, cli.repair) {
        Ok(findings) => {
            for f in &findings {
                println!("{f}");
            }
            check::exit_code(&findings)
        }
        Err(e) => {
            eprintln!("ovlfuse: {e}");
            EXIT_USAGE
        }
    }
}

const STATS_HELP: &str = "\
Prints the live statistics of a running ovlfuse mount: requests per
operation, errors per errno, latency percentiles, copy-ups, whiteouts and
redirects written, nodes and open files held, the FUSE transport, RSS and
fds. Only the mount's owner (and root) may read them. A running daemon
also logs them on SIGUSR1.";

#[derive(Parser, Debug)]
#[command(name = "ovlfuse stats", about = "Live statistics of a running mount", after_help = STATS_HELP)]
struct StatsCli {
    /// text (for a person) or prometheus (for a scraper)
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "prometheus"])]
    format: String,
    /// The mountpoint of a running ovlfuse
    mountpoint: PathBuf,
}

/// `ovlfuse stats`; returns the exit status.
pub fn stats(args: &[OsString]) -> i32 {
    let cli: StatsCli = parse(args, 1);
    let name = match cli.format.as_str() {
        "prometheus" => ovlfuse::stats::XATTR_PROMETHEUS,
        _ => ovlfuse::stats::XATTR_TEXT,
    };
    let value = ovlfuse::sys::cstr(cli.mountpoint.as_os_str())
        .and_then(|c| ovlfuse::sys::open_path(&c, libc::O_RDONLY | libc::O_DIRECTORY))
        .and_then(|fd| ovlfuse::sys::xattr::getxattr(std::os::fd::AsFd::as_fd(&fd), c"", name));
    match value {
        Ok(v) => {
            print!("{}", String::from_utf8_lossy(&v));
            0
        }
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => {
                    "is not an ovlfuse mount (or one mounted with noxattrs)".to_string()
                }
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "is not yours: only the mount's owner and root may read its statistics".into()
                }
                _ => e.to_string(),
            };
            eprintln!("ovlfuse: {}: {why}", cli.mountpoint.display());
            1
        }
    }
}

const DIFF_HELP: &str = "\
Lists the changes an upper layer makes to its lowers, as docker diff does:
A added, C changed, D deleted, one path a line. It reads the upper's own
entries and markers and looks names up in the lowers, without walking
them. With --tar FILE (- for stdout) it also writes the changes as an OCI
layer tarball: whiteouts as .wh.NAME, replaced dirs with .wh..wh..opq, a
renamed dir as a delete of its old path and its full content at the new
one, hard links as links, xattrs as PAX records, metacopy files with
their data. The overlay must not be mounted.";

#[derive(Parser, Debug)]
#[command(name = "ovlfuse diff", about = "The changes an upper layer makes, as a list or an OCI layer", after_help = DIFF_HELP)]
struct DiffCli {
    /// lowerdir=..,upperdir=..[,workdir=..] and the mount's other options
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append, required = true)]
    options: Vec<String>,
    /// Also write the changes as an OCI layer tarball (- for stdout)
    #[arg(long, value_name = "FILE")]
    tar: Option<PathBuf>,
}

/// `ovlfuse diff`; returns the exit status.
pub fn diff(args: &[OsString]) -> i32 {
    let cli: DiffCli = parse(args, 1);
    let cfg = layers(&cli.options, 1, false);
    if cfg.upper.is_none() {
        eprintln!("ovlfuse: diff needs upperdir=: it lists what an upper layer changes");
        return 1;
    }
    let o = match ovlfuse::offline::Offline::open(&cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ovlfuse: {e}");
            return 1;
        }
    };
    let to_stdout = cli.tar.as_deref() == Some(std::path::Path::new("-"));
    let tar: Option<Box<dyn std::io::Write>> = match &cli.tar {
        None => None,
        Some(_) if to_stdout => Some(Box::new(std::io::stdout().lock())),
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some(Box::new(std::io::BufWriter::new(f))),
            Err(e) => {
                eprintln!("ovlfuse: --tar {}: {e}", p.display());
                return 1;
            }
        },
    };
    match ovlfuse::diff::run(&o, tar) {
        Ok(changes) => {
            // With the tar on stdout, the list goes to stderr.
            for c in &changes {
                if to_stdout {
                    eprintln!("{c}");
                } else {
                    println!("{c}");
                }
            }
            0
        }
        Err(e) => {
            eprintln!("ovlfuse: diff: {e}");
            1
        }
    }
}
