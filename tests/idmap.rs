//! uidmapping/gidmapping and squash options, in fuse-overlayfs's direction:
//! an id as the layers hold it is shown mapped (`uidmapping=0:1000:100`: the
//! layers' 0..99 show as 1000..1099); creation and chown store the ids the
//! kernel gives mapped back; an id the map does not cover is 65534 either
//! way (fuse-overlayfs's overflow id).

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
    // Unshifted layers, as image layers are: the container's root is 0.
    for (name, id) in [("mapped", 0u32), ("mapped50", 50), ("unmapped", 5000)] {
        write(&s.0.join("l").join(name), b"x\n");
        chown(s.0.join("l").join(name), Some(id), Some(id)).unwrap();
    }
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
    assert_eq!(owner(&m), (1000, 1000));
    assert_eq!(owner(&m.join("mapped")), (1000, 1000));
    assert_eq!(owner(&m.join("mapped50")), (1050, 1050));
    assert_eq!(owner(&m.join("unmapped")), (65534, 65534));
    // The container's root (host 1000 to the kernel) creates a file: it
    // belongs to the unshifted root on disk.
    let st = std::process::Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "touch"])
        .arg(m.join("new"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(owner(&m.join("new")), (1000, 1000));
    assert_eq!(owner(&u.join("new")), (0, 0));
    chown(m.join("new"), Some(1010), Some(1020)).unwrap();
    assert_eq!(owner(&m.join("new")), (1010, 1020));
    assert_eq!(owner(&u.join("new")), (10, 20));
    // Ids outside the map are stored as the overflow id, as fuse-overlayfs
    // 1.10 does (checked by hand: chown 5 and a root-made file both give
    // 65534 on disk).
    chown(m.join("new"), Some(500), None).unwrap();
    assert_eq!(owner(&u.join("new")), (65534, 20));
    fs::write(m.join("by-root"), b"r").unwrap();
    assert_eq!(owner(&u.join("by-root")), (65534, 65534));
    // A copied-up file keeps its stored owner.
    fs::write(m.join("mapped50"), b"changed\n").unwrap();
    assert_eq!(owner(&u.join("mapped50")), (50, 50));
    assert_eq!(owner(&m.join("mapped50")), (1050, 1050));
    g.stop();
}

/// fuse-overlayfs's man page example: a lower file owned by 0:0 under
/// uidmapping=0:1000:1,gidmapping=0:2000:1 stats as 1000:2000.
#[test]
fn man_page_example() {
    let s = setup("idmap-man");
    let (l, u, w, m) = (s.0.join("l"), s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let opts = "uidmapping=0:1000:1,gidmapping=0:2000:1";
    let _g = OvlMount::layers(&[l], Some((&u, &w)), &m, opts);
    assert_eq!(owner(&m.join("mapped")), (1000, 2000));
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
        (50, 50),
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
        (50, 50, 0o644),
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
