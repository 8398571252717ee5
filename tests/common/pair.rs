//! Kernel overlayfs and ovlfuse mounted side by side over identical copies.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;

/// Kernel and ovlfuse mounted over identical copies of the fixture.
pub struct Pair {
    pub kernel: Option<KernelMount>,
    pub ovl: Option<OvlMount>,
    pub k_upper: PathBuf,
    pub o_upper: PathBuf,
    pub k_lowers: Vec<PathBuf>,
    pub o_lowers: Vec<PathBuf>,
    pub k_mnt: PathBuf,
    pub o_mnt: PathBuf,
    pub k_opts: String,
    pub o_opts: String,
    /// Last: removed only after the mounts above are gone.
    pub scratch: Scratch,
}

impl Pair {
    /// Kernel mounted with `k_opts`, ovlfuse with `o_opts` (extra options).
    pub fn new(k_opts: &str, o_opts: &str) -> Pair {
        Self::with_lowers(
            k_opts,
            o_opts,
            |b| build_lowers(b, false),
            |b| build_lowers(b, false),
        )
    }

    pub fn with_lowers(
        k_opts: &str,
        o_opts: &str,
        kb: impl Fn(&Path) -> Vec<PathBuf>,
        ob: impl Fn(&Path) -> Vec<PathBuf>,
    ) -> Pair {
        let scratch = Scratch::new("pair");
        let k = scratch.0.join("k");
        let o = scratch.0.join("o");
        for d in [&k, &o] {
            for s in ["u", "w", "m"] {
                fs::create_dir_all(d.join(s)).unwrap();
            }
        }
        let k_lowers = kb(&k);
        let o_lowers = ob(&o);
        let mut p = Pair {
            k_upper: k.join("u"),
            o_upper: o.join("u"),
            k_mnt: k.join("m"),
            o_mnt: o.join("m"),
            k_lowers,
            o_lowers,
            scratch,
            kernel: None,
            ovl: None,
            k_opts: k_opts.into(),
            o_opts: o_opts.into(),
        };
        p.mount();
        p
    }

    pub fn mount(&mut self) {
        let k = self.scratch.0.join("k");
        let o = self.scratch.0.join("o");
        self.kernel = Some(KernelMount::new(
            &self.k_lowers,
            Some((&self.k_upper, &k.join("w"))),
            &self.k_mnt,
            &self.k_opts,
        ));
        self.ovl = Some(OvlMount::layers(
            &self.o_lowers,
            Some((&self.o_upper, &o.join("w"))),
            &self.o_mnt,
            &self.o_opts,
        ));
    }

    pub fn unmount(&mut self) {
        self.kernel = None;
        if let Some(mut o) = self.ovl.take() {
            let st = o.stop();
            assert!(
                st.map(|s| s.success()).unwrap_or(false),
                "ovlfuse exited with {st:?}"
            );
        }
    }

    /// Runs `f` on both mounts and asserts the same outcome.
    pub fn both<T: PartialEq + std::fmt::Debug>(&self, what: &str, f: impl Fn(&Path) -> T) {
        self.both_value(what, f);
    }

