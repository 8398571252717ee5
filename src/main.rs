//! The `ovlfuse` command: parse options, validate layers, mount, then serve
//! in the background (or the foreground with -f) until unmounted.

use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::Arc;

use clap::Parser;
use ovlfuse::wire::{Acl, Session};

use ovlfuse::config::Config;
use ovlfuse::fuse::OvlFuse;
use ovlfuse::mount::{self, MountArgs};
use ovlfuse::{logger, sys, OvlFs};

const LONG_HELP: &str = "\
Mount options (-o, comma separated, several -o are merged):
  lowerdir=A:B:C      lower layers, leftmost on top (\\: escapes a colon; A::D makes D data-only)
  lowerdir+=A, datadir+=D   append one lower / data-only lower
  upperdir=U,workdir=W      writable layer and its work dir (same filesystem); without them: read-only
  redirect_dir=on|follow|nofollow|off   index=on|off   metacopy=on|off   xino=on|off|auto
  userxattr           use user.overlay.* instead of trusted.overlay.* xattrs
  volatile, fsync=0   skip fsync on copy-up and user fsync
  uidmapping=ID:SHOWN:N[:...], gidmapping=...   (ids as the layers hold them, shown mapped)
  squash_to_root, squash_to_uid=N, squash_to_gid=N   noacl (POSIX ACLs not enforced)
  xattr_permissions=0|1|2   static_nlink   noxattrs=1   timeout=SECS   threads=N
  lower_passthrough   reads of lower files by FUSE passthrough (an fd held across a copy-up keeps the lower copy)
  ro, rw, allow_other, allow_root, default_permissions, suid, nosuid, dev, nodev, exec, noexec,
  relatime, noatime, strictatime, nodiratime   when reads move atime (as the kernel overlay)
MOUNTPOINT may be /dev/fd/N (a /dev/fuse connection a helper mounted).
Unmount with: fusermount3 -u MOUNTPOINT

Subcommands (each has --help):
  ovlfuse check [--repair] -o lowerdir=..,upperdir=..,workdir=..   check an upper offline
  ovlfuse diff [--tar FILE] -o lowerdir=..,upperdir=..              an upper's changes, or an OCI layer
  ovlfuse stats [--format text|prometheus] MOUNTPOINT               live statistics";

#[derive(Parser, Debug)]
#[command(
    name = "ovlfuse",
    about = "FUSE overlay filesystem with Linux kernel overlayfs semantics",
    after_help = LONG_HELP,
    disable_version_flag = true
)]
struct Cli {
    /// Mount options; may be given several times
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
    /// Log every request (implies -f)
    #[arg(short = 'd')]
    debug: bool,
    /// Print the version and exit
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// mount(8) helper flags (no mtab, sloppy, verbose): ignored
    #[arg(short = 'n', hide = true)]
    _no_mtab: bool,
    #[arg(short = 's', hide = true)]
    _sloppy: bool,
    #[arg(short = 'v', hide = true)]
    _verbose: bool,
    /// [SOURCE] MOUNTPOINT (SOURCE, as mount.fuse3 passes it, is ignored)
    #[arg(value_name = "ARGS", num_args = 0..=2)]
    args: Vec<PathBuf>,
}

/// clap's errors in ovlfuse's form: one line naming the problem, exit 1;
/// --help prints the full usage (and exits 0).
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        exit(0);
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    die(format!("{first}; see ovlfuse --help"))
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("ovlfuse: {msg}");
    exit(1)
}

mod tools;

/// The subcommands beside the mount (tools.rs), if argv names one.
fn run_tool() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let tool: Option<fn(&[std::ffi::OsString]) -> i32> = match args.get(1).and_then(|a| a.to_str())
    {
        Some("check") => Some(tools::check),
        Some("stats") => Some(tools::stats),
        Some("diff") => Some(tools::diff),
        _ => None,
    };
    if let Some(run) = tool {
        exit(run(&args[1..]));
    }
}

