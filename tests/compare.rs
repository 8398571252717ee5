//! Operation-by-operation comparison of ovlfuse with kernel overlayfs on
//! identical layers: each op's result or errno, the merged tree after, and the
//! upper dir (whiteouts, opaque markers, contents) after unmount.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

const K: &str = "redirect_dir=off,index=off";
const O: &str = "redirect_dir=off,index=off";

fn finish(mut p: Pair) {
    p.assert_same_tree();
    p.unmount();
    p.assert_same_upper();
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn sys_res(r: libc::c_int) -> String {
    if r < 0 {
        format!("errno {}", errno())
    } else {
        "ok".into()
    }
}

fn renameat2(a: &Path, b: &Path, flags: u32) -> String {
    let (a, b) = (c(a), c(b));
    // SAFETY: valid C strings.
    sys_res(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
}

fn mknod_res(p: &Path, mode: u32, dev: u64) -> String {
    let p = c(p);
    // SAFETY: valid C string.
    sys_res(unsafe { libc::mknod(p.as_ptr(), mode, dev) })
}

#[test]
fn initial_view_matches() {
    let p = Pair::new(K, O);
    for d in ["", "a", "opq", "deep/1/2/3", "emptyish"] {
        p.both(&format!("ls {d}"), |m| ls(&m.join(d)));
    }
    for f in [
        "a/x",
        "a/y",
        "wh-me",
        "gone-dir",
        "opq/hidden",
        "sym",
        "abs",
        "nope",
    ] {
        p.both(&format!("lstat {f}"), |m| {
            res(fs::symlink_metadata(m.join(f)))
        });
    }
    p.both("readlink", |m| {
        fs::read_link(m.join("sym")).map_err(|e| e.raw_os_error())
    });
    p.both("d_type", |m| {
        let mut v: Vec<(String, bool, bool, bool)> = fs::read_dir(m)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    t.is_dir(),
                    t.is_symlink(),
                    t.is_file(),
                )
            })
            .collect();
        v.sort();
        v
    });
    finish(p);
}

#[test]
fn copy_up_on_write_keeps_metadata_and_open_readers() {
    let p = Pair::new(K, O);
    p.both("append x", |m| res(append(&m.join("a/x"), b"more\n")));
    p.both("append owned", |m| res(append(&m.join("owned"), b"more\n")));
    p.both("sparse write", |m| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(m.join("sparse"))
            .unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(b"head").unwrap();
        drop(f);
        fs::metadata(m.join("sparse")).unwrap().len()
    });
    // A reader opened before the copy-up sees the data written after it.
    p.both("reader before copy-up", |m| {
        let mut r = fs::File::open(m.join("deep/1/2/3/file")).unwrap();
        append(&m.join("deep/1/2/3/file"), b"appended\n").unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        s
    });
    p.both("ino stable over copy-up", |m| {
        let before = fs::metadata(m.join("a/w")).unwrap().ino();
        append(&m.join("a/w"), b"w2\n").unwrap();
        before == fs::metadata(m.join("a/w")).unwrap().ino()
    });
    p.both("xattr copied up", |m| {
        append(&m.join("xat"), b"x").unwrap();
        get_xattr(&m.join("xat"), "user.test")
    });
    // Asked of a lower file with none, then set (ovlfuse keeps whether a
    // lower file has xattrs until its copy-up).
    p.both("xattrs of a lower file, then set", |m| {
        let z = m.join("a/sub/z");
        let before = (
            get_xattr(&z, "security.selinux"),
            get_xattr(&z, "user.k"),
            list_xattr(&z),
        );
        set_xattr(&z, "user.k", b"v");
        (
            before,
            get_xattr(&z, "user.k"),
            list_xattr(&z),
            get_xattr(&z, "user.j"),
        )
    });
    p.both("O_TRUNC", |m| {
        fs::write(m.join("top"), b"new").unwrap();
        read(&m.join("top"))
    });
    finish(p);
}

/// With index=on the kernel keeps lower hard links linked through copy-up.
#[test]
fn hard_link_writes_show_through_every_name() {
    let p = Pair::new("redirect_dir=off,index=on", "redirect_dir=off,index=on");
    p.both("xattr set via hard1, asked of both before and after", |m| {
        let ask = || {
            (
                get_xattr(&m.join("hard1"), "user.h"),
                get_xattr(&m.join("hard2"), "user.h"),
            )
        };
        let before = ask();
        set_xattr(&m.join("hard1"), "user.h", b"1");
        (before, ask())
    });
    p.both("append via hard1", |m| {
        append(&m.join("hard1"), b"appended\n").unwrap();
        (read(&m.join("hard1")), read(&m.join("hard2")))
    });
    p.both("truncate via hard2", |m| {
        fs::write(m.join("hard2"), b"t").unwrap();
        (read(&m.join("hard1")), read(&m.join("hard2")))
    });
    p.both("rename the other name", |m| {
        fs::rename(m.join("hard2"), m.join("a/h2")).unwrap();
        append(&m.join("a/h2"), b"+").unwrap();
        (read(&m.join("hard1")), read(&m.join("a/h2")))
    });
    p.both("unlink the first name", |m| {
        fs::remove_file(m.join("hard1")).unwrap();
        (read(&m.join("hard1")), read(&m.join("a/h2")))
    });
}

