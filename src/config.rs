//! Mount options: parsing (fuse-overlayfs and kernel overlayfs spellings) and
//! validation of the layer directories. Every error is one line for the user.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
        let need = |v: Option<&str>| -> Result<String, ConfigError> {
            match v {
                Some(v) => Ok(v.to_string()),
                None => err(format!("option {key} needs a value: {key}=VALUE")),
            }
        };
        match key {
            "lowerdir" => self.lowers = split_lowerdir(&need(val)?)?,
            "lowerdir+" => self.lowers.push(LowerDir {
                path: need(val)?.into(),
                data_only: false,
            }),
            "datadir+" => self.lowers.push(LowerDir {
                path: need(val)?.into(),
                data_only: true,
            }),
            "upperdir" => self.upper = Some(need(val)?.into()),
            "workdir" => self.work = Some(need(val)?.into()),
            "redirect_dir" => {
                self.redirect_dir = match need(val)?.as_str() {
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
            "index" => self.index = parse_bool(key, &need(val)?)?,
            "metacopy" => self.metacopy = parse_bool(key, &need(val)?)?,
            "xino" => {
                self.xino = match need(val)?.as_str() {
                    "on" => Xino::On,
                    "off" => Xino::Off,
                    "auto" => Xino::Auto,
                    v => return err(format!("xino={v}: expected on, off or auto")),
                }
            }
            "userxattr" => self.userxattr = true,
            "volatile" => self.fsync = false,
            "fsync" => self.fsync = parse_bool(key, &need(val)?)?,
            "uidmapping" => self.uidmap = parse_idmap(key, &need(val)?)?,
            "gidmapping" => self.gidmap = parse_idmap(key, &need(val)?)?,
            "squash_to_root" => {
                self.squash_uid = Some(0);
                self.squash_gid = Some(0);
            }
            "squash_to_uid" => self.squash_uid = Some(parse_u32(key, &need(val)?)?),
            "squash_to_gid" => self.squash_gid = Some(parse_u32(key, &need(val)?)?),
            "xattr_permissions" => {
                self.xattr_permissions = match need(val)?.as_str() {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    v => return err(format!("xattr_permissions={v}: expected 0, 1 or 2")),
                }
            }
            "static_nlink" => self.static_nlink = true,
            "noxattrs" => self.noxattrs = val.map(|v| v != "0").unwrap_or(true),
            "noacl" => self.noacl = true,
            "timeout" => {
                let v = need(val)?;
                self.timeout = match v.parse::<f64>() {
                    Ok(t) if t >= 0.0 && t.is_finite() => t,
                    _ => return err(format!("timeout={v}: expected a number of seconds >= 0")),
                }
            }
            "threads" => {
                let v = need(val)?;
                self.threads = match v.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => n,
                    _ => return err(format!("threads={v}: expected a number from 1 to 256")),
                }
            }
            "ro" => self.fuse.ro = true,
            "rw" => self.fuse.ro = false,
            "allow_other" => self.fuse.allow_other = true,
            "allow_root" => self.fuse.allow_root = true,
            "default_permissions" => self.fuse.default_permissions = true,
            "suid" => self.fuse.nosuid = Some(false),
            "nosuid" => self.fuse.nosuid = Some(true),
            "dev" => self.fuse.nodev = Some(false),
            "nodev" => self.fuse.nodev = Some(true),
            "exec" => self.fuse.noexec = false,
            "noexec" => self.fuse.noexec = true,
            "atime" | "relatime" => self.fuse.atime = Atime::Relative,
            "noatime" => self.fuse.atime = Atime::Never,
            "strictatime" | "norelatime" => self.fuse.atime = Atime::Strict,
            "nodiratime" => self.fuse.nodiratime = true,
            "diratime" => self.fuse.nodiratime = false,
            // Accepted for compatibility with fuse-overlayfs; nothing to do.
            "threaded" | "writeback" | "plugins" | "fast_ino" | "context" | "fscontext"
            | "defcontext" | "rootcontext" | "debug" | "auto_unmount" | "nonempty" | "sync"
            | "async" | "dirsync" | "_netdev" | "nofail" | "auto" | "noauto" | "user" | "users"
            | "owner" | "defaults" | "nfs_export" | "max_read" | "max_write" => {}
            _ => self
                .warnings
                .push(format!("ovlfuse: warning: unknown option '{item}' ignored")),
        }
        Ok(())
    }

    /// Resolves relative paths against `cwd` and checks the layers as the
    /// kernel would, before anything is mounted.
    pub fn validate(&mut self, cwd: &Path, mountpoint: &Path) -> Result<PathBuf, ConfigError> {
        if self.lowers.is_empty() {
            return err("no lowerdir given: add -o lowerdir=DIR[:DIR...]");
        }
        if self.lowers.iter().all(|l| l.data_only) {
            return err("every lowerdir is data-only: at least one normal lower layer is needed");
        }
        if self.lowers.len() > MAX_LAYERS {
            return err(format!(
                "{} lower layers given; at most {MAX_LAYERS} are supported",
                self.lowers.len()
            ));
        }
        match (&self.upper, &self.work) {
            (Some(_), None) => {
                return err(
                    "upperdir given without workdir: add -o workdir=DIR on the upper's filesystem",
                )
            }
            (None, Some(_)) => {
                return err("workdir given without upperdir: add -o upperdir=DIR or drop workdir")
            }
            _ => {}
        }
        if self.metacopy && matches!(self.redirect_dir, RedirectDir::Off | RedirectDir::NoFollow) {
            return err("metacopy=on needs redirect_dir=on or follow: drop one of the two options");
        }
        // `/dev/fd/N`: a connection mounted by a helper; no dir to check.
        let mnt = match fd_mountpoint(mountpoint) {
            Some(_) => mountpoint.to_path_buf(),
            None => canonical_dir(cwd, mountpoint, "mountpoint")?,
        };
        for l in &mut self.lowers {
            l.path = canonical_dir(cwd, &l.path, "lowerdir")?;
            if l.path.starts_with(&mnt) {
                return err(format!(
                    "lowerdir {}: is inside the mountpoint {}; use a layer outside it",
                    l.path.display(),
                    mnt.display()
                ));
            }
        }
        if let (Some(u), Some(w)) = (self.upper.clone(), self.work.clone()) {
            let u = canonical_dir(cwd, &u, "upperdir")?;
            let w = canonical_dir(cwd, &w, "workdir")?;
            if u.starts_with(&mnt) {
                return err(format!(
                    "upperdir {}: is inside the mountpoint {}; use a directory outside it",
                    u.display(),
                    mnt.display()
                ));
            }
            if w.starts_with(&u) || u.starts_with(&w) {
                return err(format!("workdir {} and upperdir {} overlap; give them separate directories on one filesystem", w.display(), u.display()));
            }
            if let Some(l) = self
                .lowers
                .iter()
                .find(|l| l.path == u || l.path.starts_with(&u) || u.starts_with(&l.path))
            {
                return err(format!(
                    "upperdir {} overlaps lowerdir {}; the upper must not be (inside) a lower",
                    u.display(),
                    l.path.display()
                ));
            }
            if let Some(l) = self.lowers.iter().find(|l| w.starts_with(&l.path)) {
                return err(format!(
                    "workdir {}: is inside lowerdir {}; put it next to the upperdir",
                    w.display(),
                    l.path.display()
                ));
            }
            let ud = std::fs::metadata(&u).map(|m| m.dev()).unwrap_or(0);
            let wd = std::fs::metadata(&w).map(|m| m.dev()).unwrap_or(1);
            if ud != wd {
                return err(format!("workdir {} is not on the same filesystem as upperdir {}; put it next to the upperdir", w.display(), u.display()));
            }
            if let Ok(acc) = std::fs::metadata(&u).map(|m| m.permissions()) {
                if acc.readonly() && crate::sys::geteuid() != 0 {
                    return err(format!("upperdir {}: is not writable", u.display()));
                }
            }
            self.upper = Some(u);
            self.work = Some(w);
        }
        Ok(mnt)
    }
}

/// `/dev/fd/N` as a mountpoint: libfuse's convention for a connection that a
/// privileged helper mounted and passes as fd N.
pub fn fd_mountpoint(p: &Path) -> Option<i32> {
    p.to_str()?.strip_prefix("/dev/fd/")?.parse().ok()
}

fn canonical_dir(cwd: &Path, p: &Path, what: &str) -> Result<PathBuf, ConfigError> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let c = std::fs::canonicalize(&abs)
        .map_err(|e| ConfigError(format!("{what} {}: {}", p.display(), io_msg(&e))))?;
    let md = std::fs::metadata(&c)
        .map_err(|e| ConfigError(format!("{what} {}: {}", p.display(), io_msg(&e))))?;
    if !md.is_dir() {
        return err(format!("{what} {}: is not a directory", p.display()));
    }
    // Opening it now catches unreadable layers (EACCES) before the mount.
    std::fs::read_dir(&c).map_err(|e| {
        ConfigError(format!(
            "{what} {}: cannot be read: {}",
            p.display(),
            io_msg(&e)
        ))
    })?;
    Ok(c)
}

/// The OS error text without Rust's " (os error N)" suffix.
pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
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
