//! Every raw syscall and every `unsafe` block of ovlfuse lives here.
//!
//! The wrappers are thin: they take fds and C strings and return `io::Result`.
//! Paths are always relative to a directory fd (a layer root or a parent dir).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};

pub mod fuse_dev;
pub mod handle;
pub mod mount;
pub mod process;
pub mod uring;
pub mod xattr;

pub use handle::*;
pub use process::*;
pub use xattr::*;

pub type Stat = libc::stat;

/// Whether a stat is of a directory.
pub fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn zeroed_stat() -> Stat {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_ssize(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Turns a Rust string into a C string; an interior NUL is EINVAL.
pub fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `path` below `dir` without following any symlink on the way and
/// without leaving `dir` (openat2 RESOLVE_BENEATH). On kernels without
/// openat2 (before 5.6) it walks the path one component at a time with the
/// same guarantee (beneath_walk).
pub fn open_beneath(dir: BorrowedFd, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow {
            flags: flags as u64,
            mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
                mode as u64
            } else {
                0
            },
            resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: `how` is a valid open_how and `path` a valid C string.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new fd that we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // A symlink on the way is not a directory for an overlay walk.
            Some(libc::ELOOP) if flags & libc::O_NOFOLLOW == 0 => {
                return Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
            _ => return Err(err),
        }
    }
    beneath_walk(dir, path, flags, mode)
}

/// open_beneath without openat2: each dir on the way is opened with
/// O_NOFOLLOW relative to the one before, so no symlink (and no "..", no
/// absolute path) can lead out of `dir`; a symlink on the way gives ELOOP
/// or ENOTDIR, as openat2 RESOLVE_NO_SYMLINKS would.
fn beneath_walk(dir: BorrowedFd, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let bytes = path.to_bytes();
    if bytes.starts_with(b"/") {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    let comps: Vec<&[u8]> = bytes
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    let Some((last, dirs)) = comps.split_last() else {
        return openat(dir, c".", flags | libc::O_NOFOLLOW, mode);
    };
    let mut cur: Option<OwnedFd> = None;
    for c in dirs {
        let name = CString::new(*c).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let at = cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
        let step = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        cur = Some(openat(at, &name, step, 0)?);
    }
    let name = CString::new(*last).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let at = cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
    openat(at, &name, flags | libc::O_NOFOLLOW, mode)
}

pub fn openat(dir: BorrowedFd, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall on valid pointers.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: new fd owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn open_path(path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: new fd owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn fstatat(dir: BorrowedFd, path: &CStr) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<Stat>::uninit();
    // SAFETY: st is a valid out pointer.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            path.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
        )
    })?;
    // SAFETY: initialised by a successful fstatat.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<Stat>::uninit();
    // SAFETY: st is a valid out pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: initialised by a successful fstat.
    Ok(unsafe { st.assume_init() })
}

pub fn fstatfs(fd: BorrowedFd) -> io::Result<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid out pointer.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: initialised on success.
    Ok(unsafe { st.assume_init() })
}

