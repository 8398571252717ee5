//! Lookup (the kernel's namei.c): find a name top to bottom through the
//! parent's layer stack, stopping at whiteouts, opaque dirs and non-dirs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::format;
use crate::layer::join;
use crate::node::{self, Found, LowerRef, Node};
use crate::redirect::Walk;
use crate::sys::is_dir;
use crate::sys::Stat;
use crate::{Errno, OvlFs, Result};

mod ino;

/// Where to look in a lower: (layer, dir in that layer, name).
type Cand = (u16, Vec<u8>, Vec<u8>);

/// The state of one lookup on its way down the layers (the kernel's
/// ovl_lookup_data).
struct LookupData {
    /// The name's path in the merged view.
    path: Vec<u8>,
    /// The topmost object found, and its layer index (0: upper).
    top: Option<(Stat, usize)>,
    top_lower_path: Vec<u8>,
    upper: bool,
    redirect: Option<Arc<[u8]>>,
    origin: Option<Vec<u8>>,
    /// The upper object has an nlink xattr (and there is an index).
    indexed: bool,
    metacopy: bool,
    /// The blocks of a metacopy file's data (the bottom of its stack).
    data_blocks: Option<libc::blkcnt_t>,
    lowers: crate::node::Lowers,
    /// Whether to go on below the object found so far.
    descend: bool,
    /// The lookups still to do, one per lower layer.
    cands: Vec<Cand>,
    /// Walking each layer's path after an absolute redirect.
    walking: bool,
    /// A dir on the walked path was opaque.
    stop: bool,
    index: Option<Arc<str>>,
    nlink: Option<u32>,
    /// The lower layer a listing found the name in: the layers above it
    /// do not hold it (readdirplus; see lookup_lowers).
    listed_in: Option<u16>,
}

impl LookupData {
    fn new(ppath: &[u8], name: &OsStr, plowers: &[LowerRef]) -> LookupData {
        let cands = plowers
            .iter()
            .map(|l| {
                let dir = l
                    .path
                    .as_ref()
                    .map(|p| p.to_vec())
                    .unwrap_or_else(|| ppath.to_vec());
                (l.layer, dir, name.as_bytes().to_vec())
            })
            .collect();
        LookupData {
            path: join(ppath, name),
            top: None,
            top_lower_path: Vec::new(),
            upper: false,
            redirect: None,
            origin: None,
            indexed: false,
            metacopy: false,
            data_blocks: None,
            lowers: Default::default(),
            descend: true,
            cands,
            walking: false,
            stop: false,
            index: None,
            nlink: None,
            listed_in: None,
        }
    }
}

/// How the upper step ends.
enum UpperStep {
    /// A whiteout (or `.wh.` marker) there.
    Whiteout,
    /// The name is a marker's, never an entry.
    Hidden,
    /// The node table knows the object already.
    Known(Box<(Found, Stat)>),
    /// Go on to the lowers.
    Go,
}

/// What a lower step says of the steps after it.
#[derive(PartialEq, Eq)]
enum Step {
    Next,
    Done,
}

impl OvlFs {
    /// Resolves `name` in `parent`. None: no such entry in the merged view.
    pub fn lookup_found(&self, parent: &Node, name: &OsStr) -> Result<Option<(Found, Stat)>> {
        self.lookup_found_ex(parent, name, &mut false, None)
    }

    /// lookup_found that also tells whether the upper holds a whiteout there.
    pub fn lookup_found_ex(
        &self,
        parent: &Node,
        name: &OsStr,
        upper_whiteout: &mut bool,
        listed_in: Option<u16>,
    ) -> Result<Option<(Found, Stat)>> {
        if !parent.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        OvlFs::check_name(name)?;
        let ppath = self.path_of(parent)?;
        let mut d = LookupData::new(&ppath, name, &parent.state.read().lowers);
        d.listed_in = listed_in;
        if parent.has_upper() {
            match self.lookup_upper(&mut d, parent, &ppath, name)? {
                UpperStep::Whiteout => {
                    *upper_whiteout = true;
                    return Ok(None);
                }
                UpperStep::Hidden => return Ok(None),
                UpperStep::Known(found) => return Ok(Some(*found)),
                UpperStep::Go => {}
            }
        }
        self.lookup_lowers(&mut d)?;
        let Some((st, idx)) = d.top.take() else {
            return Ok(None);
        };
        // Lower names that spell AUFS markers never show.
        if !d.upper && format::is_aufs_name(name) {
            return Ok(None);
        }
        self.lookup_finish(d, parent, name, st, idx).map(Some)
    }

