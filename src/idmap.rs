//! Id mapping (fuse-overlayfs's uidmapping/gidmapping and squash options):
//! an id as the layers store it is shown mapped; ids that come from the
//! kernel (a creator, chown) are stored mapped back. With podman's
//! `--uidmap 0:100000:65536`, storage passes `uidmapping=0:100000:65536`:
//! unshifted image layers (owned by 0) appear owned by 100000, the
//! container's root.

use crate::config::{Config, IdMap};
use crate::sys::Stat;

/// The id shown for a stored id outside every mapping.
pub const OVERFLOW_ID: u32 = 65534;

#[derive(Debug, Clone, Default)]
pub struct IdMapper {
    uids: Vec<IdMap>,
    gids: Vec<IdMap>,
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
}

fn to_shown(maps: &[IdMap], stored: u32) -> u32 {
    if maps.is_empty() {
        return stored;
    }
    maps.iter()
        .find(|m| stored >= m.stored && stored - m.stored < m.len)
        .map(|m| m.shown + (stored - m.stored))
        .unwrap_or(OVERFLOW_ID)
}

fn to_stored(maps: &[IdMap], id: u32) -> u32 {
    if maps.is_empty() {
        return id;
    }
    maps.iter()
        .find(|m| id >= m.shown && id - m.shown < m.len)
        .map(|m| m.stored + (id - m.shown))
        .unwrap_or(OVERFLOW_ID)
}

impl IdMapper {
    pub fn new(cfg: &Config) -> IdMapper {
        IdMapper {
            uids: cfg.uidmap.clone(),
            gids: cfg.gidmap.clone(),
            squash_uid: cfg.squash_uid,
            squash_gid: cfg.squash_gid,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.uids.is_empty()
            && self.gids.is_empty()
            && self.squash_uid.is_none()
            && self.squash_gid.is_none()
    }

    /// Owner as the merged view shows it.
    pub fn show(&self, st: &mut Stat) {
        (st.st_uid, st.st_gid) = self.show_ids(st.st_uid, st.st_gid);
    }

    /// Stored ids as the merged view shows them.
    pub fn show_ids(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            self.squash_uid.unwrap_or_else(|| to_shown(&self.uids, uid)),
            self.squash_gid.unwrap_or_else(|| to_shown(&self.gids, gid)),
        )
    }

    /// Ids to store for ids the kernel gives (chown). An id no mapping
    /// covers is stored as the overflow id, as fuse-overlayfs does.
    pub fn store(&self, uid: Option<u32>, gid: Option<u32>) -> (Option<u32>, Option<u32>) {
        (
            uid.map(|u| to_stored(&self.uids, u)),
            gid.map(|g| to_stored(&self.gids, g)),
        )
    }

    /// The parts of a chown that apply: a squashed id is not changed.
    pub fn unsquashed(&self, uid: Option<u32>, gid: Option<u32>) -> (Option<u32>, Option<u32>) {
        (
            uid.filter(|_| self.squash_uid.is_none()),
            gid.filter(|_| self.squash_gid.is_none()),
        )
    }

    /// The stored owner of a new object made by a caller (shown ids); a
    /// caller the map does not cover makes objects of the overflow id (so
    /// root on the host can still create, as podman does before a start).
    pub fn creator(&self, uid: u32, gid: u32) -> (u32, u32) {
        (to_stored(&self.uids, uid), to_stored(&self.gids, gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(spec: &str) -> IdMapper {
        let mut c = Config::default();
        c.apply_options(spec).unwrap();
        IdMapper::new(&c)
    }

    #[test]
    fn maps_both_ways_and_overflows() {
        // The layers' 0..99 show as 1000..1099, 500..509 as 5000..5009.
        let m = mapper("uidmapping=0:1000:100:500:5000:10,gidmapping=:0:2000:100");
        let mut st = crate::sys::zeroed_stat();
        st.st_uid = 5;
        st.st_gid = 1;
        m.show(&mut st);
        assert_eq!((st.st_uid, st.st_gid), (1005, 2001));
        st.st_uid = 503;
        st.st_gid = 700;
        m.show(&mut st);
        assert_eq!((st.st_uid, st.st_gid), (5003, OVERFLOW_ID));
        assert_eq!(m.store(Some(1000), Some(2099)), (Some(0), Some(99)));
        // Ids outside the map are stored as the overflow id (fuse-overlayfs).
        assert_eq!(m.store(Some(100), None), (Some(OVERFLOW_ID), None));
        assert_eq!(m.creator(5005, 2000), (505, 0));
        assert_eq!(m.creator(200, 2000), (OVERFLOW_ID, 0));
        // fuse-overlayfs's man page example.
        let m = mapper("uidmapping=0:1000:1,gidmapping=0:2000:1");
        assert_eq!(m.show_ids(0, 0), (1000, 2000));
    }

    #[test]
    fn squash() {
        let m = mapper("squash_to_uid=7");
        let mut st = crate::sys::zeroed_stat();
        st.st_uid = 1234;
        st.st_gid = 55;
        m.show(&mut st);
        assert_eq!((st.st_uid, st.st_gid), (7, 55));
        assert_eq!(m.unsquashed(Some(3), Some(4)), (None, Some(4)));
        assert!(mapper("").is_identity());
    }
}
