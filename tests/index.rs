//! index=on and origin: hard links of lower files stay linked through
//! copy-up (W/index), st_ino survives copy-up and remount, and the kernel
//! mounts the upper ovlfuse wrote — compared with the kernel throughout.

mod common;

use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::*;

const OPTS: &str = "redirect_dir=on,index=on";

per_fixture!(hard_link_append_shows_through_both_names_and_survives_remount);

fn hard_link_append_shows_through_both_names_and_survives_remount(
    build: fn(&Path) -> Vec<PathBuf>,
) {
    let p = Pair::with_lowers(OPTS, OPTS, build, build);
    p.both("append via hard1", |m| {
        append(&m.join("hard1"), b"appended\n").unwrap();
        (read(&m.join("hard1")), read(&m.join("hard2")))
    });
    p.both("nlink and ino", |m| {
        let (a, b) = (
            fs::metadata(m.join("hard1")).unwrap(),
            fs::metadata(m.join("hard2")).unwrap(),
        );
        (a.nlink(), b.nlink(), a.ino() == b.ino())
    });
    p.check_all();
}

per_fixture!(hard_link_names_link_unlink_rename);

fn hard_link_names_link_unlink_rename(build: fn(&Path) -> Vec<PathBuf>) {
    let p = Pair::with_lowers(OPTS, OPTS, build, build);
    p.both("write via hard2", |m| {
        res(fs::write(m.join("hard2"), b"new\n"))
    });
    p.both("link a third name", |m| {
        res(fs::hard_link(m.join("hard1"), m.join("a/third")))
    });
    p.both("nlinks", |m| {
        ["hard1", "hard2", "a/third"].map(|n| {
            fs::metadata(m.join(n))
                .map(|s| s.nlink())
                .map_err(|e| e.raw_os_error())
        })
    });
    p.both("unlink hard1", |m| res(fs::remove_file(m.join("hard1"))));
    p.both("rename hard2", |m| {
        res(fs::rename(m.join("hard2"), m.join("deep/h2")))
    });
    p.both("after", |m| {
        let n = fs::metadata(m.join("a/third")).unwrap().nlink();
        (n, read(&m.join("deep/h2")), read(&m.join("a/third")))
    });
    p.both("append via third", |m| {
        append(&m.join("a/third"), b"+\n").unwrap();
        read(&m.join("deep/h2"))
    });
    p.check_all();
}

/// The untouched name of a copied-up hard link after a remount: found
/// through the index, with the new data.
#[test]
fn untouched_name_finds_the_index_after_remount() {
    let mut p = Pair::new(OPTS, OPTS);
    p.both("append via hard1", |m| {
        res(append(&m.join("hard1"), b"x\n"))
    });
    p.unmount();
    p.mount();
    p.both("hard2 first after remount", |m| {
        let md = fs::metadata(m.join("hard2")).unwrap();
        (
            read(&m.join("hard2")),
            md.nlink(),
            md.ino() == fs::metadata(m.join("hard1")).unwrap().ino(),
        )
    });
    p.both("truncate via hard2", |m| {
        fs::OpenOptions::new()
            .write(true)
            .open(m.join("hard2"))
            .unwrap()
            .set_len(3)
            .unwrap();
        read(&m.join("hard1"))
    });
    p.check_all();
}

