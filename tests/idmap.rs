//! uidmapping/gidmapping and squash options: the layers hold host ids, the
//! merged view shows container ids; creation and chown store host ids; an id
//! the map does not cover shows as 65534 and cannot be stored (EINVAL).

mod common;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::Path;

use common::*;

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn setup(tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    for d in ["u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    for (name, id) in [("mapped", 1000u32), ("mapped50", 1050), ("unmapped", 5)] {
        write(&s.0.join("l").join(name), b"x\n");
        chown(s.0.join("l").join(name), Some(id), Some(id)).unwrap();
    }
    // The upper dir belongs to the container's root, as storage sets it up.
    chown(s.0.join("l"), Some(1000), Some(1000)).unwrap();
    chown(s.0.join("u"), Some(1000), Some(1000)).unwrap();
    s
}

#[test]
fn uid_and_gid_mapping() {
    let s = setup("idmap");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let mut g = OvlMount::layers(
        &[l],
        Some((&u, &w)),
        &m,
        "uidmapping=0:1000:100,gidmapping=0:1000:100",
    );
    assert_eq!(owner(&m), (0, 0));
    assert_eq!(owner(&m.join("mapped")), (0, 0));
    assert_eq!(owner(&m.join("mapped50")), (50, 50));
    assert_eq!(owner(&m.join("unmapped")), (65534, 65534));
    // Root in the container is host 1000: new files belong to it on disk.
    fs::write(m.join("new"), b"n").unwrap();
    assert_eq!(owner(&m.join("new")), (0, 0));
    assert_eq!(owner(&u.join("new")), (1000, 1000));
    chown(m.join("new"), Some(10), Some(20)).unwrap();
    assert_eq!(owner(&m.join("new")), (10, 20));
    assert_eq!(owner(&u.join("new")), (1010, 1020));
    let e = chown(m.join("new"), Some(500), None).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EINVAL),
        "an id outside the map"
    );
    // A copied-up file keeps its host owner.
    fs::write(m.join("mapped50"), b"changed\n").unwrap();
    assert_eq!(owner(&u.join("mapped50")), (1050, 1050));
    assert_eq!(owner(&m.join("mapped50")), (50, 50));
    g.stop();
}

#[test]
fn squash_to_root_shows_root_and_ignores_chown() {
    let s = setup("squash");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let _g = OvlMount::layers(&[l], Some((&u, &w)), &m, "squash_to_root");
    for f in ["mapped", "mapped50", "unmapped"] {
        assert_eq!(owner(&m.join(f)), (0, 0), "{f}");
    }
    chown(m.join("mapped50"), Some(7), Some(8)).unwrap();
    assert_eq!(owner(&m.join("mapped50")), (0, 0));
    assert_eq!(
        owner(&u.join("mapped50")),
        (1050, 1050),
        "chown is a no-op under squash"
    );
}
