//! Renaming dirs that have lower content (redirect_dir=on), compared with the
//! kernel mounted the same way: results, trees, the redirect and opaque
//! xattrs in the upper, the view after a remount, and the kernel's view of
//! the upper ovlfuse wrote.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const OPTS: &str = "redirect_dir=on,index=on";

per_fixture!(rename_lower_dirs_same_and_other_parent);

fn rename_lower_dirs_same_and_other_parent(build: fn(&Path) -> Vec<PathBuf>) {
    let p = Pair::with_lowers(OPTS, OPTS, build, build);
    p.both("same parent", |m| {
        res(fs::rename(m.join("a"), m.join("a-renamed")))
    });
    p.both("ls moved", |m| ls(&m.join("a-renamed")));
    p.both("read through moved", |m| read(&m.join("a-renamed/x")));
    p.both("old name gone", |m| res(fs::symlink_metadata(m.join("a"))));
    p.both("other parent", |m| {
        res(fs::rename(m.join("deep"), m.join("a-renamed/deep2")))
    });
    p.both("ls deep2", |m| ls(&m.join("a-renamed/deep2/1/2/3")));
    p.both("write below moved", |m| {
        res(append(&m.join("a-renamed/deep2/1/2/3/file"), b"+\n"))
    });
    p.both("new file in moved", |m| {
        res(fs::write(m.join("a-renamed/new"), b"n"))
    });
    p.both("delete below moved", |m| {
        res(fs::remove_file(m.join("a-renamed/w")))
    });
    p.both("ls after", |m| ls(&m.join("a-renamed")));
    p.check_all();
}

per_fixture!(rename_twice_and_parent_afterwards);

fn rename_twice_and_parent_afterwards(build: fn(&Path) -> Vec<PathBuf>) {
    let p = Pair::with_lowers(OPTS, OPTS, build, build);
    p.both("sub -> sub2", |m| {
        res(fs::rename(m.join("a/sub"), m.join("a/sub2")))
    });
    p.both("sub2 -> top level", |m| {
        res(fs::rename(m.join("a/sub2"), m.join("sub3")))
    });
    p.both("read z", |m| read(&m.join("sub3/z")));
    p.both("child first", |m| {
        res(fs::rename(m.join("deep/1/2"), m.join("deep/two")))
    });
    p.both("then parent", |m| {
        res(fs::rename(m.join("deep"), m.join("opq/deep-new")))
    });
    p.both("read through both", |m| {
        read(&m.join("opq/deep-new/two/3/file"))
    });
    p.both("ls", |m| ls(&m.join("opq/deep-new")));
    p.both("back to old name", |m| {
        res(fs::rename(m.join("sub3"), m.join("a/sub")))
    });
    p.both("read z again", |m| read(&m.join("a/sub/z")));
    p.check_all();
}

per_fixture!(rename_lower_dir_over_empty_dir);

fn rename_lower_dir_over_empty_dir(build: fn(&Path) -> Vec<PathBuf>) {
    let p = Pair::with_lowers(OPTS, OPTS, build, build);
    p.both("over empty lower dir", |m| {
        res(fs::rename(m.join("a/sub"), m.join("emptydir")))
    });
    p.both("ls", |m| ls(&m.join("emptydir")));
    p.both("over nonempty", |m| {
        res(fs::rename(m.join("opq"), m.join("a")))
    });
    p.both("empty a merged dir first", |m| {
        fs::remove_file(m.join("emptyish/.keep")).unwrap();
        res(fs::rename(m.join("deep"), m.join("emptyish")))
    });
    p.both("ls emptyish", |m| ls(&m.join("emptyish/1/2/3")));
    p.both("rmdir moved", |m| {
        res(fs::remove_dir_all(m.join("emptydir")))
    });
    p.check_all();
}

#[test]
fn redirect_dir_off_refuses_with_exdev() {
    let p = Pair::new("redirect_dir=off", "redirect_dir=off");
    p.both("lower dir", |m| res(fs::rename(m.join("a"), m.join("b"))));
    p.both("upper dir still moves", |m| {
        fs::create_dir(m.join("nd")).unwrap();
        res(fs::rename(m.join("nd"), m.join("nd2")))
    });
    p.assert_same_tree();
}
