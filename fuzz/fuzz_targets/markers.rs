//! On-disk marker values as ovlfuse reads them from xattrs: origin file
//! handles (and the index names made from them), nlink, the override stat
//! of xattr_permissions and redirects. Any bytes decode or are refused;
//! what decodes encodes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovlfuse::format::{format_nlink, parse_nlink, redirect_valid, FileHandle, OverrideStat};

fuzz_target!(|data: &[u8]| {
    if let Some(fh) = FileHandle::decode(data) {
        let again = FileHandle::decode(&fh.encode());
        assert_eq!(again.as_ref(), Some(&fh));
        let name = fh.index_name();
        assert_eq!(name.len(), 2 * data.len());
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Some((upper, n)) = parse_nlink(data) {
        if upper {
            assert_eq!(parse_nlink(&format_nlink(n)), Some((true, n)));
        }
    }
    if let Some(o) = OverrideStat::decode(data) {
        assert!(o.mode <= 0o7777);
        assert_eq!(OverrideStat::decode(&o.encode()), Some(o));
    }
    if redirect_valid(data) {
        // Usable as names below the root: no NUL, no empty, "." or "..".
        let rel = data.strip_prefix(b"/").unwrap_or(data);
        assert!(!rel.is_empty() && !rel.contains(&0));
        assert!(rel
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b".."));
    }
});
