//! Lookup (the kernel's namei.c): find a name top to bottom through the
//! parent's layer stack, stopping at whiteouts, opaque dirs and non-dirs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::dir::is_dir;
use crate::format;
use crate::layer::join;
use crate::node::{self, Found, LowerRef, Node};
use crate::redirect::Walk;
use crate::sys::Stat;
use crate::{errno, OvlFs, Result};

impl OvlFs {
    /// Resolves `name` in `parent`. None: no such entry in the merged view.
    pub fn lookup_found(&self, parent: &Node, name: &OsStr) -> Result<Option<(Found, Stat)>> {
        self.lookup_found_ex(parent, name, &mut false)
    }

    /// lookup_found that also tells whether the upper holds a whiteout there.
    pub fn lookup_found_ex(
        &self,
        parent: &Node,
        name: &OsStr,
        upper_whiteout: &mut bool,
    ) -> Result<Option<(Found, Stat)>> {
        if !parent.is_dir() {
            return errno(libc::ENOTDIR);
        }
        OvlFs::check_name(name)?;
        let ppath = self.path_of(parent)?;
        let path = join(&ppath, name);
        let plowers = parent.state.read().lowers.clone();

        let mut top: Option<(Stat, usize)> = None;
        let mut top_lower_path: Vec<u8> = Vec::new();
        let mut upper = false;
        let mut redirect = None;
        let mut origin: Option<Vec<u8>> = None;
        let mut indexed = false;
        let mut metacopy = false;
        let mut data_blocks = None;
        let mut lowers = Vec::new();
        let mut descend = true;
        // Where to look in each lower: (layer, dir in that layer, name).
        let mut cands: Vec<(u16, Vec<u8>, Vec<u8>)> = plowers
            .iter()
            .map(|l| {
                let dir = l
                    .path
                    .as_ref()
                    .map(|p| p.to_vec())
                    .unwrap_or_else(|| ppath.clone());
                (l.layer, dir, name.as_bytes().to_vec())
            })
            .collect();
        if parent.has_upper() {
            let u = self.upper()?;
            // The upper's `.wh.` files are markers, never entries; one
            // hides the lower names (an upper entry of the name wins).
            if format::is_aufs_name(name) {
                return Ok(None);
            }
            let ust = u.try_stat(&path)?;
            if ust.is_none() && (self.aufs_whiteouts || self.upper_markers(parent, &ppath)?) {
                let wh = join(&ppath, &format::aufs_whiteout_name(name));
                if u.try_stat(&wh)?.is_some() {
                    *upper_whiteout = true;
                    return Ok(None);
                }
            }
            if let Some(st) = ust {
                if format::is_whiteout(&st) {
                    *upper_whiteout = true;
                    return Ok(None);
                }
                if let Some(found) = self.known_upper(parent, name, &st) {
                    return Ok(Some(found));
                }
                upper = true;
                top = Some((st, 0));
                if is_dir(&st) {
                    let m = self.dir_marks(u, &path)?;
                    descend = !m.opaque;
                    origin = m.origin;
                    if let Some(r) = m.redirect.filter(|_| self.follow_redirects()) {
                        self.apply_redirect(&mut cands, 0, None, &r, false);
                        redirect = Some(Arc::from(r.as_slice()));
                    }
                } else {
                    descend = false;
                    let names = u.listxattr(&path).unwrap_or_default();
                    let has =
                        |c: &std::ffi::CStr| names.iter().any(|n| n.as_bytes() == c.to_bytes());
                    if has(&self.xn.origin) {
                        origin = u.try_getxattr(&path, &self.xn.origin)?;
                    }
                    indexed = self.index.is_some() && has(&self.xn.nlink);
                    // A metacopy file: its data is further down, by name or
                    // by its redirect (which may reach data-only layers).
                    metacopy = st.st_mode & libc::S_IFMT == libc::S_IFREG && has(&self.xn.metacopy);
                    if metacopy {
                        descend = true;
                        if has(&self.xn.redirect) {
                            if let Some(r) = u.try_getxattr(&path, &self.xn.redirect)? {
                                if !format::redirect_valid(&r) {
                                    log::warn!(
                                        "{}: bad redirect xattr",
                                        String::from_utf8_lossy(&path)
                                    );
                                    return errno(libc::EIO);
                                }
                                self.apply_redirect(&mut cands, 0, None, &r, true);
                                redirect = Some(Arc::from(r.as_slice()));
                            }
                        }
                    }
                }
            }
        }
        // After an absolute redirect, each layer's path is walked one dir at
        // a time (the kernel's ovl_lookup_layer), following redirects on the
        // way; `stop`: a dir on that way was opaque.
        let mut walking = redirect
            .as_ref()
            .is_some_and(|r: &Arc<[u8]>| r.starts_with(b"/"));
        let mut stop = false;
        let mut i = 0;
        while descend && !stop && i < cands.len() {
            let (li, ldir, lname) = cands[i].clone();
            i += 1;
            let layer = &self.lowers[li as usize];
            if walking && !layer.data_only {
                match self.walk_redirected(layer, &ldir)? {
                    Walk::Missing => continue,
                    Walk::Stop => break,
                    Walk::Found { rename, opaque } => {
                        if let Some(d) = rename {
                            cands[i..].iter_mut().for_each(|c| c.1 = d.clone());
                        }
                        stop = opaque;
                    }
                }
            }
            let lname = OsStr::from_bytes(&lname);
            let lpath = join(&ldir, lname);
            let Some(st) = layer.try_stat(&lpath)? else {
                // An AUFS whiteout hides the name in this layer and below.
                if !format::is_aufs_name(lname)
                    && layer
                        .try_stat(&join(&ldir, &format::aufs_whiteout_name(lname)))?
                        .is_some()
                {
                    break;
                }
                continue;
            };
            if format::is_whiteout(&st) || self.is_xwhiteout(layer, &lpath, &st)? {
                break;
            }
            let lref = LowerRef {
                layer: li,
                path: (lpath != path).then(|| Arc::from(lpath.as_slice())),
            };
            let is_reg = st.st_mode & libc::S_IFMT == libc::S_IFREG;
            match &top {
                None => {
                    top = Some((st, layer.idx));
                    top_lower_path = lpath.clone();
                    lowers.push(lref);
                    if is_reg && self.lower_metacopy(layer, &lpath, &mut cands, i)? {
                        metacopy = true;
                        continue;
                    }
                    if !is_dir(&st) {
                        break;
                    }
                }
                Some(_) if metacopy => {
                    if is_reg {
                        lowers.push(lref);
                        // A metacopy file further down: its data is lower still.
                        if self.lower_metacopy(layer, &lpath, &mut cands, i)? {
                            continue;
                        }
                        data_blocks = Some(st.st_blocks);
                    }
                    break;
                }
                // Only dirs merge; a non-dir below a dir ends the stack.
                Some(_) if !is_dir(&st) => break,
                Some(_) => lowers.push(lref),
            }
            let m = self.dir_marks(layer, &lpath)?;
            if m.opaque {
                break;
            }
            // A lower layer that once was an upper may carry redirects too.
            if let Some(r) = m.redirect.filter(|_| self.follow_redirects()) {
                if r.starts_with(b"/") {
                    // As the kernel: an absolute redirect below an opaque
                    // dir on the way lifts that stop.
                    walking = true;
                    stop = false;
                }
                self.apply_redirect(&mut cands, i, Some(li), &r, false);
            }
        }
        let Some((mut st, idx)) = top else {
            return Ok(None);
        };
        // Lower names that spell AUFS markers never show.
        if !upper && format::is_aufs_name(name) {
            return Ok(None);
        }
        // A non-dir may have several names: "same path as my name" would be
        // ambiguous, so its lower paths are always spelt out.
        if !is_dir(&st) {
            for l in lowers.iter_mut().filter(|l| l.path.is_none()) {
                l.path = Some(Arc::from(path.as_slice()));
            }
        }
        if metacopy && data_blocks.is_none() {
            log::warn!(
                "{}: metacopy file without lower data",
                String::from_utf8_lossy(&path)
            );
            return errno(libc::EIO);
        }
        if let Some(b) = data_blocks {
            st.st_blocks = b;
        }
        let mut index = None;
        let mut nlink = None;
        let fh = match (&origin, upper) {
            (Some(v), true) if indexed || !self.copied.contains_key(&st.st_ino) => {
                self.decode_origin(v, &path)
            }
            _ => None,
        };
        // The st_ino of a split node (see below); else the node id is.
        let mut shown = 0;
        let ino = if upper {
            // Indexed only if W/index holds this very inode under the name of
            // its origin; otherwise an nlink xattr is stray and ignored.
            let iname = fh.as_ref().filter(|_| indexed).map(|f| f.index_name());
            if let (Some(name), Some(ix)) = (iname, self.index_layer()) {
                if ix
                    .try_stat(name.as_bytes())?
                    .is_some_and(|i| i.st_ino == st.st_ino)
                {
                    index = Some(Arc::from(name.as_str()));
                    nlink = Some(self.indexed_nlink(self.upper()?, &path, &st, st.st_nlink));
                }
            }
            // A name of a lower hard link copied up through its own node.
            let kind = st.st_mode & libc::S_IFMT;
            let split = (!is_dir(&st))
                .then(|| self.live_split(parent, name, kind))
                .flatten();
            match split.and_then(|s| self.nodes.get(s)) {
                Some(n) => {
                    shown = n.st_ino();
                    n.ino
                }
                None => self.upper_ino(&st, fh.as_ref(), index.is_some()),
            }
        } else {
            let mut ino = self.map_ino(idx, &st);
            shown = ino;
            if !is_dir(&st) && st.st_nlink > 1 && !self.read_only() {
                // Each name of a lower hard link gets a node of its own, so
                // that an open or setattr tells which name it went through:
                // that name is the one copied up (index=off: on its own; with
                // the index: linked to the index entry), as in the kernel.
                // It reports the lower's number.
                let kind = st.st_mode & libc::S_IFMT;
                ino = self
                    .live_split(parent, name, kind)
                    .unwrap_or_else(|| self.new_split(parent, name));
            }
            // Another name of a lower hard link whose inode was copied up
            // through the index: the data and link count live there.
            let layer = &self.lowers[lowers[0].layer as usize];
            if let Some((name, ist)) = self.lookup_index(layer, &top_lower_path, &st)? {
                let ix = self.index_layer().expect("index");
                nlink = Some(self.indexed_nlink(ix, name.as_bytes(), &ist, st.st_nlink));
                // A metadata-only copy-up in the index (metacopy=on): the
                // data is still below. Otherwise the index has the data,
                // even when the lower name is itself a metacopy.
                metacopy = ix
                    .try_getxattr(name.as_bytes(), &self.xn.metacopy)?
                    .is_some();
                index = Some(Arc::from(name.as_str()));
                upper = true;
                let blocks = st.st_blocks;
                st = ist;
                if metacopy {
                    st.st_blocks = blocks;
                }
            }
            ino
        };
        st.st_ino = if node::is_split_id(ino) { shown } else { ino };
        if let Some(n) = nlink {
            st.st_nlink = n as _;
        }
        let kind = st.st_mode & libc::S_IFMT;
        Ok(Some((
            Found {
                ino,
                kind,
                upper,
                lowers,
                redirect,
                index,
                nlink,
                metacopy,
            },
            st,
        )))
    }

