//! The daemon's log: stderr while it has one (start-up, `-f`), syslog once
//! it runs in the background, as daemons do. Filtering is env_logger's
//! (RUST_LOG or the level ovlfuse picks).

use std::os::unix::net::UnixDatagram;
use std::sync::{Mutex, OnceLock};

use log::{Level, Log, Metadata, Record};

struct DaemonLog {
    filter: env_logger::Logger,
    /// Set once the daemon has detached: messages go to syslog.
    syslog: OnceLock<Mutex<UnixDatagram>>,
    ident: String,
}

static LOG: OnceLock<&'static DaemonLog> = OnceLock::new();

/// Installs the logger with env_logger's filter `default` (RUST_LOG wins).
pub fn init(default: &str, ident: &str) {
    let filter =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
            .build();
    let max = filter.filter();
    let l: &'static DaemonLog = Box::leak(Box::new(DaemonLog {
        filter,
        syslog: OnceLock::new(),
        ident: ident.to_string(),
    }));
    if log::set_logger(l).is_ok() {
        log::set_max_level(max);
        let _ = LOG.set(l);
    }
}

/// From now on (the daemon detached from its terminal) log to syslog:
/// /dev/log, or $OVLFUSE_SYSLOG_SOCKET. Without a syslog, messages are lost
/// as they would be on /dev/null.
pub fn to_syslog() {
    let Some(l) = LOG.get() else { return };
    let path = std::env::var_os("OVLFUSE_SYSLOG_SOCKET").unwrap_or_else(|| "/dev/log".into());
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    if sock.connect(&path).is_ok() {
        let _ = l.syslog.set(Mutex::new(sock));
    }
}

/// RFC 3164 priority: facility daemon (3), the record's severity.
fn priority(level: Level) -> u8 {
    let severity = match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    3 * 8 + severity
}

impl Log for DaemonLog {
    fn enabled(&self, m: &Metadata) -> bool {
        self.filter.enabled(m)
    }

    fn log(&self, r: &Record) {
        if !self.filter.matches(r) {
            return;
        }
        match self.syslog.get() {
            Some(sock) => {
                let msg = format!(
                    "<{}>{}[{}]: {}",
                    priority(r.level()),
                    self.ident,
                    std::process::id(),
                    r.args()
                );
                if let Ok(s) = sock.lock() {
                    let _ = s.send(msg.as_bytes());
                }
            }
            None => self.filter.log(r),
        }
    }

    fn flush(&self) {
        self.filter.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_daemon_facility() {
        assert_eq!(priority(Level::Error), 27);
        assert_eq!(priority(Level::Warn), 28);
        assert_eq!(priority(Level::Info), 30);
    }
}