    /// The upper step: a whiteout or marker there ends the lookup; an
    /// upper dir says whether to go on below (opaque) and where (redirect);
    /// an upper non-dir only goes on below as a metacopy file.
    fn lookup_upper(
        &self,
        d: &mut LookupData,
        parent: &Node,
        ppath: &[u8],
        name: &OsStr,
    ) -> Result<UpperStep> {
        let u = self.upper()?;
        // The upper's `.wh.` files are markers, never entries; one hides
        // the lower names (an upper entry of the name wins).
        if format::is_aufs_name(name) {
            return Ok(UpperStep::Hidden);
        }
        let ust = u.try_stat(&d.path)?;
        if ust.is_none()
            && (self.whiteouts() == crate::workdir::Whiteouts::Aufs
                || self.upper_markers(parent, ppath)?)
        {
            let wh = join(ppath, &format::aufs_whiteout_name(name));
            if u.try_stat(&wh)?.is_some() {
                return Ok(UpperStep::Whiteout);
            }
        }
        let Some(st) = ust else {
            return Ok(UpperStep::Go);
        };
        if format::is_whiteout(&st) {
            return Ok(UpperStep::Whiteout);
        }
        if let Some(found) = self.known_upper(parent, name, &st) {
            return Ok(UpperStep::Known(Box::new(found)));
        }
        d.upper = true;
        d.top = Some((st, 0));
        if is_dir(&st) {
            let m = self.dir_marks(u, &d.path)?;
            d.descend = !m.opaque;
            d.origin = m.origin;
            if let Some(r) = m.redirect.filter(|_| self.follow_redirects()) {
                self.apply_redirect(&mut d.cands, 0, None, &r, false);
                d.redirect = Some(Arc::from(r.as_slice()));
            }
        } else {
            self.upper_nondir_marks(d, &st)?;
        }
        Ok(UpperStep::Go)
    }

    /// An upper non-dir's markers: its origin, whether it is indexed, and
    /// whether it is a metacopy file, whose data is further down, by name
    /// or by its redirect (which may reach data-only layers).
    fn upper_nondir_marks(&self, d: &mut LookupData, st: &Stat) -> Result<()> {
        let u = self.upper()?;
        d.descend = false;
        let names = u.listxattr(&d.path).unwrap_or_default();
        let has = |c: &std::ffi::CStr| names.iter().any(|n| n.as_bytes() == c.to_bytes());
        if has(&self.xn.origin) {
            d.origin = u.try_getxattr(&d.path, &self.xn.origin)?;
        }
        d.indexed = self.index.is_some() && has(&self.xn.nlink);
        d.metacopy = st.st_mode & libc::S_IFMT == libc::S_IFREG && has(&self.xn.metacopy);
        if !d.metacopy {
            return Ok(());
        }
        d.descend = true;
        if !has(&self.xn.redirect) {
            return Ok(());
        }
        if let Some(r) = u.try_getxattr(&d.path, &self.xn.redirect)? {
            if !format::redirect_valid(&r) {
                log::warn!("{}: bad redirect xattr", String::from_utf8_lossy(&d.path));
                return Err(Errno::EIO);
            }
            self.apply_redirect(&mut d.cands, 0, None, &r, true);
            d.redirect = Some(Arc::from(r.as_slice()));
        }
        Ok(())
    }

    /// The lower steps, top layer first, while the stack goes on.
    fn lookup_lowers(&self, d: &mut LookupData) -> Result<()> {
        // After an absolute redirect, each layer's path is walked one dir
        // at a time (the kernel's ovl_lookup_layer), following redirects on
        // the way; `stop`: a dir on that way was opaque.
        d.walking = d.redirect.as_ref().is_some_and(|r| r.starts_with(b"/"));
        let mut i = 0;
        // A name a listing found in lower L: the layers above L were asked
        // then, and lowers do not change. Only where the upper added
        // nothing since (no object, no redirect) and the walk is plain.
        if let Some(l) = d
            .listed_in
            .filter(|_| d.top.is_none() && d.redirect.is_none())
        {
            while i < d.cands.len() && d.cands[i].0 < l {
                i += 1;
            }
        }
        while d.descend && !d.stop && i < d.cands.len() {
            let cand = d.cands[i].clone();
            i += 1;
            if self.lookup_layer(d, cand, i)? == Step::Done {
                break;
            }
        }
        Ok(())
    }