fn main() {
    run_tool();
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    // Blocked from the start: a SIGTERM that comes as soon as the mount
    // appears must unmount it, not kill the process and leave it behind.
    let sigs = sys::block_term_signals();
    if cli.version {
        print_version();
        return;
    }
    let mountpoint = match cli.args.last() {
        Some(m) => m.clone(),
        None => die("no mountpoint given: ovlfuse -o lowerdir=A,upperdir=U,workdir=W MOUNTPOINT"),
    };
    let source = (cli.args.len() == 2).then(|| cli.args[0].to_string_lossy().into_owned());
    let prog = program_name();
    let fd_mount = ovlfuse::config::fd_mountpoint(&mountpoint);
    let mut cfg = Config::default();
    for o in &cli.options {
        if let Err(e) = cfg.apply_options(o) {
            die(e);
        }
    }
    for w in cfg.warnings.drain(..) {
        eprintln!("{w}");
    }
    let level = if cli.debug { "debug" } else { "info" };
    logger::init(level, &prog);
    let cwd = std::env::current_dir()
        .unwrap_or_else(|e| die(format!("cannot read the current directory: {e}")));
    let mnt = cfg.validate(&cwd, &mountpoint).unwrap_or_else(|e| die(e));
    sys::umask(0);
    let (margs, acl) = mount_args(&cfg, source, prog);
    let threads = cfg.threads;
    let fs = Arc::new(OvlFs::new(cfg).unwrap_or_else(|e| die(e)));
    // The mount is made and the FUSE handshake done before we detach, so the
    // starting process returns only once the mount is live. ovlfuse mounts
    // and unmounts itself, by the mount's identity rather than its path.
    let made = match fd_mount {
        Some(n) => mount::adopt(n),
        None => mount::mount(&mnt, &margs),
    };
    let (dev, fmount) =
        made.unwrap_or_else(|e| die(format!("cannot mount on {}: {e}", mnt.display())));
    let handler = Arc::new(OvlFuse::new(fs.clone()));
    let session = Session::new(dev, &*handler, acl, threads);
    let session = session.unwrap_or_else(|e| {
        fmount.unmount();
        die(format!("cannot mount on {}: {e}", mnt.display()))
    });
    let send_entry_invals = connect_notifications(&fs, &session);
    drop(fs);
    // Paths are resolved; a daemon keeps no directory busy.
    sys::mount::chdir_root();
    if !(cli.foreground || cli.debug) {
        detach();
    }
    // Threads start after the fork, which keeps only the calling one.
    std::thread::spawn(send_entry_invals);
    on_signals(sigs, handler.clone(), fmount);
    if let Err(e) = session.run(handler) {
        log::error!("session ended: {e}");
        exit(1);
    }
}

fn print_version() {
    println!("ovlfuse version {}", env!("CARGO_PKG_VERSION"));
    println!("FUSE library version ovlfuse wire (native, no libfuse)");
    println!(
        "using FUSE kernel interface version {}.{}",
        ovlfuse::wire::abi::KERNEL_VERSION,
        ovlfuse::wire::abi::KERNEL_MINOR_VERSION
    );
}

/// libfuse names the subtype after the program: installed as
/// fuse-overlayfs, the mount shows as fuse.fuse-overlayfs.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty() && !n.contains(','))
        .unwrap_or_else(|| "ovlfuse".into())
}

/// The FUSE mount's flags and who may use it, from the options.
fn mount_args(cfg: &Config, source: Option<String>, prog: String) -> (MountArgs, Acl) {
    let root = sys::geteuid() == 0;
    let f = &cfg.fuse;
    let margs = MountArgs {
        source: source.unwrap_or_else(|| prog.clone()),
        subtype: prog,
        ro: f.ro || cfg.upper.is_none(),
        nosuid: f.nosuid.unwrap_or(!root),
        nodev: f.nodev.unwrap_or(!root),
        noexec: f.noexec,
        atime: f.atime,
        nodiratime: f.nodiratime,
        default_permissions: f.default_permissions || root,
        allow_other: f.allow_other || root,
        allow_root: f.allow_root,
    };
    let acl = if margs.allow_other {
        Acl::All
    } else if f.allow_root {
        Acl::RootAndOwner
    } else {
        Acl::Owner
    };
    (margs, acl)
}

/// Lets the core tell the kernel to drop cached attributes and entries;
/// returns the loop that sends the entry invalidations, to run on a thread.
fn connect_notifications(core: &OvlFs, session: &Session) -> impl FnOnce() + Send + 'static {
    let notifier = session.notifier();
    let _ = core.inval_attr.set(Box::new(move |ino| {
        let _ = notifier.inval_inode(ino, -1, 0);
    }));
    // Entry invalidations wait for the request that asks for them to be
    // answered: the kernel holds the dir locked until then.
    let (tx, rx) = std::sync::mpsc::channel::<(u64, std::ffi::OsString)>();
    let tx = std::sync::Mutex::new(tx);
    let _ = core.inval_entry_later.set(Box::new(move |parent, name| {
        let _ = tx.lock().map(|t| t.send((parent, name.to_os_string())));
    }));
    let entry_notifier = session.notifier();
    move || {
        for (parent, name) in rx {
            let _ = entry_notifier.inval_entry(parent, &name);
        }
    }
}

/// Forks into the background; the parent exits 0 (the mount is live).
fn detach() {
    match sys::fork() {
        Ok(0) => {
            sys::setsid();
            sys::detach_stdio();
            // Warnings and errors from now on go to syslog.
            logger::to_syslog();
        }
        Ok(_) => sys::exit_now(0),
        Err(e) => die(format!("cannot fork: {e}")),
    }
}

/// SIGTERM, SIGINT, SIGHUP: unmount if the mount is still ours, then end,
/// also when another mount namespace still holds the mount (its users
/// then get ENOTCONN, as with libfuse). SIGUSR1 logs the statistics
/// (`ovlfuse stats` reads them live).
fn on_signals(sigs: libc::sigset_t, reporter: Arc<OvlFuse>, fmount: mount::FuseMount) {
    std::thread::spawn(move || {
        while sys::wait_signal(&sigs) == libc::SIGUSR1 {
            for line in reporter.stats_report(false).lines() {
                log::info!("stats: {line}");
            }
        }
        fmount.unmount();
        if !fmount.wait_gone(2000) {
            std::process::exit(0);
        }
    });
}
