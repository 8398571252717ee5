//! Checks of a parsed config against the filesystem, as the kernel makes
//! them at mount: layers exist, do not overlap, and the work dir sits on
//! the upper's filesystem. Paths become canonical here.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{err, Config, ConfigError, RedirectDir, MAX_LAYERS};

impl Config {
    /// Resolves relative paths against `cwd` and checks the layers as the
    /// kernel would, before anything is mounted.
    pub fn validate(&mut self, cwd: &Path, mountpoint: &Path) -> Result<PathBuf, ConfigError> {
        self.check_options()?;
        // `/dev/fd/N`: a connection mounted by a helper; no dir to check.
        let mnt = match fd_mountpoint(mountpoint) {
            Some(_) => mountpoint.to_path_buf(),
            None => canonical_dir(cwd, mountpoint, "mountpoint")?,
        };
        self.resolve_layers(cwd, Some(&mnt))?;
        Ok(mnt)
    }

    /// validate for tools that work on the layers without a mount
    /// (`ovlfuse check`, `ovlfuse diff`); `need_work`: whether an upper
    /// needs its workdir (diff reads an upper alone).
    pub fn validate_offline(&mut self, cwd: &Path, need_work: bool) -> Result<(), ConfigError> {
        if !need_work && self.work.is_none() {
            if let Some(u) = self.upper.take() {
                self.check_options()?;
                self.resolve_layers(cwd, None)?;
                let u = canonical_dir(cwd, &u, "upperdir")?;
                self.upper_apart_from_lowers(&u)?;
                self.upper = Some(u);
                return Ok(());
            }
        }
        self.check_options()?;
        self.resolve_layers(cwd, None)
    }

    fn check_options(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Makes the layer paths canonical and checks them against each other
    /// and the mountpoint, if any.
    fn resolve_layers(&mut self, cwd: &Path, mnt: Option<&Path>) -> Result<(), ConfigError> {
        for l in &mut self.lowers {
            l.path = canonical_dir(cwd, &l.path, "lowerdir")?;
            if let Some(mnt) = mnt.filter(|m| l.path.starts_with(m)) {
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
            self.check_upper(&u, &w, mnt)?;
            self.upper = Some(u);
            self.work = Some(w);
        }
        Ok(())
    }
}

impl Config {
    /// The upper and work dirs (canonical) against each other, the lowers
    /// and the mountpoint, as the kernel checks them at mount.
    /// The upper (canonical) neither is, holds nor sits in a lower.
    fn upper_apart_from_lowers(&self, u: &Path) -> Result<(), ConfigError> {
        match self
            .lowers
            .iter()
            .find(|l| l.path.starts_with(u) || u.starts_with(&l.path))
        {
            Some(l) => err(format!(
                "upperdir {} overlaps lowerdir {}; the upper must not be (inside) a lower",
                u.display(),
                l.path.display()
            )),
            None => Ok(()),
        }
    }

    fn check_upper(&self, u: &Path, w: &Path, mnt: Option<&Path>) -> Result<(), ConfigError> {
        if let Some(mnt) = mnt.filter(|m| u.starts_with(m)) {
            return err(format!(
                "upperdir {}: is inside the mountpoint {}; use a directory outside it",
                u.display(),
                mnt.display()
            ));
        }
        if w.starts_with(u) || u.starts_with(w) {
            return err(format!("workdir {} and upperdir {} overlap; give them separate directories on one filesystem", w.display(), u.display()));
        }
        self.upper_apart_from_lowers(u)?;
        if let Some(l) = self.lowers.iter().find(|l| w.starts_with(&l.path)) {
            return err(format!(
                "workdir {}: is inside lowerdir {}; put it next to the upperdir",
                w.display(),
                l.path.display()
            ));
        }
        let ud = std::fs::metadata(u).map(|m| m.dev()).unwrap_or(0);
        let wd = std::fs::metadata(w).map(|m| m.dev()).unwrap_or(1);
        if ud != wd {
            return err(format!("workdir {} is not on the same filesystem as upperdir {}; put it next to the upperdir", w.display(), u.display()));
        }
        if let Ok(acc) = std::fs::metadata(u).map(|m| m.permissions()) {
            if acc.readonly() && crate::sys::geteuid() != 0 {
                return err(format!("upperdir {}: is not writable", u.display()));
            }
        }
        Ok(())
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