#[test]
fn unlink_and_rmdir_leave_kernel_whiteouts() {
    let p = Pair::new(K, O);
    p.both("unlink lower file", |m| res(fs::remove_file(m.join("top"))));
    p.both("unlink again", |m| res(fs::remove_file(m.join("top"))));
    p.both("unlink merged-dir file", |m| {
        res(fs::remove_file(m.join("a/x")))
    });
    p.both("unlink dir", |m| res(fs::remove_file(m.join("a"))));
    p.both("rmdir file", |m| res(fs::remove_dir(m.join("hard1"))));
    p.both("rmdir nonempty merged", |m| {
        res(fs::remove_dir(m.join("a")))
    });
    p.both("rmdir empty lower", |m| {
        res(fs::remove_dir(m.join("emptydir")))
    });
    p.both("new then unlink", |m| {
        fs::write(m.join("fresh"), b"1").unwrap();
        res(fs::remove_file(m.join("fresh")))
    });
    p.both("empty a merged dir then rmdir", |m| {
        for f in ["w", "sub/z"] {
            fs::remove_file(m.join("a").join(f)).unwrap();
        }
        fs::remove_dir(m.join("a/sub")).unwrap();
        (ls(&m.join("a")), res(fs::remove_dir(m.join("a"))))
    });
    p.both("rm -r deep", |m| res(fs::remove_dir_all(m.join("deep"))));
    p.both("unlink symlink and fifo", |m| {
        (
            res(fs::remove_file(m.join("sym"))),
            res(fs::remove_file(m.join("fifo"))),
        )
    });
    p.both("unlink one hard link", |m| {
        fs::remove_file(m.join("hard1")).unwrap();
        fs::metadata(m.join("hard2"))
            .map(|md| md.nlink())
            .map_err(|e| e.raw_os_error())
    });
    finish(p);
}

#[test]
fn create_over_whiteouts_and_in_merged_dirs() {
    let p = Pair::new(K, O);
    p.both("mkdir over whiteout", |m| {
        res(fs::create_dir(m.join("gone-dir")))
    });
    p.both("ls recreated", |m| ls(&m.join("gone-dir")));
    p.both("file over whiteout", |m| {
        res(fs::write(m.join("wh-me"), b"again"))
    });
    p.both("mkdir in merged", |m| {
        res(fs::create_dir(m.join("a/newdir")))
    });
    p.both("mkdir exists", |m| res(fs::create_dir(m.join("a"))));
    p.both("create exists", |m| {
        res(fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.join("a/x")))
    });
    p.both("rm then mkdir", |m| {
        fs::remove_file(m.join("top")).unwrap();
        res(fs::create_dir(m.join("top")))
    });
    p.both("rmdir then create file", |m| {
        fs::remove_dir(m.join("emptydir")).unwrap();
        res(fs::write(m.join("emptydir"), b"file now"))
    });
    p.both("fifo", |m| {
        mknod_res(&m.join("newfifo"), libc::S_IFIFO | 0o600, 0)
    });
    p.both("char 0/0 reserved", |m| {
        mknod_res(&m.join("wh"), libc::S_IFCHR | 0o600, 0)
    });
    p.both("char 1/3", |m| {
        mknod_res(&m.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3))
    });
    p.both("symlink", |m| {
        res(std::os::unix::fs::symlink("../target", m.join("a/newlink")))
    });
    p.both("symlink exists", |m| {
        res(std::os::unix::fs::symlink("t", m.join("sym")))
    });
    p.both("mode of new file", |m| {
        let f = m.join("modes");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_compat(0o751)
            .open(&f)
            .unwrap();
        fs::metadata(&f).unwrap().mode() & 0o7777
    });
    p.both("owner of new file", |m| {
        let f = m.join("a/sub/mine");
        std::os::unix::fs::chown(m.join("a/sub"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(m.join("a/sub"), fs::Permissions::from_mode(0o2777)).unwrap();
        fs::write(&f, b"1").unwrap();
        let md = fs::metadata(&f).unwrap();
        (md.uid(), md.gid())
    });
    finish(p);
}

trait ModeCompat {
    fn mode_compat(&mut self, mode: u32) -> &mut Self;
}

impl ModeCompat for fs::OpenOptions {
    fn mode_compat(&mut self, mode: u32) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, mode)
    }
}

