//! The mounted overlay (the kernel's `struct ovl_fs`): layers, work dir,
//! private xattr names, the node table and the open handles.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use log::info;

use crate::config::{Atime, Config};
use crate::format::XattrNames;
use crate::inomap::InoMap;
use crate::layer::{self, common_dir, Layer, Reach};
use crate::node::{LowerRef, Node, NodeState, NodeTable, ROOT_INO};
use crate::open::Handles;
use crate::split::Splits;
use crate::sys;
use crate::workdir::{lock_in_use, Whiteouts, WorkDir};
use crate::{Errno, Result, SetupError};

/// Asks the kernel to drop its entry (parent node id, name).
pub type InvalEntry = Box<dyn Fn(u64, &OsStr) + Send + Sync>;

pub struct OvlFs {
    pub cfg: Config,
    pub upper: Option<Layer>,
    /// `W/work`: where copy-ups and whiteouts are built before they move in.
    work: Option<WorkDir>,
    pub lowers: Vec<Layer>,
    /// `W/index` (index=on).
    pub index: Option<Layer>,
    pub xn: XattrNames,
    /// Owner ids between the layers (host) and the merged view (container).
    pub ids: crate::idmap::IdMapper,
    /// xattr_permissions: the xattr that holds owner and mode, if any.
    pub override_xattr: Option<CString>,
    pub nodes: NodeTable,
    pub handles: Handles,
    /// Inode numbers: xino bits, copied-up numbers, pinned removed objects.
    pub inos: InoMap,
    /// Keys of the split nodes (names of lower hard links, index=off).
    pub(crate) splits: Splits,
    /// Tells the kernel to drop its cached attributes of a node (set by the
    /// FUSE front end; absent when the core runs without a mount).
    pub inval_attr: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Tells the kernel, after the current request is answered, to drop
    /// its cached entry (parent, name) (set by the FUSE front end).
    pub inval_entry_later: std::sync::OnceLock<InvalEntry>,
    /// Keeps path resolution and rename commits apart.
    pub rename_lock: crate::rename_lock::RenameLock,
    /// Counts changes of default ACLs through the mount (xattr.rs), so
    /// that an answer read before one is not kept after it.
    pub(crate) acl_changes: std::sync::atomic::AtomicU64,
}

/// The upper half of a writable mount.
struct UpperParts {
    upper: Layer,
    work: WorkDir,
    index: Option<Layer>,
}

/// Opens the upper, workdir and index of `cfg`, locks them, and prepares
/// W/work; may turn on userxattr where trusted.* cannot be written.
fn open_upper(cfg: &mut Config) -> std::result::Result<Option<UpperParts>, SetupError> {
    let (Some(u), Some(w)) = (cfg.upper.clone(), cfg.work.clone()) else {
        return Ok(None);
    };
    // One view for both: work-to-upper renames must stay in one mount.
    let reach = Reach::new(&common_dir(&u, &w), cfg.fuse.atime, cfg.fuse.nodiratime);
    let open =
        |p: &Path, what| Layer::open(p, 0, false, &reach).map_err(|e| SetupError::io(what, p, e));
    let upper = open(&u, "upperdir")?;
    let wl = open(&w, "workdir")?;
    // Taken before W/work is emptied, which would wreck a live mount.
    lock_in_use(&wl, "workdir", &w)?;
    lock_in_use(&upper, "upperdir", &u)?;
    let work = WorkDir::prepare(wl, cfg.index, &w)?;
    if !cfg.userxattr && !work.trusted_xattrs_work() {
        info!("trusted.* xattrs cannot be written on the upper filesystem; using user.overlay.* (userxattr)");
        cfg.userxattr = true;
    }
    let index = match cfg.index {
        true => Some(open(&w.join("index"), "workdir")?),
        false => None,
    };
    Ok(Some(UpperParts { upper, work, index }))
}

