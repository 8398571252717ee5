//! Operation sequences: the overlay core, without FUSE, against an
//! in-memory model of kernel overlayfs (the harness of tests/model_ops.rs).
//! Needs root: each input runs in a fresh overlay under /tmp.
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!("ovlfuse-fuzz-ops-{}", std::process::id()));
    // Long inputs add little but time.
    model::run(&base, &data[..data.len().min(1 + 3 * 64)]);
});
