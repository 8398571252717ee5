//! On-disk markers, encoded and decoded: whiteouts (char 0/0 and AUFS
//! `.wh.NAME`), opaque dirs, the private `overlay.*` xattrs, and the escaping of
//! user-set `overlay.*` names that the kernel does (since 6.7).

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::sys::Stat;

pub const WH_PREFIX: &[u8] = b".wh.";
pub const WH_OPAQUE: &[u8] = b".wh..wh..opq";
/// fuse-overlayfs marks opaque dirs with this xattr when it cannot use trusted.*.
pub const FUSEOVL_OPAQUE: &str = "user.fuseoverlayfs.opaque";
const FUSEOVL_PREFIX: &[u8] = b"user.fuseoverlayfs.";

/// A char device 0/0 is a whiteout.
pub fn is_whiteout(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// `.wh.NAME` -> `NAME` (None for the opaque marker and other names).
pub fn aufs_whiteout_target(name: &OsStr) -> Option<&OsStr> {
    let b = name.as_bytes();
    if b == WH_OPAQUE {
        return None;
    }
    b.strip_prefix(WH_PREFIX)
        .filter(|t| !t.is_empty())
        .map(OsStr::from_bytes)
}

pub fn aufs_whiteout_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsString::from(OsStr::from_bytes(&v))
}

pub fn is_aufs_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

/// The private xattr namespace in use: `trusted.overlay.` or `user.overlay.`.
#[derive(Debug, Clone)]
pub struct XattrNames {
    prefix: &'static str,
    pub opaque: CString,
    pub redirect: CString,
    pub origin: CString,
    pub impure: CString,
    pub nlink: CString,
    pub metacopy: CString,
    pub whiteout: CString,
}

impl XattrNames {
    pub fn new(userxattr: bool) -> Self {
        let prefix = if userxattr {
            "user.overlay."
        } else {
            "trusted.overlay."
        };
        let n = |s: &str| CString::new(format!("{prefix}{s}")).expect("no NUL");
        XattrNames {
            prefix,
            opaque: n("opaque"),
            redirect: n("redirect"),
            origin: n("origin"),
            impure: n("impure"),
            nlink: n("nlink"),
            metacopy: n("metacopy"),
            whiteout: n("whiteout"),
        }
    }

    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// Stored name for a name a user sets: `P.X` is kept as `P.overlay.X`
    /// (the kernel's escaping), everything else as is.
    pub fn escape(&self, user_name: &OsStr) -> OsString {
        let b = user_name.as_bytes();
        match b.strip_prefix(self.prefix.as_bytes()) {
            Some(rest) => {
                let mut v = self.prefix.as_bytes().to_vec();
                v.extend_from_slice(b"overlay.");
                v.extend_from_slice(rest);
                OsString::from(OsStr::from_bytes(&v))
            }
            None => user_name.to_os_string(),
        }
    }

    /// Name a user sees for a stored name, or None if it is private.
    pub fn unescape(&self, stored: &OsStr) -> Option<OsString> {
        let b = stored.as_bytes();
        if b.starts_with(FUSEOVL_PREFIX) {
            return None;
        }
        match b.strip_prefix(self.prefix.as_bytes()) {
            Some(rest) => rest
                .strip_prefix(b"overlay.")
                .filter(|r| !r.is_empty())
                .map(|r| {
                    let mut v = self.prefix.as_bytes().to_vec();
                    v.extend_from_slice(r);
                    OsString::from(OsStr::from_bytes(&v))
                }),
            None => Some(stored.to_os_string()),
        }
    }

    /// True for names a user may neither read nor set directly.
    pub fn is_private(&self, name: &OsStr) -> bool {
        name.as_bytes().starts_with(FUSEOVL_PREFIX)
    }

    /// Whether a stored xattr of a lower object is copied up as it is.
    pub fn copy_up_keeps(&self, stored: &OsStr) -> bool {
        let b = stored.as_bytes();
        if b.starts_with(FUSEOVL_PREFIX) {
            return false;
        }
        match b.strip_prefix(self.prefix.as_bytes()) {
            Some(rest) => rest.starts_with(b"overlay."),
            None => true,
        }
    }
}

