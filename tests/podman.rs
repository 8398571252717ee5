//! podman with ovlfuse as containers/storage's mount_program, offline:
//! import a busybox image, run, build in several steps (deletions, chmod, a
//! dir rename, hard links, then an append in a later step), commit, and see
//! every change, through both names of the hard link, in new containers.
//! The same flow runs as root and as rootless podman of a throwaway non-root
//! user (created, given /dev/fuse, and removed by the test). As root with
//! --uidmap, ovlfuse shows the unshifted image shifted (uidmapping).
//! scripts/deps installs podman, runc, uidmap and busybox-static.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

/// What podman needs on these machines to start containers (SPEC §5).
const LIMITS: [&str; 5] = [
    "--network=none",
    "--ulimit",
    "nofile=1024:4096",
    "--ulimit",
    "nproc=4096:4096",
];

struct Podman {
    dir: Scratch,
    /// Rootless: podman runs as this user (see RootlessUser).
    user: Option<&'static str>,
    /// The mount program, if not this build of ovlfuse.
    program: Option<String>,
}

impl Podman {
    fn new() -> Podman {
        let dir = Scratch::new("podman");
        Podman {
            dir,
            user: None,
            program: None,
        }
    }

    /// podman as root with another mount program (fuse-overlayfs, to compare).
    fn with_mount_program(program: &str) -> Podman {
        let dir = Scratch::new("podman-peer");
        Podman {
            dir,
            user: None,
            program: Some(program.into()),
        }
    }

    /// Podman run by `user`, on a scratch dir it owns, with its own copy of
    /// ovlfuse (the build dir may not be readable to it).
    fn rootless(user: &RootlessUser) -> Podman {
        let dir = Scratch::new("podman-rootless");
        fs::copy(bin(), dir.0.join("ovlfuse")).unwrap();
        fs::create_dir_all(dir.0.join("xdg")).unwrap();
        let st = Command::new("chown")
            .args(["-R", user.name])
            .arg(&dir.0)
            .status()
            .unwrap();
        assert!(st.success());
        Podman {
            dir,
            user: Some(user.name),
            program: None,
        }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let root = self.dir.0.join("root");
        let runroot = self.dir.0.join("runroot");
        let (mut c, program) = match self.user {
            None => (
                Command::new("podman"),
                self.program.clone().unwrap_or_else(|| bin().to_string()),
            ),
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", "env"])
                    .arg(format!(
                        "XDG_RUNTIME_DIR={}",
                        self.dir.0.join("xdg").display()
                    ))
                    .arg(format!("HOME=/home/{u}"))
                    .arg("podman")
                    .current_dir(&self.dir.0);
                (c, self.dir.0.join("ovlfuse").display().to_string())
            }
        };
        let mp = format!("overlay.mount_program={program}");
        let out = c
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--storage-driver",
                "overlay",
            ])
            .args(["--storage-opt", &mp])
            .args(args)
            .output()
            .expect("podman not found: run scripts/test (scripts/deps installs it)");
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn run(&self, image: &str, script: &str) -> String {
        let mut v = vec!["run", "--rm"];
        v.extend(LIMITS);
        v.extend([image, "sh", "-c", script]);
        String::from_utf8_lossy(&self.cmd(&v).stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever a failed step left: its mounts (then their daemons exit).
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.dir.0.to_string_lossy().into_owned();
        let mut left: Vec<PathBuf> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(PathBuf::from)
            .collect();
        left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in left {
            umount(&m);
        }
    }
}

#[test]
fn podman_run_build_commit_on_ovlfuse() {
    flow(&Podman::new());
}

/// podman as root with --uidmap: storage passes the map to the mount
/// program as `uidmapping=:0:100000:65536`. What the container writes is
/// stored unshifted (owned by 0), and everything the containers see is what
/// they see with fuse-overlayfs 1.10 as mount_program, run beside.
#[test]
fn podman_uidmap_on_ovlfuse() {
    let ours = Podman::new();
    let theirs = Podman::with_mount_program("/usr/bin/fuse-overlayfs");
    let a = uidmap_flow(&ours);
    let b = uidmap_flow(&theirs);
    assert_eq!(a, b, "ovlfuse (left) vs fuse-overlayfs (right)");
    // The container's root wrote /newfile: root inside, 0 on disk.
    assert!(a[0].contains("/newfile 0:0\n"), "{}", a[0]);
}