#[test]
fn rename_files_and_dirs() {
    let p = Pair::new(K, O);
    p.both("rename lower file same dir", |m| {
        res(fs::rename(m.join("a/x"), m.join("a/x2")))
    });
    p.both("rename lower file to root", |m| {
        res(fs::rename(m.join("a/w"), m.join("w-moved")))
    });
    p.both("rename over lower file", |m| {
        res(fs::rename(m.join("top"), m.join("xat")))
    });
    p.both("rename onto whiteout name", |m| {
        res(fs::rename(m.join("ro"), m.join("wh-me")))
    });
    p.both("rename missing", |m| {
        res(fs::rename(m.join("nope"), m.join("nope2")))
    });
    p.both("rename lower dir", |m| {
        res(fs::rename(m.join("deep"), m.join("deep2")))
    });
    p.both("rename upper dir", |m| {
        fs::create_dir_all(m.join("nd/inner")).unwrap();
        fs::write(m.join("nd/inner/f"), b"f").unwrap();
        res(fs::rename(m.join("nd"), m.join("a/nd")))
    });
    p.both("rename upper dir over empty lower dir", |m| {
        fs::create_dir(m.join("nd2")).unwrap();
        res(fs::rename(m.join("nd2"), m.join("emptydir")))
    });
    p.both("rename dir over file", |m| {
        fs::create_dir(m.join("nd3")).unwrap();
        res(fs::rename(m.join("nd3"), m.join("owned")))
    });
    p.both("rename file over dir", |m| {
        res(fs::rename(m.join("owned"), m.join("emptyish")))
    });
    p.both("rename upper dir over nonempty dir", |m| {
        fs::create_dir(m.join("nd4")).unwrap();
        res(fs::rename(m.join("nd4"), m.join("opq")))
    });
    p.both("noreplace", |m| {
        renameat2(&m.join("hard1"), &m.join("sym"), libc::RENAME_NOREPLACE)
    });
    p.both("noreplace free", |m| {
        renameat2(&m.join("hard1"), &m.join("h1"), libc::RENAME_NOREPLACE)
    });
    p.both("exchange files", |m| {
        let r = renameat2(&m.join("h1"), &m.join("sym"), libc::RENAME_EXCHANGE);
        (r, read(&m.join("sym")), fs::read_link(m.join("h1")).ok())
    });
    p.both("rename dir into itself", |m| {
        res(fs::rename(m.join("a"), m.join("a/sub/a")))
    });
    p.both("rename hard link onto its twin", |m| {
        res(fs::rename(m.join("h1"), m.join("hard2")))
    });
    finish(p);
}

#[test]
fn links_and_metadata_changes() {
    let p = Pair::new(K, O);
    p.both("link lower file", |m| {
        res(fs::hard_link(m.join("top"), m.join("a/top-link")))
    });
    p.both("nlink after link", |m| {
        fs::metadata(m.join("top")).unwrap().nlink()
    });
    p.both("link onto whiteout name", |m| {
        res(fs::hard_link(m.join("a/w"), m.join("wh-me")))
    });
    p.both("link dir", |m| {
        res(fs::hard_link(m.join("a"), m.join("a-link")))
    });
    p.both("link exists", |m| {
        res(fs::hard_link(m.join("top"), m.join("xat")))
    });
    p.both("chmod lower", |m| {
        res(fs::set_permissions(
            m.join("a/w"),
            fs::Permissions::from_mode(0o604),
        ))
    });
    p.both("chmod lower dir", |m| {
        res(fs::set_permissions(
            m.join("opq"),
            fs::Permissions::from_mode(0o700),
        ))
    });
    p.both("chown lower", |m| {
        res(std::os::unix::fs::lchown(m.join("sym"), Some(7), Some(8)))
    });
    p.both("chown fifo", |m| {
        res(std::os::unix::fs::chown(m.join("fifo"), Some(9), None))
    });
    p.both("utimes", |m| {
        set_mtime(&m.join("deep/1/2/3/file"), 12345);
        fs::metadata(m.join("deep/1/2/3/file")).unwrap().mtime()
    });
    p.both("truncate lower", |m| {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.join("sparse"))
            .unwrap();
        f.set_len(100).unwrap();
        fs::metadata(m.join("sparse")).unwrap().len()
    });
    p.both("setxattr lower dir", |m| {
        set_xattr(&m.join("a/sub"), "user.k", b"v");
        list_xattr(&m.join("a/sub"))
    });
    p.both("private xattr names", |m| {
        let g = get_xattr(&m.join("opq"), "trusted.overlay.opaque");
        set_xattr(&m.join("top"), "trusted.overlay.mine", b"1");
        (
            g,
            get_xattr(&m.join("top"), "trusted.overlay.mine"),
            list_xattr(&m.join("top")),
        )
    });
    p.both("the bare overlay prefix as an xattr name", |m| {
        let path = CString::new(m.join("top").as_os_str().as_bytes()).unwrap();
        let n = c"trusted.overlay.";
        // SAFETY: valid C strings and buffer.
        let set = unsafe { libc::lsetxattr(path.as_ptr(), n.as_ptr(), c"1".as_ptr().cast(), 1, 0) };
        let set = (set, errno());
        let get = get_xattr(&m.join("top"), "trusted.overlay.");
        // SAFETY: as above.
        let rm = unsafe { libc::lremovexattr(path.as_ptr(), n.as_ptr()) };
        (set, get, (rm, errno()))
    });
    p.both("removexattr", |m| {
        let path = c(&m.join("xat"));
        // SAFETY: valid C strings.
        let r = unsafe { libc::lremovexattr(path.as_ptr(), c"user.test".as_ptr()) };
        // SAFETY: as above.
        let again = unsafe { libc::lremovexattr(path.as_ptr(), c"user.test".as_ptr()) };
        (sys_res(r), sys_res(again), list_xattr(&m.join("xat")))
    });
    p.both("statfs works", |m| {
        let path = c(m);
        // SAFETY: zeroed statvfs is a valid out buffer.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers.
        sys_res(unsafe { libc::statvfs(path.as_ptr(), &mut s) })
    });
    finish(p);
}

#[test]
fn readdir_offsets_are_stable_while_open() {
    let p = Pair::new(K, O);
    p.both("seek and reread", |m| {
        let d = c(m);
        // SAFETY: opendir/readdir/telldir/seekdir on a dir we opened.
        unsafe {
            let dir = libc::opendir(d.as_ptr());
            assert!(!dir.is_null());
            let mut names = Vec::new();
            let mut pos = 0;
            for i in 0.. {
                let e = libc::readdir(dir);
                if e.is_null() {
                    break;
                }
                if i == 4 {
                    pos = libc::telldir(dir);
                }
                names.push(std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_owned());
            }
            libc::seekdir(dir, pos);
            let e = libc::readdir(dir);
            let after = if e.is_null() {
                None
            } else {
                Some(std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_owned())
            };
            libc::rewinddir(dir);
            let mut n2 = 0;
            while !libc::readdir(dir).is_null() {
                n2 += 1;
            }
            libc::closedir(dir);
            (
                names.get(5).cloned() == after,
                names.len() == n2,
                names.len(),
            )
        }
    });
    finish(p);
}