/// An opaque xattr value: `y` hides all lower entries; `x` (kernel 6.7+) marks a
/// dir whose zero-size entries may carry xattr whiteouts.
pub fn opaque_value(v: &[u8]) -> Option<u8> {
    match v {
        b"y" => Some(b'y'),
        b"x" => Some(b'x'),
        _ => None,
    }
}

/// The kernel's `struct ovl_fb`: version 0, magic 0xfb, total length,
/// flags, handle type, the filesystem uuid, then the handle bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHandle {
    pub kind: u8,
    pub uuid: [u8; 16],
    pub bytes: Vec<u8>,
}

const FB_HEADER: usize = 21;
/// Flags the kernel may set: big endian, any endian, path is in upper.
const FB_FLAGS_KNOWN: u8 = 0x7;

impl FileHandle {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FB_HEADER + self.bytes.len());
        let flags = if cfg!(target_endian = "big") { 1 } else { 0 };
        v.extend_from_slice(&[
            0,
            0xfb,
            (FB_HEADER + self.bytes.len()) as u8,
            flags,
            self.kind,
        ]);
        v.extend_from_slice(&self.uuid);
        v.extend_from_slice(&self.bytes);
        v
    }

    /// Checks and splits an `origin` value; None if it is not one.
    pub fn decode(v: &[u8]) -> Option<FileHandle> {
        if v.len() < FB_HEADER
            || v.len() > 255
            || v[0] != 0
            || v[1] != 0xfb
            || v[2] as usize != v.len()
        {
            return None;
        }
        if v[3] & !FB_FLAGS_KNOWN != 0 {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&v[5..21]);
        Some(FileHandle {
            kind: v[4],
            uuid,
            bytes: v[21..].to_vec(),
        })
    }

    /// Name of the entry in `W/index`: the encoded handle in hex.
    pub fn index_name(&self) -> String {
        self.encode().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The `nlink` xattr: "U+n"/"U-n" (relative to the upper inode's count) or
/// "L+n"/"L-n" (relative to the lower's). Returns (relative to upper, delta).
pub fn parse_nlink(v: &[u8]) -> Option<(bool, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (base, rest) = s.split_at_checked(1)?;
    let upper = match base {
        "U" => true,
        "L" => false,
        _ => return None,
    };
    if !rest.starts_with(['+', '-']) {
        return None;
    }
    let n: i64 = rest.parse().ok()?;
    (n.abs() < 1 << 31).then_some((upper, n))
}

pub fn format_nlink(delta: i64) -> Vec<u8> {
    format!("U{delta:+}").into_bytes()
}

/// Owner and mode kept in an xattr instead of the inode (fuse-overlayfs's
/// xattr_permissions): `uid:gid:0mode[:type]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideStat {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (07777).
    pub mode: u32,
}

/// The override xattr for xattr_permissions=1 and =2.
pub fn override_name(mode: u8) -> Option<&'static str> {
    match mode {
        1 => Some("security.fuseoverlayfs.override_stat"),
        2 => Some("user.containers.override_stat"),
        _ => None,
    }
}

impl OverrideStat {
    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{}:0{:o}", self.uid, self.gid, self.mode & 0o7777).into_bytes()
    }

    /// Parses a value; the optional `:type` part is accepted and ignored.
    pub fn decode(v: &[u8]) -> Option<OverrideStat> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.split(':');
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let mode = u32::from_str_radix(it.next()?, 8).ok()?;
        if let Some(t) = it.next() {
            if t.is_empty() || it.next().is_some() {
                return None;
            }
        }
        (mode <= 0o7777).then_some(OverrideStat { uid, gid, mode })
    }
}