impl OvlFs {
    /// Opens every layer and prepares the work dir. The config must be validated.
    pub fn new(mut cfg: Config) -> std::result::Result<OvlFs, SetupError> {
        let mut lowers = Vec::with_capacity(cfg.lowers.len());
        for (i, l) in cfg.lowers.iter().enumerate() {
            let reach = Reach::new(&l.path, Atime::Never, false);
            let layer = Layer::open(&l.path, i + 1, l.data_only, &reach)
                .map_err(|e| SetupError::io("lowerdir", &l.path, e))?;
            lowers.push(layer);
        }
        let (upper, work, index) = match open_upper(&mut cfg)? {
            Some(p) => (Some(p.upper), Some(p.work), p.index),
            None => (None, None, None),
        };
        let devs = upper.iter().chain(lowers.iter()).map(|l| l.dev);
        let inos = InoMap::new(devs, cfg.xino);
        let xn = XattrNames::new(cfg.userxattr);
        let ids = crate::idmap::IdMapper::new(&cfg);
        let override_xattr = crate::format::override_name(cfg.xattr_permissions)
            .map(|n| CString::new(n).expect("no NUL"));
        let mut root_lowers = Vec::new();
        for (i, l) in lowers.iter().enumerate() {
            if l.data_only {
                break;
            }
            root_lowers.push(LowerRef::new(i as u16, None));
        }
        let root = Node::new(
            ROOT_INO,
            0,
            libc::S_IFDIR,
            upper.is_some(),
            NodeState::with_lowers(root_lowers.into()),
        );
        Ok(OvlFs {
            cfg,
            upper,
            work,
            lowers,
            index,
            xn,
            ids,
            override_xattr,
            nodes: NodeTable::new(root),
            handles: Handles::default(),
            inos,
            splits: Splits::default(),
            inval_attr: std::sync::OnceLock::new(),
            inval_entry_later: std::sync::OnceLock::new(),
            rename_lock: Default::default(),
            acl_changes: Default::default(),
        })
    }

    /// Whether FUSE passthrough keeps atime as the kernel's overlay does:
    /// not where we rely on O_NOATIME opens, which its backing files lack.
    pub fn passthrough_keeps_atime(&self) -> bool {
        self.upper
            .iter()
            .chain(&self.lowers)
            .all(|l| l.passthrough_atime_ok())
    }

    pub fn upper(&self) -> Result<&Layer> {
        self.upper.as_ref().ok_or(Errno::EROFS)
    }

    pub fn work(&self) -> Result<&WorkDir> {
        self.work.as_ref().ok_or(Errno::EROFS)
    }

    /// The whiteout form of this upper (a read-only mount writes none).
    pub fn whiteouts(&self) -> Whiteouts {
        self.work
            .as_ref()
            .map_or(Whiteouts::Device, |w| w.whiteouts())
    }

    pub fn read_only(&self) -> bool {
        self.upper.is_none()
    }

    /// The other nodes that are names of `node`'s inode (split.rs).
    pub fn names_of_inode(&self, node: &Node) -> Vec<Arc<Node>> {
        self.splits.names_of_inode(&self.nodes, node)
    }

    pub fn node(&self, ino: u64) -> Result<Arc<Node>> {
        self.nodes.get(ino).ok_or(Errno::ENOENT)
    }

    /// The kernel dropped `n` lookups of `ino`; at zero it holds no inode
    /// of that number any more.
    pub fn forget(&self, ino: u64, n: u64) {
        self.splits.forget(&self.nodes, ino, n);
        if self.inos.is_pinned(ino) && self.nodes.get(ino).is_none_or(|x| x.nlookup() == 0) {
            self.inos.unpin(ino);
        }
    }

    pub fn path_of(&self, node: &Node) -> Result<Vec<u8>> {
        node.path().ok_or_else(|| {
            // A retired node's names went on to new nodes: a syscall that
            // came by a path walks it again on ESTALE and finds them.
            if self.splits.is_retired(node.ino) {
                Errno::ESTALE
            } else {
                Errno::ENOENT
            }
        })
    }

    /// The layer and path of the object that the merged view shows: the
    /// upper copy if any, else the top lower one.
    pub fn real(&self, node: &Node) -> Result<(&Layer, Vec<u8>)> {
        if self.splits.is_retired(node.ino) {
            // Its names (and index entry) went on to other nodes, and may be
            // gone or something else by now: only its open files tell.
            return Err(Errno::ESTALE);
        }
        if let Some(name) = node.state.read().index().cloned() {
            if let Some(ix) = self.index.as_ref() {
                return Ok((ix, name.as_bytes().to_vec()));
            }
        }
        if node.has_upper() {
            return Ok((self.upper()?, self.path_of(node)?));
        }
        // Not held across path_of, which reads the state again: a second
        // read behind a waiting writer would deadlock.
        let l = node
            .state
            .read()
            .lowers
            .first()
            .ok_or(Errno::ENOENT)?
            .clone();
        // An explicit lower path holds also once the object has no name.
        let lp = match &l.path {
            Some(p) => p.to_vec(),
            None => self.path_of(node)?,
        };
        Ok((&self.lowers[l.layer as usize], lp))
    }