/// Kernel 6.7+ xattr whiteouts in a lower: a zero-size regular file with the
/// `whiteout` xattr hides the name below; readdir drops it only in a dir
/// marked opaque=x. The kernel's quirks included (lookup ENOENT for one
/// listed in an unmarked dir).
#[test]
fn xattr_whiteouts_in_lowers() {
    let build = |b: &Path| {
        let l = build_lowers(b, false);
        for (d, mark) in [("xd", true), ("xe", false)] {
            write(&l[2].join(d).join("f"), b"hidden by an xattr whiteout\n");
            write(&l[2].join(d).join("g"), b"covered by a fifo\n");
            write(&l[2].join(d).join("h"), b"kept\n");
            write(&l[0].join(d).join("f"), b"");
            set_xattr(&l[0].join(d).join("f"), "trusted.overlay.whiteout", b"");
            mknod(&l[0].join(d).join("g"), libc::S_IFIFO | 0o644, 0);
            set_xattr(&l[0].join(d).join("g"), "trusted.overlay.whiteout", b"");
            if mark {
                set_xattr(&l[0].join(d), "trusted.overlay.opaque", b"x");
            }
        }
        l
    };
    let p = Pair::with_lowers(K, O, build, build);
    p.both("ls xd", |m| ls(&m.join("xd")));
    // The kernel lists xe/f though it cannot look it up; so does ovlfuse
    // (a READDIRPLUS entry with node id 0 and its d_ino).
    p.both("ls xe", |m| ls(&m.join("xe")));
    assert_eq!(ls(&p.o_mnt.join("xe")).unwrap(), vec!["f", "g", "h"]);
    for d in ["xd", "xe"] {
        for f in ["f", "g", "h"] {
            p.both(&format!("lstat {d}/{f}"), |m| {
                fs::symlink_metadata(m.join(d).join(f))
                    .map(|s| s.mode())
                    .map_err(|e| e.raw_os_error())
            });
        }
    }
    p.both("create over xattr whiteout", |m| {
        res(fs::write(m.join("xd/f"), b"new\n"))
    });
    p.both("rm h", |m| res(fs::remove_file(m.join("xd/h"))));
    p.both("ls after", |m| ls(&m.join("xd")));
    p.both("rm -r xd", |m| res(fs::remove_dir_all(m.join("xd"))));
    let mut p = p;
    p.assert_same_tree_except(&["xe/f"]);
    p.unmount();
    p.assert_same_upper();
}

