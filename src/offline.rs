//! An upper layer and its lowers opened for the tools that read them
//! without a mount (`ovlfuse check`, `ovlfuse diff`). The upper is a layer
//! of its own, for its raw entries and markers; the view is an overlay
//! core that stacks the upper on top as its first lower, read-only, as a
//! lower that once was an upper. The view's lookups give each upper dir
//! the lower dirs it merges with, by the rules of a mount (redirects and
//! opaque dirs included), and its reads give the merged content.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Atime, Config, LowerDir};
use crate::format::XattrNames;
use crate::layer::{join, Layer, Reach};
use crate::node::Node;
use crate::workdir::lock_in_use;
use crate::{OvlFs, SetupError};

pub struct Offline {
    pub upper: Layer,
    /// The workdir, locked as a mount locks it (None: not given).
    pub work: Option<Layer>,
    pub view: OvlFs,
    pub xn: XattrNames,
}

/// The lower dirs an upper dir merges with: (view layer, path there).
pub type LowerDirs = Vec<(u16, Vec<u8>)>;

impl Offline {
    /// Opens the upper (and workdir, if given) of a validated `cfg`; takes
    /// their in-use locks, so that a mounted overlay is refused.
    pub fn open(cfg: &Config) -> Result<Offline, SetupError> {
        let Some(u) = cfg.upper.clone() else {
            let e = std::io::Error::from_raw_os_error(libc::EINVAL);
            return Err(SetupError::io("upperdir", Path::new("(none)"), e));
        };
        let base = match &cfg.work {
            Some(w) => crate::layer::common_dir(&u, w),
            None => u.clone(),
        };
        let reach = Reach::new(&base, Atime::Never, false);
        let open = |p: &Path, what| {
            Layer::open(p, 0, false, &reach).map_err(|e| SetupError::io(what, p, e))
        };
        let upper = open(&u, "upperdir")?;
        let work = cfg.work.as_ref().map(|w| open(w, "workdir")).transpose()?;
        if let (Some(wl), Some(w)) = (&work, &cfg.work) {
            lock_in_use(wl, "workdir", w)?;
        }
        lock_in_use(&upper, "upperdir", &u)?;
        let top = LowerDir {
            path: u,
            data_only: false,
        };
        let vc = Config {
            lowers: std::iter::once(top)
                .chain(cfg.lowers.iter().cloned())
                .collect(),
            userxattr: cfg.userxattr,
            metacopy: true,
            ..Config::default()
        };
        Ok(Offline {
            upper,
            work,
            view: OvlFs::new(vc)?,
            xn: XattrNames::new(cfg.userxattr),
        })
    }

    /// The view's node at merged path `path` (None: not in the view).
    pub fn view_node(&self, path: &[u8]) -> Option<Arc<Node>> {
        let mut n = self.view.nodes.root();
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            n = self.view.lookup(&n, OsStr::from_bytes(comp), false).ok()?.0;
        }
        Some(n)
    }

    /// The lower dirs the upper dir at `path` merges with.
    pub fn lower_dirs(&self, path: &[u8]) -> LowerDirs {
        let Some(n) = self.view_node(path) else {
            return Vec::new();
        };
        let lowers = n.state.read().lowers.clone();
        lowers
            .iter()
            .filter(|l| l.layer != 0)
            .map(|l| (l.layer, l.path_or(path)))
            .collect()
    }

    /// Whether `name` shows in the lowers below an upper dir merging with
    /// `dirs` (namei's rule; a layer that cannot be read hides nothing).
    pub fn below(&self, dirs: &[(u16, Vec<u8>)], name: &OsStr) -> bool {
        self.view
            .shows_below(dirs.iter().cloned(), name)
            .unwrap_or(false)
    }

    /// Whether any lower dir of `dirs` has an entry `name` at all (which a
    /// whiteout of the name in the upper then hides).
    pub fn any_below(&self, dirs: &[(u16, Vec<u8>)], name: &OsStr) -> bool {
        dirs.iter().any(|(l, dir)| {
            let layer = &self.view.lowers[*l as usize];
            layer.try_stat(&join(dir, name)).ok().flatten().is_some()
        })
    }
}
