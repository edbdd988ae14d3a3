//! The committed golden vectors: regenerated bit for bit, verified, and the
//! verifier shown not to be vacuous (KW-VEC-001 to KW-VEC-004).

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};

use keyway::vectors;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

/// KW-VEC-002: `keyway vectors generate` reproduces vectors/ bit for bit.
/// Regenerate on purpose with `cargo run -- vectors generate --out vectors`.
#[test]
fn vectors_regenerate_bit_for_bit() {
    let dir = temp_dir("vectors-regen");
    vectors::write_all(&dir).unwrap();
    assert_eq!(json_files(&dir), json_files(&committed()), "set of files");
    for name in json_files(&dir) {
        let fresh = std::fs::read(dir.join(&name)).unwrap();
        let kept = std::fs::read(committed().join(&name)).unwrap();
        assert!(
            fresh == kept,
            "vectors/{name} differs from a fresh generation"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// KW-VEC-003: every committed vector verifies.
#[test]
fn committed_vectors_verify() {
    let report = vectors::verify_dir(&committed());
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    let total: usize = report.checked.iter().map(|(_, n)| n).sum();
    assert!(total >= 70, "only {total} vectors");
    assert_eq!(report.checked.len(), 12);
}

/// KW-VEC-004: every kind has valid and invalid tests, each tied to
/// requirements, and invalid ones name a protocol error code.
#[test]
fn vectors_are_positive_and_negative_and_traced() {
    let codes: Vec<&str> = keyway::wire::ErrorCode::ALL
        .iter()
        .filter_map(|c| c.name())
        .collect();
    for name in json_files(&committed()) {
        let text = std::fs::read_to_string(committed().join(&name)).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let tests = file["tests"].as_array().unwrap();
        let invalid = tests.iter().filter(|t| t["result"] == "invalid").count();
        if name != "kid.json" {
            assert!(
                invalid > 0 && invalid < tests.len(),
                "{name}: {invalid} of {} invalid",
                tests.len()
            );
        }
        for t in tests {
            assert!(
                !t["requirements"].as_array().unwrap().is_empty(),
                "{name} {}",
                t["tcId"]
            );
            if t["result"] == "invalid" {
                let code = t["error"].as_str().unwrap();
                assert!(
                    codes.contains(&code),
                    "{name} {}: unknown code {code}",
                    t["tcId"]
                );
            }
        }
    }
}

fn tamper(name: &str, edit: impl Fn(&mut serde_json::Value)) -> Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(committed().join(name)).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut file);
    vectors::verify_text(name, &serde_json::to_string_pretty(&file).unwrap())
}

fn flip_hex(v: &mut serde_json::Value) {
    let s = v.as_str().unwrap();
    let first = if s.starts_with('0') { '1' } else { '0' };
    *v = serde_json::Value::String(format!("{first}{}", &s[1..]));
}

/// The verifier notices a changed output, intermediate or verdict.
#[test]
fn the_verifier_is_not_vacuous() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "wrap.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["wrapped"])),
        ),
        (
            "wrap.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["kek"])),
        ),
        (
            "wrap.json",
            Box::new(|f| f["tests"][2]["result"] = "valid".into()),
        ),
        (
            "seal.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["output"])),
        ),
        (
            "seal.json",
            Box::new(|f| f["tests"][4]["error"] = "decrypt-failed".into()),
        ),
        (
            "cert.json",
            Box::new(|f| f["tests"][1]["now"] = (1_767_225_600u64 - 1).into()),
        ),
        (
            "session.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["steps"][0]["payload"])),
        ),
        (
            "register-proof.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["stored_key"])),
        ),
        (
            "kid.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["kid"])),
        ),
        (
            "msgsig.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["signature_input"])),
        ),
        (
            "media.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["ad"])),
        ),
        (
            "attest.json",
            Box::new(|f| f["tests"][0]["to"] = "carol@a.example".into()),
        ),
        (
            "csr.json",
            Box::new(|f| f["tests"][0]["account"] = "carol@a.example".into()),
        ),
        (
            "kx-pop.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["kx_proof"])),
        ),
        (
            "register-verifier.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["stored_key"])),
        ),
        (
            "wrap.json",
            Box::new(|f| f["tests"][1]["tcId"] = f["tests"][0]["tcId"].clone()),
        ),
    ];
    for (name, edit) in cases {
        assert!(
            tamper(name, edit).is_err(),
            "{name}: a tampered file verified"
        );
    }
    // The untampered texts pass through the same path.
    for name in json_files(&committed()) {
        assert!(tamper(&name, |_| ()).is_ok(), "{name}");
    }
}