/// Runs, inspects, commits and reruns a mapped container; returns what the
/// containers printed, then the owner of /newfile in the upper dir.
fn uidmap_flow(p: &Podman) -> Vec<String> {
    let tar = busybox_tar(&p.dir.0);
    p.cmd(&["import", tar.to_str().unwrap(), "localhost/bb:latest"]);
    let map = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let script = "echo x > /newfile && mkdir /newdir && stat -c '%n %u:%g' /bin/busybox /srv/conf.d/old /newfile /newdir && cat /proc/self/uid_map | tr -s ' '";
    let mut v = vec!["run", "--name", "mapped"];
    v.extend(LIMITS);
    v.extend(map);
    v.extend(["localhost/bb", "sh", "-c", script]);
    let mut seen = vec![String::from_utf8_lossy(&p.cmd(&v).stdout).into_owned()];
    let upper = p.cmd(&[
        "inspect",
        "mapped",
        "--format",
        "{{.GraphDriver.Data.UpperDir}}",
    ]);
    let upper = PathBuf::from(String::from_utf8_lossy(&upper.stdout).trim());
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(upper.join("newfile")).unwrap();
    seen.push(format!("upper /newfile {}:{}", md.uid(), md.gid()));
    p.cmd(&["commit", "mapped", "localhost/mapped-commit"]);
    // No rm: podman may find the shm mount busy while another test's mount
    // namespace still holds a copy of it; the scratch dir goes anyway.
    for extra in [&map[..], &[]] {
        let mut v = vec!["run", "--rm"];
        v.extend(LIMITS);
        v.extend(extra);
        v.extend([
            "localhost/mapped-commit",
            "sh",
            "-c",
            "stat -c '%n %u:%g' /newfile /newdir /bin/busybox && cat /newfile",
        ]);
        seen.push(String::from_utf8_lossy(&p.cmd(&v).stdout).into_owned());
    }
    seen
}

/// The same flow with rootless podman as a non-root user, in its user
/// namespace: ovlfuse runs there unprivileged (user.overlay.* xattrs,
/// userspace I/O where passthrough is refused).
#[test]
fn rootless_podman_run_build_commit_on_ovlfuse() {
    let user =
        RootlessUser::new().unwrap_or_else(|why| panic!("rootless podman cannot run: {why}"));
    let p = Podman::rootless(&user);
    flow(&p);
    // The container's root is ovlfuse, mounted inside the user's namespace.
    let out = p.run(
        "localhost/bb",
        "cat /proc/self/mountinfo /proc/self/uid_map",
    );
    assert!(
        out.lines()
            .any(|l| l.contains(" / / ") && l.contains(" - fuse.ovlfuse ovlfuse ")),
        "{out}"
    );
    let uid = user.uid.to_string();
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", &uid, "1"]),
        "container root is not the user: {out}"
    );
    drop(p);
    drop(user);
}

