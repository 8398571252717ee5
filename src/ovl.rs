//! The mounted overlay (the kernel's `struct ovl_fs`): layers, work dir,
//! private xattr names, the node table and the open handles.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use log::info;

use crate::config::{Atime, Config, Xino};
use crate::format::XattrNames;
use crate::layer::{self, common_dir, Layer, Reach};
use crate::node::{LowerRef, Node, NodeState, NodeTable, ROOT_INO};
use crate::open::{DirHandle, OpenFile};
use crate::sys;
use crate::{errno, Errno, Result};

/// Asks the kernel to drop its entry (parent node id, name).
pub type InvalEntry = Box<dyn Fn(u64, &OsStr) + Send + Sync>;

pub struct OvlFs {
    pub cfg: Config,
    pub upper: Option<Layer>,
    /// `W/work`: where copy-ups and whiteouts are built before they move in.
    pub work: Option<OwnedFd>,
    pub lowers: Vec<Layer>,
    /// `W/index` (index=on).
    pub index: Option<Layer>,
    pub xn: XattrNames,
    /// Owner ids between the layers (host) and the merged view (container).
    pub ids: crate::idmap::IdMapper,
    /// xattr_permissions: the xattr that holds owner and mode, if any.
    pub override_xattr: Option<CString>,
    pub nodes: NodeTable,
    pub files: DashMap<u64, Arc<OpenFile>>,
    pub dirs: DashMap<u64, Arc<DirHandle>>,
    next_fh: AtomicU64,
    tmp_seq: AtomicU64,
    /// Upper inode number -> overlay inode number, for objects copied up
    /// during this mount (their st_ino stays the lower one).
    pub copied: DashMap<u64, u64>,
    /// (parent node id, name) -> node id of a name of a lower hard link
    /// that is its own object (index=off): see namei's split_id.
    pub split_ids: DashMap<(u64, std::ffi::OsString), u64>,
    /// st_ino -> the split node ids of that inode's names (namei.rs).
    pub split_siblings: DashMap<u64, Vec<u64>>,
    next_split: AtomicU64,
    /// Removed pure upper objects the kernel has not forgotten yet, held
    /// open so that their inode numbers are not reused (dir::pin_removed).
    pub pinned: DashMap<u64, OwnedFd>,
    /// Whiteouts in the upper are AUFS `.wh.NAME` files: the upper refuses
    /// char 0/0 devices (see aufs_whiteouts_needed).
    pub aufs_whiteouts: bool,
    /// High bits used for the layer's fs index when layers span filesystems.
    pub xino_bits: u32,
    /// Distinct st_dev values of the layers, upper first: index = fsid.
    pub fs_devs: Vec<u64>,
    /// Tells the kernel to drop its cached attributes of a node (set by the
    /// FUSE front end; absent when the core runs without a mount).
    pub inval_attr: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Tells the kernel, after the current request is answered, to drop
    /// its cached entry (parent, name) (set by the FUSE front end).
    pub inval_entry_later: std::sync::OnceLock<InvalEntry>,
    /// Keeps path resolution and rename commits apart.
    pub rename_lock: crate::rename_lock::RenameLock,
    /// The workdir's fd, which holds its in-use lock (the upper's is held
    /// by the upper layer's own fd) for as long as the mount lives.
    _work_lock: Option<OwnedFd>,
}

fn io_err(what: &str, path: &std::path::Path, e: io::Error) -> String {
    format!("{what} {}: {}", path.display(), crate::config::io_msg(&e))
}

