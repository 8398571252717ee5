//! What the live statistics cost a request: the time of the accounting
//! every answered request does (stats.rs `answered`, with the clock read
//! at arrival), alone and from two threads at once, next to a FUSE round
//! trip here (about 15 µs). A measurement, not a test:
//!
//!     cargo run --release --example stats_cost
use std::time::Instant;

use ovlfuse::stats::STATS;

fn per_call(n: u64) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        let start = Instant::now();
        STATS.answered((i % 48) as u32, if i % 16 == 0 { -2 } else { 0 }, start);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n = 5_000_000;
    per_call(n / 10);
    let one = per_call(n);
    let two: Vec<f64> = std::thread::scope(|s| {
        let h: Vec<_> = (0..2).map(|_| s.spawn(|| per_call(n))).collect();
        h.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let two = two.iter().sum::<f64>() / 2.0;
    println!(
        "accounting per request: {one:.1} ns on one thread, {two:.1} ns with two threads at once"
    );
    println!(
        "share of a 15 us FUSE round trip: {:.3}% / {:.3}%",
        one / 150.0,
        two / 150.0
    );
}