fn flow(p: &Podman) {
    let tar = busybox_tar(&p.dir.0);
    p.cmd(&["import", tar.to_str().unwrap(), "localhost/bb:latest"]);

    // run: create, append, delete lower files, rm -rf + recreate a lower
    // dir, rename a lower dir.
    let out = p.run(
        "localhost/bb",
        "echo hi > /tmp/x && cat /tmp/x && echo more >> /tmp/x && rm /bin/true && \
         rm -rf /srv && mkdir -p /srv/conf.d && echo new > /srv/conf.d/n && mv /tmp /tmp2 && \
         cat /tmp2/x && ls /srv/conf.d && ls / | tr '\\n' ' ' && ls /bin/true 2>/dev/null || echo true-gone",
    );
    assert!(out.starts_with("hi\nhi\nmore\nn\n"), "{out}");
    assert!(
        out.contains("tmp2") && !out.contains("tmp ") && out.ends_with("true-gone\n"),
        "{out}"
    );

    let ctx = p.dir.0.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("payload"), b"copied in\n").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        "FROM localhost/bb\n\
         COPY payload /data/payload\n\
         RUN echo base > /data/a && ln /data/a /data/hard && echo keep > /data/k && mkdir /data/low && echo l > /data/low/f\n\
         RUN rm /data/k && chmod 700 /data/low && mv /data/low /data/moved && echo g > /data/moved/g\n\
         RUN echo appended >> /data/a\n",
    )
    .unwrap();
    let mut v = vec!["build"];
    v.extend(LIMITS);
    v.extend(["-t", "localhost/built", ctx.to_str().unwrap()]);
    p.cmd(&v);
    let out = p.run(
        "localhost/built",
        "cat /data/hard /data/a /data/payload; ls /data/k 2>/dev/null || echo k-gone; \
         stat -c '%a %h' /data/moved /data/a; ls /data/moved | tr '\\n' ' '",
    );
    assert_eq!(
        out, "base\nappended\nbase\nappended\ncopied in\nk-gone\n700 2\n644 2\nf g ",
        "{out}"
    );

    // A container changes the image, is committed, and a new one sees it.
    let mut v = vec!["run", "--name", "c1"];
    v.extend(LIMITS);
    v.extend([
        "localhost/built",
        "sh",
        "-c",
        "echo more >> /data/hard && rm -r /data/moved && mkdir /data/moved && echo n > /data/moved/n",
    ]);
    p.cmd(&v);
    p.cmd(&["commit", "c1", "localhost/committed"]);
    p.cmd(&["rm", "c1"]);
    let out = p.run(
        "localhost/committed",
        "cat /data/a; cat /data/hard; ls /data/moved",
    );
    assert_eq!(
        out, "base\nappended\nmore\nbase\nappended\nmore\nn\n",
        "{out}"
    );
}

/// A throwaway non-root user with subordinate ids, allowed to open
/// /dev/fuse (mode 0600 here) while it exists. Drop ends its processes
/// (podman's pause process), restores /dev/fuse and deletes the user.
struct RootlessUser {
    name: &'static str,
    uid: u32,
    fuse_mode: u32,
}

impl RootlessUser {
    fn new() -> Result<RootlessUser, String> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let name = "ovlfuse-rootless";
        let run = |c: &mut Command| -> Result<String, String> {
            let o = c.output().map_err(|e| format!("{c:?}: {e}"))?;
            if !o.status.success() {
                return Err(format!("{c:?}: {}", String::from_utf8_lossy(&o.stderr)));
            }
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        };
        if Command::new("id")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            // Left by an interrupted run.
            let _ = Command::new("userdel").args(["-r", name]).output();
        }
        for tool in ["newuidmap", "newgidmap", "runuser", "useradd"] {
            run(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
                .map_err(|_| format!("{tool} is missing (uidmap, util-linux, passwd)"))?;
        }
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", name]))?;
        let uid: u32 = run(Command::new("id").args(["-u", name]))?
            .trim()
            .parse()
            .map_err(|e| format!("id -u: {e}"))?;
        let fuse_mode = fs::metadata("/dev/fuse")
            .map_err(|e| format!("/dev/fuse: {e}"))?
            .mode()
            & 0o7777;
        let u = RootlessUser {
            name,
            uid,
            fuse_mode,
        };
        for f in ["/etc/subuid", "/etc/subgid"] {
            let has = fs::read_to_string(f).unwrap_or_default();
            if !has.lines().any(|l| l.starts_with(&format!("{name}:"))) {
                let line = format!("{has}{name}:300000:65536\n");
                fs::write(f, line).map_err(|e| format!("{f}: {e}"))?;
            }
        }
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("chmod /dev/fuse: {e}"))?;
        Ok(u)
    }
}

impl Drop for RootlessUser {
    fn drop(&mut self) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Every process of this user was started by this test.
        for _ in 0..50 {
            let pids: Vec<i32> = fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                        .filter(|p| {
                            fs::metadata(format!("/proc/{p}")).is_ok_and(|m| m.uid() == self.uid)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: plain kill(2) of a process of our throwaway user.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.fuse_mode));
        let _ = Command::new("userdel").args(["-r", self.name]).output();
        for f in ["/etc/subuid", "/etc/subgid"] {
            if let Ok(s) = fs::read_to_string(f) {
                let kept: String = s
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{}:", self.name)))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let _ = fs::write(f, kept);
            }
        }
    }
}
