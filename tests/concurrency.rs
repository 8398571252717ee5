//! Parallel requests: a long copy-up does not hold up requests on other
//! files. Checked by order of events, not by timing: while the copy-up's
//! temp file is still in W/work, other lookups, reads and creates finish.

mod common;

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn copy_up_of_a_large_file_does_not_block_other_files() {
    let s = Scratch::new("conc");
    let l = s.0.join("l");
    write(&l.join("other"), b"other file\n");
    write(&l.join("dir/inner"), b"inner\n");
    {
        let mut f = fs::File::create(l.join("big")).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + 3) as u8).collect();
        for _ in 0..256 {
            f.write_all(&chunk).unwrap();
        }
    }
    for d in ["u", "w", "m"] {
        fs::create_dir_all(s.0.join(d)).unwrap();
    }
    let (u, w, m) = (s.0.join("u"), s.0.join("w"), s.0.join("m"));
    let _g = OvlMount::layers(std::slice::from_ref(&l), Some((&u, &w)), &m, "");
    let work = w.join("work");
    let big = m.join("big");
    let writer = std::thread::spawn(move || append(&big, b"!").unwrap());
    // Wait for the copy-up to be under way (its temp file in W/work).
    let t = Instant::now();
    while fs::read_dir(&work).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "copy-up never started"
        );
        std::thread::yield_now();
    }
    // Meanwhile, other files are served.
    assert_eq!(read(&m.join("other")).unwrap(), b"other file\n");
    assert_eq!(ls(&m.join("dir")).unwrap(), vec!["inner"]);
    fs::write(m.join("new"), b"new\n").unwrap();
    let still_copying = fs::read_dir(&work).unwrap().count() > 0;
    writer.join().unwrap();
    assert!(
        still_copying,
        "other requests were served only after the copy-up finished: they waited for it"
    );
    assert_eq!(fs::metadata(m.join("big")).unwrap().len(), (256 << 20) + 1);
    assert_eq!(fs::read_dir(&work).unwrap().count(), 0);
}