    /// An upper object this name already leads to in the node table: what
    /// the first lookup found still holds (its markers change only through
    /// ovlfuse, which keeps the node up to date), so one stat suffices.
    fn known_upper(&self, parent: &Node, name: &OsStr, st: &Stat) -> Option<(Found, Stat)> {
        let ino = self
            .copied
            .get(&st.st_ino)
            .map(|i| *i)
            .unwrap_or_else(|| self.map_ino(0, st));
        let node = self.nodes.get(ino)?;
        let s = node.state.read();
        let same = node.kind == st.st_mode & libc::S_IFMT
            && node.has_upper()
            && !s.dead
            && !s.metacopy
            && s.index.is_none()
            && s.aliases
                .iter()
                .any(|(p, n)| std::ptr::eq(p.as_ref(), parent) && n == name);
        if !same {
            return None;
        }
        let mut st = *st;
        if !node::is_split_id(ino) {
            st.st_ino = ino;
        }
        let found = Found {
            ino,
            kind: node.kind,
            upper: true,
            lowers: s.lowers.clone(),
            redirect: s.redirect.clone(),
            index: None,
            nlink: None,
            metacopy: false,
        };
        Some((found, st))
    }

    /// Whether the parent's upper dir holds `.wh.NAME` markers: read once
    /// per dir (an upper that fuse-overlayfs wrote where it could not make
    /// char 0/0 whiteouts), so that lookups of other uppers pay nothing.
    fn upper_markers(&self, parent: &Node, ppath: &[u8]) -> Result<bool> {
        if let Some(m) = parent.state.read().upper_markers {
            return Ok(m);
        }
        let names = self.upper()?.read_dir(ppath)?;
        let m = names
            .iter()
            .any(|(n, _, _)| format::aufs_whiteout_target(n).is_some());
        parent.state.write().upper_markers = Some(m);
        Ok(m)
    }