pub fn mkdirat(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn readlinkat(dir: BorrowedFd, path: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for its length.
    let n = cvt_ssize(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn unlinkat(dir: BorrowedFd, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn linkat(
    odir: BorrowedFd,
    oname: &CStr,
    ndir: BorrowedFd,
    nname: &CStr,
    flags: i32,
) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe {
        libc::linkat(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
pub const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
pub const RENAME_WHITEOUT: u32 = libc::RENAME_WHITEOUT;

pub fn renameat2(
    odir: BorrowedFd,
    oname: &CStr,
    ndir: BorrowedFd,
    nname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe {
        libc::renameat2(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn fchmodat(dir: BorrowedFd, path: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), path.as_ptr(), mode, 0) }).map(drop)
}

pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// lchown relative to `dir`; u32::MAX leaves an id unchanged.
pub fn fchownat(dir: BorrowedFd, path: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            path.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

pub const UTIME_OMIT: i64 = libc::UTIME_OMIT;
pub const UTIME_NOW: i64 = libc::UTIME_NOW;

/// Sets atime and mtime (seconds, nanoseconds); UTIME_* constants allowed in nsec.
pub fn utimensat(dir: BorrowedFd, path: &CStr, times: [(i64, i64); 2]) -> io::Result<()> {
    let ts = times.map(|(s, n)| libc::timespec {
        tv_sec: s as _,
        tv_nsec: n as _,
    });
    // SAFETY: ts points at two timespecs.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            path.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

pub fn ftruncate(fd: BorrowedFd, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }).map(drop)
}

pub fn fsync(fd: BorrowedFd, datasync: bool) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

pub fn pread(fd: BorrowedFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    // SAFETY: buf is writable for its length.
    cvt_ssize(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn pwrite(fd: BorrowedFd, buf: &[u8], off: u64) -> io::Result<usize> {
    // SAFETY: buf is readable for its length.
    cvt_ssize(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn fallocate(fd: BorrowedFd, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(drop)
}

pub fn lseek(fd: BorrowedFd, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

pub fn copy_file_range(
    fin: BorrowedFd,
    off_in: u64,
    fout: BorrowedFd,
    off_out: u64,
    len: usize,
) -> io::Result<usize> {
    let mut oi = off_in as libc::loff_t;
    let mut oo = off_out as libc::loff_t;
    // SAFETY: offsets are valid out pointers.
    cvt_ssize(unsafe {
        libc::copy_file_range(fin.as_raw_fd(), &mut oi, fout.as_raw_fd(), &mut oo, len, 0)
    })
}

/// Shares all blocks of `src` with `dst` (reflink); EOPNOTSUPP/EXDEV/EINVAL where unsupported.
pub fn ficlone(dst: BorrowedFd, src: BorrowedFd) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its argument.
    cvt(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) }).map(drop)
}

pub fn umask(mask: u32) -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::umask(mask) }
}

/// Reads all entries of an open directory fd (from offset 0): (name, d_ino, d_type).
pub fn read_dir(fd: BorrowedFd) -> io::Result<Vec<(OsString, u64, u8)>> {
    lseek(fd, 0, libc::SEEK_SET)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        let mut pos = 0usize;
        while pos < n as usize {
            // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name[]
            let ino = u64::from_ne_bytes(buf[pos..pos + 8].try_into().unwrap());
            let reclen = u16::from_ne_bytes(buf[pos + 16..pos + 18].try_into().unwrap()) as usize;
            let dtype = buf[pos + 18];
            let name_bytes = &buf[pos + 19..pos + reclen];
            let len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = &name_bytes[..len];
            if name != b"." && name != b".." {
                out.push((OsString::from_vec(name.to_vec()), ino, dtype));
            }
            pos += reclen;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod beneath_tests {
    use super::*;

    /// Without openat2 the component walk keeps every open inside the dir:
    /// symlinks on the way, "..", and absolute paths are refused.
    #[test]
    fn walk_without_openat2_stays_beneath() {
        let base = std::env::temp_dir().join(format!("ovlfuse-t-{}-beneath", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("d")).unwrap();
        std::fs::write(base.join("d/f"), b"f").unwrap();
        std::os::unix::fs::symlink("d", base.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("out")).unwrap();
        let root = open_path(&cstr(base.as_os_str()).unwrap(), libc::O_RDONLY).unwrap();
        let open = |p: &CStr| beneath_walk(root.as_fd(), p, libc::O_RDONLY, 0);
        assert!(open(c"d/f").is_ok());
        assert!(open(c"./d/./f").is_ok());
        for bad in [c"link/f", c"out/passwd", c"d/../d/f", c"/etc/passwd"] {
            let e = open(bad).err().map(|e| e.raw_os_error().unwrap_or(0));
            assert!(
                matches!(
                    e,
                    Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV)
                ),
                "{bad:?}: {e:?}"
            );
        }
        // A final symlink is not followed either.
        assert_eq!(
            open(c"out").err().and_then(|e| e.raw_os_error()),
            Some(libc::ELOOP)
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