    /// One lower layer's step (the kernel's ovl_lookup_layer): the name in
    /// the dir `ldir` of layer `li`; `next`: the index of the next step.
    fn lookup_layer(
        &self,
        d: &mut LookupData,
        (li, ldir, lname): Cand,
        next: usize,
    ) -> Result<Step> {
        let layer = &self.lowers[li as usize];
        if d.walking && !layer.data_only {
            match self.walk_redirected(layer, &ldir)? {
                Walk::Missing => return Ok(Step::Next),
                Walk::Stop => return Ok(Step::Done),
                Walk::Found { rename, opaque } => {
                    if let Some(dir) = rename {
                        d.cands[next..].iter_mut().for_each(|c| c.1 = dir.clone());
                    }
                    d.stop = opaque;
                }
            }
        }
        let lname = OsStr::from_bytes(&lname);
        let lpath = join(&ldir, lname);
        let Some(st) = layer.try_stat(&lpath)? else {
            // An AUFS whiteout hides the name in this layer and below.
            let aufs = join(&ldir, &format::aufs_whiteout_name(lname));
            if !format::is_aufs_name(lname) && layer.try_stat(&aufs)?.is_some() {
                return Ok(Step::Done);
            }
            return Ok(Step::Next);
        };
        if format::is_whiteout(&st) || self.is_xwhiteout(layer, &lpath, &st)? {
            return Ok(Step::Done);
        }
        let lref = LowerRef::new(li, (lpath != d.path).then_some(lpath.as_slice()));
        let is_reg = st.st_mode & libc::S_IFMT == libc::S_IFREG;
        match &d.top {
            None => {
                d.top = Some((st, layer.idx));
                d.top_lower_path = lpath.clone();
                d.lowers.push(lref);
                if is_reg && self.lower_metacopy(layer, &lpath, &mut d.cands, next)? {
                    d.metacopy = true;
                    return Ok(Step::Next);
                }
                if !is_dir(&st) {
                    return Ok(Step::Done);
                }
            }
            Some(_) if d.metacopy => {
                if is_reg {
                    d.lowers.push(lref);
                    // A metacopy file further down: its data is lower still.
                    if self.lower_metacopy(layer, &lpath, &mut d.cands, next)? {
                        return Ok(Step::Next);
                    }
                    d.data_blocks = Some(st.st_blocks);
                }
                return Ok(Step::Done);
            }
            // Only dirs merge; a non-dir below a dir ends the stack.
            Some(_) if !is_dir(&st) => return Ok(Step::Done),
            Some(_) => d.lowers.push(lref),
        }
        self.lower_dir_step(d, li, &lpath, next)
    }

    /// A lower dir joins the merge: its opaque mark ends the stack, and
    /// its redirect (a lower that once was an upper) moves the candidates.
    fn lower_dir_step(
        &self,
        d: &mut LookupData,
        li: u16,
        lpath: &[u8],
        next: usize,
    ) -> Result<Step> {
        let m = self.dir_marks(&self.lowers[li as usize], lpath)?;
        if m.opaque {
            return Ok(Step::Done);
        }
        if let Some(r) = m.redirect.filter(|_| self.follow_redirects()) {
            if r.starts_with(b"/") {
                // As the kernel: an absolute redirect below an opaque dir
                // on the way lifts that stop.
                d.walking = true;
                d.stop = false;
            }
            self.apply_redirect(&mut d.cands, next, Some(li), &r, false);
        }
        Ok(Step::Next)
    }

    /// What the layers found, as a Found and the stat the merged view
    /// reports: data from the bottom of a metacopy stack, the index, and
    /// the inode number.
    fn lookup_finish(
        &self,
        mut d: LookupData,
        parent: &Node,
        name: &OsStr,
        mut st: Stat,
        idx: usize,
    ) -> Result<(Found, Stat)> {
        if d.metacopy && d.data_blocks.is_none() {
            log::warn!(
                "{}: metacopy file without lower data",
                String::from_utf8_lossy(&d.path)
            );
            return Err(Errno::EIO);
        }
        if let Some(b) = d.data_blocks {
            st.st_blocks = b;
        }
        let (ino, shown) = if d.upper {
            self.lookup_upper_ino(&mut d, parent, name, &st)?
        } else {
            self.lookup_lower_ino(&mut d, parent, name, &mut st, idx)?
        };
        st.st_ino = if node::is_split_id(ino) { shown } else { ino };
        if let Some(n) = d.nlink {
            st.st_nlink = n as _;
        }
        let found = Found {
            ino,
            kind: st.st_mode & libc::S_IFMT,
            upper: d.upper,
            lowers: d.lowers,
            redirect: d.redirect,
            index: d.index,
            nlink: d.nlink,
            metacopy: d.metacopy,
        };
        Ok((found, st))
    }