    /// The st_ino (and node id) of a non-split upper object: what copy-up
    /// recorded this mount, else its origin's number where that holds.
    fn upper_ino(&self, st: &Stat, fh: Option<&crate::format::FileHandle>, indexed: bool) -> u64 {
        if let Some(i) = self.copied.get(&st.st_ino).map(|i| *i) {
            return i;
        }
        match fh.and_then(|f| self.origin_ino(f, indexed)) {
            Some(i) => {
                self.copied.insert(st.st_ino, i);
                i
            }
            None => self.map_ino(0, st),
        }
    }

    /// The live split node (a name of a lower hard link with a node of its
    /// own) known under (parent, name).
    fn live_split(&self, parent: &Node, name: &OsStr, kind: u32) -> Option<u64> {
        let id = *self.split_ids.get(&(parent.ino, name.to_os_string()))?;
        let n = self.nodes.get(id)?;
        let s = n.state.read();
        let live = n.kind == kind
            && !s.dead
            && s.aliases
                .iter()
                .any(|(p, a)| p.ino == parent.ino && a == name);
        live.then_some(id)
    }

    /// A split node moved (rename): its name key moves with it.
    pub fn move_split(&self, node: &Node, parent: &Node, name: &OsStr, np: &Node, nn: &OsStr) {
        if !node::is_split_id(node.ino) {
            return;
        }
        self.split_ids
            .remove_if(&(parent.ino, name.to_os_string()), |_, v| *v == node.ino);
        self.split_ids.insert((np.ino, nn.to_os_string()), node.ino);
    }

