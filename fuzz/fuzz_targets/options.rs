//! Any -o string: parsing never panics, and what it accepts is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovlfuse::config::{parse_idmap, split_lowerdir, split_options, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut c = Config::default();
    let _ = c.apply_options(s);
    for item in split_options(s) {
        assert!(!item.is_empty());
    }
    if let Ok(l) = split_lowerdir(s) {
        assert!(!l.is_empty());
        assert!(l.iter().all(|d| !d.path.as_os_str().is_empty()));
    }
    if let Ok(m) = parse_idmap("uidmapping", s) {
        assert!(m.iter().all(|r| r.len > 0));
    }
});
