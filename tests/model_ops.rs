//! The core against an in-memory model of kernel overlayfs (tests/model):
//! random sequences of creates, mkdirs, unlinks, rmdirs, renames, links,
//! writes, truncates and reads over a lower layer. The `ops` fuzz target
//! runs the same harness on fuzzer input.

mod common;
mod model;

#[test]
fn random_sequences_match_the_model() {
    let s = common::Scratch::new("model");
    let runs: u64 = std::env::var("OVLFUSE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut r = common::Rng::new(0x2545_F491_4F6C_DD1D);
    for run in 0..runs {
        let ops: Vec<u8> = (0..1 + 3 * 60).map(|_| (r.next() >> 24) as u8).collect();
        let base = s.0.join(format!("run{run}"));
        model::run(&base, &ops);
    }
}