impl OvlFs {
    /// Opens every layer and prepares the work dir. The config must be validated.
    pub fn new(mut cfg: Config) -> std::result::Result<OvlFs, String> {
        let mut lowers = Vec::with_capacity(cfg.lowers.len());
        for (i, l) in cfg.lowers.iter().enumerate() {
            lowers.push(
                Layer::open(
                    &l.path,
                    i + 1,
                    l.data_only,
                    &Reach::new(&l.path, Atime::Never, false),
                )
                .map_err(|e| io_err("lowerdir", &l.path, e))?,
            );
        }
        let mut upper = None;
        let mut work = None;
        let mut index = None;
        let mut aufs_whiteouts = false;
        let mut work_lock = None;
        if let (Some(u), Some(w)) = (&cfg.upper, &cfg.work) {
            // One view for both: work-to-upper renames must stay in one mount.
            let reach = Reach::new(&common_dir(u, w), cfg.fuse.atime, cfg.fuse.nodiratime);
            let ul = Layer::open(u, 0, false, &reach).map_err(|e| io_err("upperdir", u, e))?;
            let wl = Layer::open(w, 0, false, &reach).map_err(|e| io_err("workdir", w, e))?;
            // As the kernel's in-use flags: one mount per upper and workdir.
            // Taken before W/work is emptied, which would wreck a live mount.
            lock_in_use(&wl, "workdir", w)?;
            lock_in_use(&ul, "upperdir", u)?;
            let wfd = prepare_workdir(&wl, cfg.index).map_err(|e| io_err("workdir", w, e))?;
            if !cfg.userxattr && !trusted_xattrs_work(&wfd) {
                info!("trusted.* xattrs cannot be written on the upper filesystem; using user.overlay.* (userxattr)");
                cfg.userxattr = true;
            }
            aufs_whiteouts =
                aufs_whiteouts_needed(&wl, &wfd).map_err(|e| io_err("workdir", w, e))?;
            if cfg.index {
                let ip = w.join("index");
                let il = Layer::open(&ip, 0, false, &reach);
                index = Some(il.map_err(|e| io_err("workdir", &ip, e))?);
            }
            upper = Some(ul);
            work = Some(wfd);
            work_lock = Some(wl.root);
        }
        let mut fs_devs: Vec<u64> = Vec::new();
        for l in upper.iter().chain(lowers.iter()) {
            if !fs_devs.contains(&l.dev) {
                fs_devs.push(l.dev);
            }
        }
        let xino_bits = match (cfg.xino, fs_devs.len()) {
            (_, 1) | (Xino::Off, _) => 0,
            (_, n) => 64 - (n as u64).leading_zeros() + 1,
        };
        let xn = XattrNames::new(cfg.userxattr);
        let ids = crate::idmap::IdMapper::new(&cfg);
        let override_xattr = crate::format::override_name(cfg.xattr_permissions)
            .map(|n| CString::new(n).expect("no NUL"));
        let mut root_lowers = Vec::new();
        for (i, l) in lowers.iter().enumerate() {
            if l.data_only {
                break;
            }
            root_lowers.push(LowerRef {
                layer: i as u16,
                path: None,
            });
        }
        let root = Node::new(
            ROOT_INO,
            0,
            libc::S_IFDIR,
            upper.is_some(),
            NodeState {
                aliases: Vec::new(),
                lowers: root_lowers,
                ..Default::default()
            },
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
            files: DashMap::new(),
            dirs: DashMap::new(),
            next_fh: AtomicU64::new(1),
            tmp_seq: AtomicU64::new(0),
            copied: DashMap::new(),
            pinned: DashMap::new(),
            split_ids: DashMap::new(),
            split_siblings: DashMap::new(),
            next_split: AtomicU64::new(u64::MAX - 1),
            aufs_whiteouts,
            xino_bits,
            fs_devs,
            inval_attr: std::sync::OnceLock::new(),
            inval_entry_later: std::sync::OnceLock::new(),
            rename_lock: Default::default(),
            _work_lock: work_lock,
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
        self.upper.as_ref().ok_or(Errno(libc::EROFS))
    }

    pub fn work(&self) -> Result<&OwnedFd> {
        self.work.as_ref().ok_or(Errno(libc::EROFS))
    }

    pub fn read_only(&self) -> bool {
        self.upper.is_none()
    }

    pub fn node(&self, ino: u64) -> Result<Arc<Node>> {
        self.nodes.get(ino).ok_or(Errno(libc::ENOENT))
    }

    pub fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    pub fn new_split_id(&self) -> u64 {
        self.next_split.fetch_sub(1, Ordering::Relaxed)
    }

    /// A fresh name for a temp object in the work dir.
    pub fn tmp_name(&self) -> CString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#ovl{:x}-{:x}", std::process::id(), n)).expect("no NUL")
    }

    /// The kernel dropped `n` lookups of `ino`; at zero it holds no inode
    /// of that number any more.
    pub fn forget(&self, ino: u64, n: u64) {
        let split = crate::node::is_split_id(ino)
            .then(|| self.nodes.get(ino))
            .flatten()
            .map(|n| {
                let names = n
                    .state
                    .read()
                    .aliases
                    .iter()
                    .map(|(p, a)| (p.ino, a.clone()))
                    .collect::<Vec<_>>();
                (n.st_ino(), names)
            });
        self.nodes.forget(ino, n);
        if let Some((st_ino, names)) = split.filter(|_| self.nodes.get(ino).is_none()) {
            self.drop_split(ino, st_ino, &names);
        }
        if self.pinned.contains_key(&ino) && self.nodes.get(ino).is_none_or(|x| x.nlookup() == 0) {
            self.pinned.remove(&ino);
        }
    }

    pub fn path_of(&self, node: &Node) -> Result<Vec<u8>> {
        node.path().ok_or(Errno(libc::ENOENT))
    }

