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

/// xattr_permissions=2: chown and chmod go to user.containers.override_stat
/// (the inode keeps its owner), stat shows the stored values, and the xattr
/// itself is hidden.
#[test]
fn xattr_permissions_keep_owner_and_mode_in_an_xattr() {
    let s = setup("xperm");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let _g = OvlMount::layers(&[l], Some((&u, &w)), &m, "xattr_permissions=2");
    chown(m.join("mapped50"), Some(7), Some(8)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.join("mapped50"), fs::Permissions::from_mode(0o600)).unwrap();
    let md = fs::metadata(m.join("mapped50")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (7, 8, 0o600));
    let umd = fs::metadata(u.join("mapped50")).unwrap();
    assert_eq!(
        (umd.uid(), umd.gid(), umd.mode() & 0o7777),
        (1050, 1050, 0o644),
        "the inode is not changed"
    );
    assert_eq!(
        get_xattr(&u.join("mapped50"), "user.containers.override_stat"),
        Ok(b"7:8:0600".to_vec())
    );
    assert!(!list_xattr(&m.join("mapped50"))
        .unwrap()
        .iter()
        .any(|n| n.contains("override")));
    assert_eq!(
        get_xattr(&m.join("mapped50"), "user.containers.override_stat"),
        Err(libc::ENODATA)
    );
    fs::write(m.join("made"), b"m").unwrap();
    assert_eq!(
        get_xattr(&u.join("made"), "user.containers.override_stat"),
        Ok(b"0:0:0644".to_vec())
    );
}

#[test]
fn xattr_permissions_leave_symlink_owners_in_the_inode() {
    let s = setup("xperm-link");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    std::os::unix::fs::symlink("mapped", l.join("link")).unwrap();
    let _g = OvlMount::layers(&[l], Some((&u, &w)), &m, "xattr_permissions=2");
    std::os::unix::fs::lchown(m.join("link"), Some(3), Some(4)).unwrap();
    assert_eq!(owner(&m.join("link")), (3, 4));
    assert_eq!(owner(&u.join("link")), (3, 4));
}
