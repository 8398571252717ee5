//! The short soak (scripts/soak --quick): fsx on a file from a lower layer
//! while 4 processes race namespace operations; no data mismatch, no fd or
//! RSS growth, W/work empty, and kernel overlayfs agrees on the upper.

mod common;

#[test]
fn quick_soak_passes() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/soak");
    let out = std::process::Command::new(script)
        .arg("--quick")
        .env("OVLFUSE", common::bin())
        .output()
        .expect("run scripts/soak");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "scripts/soak --quick failed:\n{text}");
    assert!(
        text.contains("soak: OK"),
        "no verdict from scripts/soak:\n{text}"
    );
}