    /// Files `node` (split) under its st_ino, beside the other names of
    /// its inode.
    fn note_split(&self, node: &Node) {
        let mut ids = self.split_siblings.entry(node.st_ino()).or_default();
        if !ids.contains(&node.ino) {
            ids.push(node.ino);
        }
    }

    /// The split node `id` (whose st_ino was `st_ino`) is gone.
    pub fn drop_split(&self, id: u64, st_ino: u64, names: &[(u64, std::ffi::OsString)]) {
        self.split_siblings.remove_if_mut(&st_ino, |_, ids| {
            ids.retain(|&i| i != id);
            ids.is_empty()
        });
        if names.is_empty() {
            // Unlinked: its name is not known any more.
            self.split_ids.retain(|_, v| *v != id);
        }
        for k in names {
            self.split_ids.remove_if(k, |_, v| *v == id);
        }
    }

    /// The other nodes that are names of `node`'s inode: the one whose id
    /// is the st_ino, and the split ones. (Not a walk of the node table:
    /// copy-ups of hard links with the index need this.)
    pub fn names_of_inode(&self, node: &Node) -> Vec<Arc<Node>> {
        let key = node.st_ino();
        let mut ids: Vec<u64> = self
            .split_siblings
            .get(&key)
            .map(|v| v.clone())
            .unwrap_or_default();
        ids.push(key);
        ids.into_iter()
            .filter(|&i| i != node.ino)
            .filter_map(|i| self.nodes.get(i))
            .collect()
    }

    fn new_split(&self, parent: &Node, name: &OsStr) -> u64 {
        let id = self.new_split_id();
        self.split_ids.insert((parent.ino, name.to_os_string()), id);
        id
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
        match self.lookup_found(parent, name)? {
            Some((found, st)) => {
                let merged_dir =
                    found.kind == libc::S_IFDIR && found.upper as usize + found.lowers.len() > 1;
                let found_upper = found.upper;
                let node = self.nodes.intern(parent, name, found, count);
                node.set_st_ino(st.st_ino);
                if node::is_split_id(node.ino) {
                    self.note_split(&node);
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
            None => errno(libc::ENOENT),
        }
    }

    /// Whether some lower layer of `parent` still has `name` (so removing the
    /// upper entry needs a whiteout).
    pub fn lower_positive(&self, parent: &Node, name: &OsStr) -> Result<bool> {
        let ppath = self.path_of(parent)?;
        let plowers = parent.state.read().lowers.clone();
        for l in &plowers {
            let layer = &self.lowers[l.layer as usize];
            let ldir = match &l.path {
                Some(p) => p.to_vec(),
                None => ppath.clone(),
            };
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