/// userxattr: markers read and written as user.overlay.* (the kernel's
/// userxattr mode, which implies redirect_dir and index off).
#[test]
fn userxattr_mode_reads_and_writes_user_overlay_xattrs() {
    let build = |b: &Path| build_lowers_with(b, false, "user.overlay.");
    let p = Pair::with_lowers(
        "userxattr",
        "userxattr,redirect_dir=off,index=off",
        build,
        build,
    );
    p.both("opaque dir", |m| ls(&m.join("opq")));
    p.both("private names hidden", |m| list_xattr(&m.join("opq")));
    p.both("mkdir over lower whiteout", |m| {
        res(fs::create_dir(m.join("gone-dir")))
    });
    p.both("rm -r then mkdir (upper whiteout)", |m| {
        fs::remove_dir_all(m.join("deep")).unwrap();
        res(fs::create_dir(m.join("deep")))
    });
    p.both("rm lower file", |m| res(fs::remove_file(m.join("a/x"))));
    p.both("copy-up", |m| res(append(&m.join("a/w"), b"+")));
    p.both("set user.overlay.x", |m| {
        set_xattr(&m.join("top"), "user.overlay.mine", b"1");
        (
            get_xattr(&m.join("top"), "user.overlay.mine"),
            list_xattr(&m.join("top")),
        )
    });
    let mut p = p;
    p.assert_same_tree();
    p.unmount();
    for d in ["deep", "gone-dir"] {
        let (o, k) = (p.o_upper.join(d), p.k_upper.join(d));
        assert_eq!(
            get_xattr(&o, "user.overlay.opaque"),
            get_xattr(&k, "user.overlay.opaque"),
            "{d}"
        );
        assert_eq!(get_xattr(&o, "trusted.overlay.opaque"), Err(libc::ENODATA));
    }
    assert_eq!(
        get_xattr(&p.o_upper.join("deep"), "user.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    assert_eq!(
        get_xattr(&p.o_upper.join("top"), "user.overlay.overlay.mine"),
        get_xattr(&p.k_upper.join("top"), "user.overlay.overlay.mine")
    );
}

/// rmdir of a non-empty dir made over a whiteout (pure upper, but its name
/// is in a lower): ENOTEMPTY, and nothing inside is lost.
#[test]
fn rmdir_of_nonempty_dir_over_whiteout_keeps_its_contents() {
    let p = Pair::new(K, O);
    p.both("recreate deep", |m| {
        fs::remove_dir_all(m.join("deep")).unwrap();
        fs::create_dir(m.join("deep")).unwrap();
        fs::write(m.join("deep/keep"), b"keep me\n").unwrap();
        res(fs::remove_dir(m.join("deep")))
    });
    p.both("still there", |m| read(&m.join("deep/keep")));
    p.both("new dir in a new dir", |m| {
        fs::create_dir_all(m.join("fresh/sub")).unwrap();
        (
            res(fs::remove_dir(m.join("fresh"))),
            res(fs::remove_dir(m.join("fresh/sub"))),
            res(fs::remove_dir(m.join("fresh"))),
        )
    });
    finish(p);
}

/// podman/Docker layers mark deletions AUFS-style (`.wh.NAME`,
/// `.wh..wh..opq`): ovlfuse over such layers must behave as the kernel over
/// the same layers written with char 0/0 whiteouts and the opaque xattr.
#[test]
fn aufs_markers_read_like_kernel_whiteouts() {
    let p = Pair::with_lowers(K, O, |b| build_lowers(b, false), |b| build_lowers(b, true));
    p.both("root", ls);
    p.both("a", |m| ls(&m.join("a")));
    p.both("opq", |m| ls(&m.join("opq")));
    for f in [
        "wh-me",
        "gone-dir",
        "a/y",
        ".wh.wh-me",
        "opq/.wh..wh..opq",
        "opq/hidden",
    ] {
        p.both(&format!("lstat {f}"), |m| {
            res(fs::symlink_metadata(m.join(f)))
        });
    }
    p.both("create over aufs whiteout", |m| {
        res(fs::write(m.join("wh-me"), b"back\n"))
    });
    p.both("mkdir over aufs whiteout", |m| {
        res(fs::create_dir(m.join("gone-dir")))
    });
    p.both("ls recreated", |m| ls(&m.join("gone-dir")));
    p.both("rm in opaque dir", |m| {
        res(fs::remove_file(m.join("opq/visible")))
    });
    p.both("rmdir opaque dir", |m| res(fs::remove_dir(m.join("opq"))));
    p.both("unlink a/x", |m| res(fs::remove_file(m.join("a/x"))));
    finish(p);
}

/// Issue 12.1: a dir held open keeps answering through its handle when its
/// name is renamed over, removed or renamed away: fstat (nlink 0 for a
/// removed upper dir, the lower's count for a lower one), listing, fsync.
#[test]
fn open_dir_after_rename_over_rmdir_and_rename_away() {
    use std::os::fd::AsRawFd;
    let p = Pair::new(K, O);
    let probe = |d: &fs::File| {
        let md = d.metadata().map(|m| (m.nlink(), m.mode()));
        // SAFETY: a valid fd.
        let sync = unsafe { libc::fsync(d.as_raw_fd()) };
        let list = fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd())).map(|r| r.count());
        format!("{md:?} fsync={sync} list={list:?}")
    };
    p.both("rename a lower dir over a lower dir", |m| {
        fs::create_dir(m.join("emptydir2")).unwrap();
        let d = fs::File::open(m.join("emptydir")).unwrap();
        let r = res(fs::rename(m.join("emptydir2"), m.join("emptydir")));
        format!("{r} {}", probe(&d))
    });
    p.both("rename an upper dir over an open upper dir", |m| {
        fs::create_dir(m.join("u1")).unwrap();
        fs::create_dir(m.join("u2")).unwrap();
        let d = fs::File::open(m.join("u2")).unwrap();
        let r = res(fs::rename(m.join("u1"), m.join("u2")));
        format!("{r} {}", probe(&d))
    });
    p.both("rmdir of an open dir", |m| {
        fs::create_dir(m.join("gone")).unwrap();
        let d = fs::File::open(m.join("gone")).unwrap();
        let r = res(fs::remove_dir(m.join("gone")));
        format!("{r} {}", probe(&d))
    });
    p.both("rmdir of an open lower dir", |m| {
        let d = fs::File::open(m.join("a/sub")).unwrap();
        fs::remove_file(m.join("a/sub/z")).unwrap();
        let r = res(fs::remove_dir(m.join("a/sub")));
        format!("{r} {}", probe(&d))
    });
    p.both("rename an open dir away", |m| {
        let d = fs::File::open(m.join("deep")).unwrap();
        let r = res(fs::rename(m.join("deep"), m.join("deep-moved")));
        format!("{r} {}", probe(&d))
    });
    finish(p);
}

/// Issue 12.6: objects made over a whiteout (built in the work dir, then
/// moved in) get what creating in the parent gives: a setgid parent's group,
/// and for a dir its setgid bit.
#[test]
fn creating_over_whiteouts_in_a_setgid_dir() {
    use std::os::unix::fs::chown;
    let p = Pair::new(K, O);
    p.both("setgid root, group 1000", |m| {
        chown(m, None, Some(1000)).unwrap();
        fs::set_permissions(m, fs::Permissions::from_mode(0o2755)).unwrap();
        fs::metadata(m).map(|md| (md.mode(), md.gid())).ok()
    });
    let made = |m: &Path| {
        let st = |n: &str| {
            fs::symlink_metadata(m.join(n))
                .map(|md| format!("{n} {:o} {}", md.mode(), md.gid()))
                .unwrap_or_else(|e| format!("{n} {e}"))
        };
        for n in ["top", "xat", "ro", "owned"] {
            fs::remove_file(m.join(n)).unwrap();
        }
        fs::create_dir(m.join("top")).unwrap();
        fs::write(m.join("xat"), b"x").unwrap();
        mknod(&m.join("ro"), libc::S_IFIFO | 0o644, 0);
        std::os::unix::fs::symlink("t", m.join("owned")).unwrap();
        fs::create_dir(m.join("fresh")).unwrap();
        ["top", "xat", "ro", "owned", "fresh"].map(st).join(", ")
    };
    p.both("mkdir, create, mknod, symlink over whiteouts", made);
    finish(p);
}

