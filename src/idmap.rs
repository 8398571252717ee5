//! Id mapping (fuse-overlayfs's uidmapping/gidmapping and squash options):
//! layers store host ids; the merged view shows container ids.

use crate::config::{Config, IdMap};
use crate::sys::Stat;
use crate::{errno, Result};

/// The id shown for a host id outside every mapping.
pub const OVERFLOW_ID: u32 = 65534;

#[derive(Debug, Clone, Default)]
pub struct IdMapper {
    uids: Vec<IdMap>,
    gids: Vec<IdMap>,
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
}

fn to_container(maps: &[IdMap], host: u32) -> u32 {
    if maps.is_empty() {
        return host;
    }
    maps.iter()
        .find(|m| host >= m.host && host - m.host < m.len)
        .map(|m| m.container + (host - m.host))
        .unwrap_or(OVERFLOW_ID)
}

fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter()
        .find(|m| id >= m.container && id - m.container < m.len)
        .map(|m| m.host + (id - m.container))
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
        st.st_uid = self
            .squash_uid
            .unwrap_or_else(|| to_container(&self.uids, st.st_uid));
        st.st_gid = self
            .squash_gid
            .unwrap_or_else(|| to_container(&self.gids, st.st_gid));
    }

    /// Host ids to store for container ids (a new object's owner, chown).
    /// An id no mapping covers cannot be stored: EINVAL, as the kernel does
    /// on idmapped mounts.
    pub fn store(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(Option<u32>, Option<u32>)> {
        let map = |maps: &[IdMap], id: Option<u32>| -> Result<Option<u32>> {
            match id {
                None => Ok(None),
                Some(i) => to_host(maps, i).map(Some).ok_or(crate::Errno(libc::EINVAL)),
            }
        };
        Ok((map(&self.uids, uid)?, map(&self.gids, gid)?))
    }

    /// The parts of a chown that apply: a squashed id is not changed.
    pub fn unsquashed(&self, uid: Option<u32>, gid: Option<u32>) -> (Option<u32>, Option<u32>) {
        (
            uid.filter(|_| self.squash_uid.is_none()),
            gid.filter(|_| self.squash_gid.is_none()),
        )
    }

    /// The host owner of a new object made by a caller with container ids:
    /// EOVERFLOW for a caller the map does not cover, as the kernel's
    /// idmapped mounts.
    pub fn creator(&self, uid: u32, gid: u32) -> Result<(u32, u32)> {
        match (to_host(&self.uids, uid), to_host(&self.gids, gid)) {
            (Some(u), Some(g)) => Ok((u, g)),
            _ => errno(libc::EOVERFLOW),
        }
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
        let m = mapper("uidmapping=0:1000:100:500:5000:10,gidmapping=:0:2000:100");
        let mut st = crate::sys::zeroed_stat();
        st.st_uid = 1005;
        st.st_gid = 2001;
        m.show(&mut st);
        assert_eq!((st.st_uid, st.st_gid), (5, 1));
        st.st_uid = 5003;
        st.st_gid = 7;
        m.show(&mut st);
        assert_eq!((st.st_uid, st.st_gid), (503, OVERFLOW_ID));
        assert_eq!(
            m.store(Some(0), Some(99)).unwrap(),
            (Some(1000), Some(2099))
        );
        assert_eq!(
            m.store(Some(100), None).unwrap_err(),
            crate::Errno(libc::EINVAL)
        );
        assert_eq!(m.creator(505, 0).unwrap(), (5005, 2000));
        assert_eq!(
            m.creator(200, 0).unwrap_err(),
            crate::Errno(libc::EOVERFLOW)
        );
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
