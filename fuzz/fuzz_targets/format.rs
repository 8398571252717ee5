//! On-disk names: xattr escaping round-trips and AUFS names decode sanely.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use ovlfuse::format::{aufs_whiteout_name, aufs_whiteout_target, opaque_value, XattrNames};

fuzz_target!(|data: &[u8]| {
    let name = OsStr::from_bytes(data);
    for userxattr in [false, true] {
        let x = XattrNames::new(userxattr);
        // What a user may set comes back under the same name (the bare
        // prefix is refused with EINVAL, as by the kernel).
        if !x.is_private(name) && name.as_bytes() != x.prefix().as_bytes() {
            let stored = x.escape(name);
            assert_eq!(x.unescape(&stored).as_deref(), Some(name));
        }
        // A stored name is shown at most once, never as a private one.
        if let Some(shown) = x.unescape(name) {
            assert!(!x.is_private(&shown));
        }
    }
    if let Some(t) = aufs_whiteout_target(name) {
        assert_eq!(aufs_whiteout_name(t), name);
    }
    let _ = opaque_value(data);
});