/// Issue 12.7: a user who may write a set-id file (mode 2666, 4666, 6666;
/// not in its group) loses the set-id bits by write, truncate, fallocate,
/// punch hole, zero range and copy_file_range, as on the kernel's overlay;
/// for lower and for upper files.
#[test]
fn set_id_bits_drop_on_modification_by_another_user() {
    let p = Pair::new(K, O);
    let ops = [
        "write",
        "truncate",
        "fallocate",
        "punch",
        "zero",
        "copy_range",
    ];
    let script = r#"
import os, sys, ctypes, fcntl
libc = ctypes.CDLL(None, use_errno=True)
op, path, src = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(path, os.O_RDWR)
if op == "write": os.pwrite(fd, b"w", 0)
elif op == "truncate": os.ftruncate(fd, 1)
elif op == "fallocate": os.posix_fallocate(fd, 0, 8192)
elif op == "punch": assert libc.fallocate(fd, 3, ctypes.c_long(0), ctypes.c_long(1)) == 0, ctypes.get_errno()
elif op == "zero": assert libc.fallocate(fd, 16, ctypes.c_long(0), ctypes.c_long(1)) == 0, ctypes.get_errno()
elif op == "copy_range":
    s = os.open(src, os.O_RDONLY); os.copy_file_range(s, fd, 1, 0, 0)
"#;
    p.both("set-id files", |m| {
        let mut out = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            for mode in [0o2666, 0o4666, 0o6666] {
                for upper in [false, true] {
                    // A lower file, or one already in the upper.
                    let name = format!("sid-{i}-{mode:o}-{upper}");
                    let lower = m.join("a/x");
                    let f = m.join(&name);
                    fs::copy(&lower, &f).unwrap();
                    if !upper {
                        // Renamed onto a lower name: copied up by the op.
                        fs::rename(&f, m.join("top")).unwrap();
                    }
                    let target = if upper { f.clone() } else { m.join("top") };
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
                    let st = Command::new("setpriv")
                        .args([
                            "--reuid=65534",
                            "--regid=65534",
                            "--clear-groups",
                            "/usr/bin/python3",
                            "-c",
                            script,
                            op,
                        ])
                        .arg(&target)
                        .arg(m.join("a/x"))
                        .status()
                        .unwrap();
                    let md = fs::metadata(&target).unwrap();
                    out.push(format!(
                        "{op} {mode:o} upper={upper}: {} {:o}",
                        st.success(),
                        md.mode() & 0o7777
                    ));
                }
            }
        }
        out
    });
}

/// Issue 12.2: writes through a shared mapping, by a process that exits
/// without msync, move mtime and ctime; stat(1) afterwards shows it, for a
/// file on the passthrough path (upper) and one copied up by the mapping's
/// open. (coreutils and shells as a user runs them: Rust's metadata() asks
/// statx for the birth time, which makes FUSE ask the daemon every time.)
#[test]
fn mmap_writes_move_mtime() {
    let p = Pair::new(K, O);
    let script = r#"
set -e
cd "$1"
for f in mm-upper a/x; do
  head -c 4096 /dev/zero > $f; sync $f
  before=$(stat -c '%y %z' $f)
  sleep 1.1
  /usr/bin/python3 -c "
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096)
x = m[0:4096]
m[0:4] = b'mmap'
os._exit(0)" $f
  after=$(stat -c '%y %z' $f)
  [ "$before" = "$after" ] && echo "$f: times kept" || echo "$f: times moved"
  head -c 4 $f; echo
done
"#;
    p.both("mmap write, exit, stat", |m| {
        output_ok(Command::new("sh").args(["-c", script, "sh"]).arg(m))
    });
}

/// Issue 12.4: POSIX ACLs are enforced (grant and deny for another user),
/// chmod updates the mask and setfacl the mode, and new objects in a dir
/// with a default ACL get it instead of the umask; in a setgid dir too.
/// A default ACL set or removed after something was made in the dir
/// counts from the next object on (ovlfuse keeps whether a dir has one).
#[test]
fn posix_acls_are_enforced_and_inherited() {
    let p = Pair::new(K, O);
    let script = r#"
cd "$1"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "$1" 2>/dev/null && echo ok || echo denied; }
chmod 600 a/x top; setfacl -m u:65534:rw a/x; setfacl -m u:65534:--- top; chmod o+r top
echo "read granted: $(as_nobody "cat $1/a/x >/dev/null")"
echo "write granted: $(as_nobody "echo n >> $1/a/x")"
echo "read denied: $(as_nobody "cat $1/top >/dev/null")"
chmod 640 a/x; echo "after chmod: $(getfacl -p a/x | grep -v '^#' | tr '\n' ' ')"
setfacl -m g::rwx a/x; echo "after setfacl: $(stat -c %a a/x)"
mkdir -p acl; (umask 077; touch acl/before); setfacl -d -m u:65534:rwx acl; setfacl -m u:65534:rwx acl
(umask 077; touch acl/f; mkdir acl/d; mknod acl/p p)
echo "inherited: $(stat -c '%n %a' acl/before acl/f acl/d acl/p | tr '\n' ' ')"
setfacl -k acl/d; (umask 077; touch acl/d/g); setfacl -d -m u:65534:rwx acl/d; (umask 077; touch acl/d/h)
echo "default ACL removed, set again: $(stat -c '%n %a' acl/d/g acl/d/h | tr '\n' ' ')"
echo "acl of f: $(getfacl -p acl/f | grep -v '^#' | tr '\n' ' ')"
echo "nobody writes f: $(as_nobody "echo y >> $1/acl/f")"
chgrp 1000 acl; chmod g+s acl; (umask 022; mkdir acl/sg; touch acl/sgf)
echo "setgid: $(stat -c '%n %a %g' acl/sg acl/sgf | tr '\n' ' ')"
"#;
    p.both("acls", |m| {
        output_ok(Command::new("sh").args(["-c", script, "sh"]).arg(m))
    });
    finish(p);
}

