//! What the harness's tests share: the `kvraft` binary they run.

use std::path::PathBuf;
use std::process::Command;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/debug/kvraft` (or under CARGO_TARGET_DIR), built if missing.
pub fn kvraft_bin() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug/kvraft");
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "kvraft"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build -p kvraft");
        assert!(status.success(), "cargo build -p kvraft failed");
    }
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}