/// A lower file in the bottom of `n` layers keeps its st_ino (the lower
/// inode number, all layers being on one filesystem) through copy-up and
/// remount, on ovlfuse as on the kernel.
fn ino_stays(n: usize) {
    let s = Scratch::new("ino");
    let (k, o) = (s.0.join("k"), s.0.join("o"));
    let layers = |base: &Path| -> Vec<PathBuf> {
        let v: Vec<PathBuf> = (0..n).map(|i| base.join(format!("l{i}"))).collect();
        for (i, l) in v.iter().enumerate() {
            fs::create_dir_all(l.join("dir")).unwrap();
            write(&l.join(format!("dir/only{i}")), b"x");
        }
        write(&v[n - 1].join("dir/file"), b"bottom\n");
        for d in ["u", "w", "m"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        v
    };
    for (base, kernel) in [(&k, true), (&o, false)] {
        let l = layers(base);
        let real = fs::metadata(l[n - 1].join("dir/file")).unwrap().ino();
        let real_dir = fs::metadata(l[0].join("dir")).unwrap().ino();
        let (u, w, m) = (base.join("u"), base.join("w"), base.join("m"));
        let stat = |step: &str| {
            let got = fs::metadata(m.join("dir/file")).unwrap().ino();
            assert_eq!(got, real, "{n} lowers, kernel={kernel}: st_ino {step}");
            let d = fs::metadata(m.join("dir")).unwrap().ino();
            assert_eq!(
                d, real_dir,
                "{n} lowers, kernel={kernel}: dir st_ino {step}"
            );
        };
        let mount = || -> Box<dyn std::any::Any> {
            if kernel {
                Box::new(KernelMount::new(&l, Some((&u, &w)), &m, OPTS))
            } else {
                Box::new(OvlMount::layers(&l, Some((&u, &w)), &m, OPTS))
            }
        };
        let g = mount();
        stat("before copy-up");
        append(&m.join("dir/file"), b"up\n").unwrap();
        stat("after copy-up");
        drop(g);
        let _g = mount();
        stat("after remount");
        assert_eq!(read(&m.join("dir/file")).unwrap(), b"bottom\nup\n");
    }
}

#[test]
fn st_ino_is_stable_with_1_lower() {
    ino_stays(1);
}

#[test]
fn st_ino_is_stable_with_2_lowers() {
    ino_stays(2);
}

#[test]
fn st_ino_is_stable_with_10_lowers() {
    ino_stays(10);
}

/// Layers on two filesystems (a tmpfs lower, an ext4 upper): st_ino carries
/// the layer's filesystem in its high bits (xino), so numbers stay unique,
/// readdir's d_ino equals st_ino, and copy-up and remount keep them.
#[test]
fn xino_composes_inode_numbers_across_filesystems() {
    let shm = Scratch(PathBuf::from(format!(
        "/dev/shm/ovlfuse-xino-{}",
        std::process::id()
    )));
    let _ = fs::remove_dir_all(&shm.0);
    let lower = shm.0.join("l");
    write(&lower.join("a"), b"a\n");
    write(&lower.join("d/b"), b"b\n");
    write(&lower.join("d/c"), b"c\n");
    let s = Scratch::new("xino");
    for d in ["u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    write(&s.0.join("u/d/up"), b"upper\n");
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let inos = |m: &Path| -> Vec<(String, u64, u64)> {
        let mut v = Vec::new();
        for dir in ["", "d"] {
            for e in fs::read_dir(m.join(dir)).unwrap() {
                let e = e.unwrap();
                let name = format!("{dir}/{}", e.file_name().to_string_lossy());
                let st = fs::symlink_metadata(e.path()).unwrap().ino();
                v.push((name, e.ino(), st));
            }
        }
        v.sort();
        v
    };
    let mut g = OvlMount::layers(
        std::slice::from_ref(&lower),
        Some((&u, &w)),
        &m,
        "xino=auto",
    );
    let before = inos(&m);
    for (name, d_ino, st_ino) in &before {
        assert_eq!(d_ino, st_ino, "{name}: d_ino != st_ino");
    }
    let mut all: Vec<u64> = before.iter().map(|x| x.2).collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        before.len(),
        "st_ino not unique across filesystems: {before:?}"
    );
    let lower_ino = fs::metadata(lower.join("d/b")).unwrap().ino();
    let seen = fs::metadata(m.join("d/b")).unwrap().ino();
    assert_ne!(seen, lower_ino, "a tmpfs inode must carry its layer bits");
    assert_eq!(seen & ((1 << 32) - 1), lower_ino & ((1 << 32) - 1));
    append(&m.join("d/b"), b"+\n").unwrap();
    assert_eq!(inos(&m), before, "copy-up changed inode numbers");
    g.stop();
    let _g = OvlMount::layers(&[lower], Some((&u, &w)), &m, "xino=auto");
    assert_eq!(inos(&m), before, "remount changed inode numbers");
}