/// A write drops a file capability (security.capability), as on the
/// kernel's overlay, for an upper file and for one the write copies up; the
/// kernel no longer asks ovlfuse for the xattr before every write
/// (FUSE_HANDLE_KILLPRIV_V2): the real filesystem drops it under the write.
#[test]
fn file_capabilities_drop_on_write() {
    let p = Pair::new(K, O);
    // vfs_cap_data v2, effective, permitted = CAP_NET_RAW.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let r = p.both_value("capabilities", |m| {
        let mut out = Vec::new();
        fs::write(m.join("capfile"), b"c").unwrap();
        for name in ["capfile", "a/x"] {
            set_xattr(&m.join(name), "security.capability", &cap);
            let before = get_xattr(&m.join(name), "security.capability").is_ok();
            append(&m.join(name), b"w").unwrap();
            let after = get_xattr(&m.join(name), "security.capability");
            out.push(format!("{name}: {before} -> {after:?}"));
        }
        out
    });
    assert!(r.iter().all(|l| l.contains("true -> Err(61)")), "{r:?}");
    finish(p);
}

/// Issue 12.3: atime under relatime (the default), noatime and strictatime:
/// the first read after a change moves it, another read does not (as
/// relatime allows), reading a lower file never does (the kernel reads
/// lowers with O_NOATIME), exec reads like read, and noatime moves nothing.
/// nodiratime: files as relatime, dir listings never. (Before Linux 5.12
/// there is no private mount view to set strictatime or nodiratime on;
/// there the upper filesystem's own option rules, as README says.)
#[test]
fn atime_follows_the_mount_option() {
    let old = std::env::var_os("OVLFUSE_TEST_OLD_KERNEL").is_some();
    let modes: &[&str] = if old {
        &["relatime", "noatime"]
    } else {
        &["relatime", "noatime", "strictatime", "nodiratime"]
    };
    std::thread::scope(|s| {
        for &mode in modes {
            s.spawn(move || atime_case(mode));
        }
    });
}

