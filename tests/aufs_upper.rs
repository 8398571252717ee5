//! Where whiteout devices (char 0/0) cannot be created in the upper layer,
//! ovlfuse writes AUFS `.wh.NAME` files instead, as fuse-overlayfs does, and
//! reads them back. Here a seccomp filter makes mknod fail with EPERM in the
//! daemon; the merged view must still match kernel overlayfs doing the same
//! operations with real whiteouts, also after remounts (with and without
//! the filter: the workdir remembers the mode).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

fn remount(p: &mut Pair, filter: bool) {
    p.ovl = None;
    let w = p.scratch.0.join("o/w");
    let opts = overlay_opts(&p.o_lowers, Some((&p.o_upper, &w)), &p.o_opts);
    p.ovl = Some(match filter {
        true => OvlMount::new_with(&opts, &p.o_mnt, no_mknod),
        false => OvlMount::new(&opts, &p.o_mnt),
    });
}

/// Kinds of the entries of the upper, recursively: (char devices, `.wh.` files).
fn upper_markers(dir: &Path, out: &mut (usize, usize)) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.file_type().is_dir() {
            upper_markers(&e.path(), out);
        } else if md.mode() & libc::S_IFMT == libc::S_IFCHR {
            out.0 += 1;
        } else if e.file_name().to_string_lossy().starts_with(".wh.") {
            out.1 += 1;
        }
    }
}

#[test]
fn refused_whiteout_devices_give_aufs_whiteouts_in_the_upper() {
    let mut p = Pair::new("", "");
    remount(&mut p, true);
    p.both("unlink a lower file", |m| {
        res(fs::remove_file(m.join("top")))
    });
    p.both("rm -rf a merged dir", |m| {
        res(fs::remove_dir_all(m.join("a")))
    });
    p.both("rename a lower file", |m| {
        res(fs::rename(m.join("xat"), m.join("xat2")))
    });
    p.both("create over a whiteout", |m| {
        res(fs::write(m.join("top"), b"new top\n"))
    });
    p.both("mkdir over a whited-out dir", |m| {
        (
            res(fs::create_dir(m.join("a"))),
            res(fs::write(m.join("a/only"), b"only\n")),
            ls(&m.join("a")),
        )
    });
    p.both("rename onto a whited-out name", |m| {
        (
            res(fs::write(m.join("n"), b"n\n")),
            res(fs::remove_file(m.join("ro"))),
            res(fs::rename(m.join("n"), m.join("ro"))),
            read(&m.join("ro")),
        )
    });
    p.both("link onto a whited-out name", |m| {
        (
            res(fs::remove_file(m.join("owned"))),
            res(fs::hard_link(m.join("xat2"), m.join("owned"))),
        )
    });
    p.both("rmdir of a dir emptied of lower entries", |m| {
        (
            res(fs::remove_file(m.join("opq/visible"))),
            res(fs::remove_dir(m.join("opq"))),
            ls(m),
        )
    });
    p.assert_same_tree();
    // The markers are `.wh.` files, and `.wh.` names cannot be made.
    let mut marks = (0, 0);
    upper_markers(&p.o_upper, &mut marks);
    assert_eq!(marks.0, 0, "a char device in the upper");
    // Whiteouts stay where a name is gone; a name taken again drops its own.
    assert_eq!(marks.1, 2, "{} .wh. files in the upper", marks.1);
    assert!(p.o_upper.join(".wh.xat").exists() && p.o_upper.join(".wh.opq").exists());
    assert!(!p.o_upper.join(".wh.top").exists() && !p.o_upper.join(".wh.a").exists());
    assert_eq!(
        fs::write(p.o_mnt.join(".wh.mine"), b"")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );
    remount(&mut p, true);
    p.assert_same_tree();
    // mknod works again, but this upper keeps its `.wh.` whiteouts.
    remount(&mut p, false);
    p.assert_same_tree();
    p.both("unlink after the remount", |m| {
        res(fs::remove_file(m.join("sym")))
    });
    p.assert_same_tree();
    let mut marks = (0, 0);
    upper_markers(&p.o_upper, &mut marks);
    assert_eq!(marks.0, 0, "a char device in the upper after the remount");
}
