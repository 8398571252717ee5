//! podman with ovlfuse as containers/storage's mount_program, offline:
//! import a busybox image, run, build in several steps (deletions, chmod, a
//! dir rename, hard links, then an append in a later step), commit, and see
//! every change, through both names of the hard link, in new containers.
//! scripts/deps installs podman, runc and busybox-static.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
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
}

impl Podman {
    fn new() -> Podman {
        let dir = Scratch::new("podman");
        Podman { dir }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let root = self.dir.0.join("root");
        let runroot = self.dir.0.join("runroot");
        let mp = format!("overlay.mount_program={}", bin());
        let out = Command::new("podman")
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

fn busybox_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    fs::create_dir_all(rootfs.join("srv/conf.d")).unwrap();
    fs::write(rootfs.join("srv/conf.d/old"), b"old\n").unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static missing: run scripts/test");
    for c in [
        "sh", "ls", "cat", "echo", "rm", "mkdir", "mv", "ln", "chmod", "stat", "cp", "true", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(c)).unwrap();
    }
    let tar = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

#[test]
fn podman_run_build_commit_on_ovlfuse() {
    let p = Podman::new();
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