    /// The layer and path of the object that the merged view shows: the
    /// upper copy if any, else the top lower one.
    pub fn real(&self, node: &Node) -> Result<(&Layer, Vec<u8>)> {
        if let Some(name) = node.state.read().index.clone() {
            if let Some(ix) = self.index.as_ref() {
                return Ok((ix, name.as_bytes().to_vec()));
            }
        }
        if node.has_upper() {
            return Ok((self.upper()?, self.path_of(node)?));
        }
        let st = node.state.read();
        let l = st.lowers.first().ok_or(Errno(libc::ENOENT))?;
        // An explicit lower path holds also once the object has no name.
        let lp = match &l.path {
            Some(p) => p.to_vec(),
            None => self.path_of(node)?,
        };
        Ok((&self.lowers[l.layer as usize], lp))
    }

    /// Where the file's data is: the lower for a metacopy file, else real().
    pub fn real_data(&self, node: &Node) -> Result<(&Layer, Vec<u8>)> {
        let st = node.state.read();
        if st.metacopy {
            // The last of the stack holds the data (metacopy files above it).
            let l = st.lowers.last().ok_or(Errno(libc::EIO))?.clone();
            drop(st);
            let lp = node.lower_path(&l).ok_or(Errno(libc::ENOENT))?;
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
                        return errno(libc::EIO);
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
            return errno(libc::ENAMETOOLONG);
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

/// Creates `W/work` (and `W/index`) mode 000 like the kernel, and empties
/// `W/work` of whatever a crash left behind.
/// Takes the in-use lock of an upper or work dir. A daemon that was just
/// unmounted may still be on its way out: wait a little for its lock.
fn lock_in_use(l: &Layer, what: &str, path: &std::path::Path) -> std::result::Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sys::mount::flock_exclusive(l.fd()) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if std::time::Instant::now() >= deadline {
                    return Err(format!(
                        "{what} {}: is in use by another ovlfuse mount (EBUSY); unmount that one first, or give this mount its own upperdir and workdir",
                        path.display()
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(io_err(what, path, e)),
        }
    }
}

fn prepare_workdir(w: &Layer, index: bool) -> io::Result<OwnedFd> {
    for (name, want) in [(c"work", true), (c"index", index)] {
        if !want {
            continue;
        }
        // Mode 000 as the kernel makes them; an unprivileged daemon could
        // not enter those, so it keeps them to itself with 0700.
        let mode = if sys::geteuid() == 0 { 0 } else { 0o700 };
        match sys::mkdirat(w.fd(), name, mode) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => sys::fchmodat(w.fd(), name, mode)?,
            Err(e) => return Err(e),
        }
    }
    let work = sys::open_beneath(w.fd(), c"work", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    clean_dir(&work)?;
    Ok(work)
}

/// Removes everything inside an open directory, recursively.
pub fn clean_dir(dir: &OwnedFd) -> io::Result<()> {
    for (name, _, dtype) in sys::read_dir(dir.as_fd())? {
        let c = sys::cstr(&name)?;
        if dtype == libc::DT_DIR {
            let sub = sys::open_beneath(dir.as_fd(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            clean_dir(&sub)?;
            sys::unlinkat(dir.as_fd(), &c, libc::AT_REMOVEDIR)?;
        } else {
            sys::unlinkat(dir.as_fd(), &c, 0)?;
        }
    }
    Ok(())
}

/// Marks a workdir whose upper holds `.wh.NAME` whiteouts, so that later
/// mounts keep reading and writing them even where mknod would work.
const AUFS_MARK: &CStr = c"ovlfuse-aufs-whiteouts";

/// Whether whiteouts must be `.wh.NAME` files: the upper was written so
/// before, or creating a char 0/0 device in W/work is refused (seccomp,
/// some filesystems). Logged once, as fuse-overlayfs users expect.
fn aufs_whiteouts_needed(w: &Layer, work: &OwnedFd) -> io::Result<bool> {
    if sys::fstatat(w.fd(), AUFS_MARK).is_ok() {
        info!("this upper layer holds .wh.NAME whiteouts (workdir marked so): keeping them");
        return Ok(true);
    }
    let probe = c"ovlfuse-whiteout-probe";
    match sys::mknodat(work.as_fd(), probe, libc::S_IFCHR, 0) {
        Ok(()) => {
            sys::unlinkat(work.as_fd(), probe, 0)?;
            Ok(false)
        }
        Err(e) => {
            info!(
                "whiteout devices cannot be created in the upper layer ({}): using .wh.NAME files, which kernel overlayfs does not read",
                crate::config::io_msg(&e)
            );
            drop(sys::openat(
                w.fd(),
                AUFS_MARK,
                libc::O_CREAT | libc::O_WRONLY,
                0o600,
            )?);
            Ok(true)
        }
    }
}

fn trusted_xattrs_work(work: &OwnedFd) -> bool {
    let name = c"trusted.overlay.ovlfuse-probe";
    match sys::setxattr(work.as_fd(), c"", name, b"y", 0) {
        Ok(()) => {
            let _ = sys::removexattr(work.as_fd(), c"", name);
            true
        }
        Err(_) => false,
    }
}