    /// As `both`, and returns the outcome for further checks.
    pub fn both_value<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        f: impl Fn(&Path) -> T,
    ) -> T {
        let k = f(&self.k_mnt);
        let o = f(&self.o_mnt);
        assert_eq!(o, k, "{what}: ovlfuse (left) differs from kernel (right)");
        o
    }

    /// Mounts ovlfuse's layers (lowers + the upper it wrote) with the kernel
    /// and checks the kernel shows what the kernel's own run shows.
    pub fn assert_kernel_reads_ovlfuse_upper(&self) {
        assert!(
            self.ovl.is_none() && self.kernel.is_some(),
            "unmount ovlfuse first"
        );
        // The same workdir: W/index is part of what ovlfuse wrote.
        let o = self.scratch.0.join("o");
        let m = o.join("m-kernel");
        let w = o.join("w");
        fs::create_dir_all(&m).unwrap();
        let km = KernelMount::new(&self.o_lowers, Some((&self.o_upper, &w)), &m, &self.k_opts);
        let seen = dump_tree(&km.mnt);
        drop(km);
        assert_maps_eq(
            &seen,
            &dump_tree(&self.k_mnt),
            "kernel over ovlfuse's upper vs kernel's own",
        );
    }

    /// Mounts the kernel's layers (lowers + the upper and workdir the kernel
    /// wrote) with ovlfuse and checks it shows what ovlfuse's own run shows.
    pub fn assert_ovlfuse_reads_kernel_upper(&self) {
        assert!(
            self.ovl.is_none() && self.kernel.is_none(),
            "unmount both first"
        );
        let k = self.scratch.0.join("k");
        let m = k.join("m-ovlfuse");
        fs::create_dir_all(&m).unwrap();
        let mut om = OvlMount::layers(
            &self.k_lowers,
            Some((&self.k_upper, &k.join("w"))),
            &m,
            &self.o_opts,
        );
        let seen = dump_tree(&om.mnt);
        om.stop();
        let mut own = OvlMount::layers(
            &self.o_lowers,
            Some((&self.o_upper, &self.scratch.0.join("o/w"))),
            &self.o_mnt,
            &self.o_opts,
        );
        let mine = dump_tree(&own.mnt);
        own.stop();
        assert_maps_eq(
            &seen,
            &mine,
            "ovlfuse over the kernel's upper vs ovlfuse's own",
        );
    }

    /// After the operations: same merged trees, same upper, the same again
    /// after a remount, and each reads the other's upper.
    pub fn check_all(mut self) {
        self.assert_same_tree();
        self.unmount();
        if self.o_opts.contains("index=on") {
            self.assert_same_upper_but_index_names();
        } else {
            self.assert_same_upper();
        }
        self.mount();
        self.assert_same_tree();
        self.unmount();
        let w = self.scratch.0.join("k/w");
        self.kernel = Some(KernelMount::new(
            &self.k_lowers,
            Some((&self.k_upper, &w)),
            &self.k_mnt,
            &self.k_opts,
        ));
        self.assert_kernel_reads_ovlfuse_upper();
        self.kernel = None;
        self.assert_ovlfuse_reads_kernel_upper();
    }

    pub fn assert_same_tree(&self) {
        self.assert_same_tree_except(&[]);
    }

    /// As assert_same_tree, leaving out names that are listed but cannot be
    /// looked up (the dump cannot stat them on either side).
    pub fn assert_same_tree_except(&self, skip: &[&str]) {
        let k = dump_tree_skip(&self.k_mnt, skip);
        let o = dump_tree_skip(&self.o_mnt, skip);
        assert_maps_eq(&o, &k, "merged view");
    }

    pub fn assert_same_upper(&self) {
        let k = dump_upper(&self.k_upper);
        let o = dump_upper(&self.o_upper);
        assert_maps_eq(&o, &k, "upper dir");
    }

    /// As assert_same_upper, but names of indexed inodes (hard links of
    /// lower files, reachable through W/index) may be materialized in one
    /// upper and not the other: FUSE does not say which name an open or
    /// chmod went through, the kernel's VFS does.
    pub fn assert_same_upper_but_index_names(&self) {
        let strip = |side: &str, upper: &Path| {
            let index = self.scratch.0.join(side).join("w/index");
            let inos: Vec<u64> = fs::read_dir(&index)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.ino())
                        .collect()
                })
                .unwrap_or_default();
            let mut d = dump_upper(upper);
            // Regular files only: the kernel also links its whiteouts to one
            // inode, which a dead index entry can share.
            d.retain(|rel, _| match fs::symlink_metadata(upper.join(rel)) {
                Ok(m) => !(m.file_type().is_file() && inos.contains(&m.ino())),
                Err(_) => true,
            });
            d
        };
        assert_maps_eq(
            &strip("o", &self.o_upper),
            &strip("k", &self.k_upper),
            "upper dir (index names aside)",
        );
    }
}