    /// Whether the parent's upper dir holds `.wh.NAME` markers: read once
    /// per dir (an upper that fuse-overlayfs wrote where it could not make
    /// char 0/0 whiteouts), so that lookups of other uppers pay nothing.
    fn upper_markers(&self, parent: &Node, ppath: &[u8]) -> Result<bool> {
        if let Some(m) = parent.state.read().upper_markers {
            return Ok(m);
        }
        let names = self.upper()?.scan_dir(ppath)?;
        let m = names
            .iter()
            .any(|(n, _, _)| format::aufs_whiteout_target(n).is_some());
        parent.state.write().upper_markers = Some(m);
        Ok(m)
    }

    /// A zero-size regular file with the `whiteout` xattr in a lower layer
    /// (kernel 6.7+): a whiteout that can itself be escaped.
    pub fn is_xwhiteout(
        &self,
        layer: &crate::layer::Layer,
        path: &[u8],
        st: &Stat,
    ) -> Result<bool> {
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size != 0 || layer.idx == 0 {
            return Ok(false);
        }
        Ok(layer.try_getxattr(path, &self.xn.whiteout)?.is_some())
    }

    /// Looks up and interns the node; `count` adds a kernel lookup reference.
    pub fn lookup(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        count: bool,
    ) -> Result<(Arc<Node>, Stat)> {
        let listed_in = self.listed_in(parent, name);
        self.lookup_listed(parent, name, count, listed_in)
    }

    /// lookup of a name a listing found in lower `listed_in` (readdirplus):
    /// the layers above that one are not asked again, so the cost of an
    /// entry does not grow with the layers above it.
    pub fn lookup_listed(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        count: bool,
        listed_in: Option<u16>,
    ) -> Result<(Arc<Node>, Stat)> {
        let _paths = self.rename_lock.paths();
        match self.lookup_found_ex(parent, name, &mut false, listed_in)? {
            Some((found, st)) => {
                let merged_dir =
                    found.kind == libc::S_IFDIR && found.upper as usize + found.lowers.len() > 1;
                let found_upper = found.upper;
                let node = self.nodes.intern(parent, name, found, count);
                node.set_st_ino(st.st_ino);
                if node::is_split_id(node.ino) {
                    self.splits.note(&node);
                }
                if node.has_upper() && !found_upper {
                    // Another name of a file already copied up: its data lives there.
                    return Ok((node.clone(), self.getattr(&node, None)?));
                }
                let mut st = st;
                self.fix_stat(&node, &mut st, merged_dir);
                self.apply_override(&node, &mut st);
                Ok((node, st))
            }
            None => Err(Errno::ENOENT),
        }
    }

    /// Whether some lower layer of `parent` still has `name` (so removing the
    /// upper entry needs a whiteout).
    pub fn lower_positive(&self, parent: &Node, name: &OsStr) -> Result<bool> {
        let ppath = self.path_of(parent)?;
        let plowers = parent.state.read().lowers.clone();
        // Lazily: the first layer that has the name decides.
        let dirs = plowers.iter().map(|l| (l.layer, l.path_or(&ppath)));
        self.shows_below(dirs, name)
    }

    /// Whether `name` shows in the lower dirs `dirs` (lower index, path),
    /// top first: the first that has it decides, and a whiteout there
    /// (char 0/0, xattr or `.wh.`) says no.
    pub fn shows_below(
        &self,
        dirs: impl IntoIterator<Item = (u16, Vec<u8>)>,
        name: &OsStr,
    ) -> Result<bool> {
        for (li, ldir) in dirs {
            let layer = &self.lowers[li as usize];
            let lpath = join(&ldir, name);
            match layer.try_stat(&lpath)? {
                Some(st)
                    if format::is_whiteout(&st) || self.is_xwhiteout(layer, &lpath, &st)? =>
                {
                    return Ok(false)
                }
                Some(_) => return Ok(true),
                None => {
                    if layer
                        .try_stat(&join(&ldir, &format::aufs_whiteout_name(name)))?
                        .is_some()
                    {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(false)
    }
}
