//! Test fixtures: identical layer trees mounted with kernel overlayfs and with
//! ovlfuse, helpers to run the same operations on both, and tree dumps.
//! Every mount is undone and every daemon ended (by pid) in Drop. Each test
//! binary uses a part of this, hence dead_code.
#![allow(dead_code)]

mod dump;
mod fixture;
mod mount;
pub mod ops;
mod pair;
mod rng;

#[allow(unused_imports)]
pub use dump::*;
#[allow(unused_imports)]
pub use fixture::*;
#[allow(unused_imports)]
pub use mount::*;
#[allow(unused_imports)]
pub use pair::*;
#[allow(unused_imports)]
pub use rng::Rng;

/// Builds a fixture's lowers below a base dir; returns them, top first.
pub type Build = fn(&std::path::Path) -> Vec<std::path::PathBuf>;

/// The layer fixtures a test body runs on: the bundled lowers, and the same
/// content spread over ten lowers (fixture::build_ten_lowers).
pub const FIXTURES: [(&str, Build); 2] = [
    ("bundled", |b| build_lowers(b, false)),
    ("ten_lowers", build_ten_lowers),
];

/// One #[test] per layer fixture for each named body, which takes the
/// fixture's builder: `per_fixture!(body)` gives `body::bundled` and
/// `body::ten_lowers`.
#[macro_export]
macro_rules! per_fixture {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[test]
            fn bundled() {
                super::$body(super::common::FIXTURES[0].1)
            }
            #[test]
            fn ten_lowers() {
                super::$body(super::common::FIXTURES[1].1)
            }
        }
    )*};
}
