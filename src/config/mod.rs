//! Mount options: parsing (fuse-overlayfs and kernel overlayfs spellings) and
//! validation of the layer directories. Every error is one line for the user.

use std::fmt;
use std::path::PathBuf;

mod validate;
pub use validate::{fd_mountpoint, io_msg};

pub const MAX_LAYERS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectDir {
    On,
    Follow,
    NoFollow,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xino {
    On,
    Off,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerDir {
    pub path: PathBuf,
    /// `A::D` or `datadir+=D`: reachable only through metacopy redirects.
    pub data_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// One range of uidmapping/gidmapping: ids `stored..stored+len` as the
/// layers hold them are shown as `shown..` (fuse-overlayfs's direction).
pub struct IdMap {
    pub stored: u32,
    pub shown: u32,
    pub len: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuseFlags {
    pub ro: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub nosuid: Option<bool>,
    pub nodev: Option<bool>,
    pub noexec: bool,
    pub atime: Atime,
    pub nodiratime: bool,
}

/// When a read moves atime, as mount(8)'s atime options say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Atime {
    /// relatime: once after each change, and once a day.
    #[default]
    Relative,
    /// noatime
    Never,
    /// strictatime: on every read.
    Strict,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub lowers: Vec<LowerDir>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub redirect_dir: RedirectDir,
    pub index: bool,
    pub metacopy: bool,
    pub xino: Xino,
    pub userxattr: bool,
    /// false with `volatile` or `fsync=0`.
    pub fsync: bool,
    pub uidmap: Vec<IdMap>,
    pub gidmap: Vec<IdMap>,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    pub xattr_permissions: u8,
    pub static_nlink: bool,
    pub noxattrs: bool,
    /// `noacl`: POSIX ACLs are not enforced by the kernel (fuse-overlayfs's
    /// option); by default they are (FUSE_POSIX_ACL).
    pub noacl: bool,
    /// `lower_passthrough`: lower files opened read-only do their reads by
    /// FUSE passthrough; an fd opened before a copy-up then keeps reading
    /// the lower copy, as on kernels before 4.19.
    pub lower_passthrough: bool,
    /// Kernel entry/attr cache timeout in seconds.
    pub timeout: f64,
    pub threads: usize,
    pub fuse: FuseFlags,
    /// Lines to print as warnings (unknown options).
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lowers: Vec::new(),
            upper: None,
            work: None,
            redirect_dir: RedirectDir::On,
            index: true,
            metacopy: false,
            xino: Xino::Auto,
            userxattr: false,
            fsync: true,
            uidmap: Vec::new(),
            gidmap: Vec::new(),
            squash_uid: None,
            squash_gid: None,
            xattr_permissions: 0,
            static_nlink: false,
            noxattrs: false,
            noacl: false,
            lower_passthrough: false,
            timeout: 86400.0,
            // Requests block on disk I/O, not only CPU: at least 4 workers.
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(4),
            fuse: FuseFlags::default(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Splits an option string on commas that are not inside double quotes.
pub fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Splits `lowerdir=` on unescaped colons: `\:` is a colon, `\\` a backslash,
/// and an empty item (`A::D`) makes every later layer data-only.
pub fn split_lowerdir(v: &str) -> Result<Vec<LowerDir>, ConfigError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut data_only = false;
    let mut chars = v.chars().peekable();
    let mut push = |cur: &mut String, data_only: &mut bool| -> Result<(), ConfigError> {
        if cur.is_empty() {
            if *data_only || out.is_empty() {
                return err(format!(
                    "lowerdir={v}: empty layer path; separate layers with one ':'"
                ));
            }
            *data_only = true;
        } else {
            out.push(LowerDir {
                path: PathBuf::from(std::mem::take(cur)),
                data_only: *data_only,
            });
        }
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ':' => push(&mut cur, &mut data_only)?,
            _ => cur.push(c),
        }
    }
    if v.is_empty() {
        return err("lowerdir= is empty: give at least one layer, lowerdir=DIR[:DIR...]");
    }
    if cur.is_empty() {
        return err(format!(
            "lowerdir={v}: empty layer path at the end; remove the trailing ':'"
        ));
    }
    push(&mut cur, &mut data_only)?;
    Ok(out)
}

/// Parses `uidmapping=ID:SHOWN:N[:...]` (a leading ':' is allowed): ids
/// ID.. in the layers show as SHOWN.. (containers/storage passes its
/// ContainerID:HostID:Size so that unshifted layers appear shifted).
pub fn parse_idmap(key: &str, v: &str) -> Result<Vec<IdMap>, ConfigError> {
    let v = v.strip_prefix(':').unwrap_or(v);
    let parts: Vec<&str> = v.split(':').collect();
    if v.is_empty() || parts.len() % 3 != 0 {
        return err(format!(
            "{key}={v}: expected id:shown-id:count triples separated by ':'"
        ));
    }
    let mut out = Vec::new();
    for t in parts.chunks(3) {
        let num = |s: &str| -> Result<u32, ConfigError> {
            s.parse::<u32>().map_err(|_| {
                ConfigError(format!(
                    "{key}={v}: '{s}' is not a number from 0 to 4294967295"
                ))
            })
        };
        let m = IdMap {
            stored: num(t[0])?,
            shown: num(t[1])?,
            len: num(t[2])?,
        };
        if m.len == 0
            || m.stored.checked_add(m.len - 1).is_none()
            || m.shown.checked_add(m.len - 1).is_none()
        {
            return err(format!(
                "{key}={v}: range {}:{}:{} is empty or overflows",
                t[0], t[1], t[2]
            ));
        }
        out.push(m);
    }
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => err(format!("{key}={v}: expected on or off")),
    }
}

fn parse_u32(key: &str, v: &str) -> Result<u32, ConfigError> {
    v.parse()
        .map_err(|_| ConfigError(format!("{key}={v}: expected a whole number")))
}

impl Config {
    /// The kernel's ovl_allow_offline_changes: none of the features that
    /// record lower identity are on, so a new dir in a merged dir need not
    /// be made opaque.
    pub fn allow_offline_changes(&self) -> bool {
        !self.index
            && !self.metacopy
            && self.redirect_dir != RedirectDir::On
            && self.xino != Xino::On
    }

    /// Applies one `-o` argument (comma separated items).
    pub fn apply_options(&mut self, opts: &str) -> Result<(), ConfigError> {
        for item in split_options(opts) {
            self.apply_option(&item)?;
        }
        Ok(())
    }

    fn apply_option(&mut self, item: &str) -> Result<(), ConfigError> {
        let (key, val) = match item.split_once('=') {
            Some((k, v)) => (k, Some(unquote(v))),
            None => (item, None),
        };
        if self.layer_option(key, val)?
            || self.feature_option(key, val)?
            || self.owner_option(key, val)?
            || self.fuse_option(key)
            || IGNORED.contains(&key)
        {
            return Ok(());
        }
        self.warnings
            .push(format!("ovlfuse: warning: unknown option '{item}' ignored"));
        Ok(())
    }

    /// The layers: whether `key` was one of their options.
    fn layer_option(&mut self, key: &str, val: Option<&str>) -> Result<bool, ConfigError> {
        match key {
            "lowerdir" => self.lowers = split_lowerdir(need(key, val)?)?,
            "lowerdir+" | "datadir+" => self.lowers.push(LowerDir {
                path: need(key, val)?.into(),
                data_only: key == "datadir+",
            }),
            "upperdir" => self.upper = Some(need(key, val)?.into()),
            "workdir" => self.work = Some(need(key, val)?.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The overlay's features, as the kernel's mount options name them.
    fn feature_option(&mut self, key: &str, val: Option<&str>) -> Result<bool, ConfigError> {
        match key {
            "redirect_dir" => {
                self.redirect_dir = match need(key, val)? {
                    "on" => RedirectDir::On,
                    "follow" => RedirectDir::Follow,
                    "nofollow" => RedirectDir::NoFollow,
                    "off" => RedirectDir::Off,
                    v => {
                        return err(format!(
                            "redirect_dir={v}: expected on, follow, nofollow or off"
                        ))
                    }
                }
            }
            "index" => self.index = parse_bool(key, need(key, val)?)?,
            "metacopy" => self.metacopy = parse_bool(key, need(key, val)?)?,
            "xino" => {
                self.xino = match need(key, val)? {
                    "on" => Xino::On,
                    "off" => Xino::Off,
                    "auto" => Xino::Auto,
                    v => return err(format!("xino={v}: expected on, off or auto")),
                }
            }
            "userxattr" => self.userxattr = true,
            "volatile" => self.fsync = false,
            "fsync" => self.fsync = parse_bool(key, need(key, val)?)?,
            "timeout" => {
                let v = need(key, val)?;
                self.timeout = match v.parse::<f64>() {
                    Ok(t) if t >= 0.0 && t.is_finite() => t,
                    _ => return err(format!("timeout={v}: expected a number of seconds >= 0")),
                }
            }
            "threads" => {
                let v = need(key, val)?;
                self.threads = match v.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => n,
                    _ => return err(format!("threads={v}: expected a number from 1 to 256")),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// fuse-overlayfs's options for owners, modes and xattrs.
    fn owner_option(&mut self, key: &str, val: Option<&str>) -> Result<bool, ConfigError> {
        match key {
            "uidmapping" => self.uidmap = parse_idmap(key, need(key, val)?)?,
            "gidmapping" => self.gidmap = parse_idmap(key, need(key, val)?)?,
            "squash_to_root" => {
                self.squash_uid = Some(0);
                self.squash_gid = Some(0);
            }
            "squash_to_uid" => self.squash_uid = Some(parse_u32(key, need(key, val)?)?),
            "squash_to_gid" => self.squash_gid = Some(parse_u32(key, need(key, val)?)?),
            "xattr_permissions" => {
                self.xattr_permissions = match need(key, val)? {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    v => return err(format!("xattr_permissions={v}: expected 0, 1 or 2")),
                }
            }
            "static_nlink" => self.static_nlink = true,
            "noxattrs" => self.noxattrs = val.map(|v| v != "0").unwrap_or(true),
            "noacl" => self.noacl = true,
            "lower_passthrough" => self.lower_passthrough = val.map(|v| v != "0").unwrap_or(true),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Flags of the FUSE mount itself, as mount(8) spells them.
    fn fuse_option(&mut self, key: &str) -> bool {
        let f = &mut self.fuse;
        match key {
            "ro" => f.ro = true,
            "rw" => f.ro = false,
            "allow_other" => f.allow_other = true,
            "allow_root" => f.allow_root = true,
            "default_permissions" => f.default_permissions = true,
            "suid" => f.nosuid = Some(false),
            "nosuid" => f.nosuid = Some(true),
            "dev" => f.nodev = Some(false),
            "nodev" => f.nodev = Some(true),
            "exec" => f.noexec = false,
            "noexec" => f.noexec = true,
            "atime" | "relatime" => f.atime = Atime::Relative,
            "noatime" => f.atime = Atime::Never,
            "strictatime" | "norelatime" => f.atime = Atime::Strict,
            "nodiratime" => f.nodiratime = true,
            "diratime" => f.nodiratime = false,
            _ => return false,
        }
        true
    }
}

/// Accepted for compatibility with fuse-overlayfs and mount(8); nothing to do.
#[rustfmt::skip]
const IGNORED: &[&str] = &[
    "threaded", "writeback", "plugins", "fast_ino", "context", "fscontext", "defcontext",
    "rootcontext", "debug", "auto_unmount", "nonempty", "sync", "async", "dirsync", "_netdev",
    "nofail", "auto", "noauto", "user", "users", "owner", "defaults", "nfs_export", "max_read",
    "max_write",
];

/// The value of an option that needs one.
fn need<'a>(key: &str, val: Option<&'a str>) -> Result<&'a str, ConfigError> {
    match val {
        Some(v) => Ok(v),
        None => err(format!("option {key} needs a value: {key}=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_options_with_quotes_and_empty_items() {
        assert_eq!(
            split_options("a,,b=\"x,y\",c,"),
            vec!["a", "b=\"x,y\"", "c"]
        );
    }

    #[test]
    fn lowerdir_escapes_and_data_only() {
        let l = split_lowerdir(r"a\:b:c\\d::e:f").unwrap();
        let paths: Vec<_> = l
            .iter()
            .map(|l| (l.path.to_str().unwrap(), l.data_only))
            .collect();
        assert_eq!(
            paths,
            vec![("a:b", false), (r"c\d", false), ("e", true), ("f", true)]
        );
        assert!(split_lowerdir("a:").is_err());
        assert!(split_lowerdir(":a").is_err());
    }

    #[test]
    fn idmaps() {
        let m = parse_idmap("uidmapping", ":0:1000:65536:65536:2000:10").unwrap();
        assert_eq!(
            m[1],
            IdMap {
                stored: 65536,
                shown: 2000,
                len: 10
            }
        );
        assert!(parse_idmap("uidmapping", "0:1000").is_err());
        assert!(parse_idmap("uidmapping", "0:x:1").is_err());
        assert!(parse_idmap("uidmapping", "4294967295:0:2").is_err());
    }

    #[test]
    fn options_and_warnings() {
        let mut c = Config::default();
        c.apply_options("lowerdir=a:b,upperdir=u,workdir=w,,volatile,bogus,context=\"x,y\"")
            .unwrap();
        assert_eq!(c.lowers.len(), 2);
        assert!(!c.fsync);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.apply_options("redirect_dir=maybe").is_err());
        assert!(c.apply_options("timeout=-1").is_err());
    }
}
