//! metacopy=on: metadata-only copy-up (chmod, chown, utimes, xattrs,
//! rename, link) keeps the data in the lower until the first write or
//! truncate; data-only lowers (`A::D`) are reached only through metacopy
//! redirects. Compared with the kernel mounted the same way, after a remount,
//! and with the kernel mounting the upper ovlfuse wrote.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

const OPTS: &str = "metacopy=on,redirect_dir=on,index=off";

#[test]
fn metadata_changes_copy_up_without_data() {
    let p = Pair::new(OPTS, OPTS);
    p.both("chmod", |m| {
        res(fs::set_permissions(
            m.join("sparse"),
            fs::Permissions::from_mode(0o600),
        ))
    });
    p.both("chown", |m| {
        res(std::os::unix::fs::chown(m.join("a/w"), Some(5), Some(6)))
    });
    p.both("utimes", |m| {
        set_mtime(&m.join("deep/1/2/3/file"), 777);
        fs::metadata(m.join("deep/1/2/3/file")).unwrap().mtime()
    });
    p.both("xattr", |m| {
        set_xattr(&m.join("xat"), "user.more", b"1");
        list_xattr(&m.join("xat"))
    });
    p.both("reads lower data", |m| {
        (read(&m.join("a/w")), read(&m.join("xat")))
    });
    p.both("blocks from lower", |m| {
        fs::metadata(m.join("sparse")).unwrap().blocks() < 64
    });
    p.both("rename same dir", |m| {
        res(fs::rename(m.join("a/w"), m.join("a/w2")))
    });
    p.both("rename other dir", |m| {
        res(fs::rename(m.join("xat"), m.join("deep/xat2")))
    });
    p.both("rename lower file", |m| {
        res(fs::rename(m.join("top"), m.join("a/top2")))
    });
    p.both("link metacopy", |m| {
        res(fs::hard_link(m.join("a/w2"), m.join("w-link")))
    });
    p.both("read moved", |m| {
        (
            read(&m.join("a/w2")),
            read(&m.join("deep/xat2")),
            read(&m.join("a/top2")),
        )
    });
    p.both("write brings data up", |m| {
        append(&m.join("deep/1/2/3/file"), b"written\n").unwrap();
        read(&m.join("deep/1/2/3/file"))
    });
    p.both("truncate", |m| {
        fs::OpenOptions::new()
            .write(true)
            .open(m.join("a/top2"))
            .unwrap()
            .set_len(3)
            .unwrap();
        read(&m.join("a/top2"))
    });
    p.check_all();
}

/// `lowerdir=A::D`: D holds the data of A's metacopy files and is never
/// listed itself. A is made by a kernel overlay (metacopy chmod + rename).
#[test]
fn data_only_lower_serves_metacopy_redirects() {
    let build = |b: &Path| -> Vec<PathBuf> {
        let (a, d) = (b.join("A"), b.join("D"));
        write(&d.join("data/f"), b"data in the data-only layer\n");
        write(&d.join("data/g"), b"g\n");
        write(&d.join("visible-only-via-redirect"), b"x\n");
        fs::create_dir_all(&a).unwrap();
        // A metacopy file with an absolute redirect into D, as a kernel
        // overlay leaves it in its upper after `chmod` and `mv`.
        write(&a.join("f"), b"");
        fs::File::options()
            .write(true)
            .open(a.join("f"))
            .unwrap()
            .set_len(28)
            .unwrap();
        set_xattr(&a.join("f"), "trusted.overlay.metacopy", b"");
        set_xattr(&a.join("f"), "trusted.overlay.redirect", b"/data/f");
        write(&a.join("plain"), b"plain\n");
        vec![a, PathBuf::from(format!("{}:", d.display()))]
    };
    let fix = |v: Vec<PathBuf>| -> Vec<PathBuf> {
        // "A::D" is spelt as lowers ["A", "", "D"] joined by ':'.
        vec![
            v[0].clone(),
            PathBuf::from(format!(
                ":{}",
                v[1].display().to_string().trim_end_matches(':')
            )),
        ]
    };
    let p = Pair::with_lowers(OPTS, OPTS, move |b| fix(build(b)), move |b| fix(build(b)));
    p.both("ls", ls);
    p.both("read via redirect", |m| read(&m.join("f")));
    p.both("data layer not visible", |m| {
        res(fs::symlink_metadata(m.join("data")))
    });
    p.both("write copies data up", |m| {
        append(&m.join("f"), b"+\n").unwrap();
        read(&m.join("f"))
    });
    p.both("plain", |m| read(&m.join("plain")));
    p.assert_same_tree();
    let d = p.scratch.0.join("o/D/data/f");
    assert_eq!(
        read(&d).unwrap(),
        b"data in the data-only layer\n",
        "a lower layer was written"
    );
}