/// A redirect is a single name (same parent) or an absolute path from the
/// root; no empty, "." or ".." components, no NUL.
pub fn redirect_valid(v: &[u8]) -> bool {
    let comps = |p: &[u8]| {
        !p.is_empty()
            && p.split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b"..")
    };
    if v.contains(&0) || v.len() > 4096 {
        return false;
    }
    match v.strip_prefix(b"/") {
        Some(abs) => comps(abs),
        None => !v.contains(&b'/') && comps(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aufs_names() {
        assert_eq!(
            aufs_whiteout_target(OsStr::new(".wh.foo")),
            Some(OsStr::new("foo"))
        );
        assert_eq!(aufs_whiteout_target(OsStr::new(".wh..wh..opq")), None);
        assert_eq!(aufs_whiteout_target(OsStr::new(".wh.")), None);
        assert_eq!(aufs_whiteout_target(OsStr::new("foo")), None);
        assert_eq!(aufs_whiteout_name(OsStr::new("x")), OsString::from(".wh.x"));
    }

    #[test]
    fn file_handles_and_index_names() {
        let fh = FileHandle {
            kind: 1,
            uuid: [0; 16],
            bytes: vec![0x35, 0x62, 0x9a, 0, 0x80, 0x56, 0x0d, 0xd7],
        };
        let v = fh.encode();
        assert_eq!(v[..5], [0, 0xfb, 0x1d, 0, 1]);
        assert_eq!(FileHandle::decode(&v), Some(fh.clone()));
        assert_eq!(
            fh.index_name(),
            "00fb1d00010000000000000000000000000000000035629a0080560dd7"
        );
        assert_eq!(FileHandle::decode(&v[..v.len() - 1]), None);
        assert_eq!(FileHandle::decode(b"\x01\xfb"), None);
        assert_eq!(parse_nlink(b"U+1"), Some((true, 1)));
        assert_eq!(parse_nlink(b"L-2"), Some((false, -2)));
        assert_eq!(parse_nlink(b"U1"), None);
        assert_eq!(parse_nlink(b"X+1"), None);
        assert_eq!(format_nlink(-1), b"U-1");
        assert_eq!(format_nlink(0), b"U+0");
    }

    #[test]
    fn override_stat_values() {
        let o = OverrideStat {
            uid: 5,
            gid: 6,
            mode: 0o4755,
        };
        assert_eq!(o.encode(), b"5:6:04755");
        assert_eq!(OverrideStat::decode(b"5:6:04755"), Some(o));
        assert_eq!(
            OverrideStat::decode(b"5:6:0644:file"),
            Some(OverrideStat {
                uid: 5,
                gid: 6,
                mode: 0o644
            })
        );
        assert_eq!(OverrideStat::decode(b"5:6"), None);
        assert_eq!(OverrideStat::decode(b"5:6:999"), None);
        assert_eq!(OverrideStat::decode(b"a:6:0644"), None);
        assert_eq!(OverrideStat::decode(b"5:6:0644:f:g"), None);
    }

    #[test]
    fn redirects() {
        assert!(redirect_valid(b"d"));
        assert!(redirect_valid(b"/a/b"));
        assert!(!redirect_valid(b""));
        assert!(!redirect_valid(b"/"));
        assert!(!redirect_valid(b"a/b"));
        assert!(!redirect_valid(b"/a//b"));
        assert!(!redirect_valid(b"/a/../b"));
        assert!(!redirect_valid(b".."));
    }

    #[test]
    fn xattr_escaping_round_trips() {
        let x = XattrNames::new(false);
        let stored = x.escape(OsStr::new("trusted.overlay.opaque"));
        assert_eq!(stored, OsString::from("trusted.overlay.overlay.opaque"));
        assert_eq!(
            x.unescape(&stored),
            Some(OsString::from("trusted.overlay.opaque"))
        );
        assert_eq!(x.unescape(OsStr::new("trusted.overlay.origin")), None);
        assert_eq!(x.unescape(OsStr::new("user.fuseoverlayfs.opaque")), None);
        assert_eq!(
            x.unescape(OsStr::new("user.a")),
            Some(OsString::from("user.a"))
        );
        assert!(!x.copy_up_keeps(OsStr::new("trusted.overlay.origin")));
        assert!(x.copy_up_keeps(OsStr::new("trusted.overlay.overlay.x")));
        assert!(x.copy_up_keeps(OsStr::new("security.capability")));
        let u = XattrNames::new(true);
        assert_eq!(u.unescape(OsStr::new("user.overlay.redirect")), None);
        assert_eq!(
            u.unescape(OsStr::new("trusted.overlay.redirect")),
            Some(OsString::from("trusted.overlay.redirect"))
        );
    }
}
