//! The golden vectors as a directory: `keyway vectors generate` writes
//! vectors/ bit for bit and `keyway vectors verify` fails on a missing
//! file or a file of an unknown kind (KW-VEC-001, KW-VEC-002). What each
//! file holds is checked in the protocol crate's tests/vectors.rs.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use keyway_node::vectors_dir;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vectors")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyway-node-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The vector files of `dir` (vectors/ also holds a README).
fn json_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// `keyway vectors verify DIR`: its exit code and standard error.
fn verify(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["vectors", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// KW-VEC-002: the command writes the committed files, byte for byte,
/// into a directory it creates, and they verify.
#[test]
fn generate_writes_vectors_bit_for_bit() {
    let dir = temp_dir("generate").join("nested");
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["vectors", "generate", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_files(&dir), json_files(&committed()));
    for name in json_files(&dir) {
        let fresh = std::fs::read(dir.join(&name)).unwrap();
        let kept = std::fs::read(committed().join(&name)).unwrap();
        assert!(fresh == kept, "{name} differs from vectors/{name}");
    }
    assert_eq!(verify(&dir), (0, String::new()));
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

/// KW-VEC-001: a missing file and a file of an unknown kind are failures,
/// of the directory function and of the command; other files are ignored.
#[test]
fn verify_fails_on_missing_and_unknown_files() {
    let report = vectors_dir::verify_dir(&committed());
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    let kinds = keyway::vectors::file_names().len();
    assert_eq!(report.checked.len(), kinds);

    let dir = temp_dir("verify");
    assert_eq!(vectors_dir::write_all(&dir).unwrap(), kinds);
    std::fs::remove_file(dir.join("kid.json")).unwrap();
    std::fs::write(dir.join("other.json"), "{}").unwrap();
    std::fs::write(dir.join("README.txt"), "not a vector file").unwrap();
    let report = vectors_dir::verify_dir(&dir);
    assert_eq!(report.checked.len(), kinds - 1);
    assert_eq!(report.failures.len(), 2, "{:#?}", report.failures);
    assert!(report.failures[0].starts_with("kid.json: "));
    assert_eq!(report.failures[1], "other.json: unknown vector kind");
    assert_eq!(verify(&dir), (1, "error: 2 vector failures\n".into()));

    // Either alone fails the command too.
    std::fs::remove_file(dir.join("other.json")).unwrap();
    assert_eq!(verify(&dir).0, 1);
    vectors_dir::write_all(&dir).unwrap();
    std::fs::write(dir.join("other.json"), "{}").unwrap();
    assert_eq!(verify(&dir).0, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