    /// Where the file's data is: the lower for a metacopy file, else real().
    pub fn real_data(&self, node: &Node) -> Result<(&Layer, Vec<u8>)> {
        if self.splits.is_retired(node.ino) {
            return Err(Errno::ESTALE);
        }
        let st = node.state.read();
        if st.metacopy {
            // The last of the stack holds the data (metacopy files above it).
            let l = st.lowers.last().ok_or(Errno::EIO)?.clone();
            drop(st);
            let lp = node.lower_path(&l).ok_or(Errno::ENOENT)?;
            return Ok((&self.lowers[l.layer as usize], lp));
        }
        drop(st);
        self.real(node)
    }

    /// Opens the parent dir of `path` in the upper layer (O_PATH) and returns
    /// it with the final name.
    pub fn upper_parent(&self, path: &[u8]) -> Result<(OwnedFd, CString)> {
        let (dir, name) = layer::split_parent(path);
        let fd = self.upper()?.open_dir_path(dir)?;
        Ok((fd, sys::cstr(name)?))
    }

    pub fn fsync_enabled(&self) -> bool {
        self.cfg.fsync
    }

    /// The opaque and redirect markers of a dir in one layer; one listxattr
    /// when it has none. A lower dir may also be opaque by `.wh..wh..opq`.
    pub fn dir_marks(&self, layer: &Layer, path: &[u8]) -> Result<DirMarks> {
        let names = match layer.listxattr(path) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENODATA)
                ) =>
            {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let mut m = DirMarks::default();
        for n in &names {
            let b = n.as_bytes();
            if b == self.xn.opaque.as_bytes() || b == crate::format::FUSEOVL_OPAQUE.as_bytes() {
                let c = sys::cstr(n)?;
                m.opaque |= layer.try_getxattr(path, &c)?.is_some_and(|v| v == b"y");
            } else if b == self.xn.origin.as_bytes() {
                m.origin = layer.try_getxattr(path, &self.xn.origin)?;
            } else if b == self.xn.redirect.as_bytes() {
                if let Some(v) = layer.try_getxattr(path, &self.xn.redirect)? {
                    if !crate::format::redirect_valid(&v) {
                        log::warn!(
                            "{}: bad redirect xattr {:?} in {}",
                            String::from_utf8_lossy(path),
                            String::from_utf8_lossy(&v),
                            layer.path.display()
                        );
                        return Err(Errno::EIO);
                    }
                    m.redirect = Some(v);
                }
            }
        }
        // The AUFS opaque marker, in lowers and in uppers fuse-overlayfs
        // wrote (beside its xattr, or alone where xattrs failed).
        if !m.opaque {
            let marker = layer::join(path, OsStr::from_bytes(crate::format::WH_OPAQUE));
            m.opaque = layer.try_stat(&marker)?.is_some();
        }
        Ok(m)
    }

    /// xattr_permissions: owner and mode from the override xattr, if set.
    pub fn apply_override(&self, node: &Node, st: &mut crate::sys::Stat) {
        let Some(name) = &self.override_xattr else {
            return;
        };
        let Ok((layer, path)) = self.real(node) else {
            return;
        };
        if let Ok(Some(v)) = layer.try_getxattr(&path, name) {
            if let Some(o) = crate::format::OverrideStat::decode(&v) {
                // The xattr holds stored ids, as the inode would.
                (st.st_uid, st.st_gid) = self.ids.show_ids(o.uid, o.gid);
                st.st_mode = (st.st_mode & libc::S_IFMT) | o.mode;
            }
        }
    }

    /// A user may neither see nor set these xattrs.
    pub fn hidden_xattr(&self, name: &OsStr) -> bool {
        self.xn.is_private(name)
            || self
                .override_xattr
                .as_ref()
                .is_some_and(|o| o.as_bytes() == name.as_bytes())
    }

    /// Attributes the kernel cached for `ino` changed behind its back.
    pub fn invalidate_attr(&self, ino: u64) {
        if let Some(f) = self.inval_attr.get() {
            f(ino);
        }
    }

    pub fn invalidate_entry_later(&self, parent: u64, name: &OsStr) {
        if let Some(f) = self.inval_entry_later.get() {
            f(parent, name);
        }
    }

    pub fn check_name(name: &OsStr) -> Result<()> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(())
    }

    /// Syncs a directory of the upper after an entry moved in, unless volatile.
    pub fn sync_dir(&self, fd: &OwnedFd) {
        if self.cfg.fsync {
            if let Ok(d) = sys::openat(fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) {
                let _ = sys::fsync(d.as_fd(), false);
            }
        }
    }
}

/// What marks a directory in a layer.
#[derive(Debug, Default)]
pub struct DirMarks {
    pub opaque: bool,
    pub redirect: Option<Vec<u8>>,
    pub origin: Option<Vec<u8>>,
}
