//! Docker's fuse-overlayfs storage driver with ovlfuse installed under that
//! name: a private dockerd (its own data root, exec root, socket and
//! pidfile; no network) runs the same flow once on the fuse-overlayfs driver
//! (ovlfuse) and once on overlay2 (kernel overlayfs); what the containers
//! print, `docker diff` and `docker export` must be the same. Also: commit,
//! a classic-builder build, save/load, a dockerd restart, concurrent runs,
//! and no FUSE mount left behind. Each dockerd is stopped by its pid.
//! scripts/deps installs docker.io.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Dockerd {
    dir: PathBuf,
    driver: &'static str,
    child: Option<Child>,
}

impl Dockerd {
    fn start(dir: &Path, driver: &'static str) -> Dockerd {
        let bin_dir = dir.join("bin");
        fs::create_dir_all(&bin_dir).unwrap();
        let link = bin_dir.join("fuse-overlayfs");
        if !link.exists() {
            std::os::unix::fs::symlink(bin(), &link).unwrap();
        }
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = fs::File::create(dir.join(format!(
            "dockerd-{}.log",
            fs::read_dir(dir).unwrap().count()
        )))
        .unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--storage-driver",
                driver,
            ])
            .env("PATH", path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd missing: run scripts/test (scripts/deps installs docker.io)");
        let d = Dockerd {
            dir: dir.to_path_buf(),
            driver,
            child: Some(child),
        };
        let t = Instant::now();
        while !d.try_cmd(&["info"]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "dockerd did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn try_cmd(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = self.try_cmd(args);
        assert!(
            out.status.success(),
            "docker ({}) {args:?}: {}{}",
            self.driver,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker diff` of a container, sorted.
    fn diff(&self, c: &str) -> String {
        let mut lines: Vec<String> = self.cmd(&["diff", c]).lines().map(str::to_string).collect();
        lines.sort();
        lines.join("\n")
    }

    /// `docker run --rm` of `image` running `script`; its output.
    fn run(&self, image: &str, script: &str) -> String {
        self.cmd(&[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            script,
        ])
    }

    /// Stops dockerd by its pid and waits for it.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: the dockerd this test started.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while c.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// FUSE and overlay mounts under this dockerd's data root.
    fn mounts(&self) -> Vec<String> {
        let root = self.dir.display().to_string();
        fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&root)))
            .filter(|l| l.contains(" fuse") || l.contains(" overlay "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        let mut left: Vec<PathBuf> = self
            .mounts()
            .iter()
            .filter_map(|l| l.split(' ').nth(1).map(PathBuf::from))
            .collect();
        left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in left {
            umount(&m);
        }
    }
}

/// A tar's entries (names, types, modes, sizes, link targets) and the
/// contents of its files.
fn tar_listing(tar: &Path, into: &Path) -> String {
    fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(into)
        .arg("-xf")
        .arg(tar)
        .status()
        .unwrap();
    assert!(st.success());
    let mut out = String::new();
    for (p, d) in dump_tree(into) {
        // Times are the run's; everything else must match.
        let d = d.replace(" mtime=fixed", "");
        out += &format!("{p}: {d}\n");
    }
    out
}

const RUN: &str =
    "rm /srv/conf.d/old && rm -rf /img/low && mkdir /img/low && echo n > /img/low/n && \
    mv /srv /srv2 && cat /img/a && ls /img/low /srv2/conf.d | tr '\\n' ' '";

const DOCKERFILE: &str = "FROM bb\n\
    COPY payload /img/payload\n\
    RUN rm /img/a && rm -rf /srv && mkdir -p /srv/conf.d && echo re > /srv/conf.d/re\n\
    RUN chmod 700 /img/low && ln /img/payload /img/plink && echo x >> /img/plink\n\
    RUN cat /img/payload /img/hard && ls -l /img | tr -s ' ' | cut -d' ' -f1,2,9 | tr '\\n' ';'\n";

/// The whole flow on one driver; returns everything to compare.
fn flow(dir: &Path, driver: &'static str) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    let mut seen = Vec::new();
    let mut d = Dockerd::start(dir, driver);
    let tar = busybox_tar(dir);
    d.cmd(&["import", tar.to_str().unwrap(), "bb:latest"]);
    seen.push(d.cmd(&[
        "run",
        "--name",
        "c1",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        RUN,
    ]));
    seen.push(d.diff("c1"));
    let export = dir.join("c1.tar");
    d.cmd(&["export", "-o", export.to_str().unwrap(), "c1"]);
    seen.push(tar_listing(&export, &dir.join("c1-export")));
    d.cmd(&["commit", "c1", "c1img"]);
    seen.push(d.run("c1img", "cat /img/a /img/hard; ls /srv2/conf.d /img/low"));
    // Classic builder: COPY, whiteouts, an opaque re-created dir, chmod,
    // hard links.
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("payload"), b"copied\n").unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let build = d.cmd(&["build", "-q", "-t", "built", ctx.to_str().unwrap()]);
    assert!(!build.is_empty());
    let check =
        "ls /img /srv/conf.d | tr '\\n' ' '; cat /img/plink; stat -c '%a %h' /img/low /img/plink";
    seen.push(d.run("built", check));
    // save, remove, load, run again.
    let saved = dir.join("built.tar");
    d.cmd(&["save", "-o", saved.to_str().unwrap(), "built"]);
    d.cmd(&["rmi", "built"]);
    d.cmd(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(d.run("built", check), *seen.last().unwrap());
    // Containers started and removed at once, several at a time (Docker
    // unmounts and mounts a merged dir again within milliseconds).
    for round in 0..3 {
        let runs: Vec<_> = (0..6)
            .map(|i| {
                let dir = d.dir.clone();
                std::thread::spawn(move || {
                    Command::new("/usr/bin/docker")
                        .arg("-H")
                        .arg(format!("unix://{}", dir.join("docker.sock").display()))
                        .args(["run", "--rm", "--network", "none", "bb", "sh", "-c"])
                        .arg(format!("cat /img/a && echo {round}-{i}"))
                        .output()
                        .unwrap()
                })
            })
            .collect();
        for r in runs {
            let out = r.join().unwrap();
            assert!(
                out.status.success(),
                "{driver}: concurrent run: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // dockerd restarts; the stopped container keeps its changes.
    d.stop();
    assert!(
        d.mounts().is_empty(),
        "{driver}: mounts left after dockerd stopped: {:?}",
        d.mounts()
    );
    let d = Dockerd::start(dir, driver);
    assert_eq!(d.diff("c1"), seen[1], "{driver}: diff after a restart");
    let cp = d.try_cmd(&["cp", "c1:/srv2/conf.d", "-"]);
    assert!(cp.status.success(), "{driver}: docker cp");
    seen.push(hard_link_append(&d));
    let ids = d.cmd(&["ps", "-aq"]);
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.lines());
    d.cmd(&rm);
    assert!(
        d.mounts().is_empty(),
        "{driver}: mounts left after docker rm -f: {:?}",
        d.mounts()
    );
    drop(d);
    seen
}

/// An append through one name of a hard link that is in the image, then a
/// commit: what both names show, in the container and in the new image.
fn hard_link_append(d: &Dockerd) -> String {
    let show = "cat /img/a /img/hard; stat -c %h /img/a";
    let mut out = d.cmd(&[
        "run",
        "--name",
        "c2",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        &format!("echo more >> /img/hard; {show}"),
    ]);
    d.cmd(&["commit", "c2", "c2img"]);
    out += &d.run("c2img", show);
    out
}

#[test]
fn docker_fuse_overlayfs_driver_runs_on_ovlfuse() {
    let s = Scratch::new("docker");
    let ours = flow(&s.0.join("fuse"), "fuse-overlayfs");
    let kernel = flow(&s.0.join("overlay2"), "overlay2");
    let what = [
        "run",
        "docker diff",
        "docker export",
        "committed image",
        "built image",
    ];
    for (i, w) in what.iter().enumerate() {
        assert_eq!(
            ours[i], kernel[i],
            "{w}: fuse-overlayfs driver on ovlfuse (left) vs overlay2"
        );
    }
    assert_eq!(ours[0], "a\n/img/low: n  /srv2/conf.d: ");
    // Hard links: ovlfuse (index=on by default) keeps both names one file
    // through the copy-up and the commit. overlay2 mounts the kernel's
    // overlay with index=off, which splits them: only the written name has
    // the append there.
    assert_eq!(ours[5], "a\nmore\na\nmore\n2\na\nmore\na\nmore\n2\n");
    assert_eq!(kernel[5], "a\na\nmore\n2\na\na\nmore\n2\n");
}