fn atime_case(mode: &str) {
    let p = Pair::new(&format!("{K},{mode}"), &format!("{O},{mode}"));
    // (change first, then after a pause: the access, and the name to stat)
    let steps = [
        ("printf data > at-u", "cat at-u", "at-u"),
        ("", "cat at-u", "at-u"),
        ("printf more >> at-u", "head -c1 at-u", "at-u"),
        ("", "cat a/x", "a/x"),
        ("cat a/x >/dev/null", "cat a/x", "a/x"),
        ("chmod 600 a/w", "cat a/w", "a/w"),
        ("", "cat a/w", "a/w"),
        ("cp /bin/true at-x", "./at-x", "at-x"),
        ("", "./at-x", "at-x"),
        ("mkdir -p at-d/e", "ls at-d", "at-d"),
        ("", "ls a", "a"),
        ("touch a/new", "ls a", "a"),
    ];
    let sh = |m: &Path, cmd: &str| {
        if !cmd.is_empty() {
            output_ok(Command::new("sh").arg("-c").arg(cmd).current_dir(m));
        }
    };
    let atime =
        |m: &Path, n: &str| output_ok(Command::new("stat").args(["-c", "%X"]).arg(m.join(n)));
    let mut out = [Vec::new(), Vec::new()];
    for (change, access, name) in steps {
        let mnts = [&p.k_mnt, &p.o_mnt];
        for m in mnts {
            sh(m, change);
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        for (i, m) in mnts.iter().enumerate() {
            let before = atime(m, name);
            sh(m, access);
            let moved = if atime(m, name) == before {
                "kept"
            } else {
                "moved"
            };
            out[i].push(format!("{change} / {access}: {moved}"));
        }
    }
    assert_eq!(
        out[1], out[0],
        "{mode}: ovlfuse (left) differs from kernel (right)"
    );
    finish(p);
}

/// Issue 12.6: objects made over a whiteout (built in W/work, then moved
/// in) get what creating in the parent gives under a default ACL: its
/// access ACL and the mode it masks, a dir also the default ACL; in a
/// setgid parent too.
#[test]
fn creating_over_whiteouts_under_a_default_acl() {
    let p = Pair::new(K, O);
    let script = r#"
set -e
cd "$1"
setfacl -d -m u:65534:rwx,g::r-x,o::- a deep
chgrp 1000 deep; chmod g+s deep
rm a/x; rm a/w; rm -r a/sub deep/1
(umask 022
 ln -s t a/x; touch a/w; mkdir a/sub; mkfifo deep/1)
for f in a/x a/w a/sub deep/1; do
  echo "$f $(stat -c '%a %g' $f) $(getfacl -p $f 2>/dev/null | grep -v '^#' | tr '\n' ' ')"
done
"#;
    p.both("over whiteouts under a default ACL", |m| {
        output_ok(Command::new("sh").args(["-c", script, "sh"]).arg(m))
    });
    finish(p);
}

/// Issue 12.5: file handles (open_by_handle_at) decode while the kernel
/// holds the inode and after it has forgotten it (caches dropped), for
/// lower and upper files and dirs, also when a copy-up came in between;
/// against the kernel's overlay with nfs_export=on, the option under which
/// it decodes handles at all.
#[test]
fn file_handles_decode_after_the_kernel_forgets() {
    let p = Pair::new(
        "redirect_dir=on,index=on,nfs_export=on",
        "redirect_dir=on,index=on",
    );
    let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class FH(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("f", ctypes.c_ubyte * 128)]
def encode(p):
    fh, mid = FH(), ctypes.c_int()
    fh.bytes = 128
    assert libc.name_to_handle_at(-100, p.encode(), ctypes.byref(fh), ctypes.byref(mid), 0) == 0, ctypes.get_errno()
    return fh
def decode(fh):
    fd = libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
    if fd < 0:
        return "errno %d" % ctypes.get_errno()
    try:
        what = os.read(fd, 64).decode()
    except IsADirectoryError:
        what = "dir " + " ".join(sorted(os.listdir(fd)))
    os.close(fd)
    return what.strip()
os.chdir(sys.argv[1])
mfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
with open("up-file", "w") as f: f.write("upper\n")
os.makedirs("up-dir/sub")
names = ["a/x", "top", "up-file", "a", "a/sub", "deep/1/2", "up-dir/sub", "deep/1/2/3/file"]
hs = {n: encode(n) for n in names}
for n in names: print(n, "held:", decode(hs[n]))
def drop():
    with open("/proc/sys/vm/drop_caches", "w") as f: f.write("2")
drop()
for n in names: print(n, "forgotten:", decode(hs[n]))
drop()
with open("a/x", "a") as f: f.write("appended\n")
with open("deep/1/2/3/file", "a") as f: f.write("more\n")
drop()
for n in ["a/x", "deep/1/2/3/file", "deep/1/2"]: print(n, "after copy-up:", decode(hs[n]))
"#;
    // Only the decodes are compared: nfs_export=on makes the kernel index
    // every copy-up, which shows in nlink and in its upper.
    let out = p.both_value("handles", |m| {
        output_ok(Command::new("/usr/bin/python3").args(["-c", script]).arg(m))
    });
    assert!(!out.contains("errno"), "{out}");
}

/// Issue 12.8: d_ino is the st_ino that lstat reports, for every entry of
/// merged, upper-only and lower-only dirs (names of lower hard links
/// included), through READDIRPLUS (a dir's first chunk) and READDIR (the
/// chunks after it, with no lookups between), also for an open dir that
/// changes while it is read, and then read again.
#[test]
fn d_ino_is_st_ino_for_every_entry() {
    let build = |b: &Path| {
        let l = build_lowers(b, false);
        for i in 0..150 {
            write(&l[2].join(format!("big/f{i:03}")), b"f");
            if i % 10 == 0 {
                fs::hard_link(
                    l[2].join(format!("big/f{i:03}")),
                    l[2].join(format!("big/h{i:03}")),
                )
                .unwrap();
            }
            write(&l[0].join(format!("a/t{i:03}")), b"t");
        }
        fix_times(&l[0]);
        fix_times(&l[2]);
        l
    };
    let p = Pair::with_lowers(K, O, build, build);
    let script = r#"
import os, sys
os.chdir(sys.argv[1])
os.makedirs("fresh")
for i in range(150):
    open("fresh/n%03d" % i, "w").close()
def check(d, entries, what=""):
    bad = [n for n, ino in entries if os.lstat(os.path.join(d, n)).st_ino != ino]
    zero = [n for n, ino in entries if ino == 0]
    print(d, what, len(entries), "entries; d_ino differs:", bad[:5], len(bad), "zero:", len(zero))
for d in [".", "a", "big", "fresh", "a/sub"]:
    with os.scandir(d) as it:
        check(d, [(e.name, e.inode()) for e in it])
# An open dir that changes while it is read.
for d in ["big", "a"]:
    it = os.scandir(d)
    first = [(e.name, e.inode()) for _, e in zip(range(20), it)]
    for i in range(5):
        open(os.path.join(d, "added%d" % i), "w").close()
        os.unlink(os.path.join(d, "f%03d" % (100 + i)) if d == "big" else os.path.join(d, "t%03d" % (100 + i)))
    rest = [(e.name, e.inode()) for e in it]
    it.close()
    check(d, [x for x in first + rest if os.path.lexists(os.path.join(d, x[0]))], "while changing")
    with os.scandir(d) as it:
        check(d, [(e.name, e.inode()) for e in it], "again")
"#;
    let out = p.both_value("d_ino", |m| {
        output_ok(Command::new("/usr/bin/python3").args(["-c", script]).arg(m))
    });
    assert!(out.lines().all(|l| l.contains("[] 0 zero: 0")), "{out}");
    finish(p);
}
