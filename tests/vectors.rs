//! The committed golden vectors: regenerated bit for bit, verified, and the
//! verifier shown to check every field (KW-VEC-001 to KW-VEC-005).

// Tests may panic on unexpected input: that is how they fail. They may
// also read and write files, which clippy.toml bans in the protocol crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::disallowed_types
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

/// KW-VEC-002: the generator reproduces vectors/ bit for bit (that
/// `keyway vectors generate` writes what it generates is keyway-node's
/// test, node/tests/vectors_dir.rs). Regenerate on purpose with
/// `cargo run -- vectors generate --out vectors`.
#[test]
fn vectors_regenerate_bit_for_bit() {
    let dir = temp_dir("vectors-regen");
    for (name, text) in vectors::generate_all() {
        std::fs::write(dir.join(name), text).unwrap();
    }
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

/// KW-VEC-003: every committed vector verifies, and vectors/ holds a file
/// of every kind and no other.
#[test]
fn committed_vectors_verify() {
    let mut expected = vectors::file_names();
    expected.sort();
    assert_eq!(json_files(&committed()), expected, "set of files");
    assert_eq!(expected.len(), 14);
    let mut failures = Vec::new();
    let mut total = 0;
    for name in &expected {
        let text = std::fs::read_to_string(committed().join(name)).unwrap();
        match vectors::verify_text(name, &text) {
            Ok(n) => total += n,
            Err(f) => failures.extend(f.into_iter().map(|f| format!("{name}: {f}"))),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(total >= 70, "only {total} vectors");
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
            "reader.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["response"])),
        ),
        (
            "reader.json",
            Box::new(|f| flip_hex(&mut f["tests"][3]["shared_static"])),
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
            "challenge.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["signature_input"])),
        ),
        (
            "challenge.json",
            Box::new(|f| f["params"]["server"] = "sc2@a.example".into()),
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
        // The audit's findings: fields that verification used to skip.
        (
            "seal.json",
            Box::new(|f| flip_hex(&mut f["tests"][0]["intermediate"]["cek"])),
        ),
        ("seal.json", Box::new(|f| f["tests"][4]["cid"] = 1.into())),
        (
            "session.json",
            Box::new(|f| f["tests"][0]["steps"][0]["epoch"] = 1.into()),
        ),
        (
            "session.json",
            Box::new(|f| f["tests"][0]["steps"][2]["seq"] = 5.into()),
        ),
        (
            "session.json",
            Box::new(|f| f["tests"][1]["detail"] = "Replay(1)".into()),
        ),
        (
            "wrap.json",
            Box::new(|f| flip_hex(&mut f["tests"][2]["kek"])),
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

// ------------------------------------------------------------ mutations

/// One step of a path into a JSON document.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn leaves(v: &serde_json::Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                path.push(Seg::Key(k.clone()));
                leaves(x, path, out);
                path.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                leaves(x, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn at<'a>(v: &'a mut serde_json::Value, path: &[Seg]) -> &'a mut serde_json::Value {
    path.iter().fold(v, |v, s| match s {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::Index(i) => &mut v[*i],
    })
}

fn is_hex(s: &str) -> bool {
    s.len() % 2 == 0
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The mutation of one leaf: a hex string gets one bit of its middle byte
/// flipped (an empty one becomes one byte), other strings grow by a
/// character, numbers change by one, booleans flip.
fn mutated(v: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match v {
        Value::String(s) if is_hex(s) => {
            let mut bytes = keyway::cbor::unhex(s).unwrap();
            if bytes.is_empty() {
                bytes.push(0);
            } else {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 1;
            }
            Some(Value::String(keyway::cbor::hex(&bytes)))
        }
        Value::String(s) => Some(Value::String(format!("{s}x"))),
        Value::Number(n) => n
            .as_u64()
            .map(|n| Value::from(if n == u64::MAX { n - 1 } else { n + 1 })),
        Value::Bool(b) => Some(Value::Bool(!b)),
        _ => None,
    }
}

/// A path for messages: test indices by tcId.
fn show(file: &serde_json::Value, path: &[Seg]) -> String {
    let mut out = String::new();
    let mut v = file;
    for (n, s) in path.iter().enumerate() {
        match s {
            Seg::Key(k) => {
                if n > 0 {
                    out.push('.');
                }
                out.push_str(k);
                v = &v[k.as_str()];
            }
            Seg::Index(i) => {
                let item = &v[*i];
                match item.get("tcId").and_then(|t| t.as_str()) {
                    Some(tc) if n == 1 => out.push_str(&format!("[{tc}]")),
                    _ => out.push_str(&format!("[{i}]")),
                }
                v = item;
            }
        }
    }
    out
}

/// A leaf whose change `keyway vectors verify` accepts by design, and why.
/// `tests` are tcIds (`""`: the file's header and params; `"*"`: every
/// test); `fields` are paths inside the test (or file), where `*` stands for
/// any characters.
struct Unchecked {
    why: &'static str,
    file: &'static str,
    tests: &'static [&'static str],
    fields: &'static [&'static str],
}

/// Everything a one-leaf mutation may change without `verify` noticing.
/// Every other leaf of every file is an input, output, intermediate or
/// expectation that `verify` recomputes or checks, so a change of it is
/// rejected (spec/vectors.md, "every field is checked"). The list is exact:
/// an entry no mutation needs is an error too, so it cannot go stale.
const UNCHECKED: &[Unchecked] = &[
    // The byte flipped falls in `via`, which an in-session request's
    // signature leaves out so that servers can rewrite it (KW-CRYPTO-061);
    // the `-rerouted` tests show such a change accepted.
    Unchecked {
        why: "via is outside an in-session signature",
        file: "msgsig.json",
        tests: &["msgsig/ack-rerouted"],
        fields: &["message"],
    },
    // The byte flipped falls in the signature of a request changed after
    // it was signed: one bit more of a signature that does not verify
    // leaves it one that does not verify.
    Unchecked {
        why: "a bit of a failing signature",
        file: "msgsig.json",
        tests: &[
            "msgsig/info-changed",
            "msgsig/rekey-changed",
            "msgsig/bye-changed",
        ],
        fields: &["message"],
    },
    Unchecked {
        why: "free-form prose (spec/vectors.md)",
        file: "*",
        tests: &[""],
        fields: &["spec", "recipe", "generator", "notes.*"],
    },
    Unchecked {
        why: "free-form prose (spec/vectors.md)",
        file: "*",
        tests: &["*"],
        fields: &["comment"],
    },
    Unchecked {
        why: "the test's name: its form and uniqueness are checked (tcids_are_checked)",
        file: "*",
        tests: &["*"],
        fields: &["tcId"],
    },
    // A clock one second later, away from the edges that the Boundary,
    // Skew and grace tests probe, changes no outcome.
    Unchecked {
        why: "a clock away from any edge",
        file: "cert.json",
        tests: &[
            "cert/valid",
            "cert/at-not-before",
            "cert/expired",
            "cert/revoked",
            "cert/wrong-subject",
            "cert/wrong-role",
            "cert/bad-signature",
            "cert/tampered-term",
            "cert/unknown-issuer",
            "cert/foreign-subject",
            "cert/re-encoded-tbs",
        ],
        fields: &["now"],
    },
    Unchecked {
        why: "a clock away from any edge",
        file: "attest.json",
        tests: &[
            "attest/valid",
            "attest/other-device",
            "attest/other-domain",
            "attest/tampered",
            "attest/other-target",
            "attest/stale",
            "attest/expired-certificate",
        ],
        fields: &["now"],
    },
    Unchecked {
        why: "a clock away from any edge",
        file: "seal.json",
        tests: &[""],
        fields: &["params.now"],
    },
    Unchecked {
        why: "a clock away from any edge",
        file: "msgsig.json",
        tests: &[""],
        fields: &["params.now"],
    },
    Unchecked {
        why: "a clock away from any edge (a sender does not read it; a receiver only against the grace window)",
        file: "session.json",
        tests: &[
            "session/reuse-both-ways",
            "session/replay",
            "session/out-of-order",
            "session/moved-type",
            "session/rekey-and-grace",
            "session/replayed-rekey",
            "session/unknown-epoch",
            "session/replay-window-edge",
            "session/grace-edge",
            "session/both-directions",
            "session/reflected",
            "session/rekey-modified",
        ],
        fields: &["steps[*].now"],
    },
    Unchecked {
        why: "a grace window no step's outcome depends on",
        file: "session.json",
        tests: &[
            "session/reuse-both-ways",
            "session/replay",
            "session/out-of-order",
            "session/moved-type",
            "session/rekey-and-grace",
            "session/replayed-rekey",
            "session/unknown-epoch",
            "session/replay-window-edge",
            "session/both-directions",
            "session/reflected",
            "session/rekey-modified",
        ],
        fields: &["grace_secs"],
    },
    // An invalid test stays invalid, for the same reason, when an input
    // changes that only its failing check (or none) reads: the mutated
    // test is another true negative, which `verify` rightly accepts. Every
    // input read before the failing check is bound by an intermediate.
    Unchecked {
        why: "read only by the failing AES-SIV check (or not at all, the wrap failing first)",
        file: "wrap.json",
        tests: &[
            "wrap/modified-tag",
            "wrap/modified-ciphertext",
            "wrap/wrong-recipient-key",
            "wrap/wrong-permission",
            "wrap/upgraded-permission",
            "wrap/wrong-kind",
            "wrap/wrong-session",
            "wrap/wrong-wrapper",
            "wrap/wrong-nonce",
            "wrap/wrong-cid",
            "wrap/zero-epk",
            "wrap/low-order-epk",
            "wrap/zero-recipient-key",
            "wrap/low-order-recipient-key",
        ],
        fields: &["cid", "nonce"],
    },
    Unchecked {
        why: "read only by the failing AES-SIV check, or after the failing X25519",
        file: "wrap.json",
        tests: &[
            "wrap/modified-tag",
            "wrap/modified-ciphertext",
            "wrap/wrong-recipient-key",
            "wrap/wrong-permission",
            "wrap/upgraded-permission",
            "wrap/wrong-kind",
            "wrap/wrong-session",
            "wrap/wrong-wrapper",
            "wrap/wrong-nonce",
            "wrap/wrong-cid",
            "wrap/zero-epk",
            "wrap/low-order-epk",
        ],
        fields: &["wrapped"],
    },
    Unchecked {
        why: "the key a failing wrap would have wrapped",
        file: "wrap.json",
        tests: &["wrap/zero-recipient-key", "wrap/low-order-recipient-key"],
        fields: &["cek"],
    },
    Unchecked {
        why: "a subject checked after the failing check, or another wrong subject",
        file: "cert.json",
        tests: &[
            "cert/wrong-subject",
            "cert/bad-signature",
            "cert/tampered-term",
            "cert/unknown-issuer",
            "cert/foreign-subject",
            "cert/re-encoded-tbs",
        ],
        fields: &["subject"],
    },
    Unchecked {
        why: "another wrong role",
        file: "cert.json",
        tests: &["cert/wrong-role"],
        fields: &["role"],
    },
    Unchecked {
        why: "a tbs that fails to decode either way",
        file: "cert.json",
        tests: &["cert/re-encoded-tbs"],
        fields: &["certificate"],
    },
    Unchecked {
        why: "a target checked after the failing check",
        file: "attest.json",
        tests: &[
            "attest/other-device",
            "attest/other-domain",
            "attest/tampered",
            "attest/other-target",
            "attest/stale",
        ],
        fields: &["target"],
    },
    Unchecked {
        why: "the inputs of the failing HMAC comparison",
        file: "kx-pop.json",
        tests: &[
            "kx-pop/other-key",
            "kx-pop/zero-key",
            "kx-pop/replayed-nonce",
            "kx-pop/low-order-key",
        ],
        fields: &["auth_message", "kx_proof"],
    },
    Unchecked {
        why: "inputs of the key derivation that the all-zero shared secret prevents",
        file: "kx-pop.json",
        tests: &["kx-pop/zero-key", "kx-pop/low-order-key"],
        fields: &["account", "nonce"],
    },
    Unchecked {
        why: "the inputs of the failing AES-SIV check",
        file: "media.json",
        tests: &["media/other-stream"],
        fields: &["key", "payload"],
    },
    Unchecked {
        why: "a message whose signature fails (or that fails to decode) either way, and a certificate never reached",
        file: "msgsig.json",
        tests: &[
            "msgsig/pinhole-open-changed",
            "msgsig/record-fetch-other-time",
            "msgsig/re-encoded",
        ],
        fields: &["message"],
    },
    Unchecked {
        why: "a certificate never reached: the message fails to decode first",
        file: "msgsig.json",
        tests: &["msgsig/re-encoded"],
        fields: &["certificate"],
    },
    Unchecked {
        why: "the sealed content, read only by the failing AES-SIV check (or not at all, the X25519 failing first)",
        file: "reader.json",
        tests: &[
            "reader/other-requester",
            "reader/other-request",
            "reader/moved-index",
            "reader/flipped-more",
            "reader/modified-listing",
            "reader/forged-recorder",
            "reader/zero-epk",
        ],
        fields: &["response"],
    },
    Unchecked {
        why: "the request's bytes but its from, which only the key derivation the all-zero shared secret prevents reads",
        file: "reader.json",
        tests: &["reader/zero-epk", "reader/low-order-requester-key"],
        fields: &["request"],
    },
    Unchecked {
        why: "what the all-zero shared secret keeps from being sealed",
        file: "reader.json",
        tests: &["reader/low-order-requester-key"],
        fields: &["plaintext", "more"],
    },
    Unchecked {
        why: "the verifier of a proof that fails (or is never checked) either way",
        file: "register-proof.json",
        tests: &[
            "register-proof/replayed",
            "register-proof/proof-for-other-nonce",
            "register-proof/moved",
            "register-proof/wrong-secret",
            "register-proof/unmasked",
            "register-proof/other-epk",
            "register-proof/low-order-epk",
        ],
        fields: &["stored_key"],
    },
    Unchecked {
        why: "a pin away from the edge its challenge tests",
        file: "challenge.json",
        tests: &["challenge/more-iterations"],
        fields: &["pinned_iterations"],
    },
    Unchecked {
        why: "a pin refused either way: another salt, or fewer iterations, than pinned",
        file: "challenge.json",
        tests: &["challenge/other-salt", "challenge/fewer-iterations"],
        fields: &["pinned_salt", "pinned_iterations"],
    },
    Unchecked {
        why: "a floor away from the edge its challenge tests",
        file: "challenge.json",
        tests: &["challenge/below-floor"],
        fields: &["min_iterations"],
    },
    Unchecked {
        why: "inputs of a derivation the iteration count prevents",
        file: "register-verifier.json",
        tests: &[
            "register-verifier/too-few-iterations",
            "register-verifier/too-many-iterations",
        ],
        fields: &["secret", "salt"],
    },
    Unchecked {
        why: "a byte of the input body no check reads: an entry the editor re-wraps, or one the failing check precedes",
        file: "seal.json",
        tests: &[
            "seal/edit-new-key",
            "seal/rekey-body-wrong-epoch",
            "seal/rekey-body-other-sender",
            "seal/rekey-body-modified",
        ],
        fields: &["input"],
    },
    Unchecked {
        why: "an epoch checked after the failing check",
        file: "seal.json",
        tests: &["seal/rekey-body-other-sender", "seal/rekey-body-modified"],
        fields: &["epoch"],
    },
    Unchecked {
        why: "a payload or wrapped key read only by the failing AES-SIV check, or after the failing epoch or replay check",
        file: "session.json",
        tests: &[
            "session/replay",
            "session/moved-type",
            "session/rekey-and-grace",
            "session/unknown-epoch",
            "session/replay-window-edge",
            "session/grace-edge",
            "session/reflected",
        ],
        fields: &["steps[*].payload"],
    },
    Unchecked {
        why: "a wrapped key read only by the failing AES-SIV check, or after the failing epoch check",
        file: "session.json",
        tests: &["session/replayed-rekey", "session/rekey-modified"],
        fields: &["steps[*].wrapped"],
    },
];

/// `pattern` with `*` standing for any characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| {
                    text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..])
                })
        }
    }
}

/// Where a leaf is: its test's tcId (`""` outside the tests) and its path
/// inside the test (or the file).
fn locate(file: &serde_json::Value, path: &[Seg]) -> (String, String) {
    let shown = show(file, path);
    match shown
        .strip_prefix("tests[")
        .and_then(|rest| rest.split_once("]."))
    {
        Some((tc, field)) if !tc.chars().all(|c| c.is_ascii_digit()) => {
            (tc.to_string(), field.to_string())
        }
        _ => (String::new(), shown),
    }
}

/// KW-VEC-005: every leaf of every file is checked. Each one is mutated in
/// turn (a hex string gets a bit flipped, a number changes by one, a text
/// grows by a character, a boolean flips) and `verify` must reject the
/// file, except for the leaves of [`UNCHECKED`].
#[test]
fn every_field_is_checked() {
    // Each mutation re-verifies its whole file: spread the mutations over
    // the machine's cores.
    let files: Vec<(String, serde_json::Value)> = json_files(&committed())
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(committed().join(&name)).unwrap();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect();
    let mut work = Vec::new();
    for (i, (_, file)) in files.iter().enumerate() {
        let mut paths = Vec::new();
        leaves(file, &mut Vec::new(), &mut paths);
        work.extend(paths.into_iter().map(|p| (i, p)));
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // (mutations tried, those verify accepted: file, test, field)
    type Outcome = (usize, Vec<(String, String, String)>);
    let results: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (files, work) = (&files, &work);
                scope.spawn(move || {
                    let mut accepted = Vec::new();
                    let mut total = 0;
                    for (i, path) in work.iter().skip(w).step_by(workers) {
                        let (name, file) = &files[*i];
                        let mut copy = file.clone();
                        let leaf = at(&mut copy, path);
                        let Some(m) = mutated(leaf) else { continue };
                        *leaf = m;
                        total += 1;
                        let text = serde_json::to_string(&copy).unwrap();
                        if vectors::verify_text(name, &text).is_ok() {
                            let (tc, field) = locate(file, path);
                            accepted.push((name.clone(), tc, field));
                        }
                    }
                    (total, accepted)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = results.iter().map(|(t, _)| t).sum();
    let accepted: Vec<(String, String, String)> =
        results.into_iter().flat_map(|(_, a)| a).collect();
    assert!(total > 2000, "only {total} mutations");
    let covers = |u: &Unchecked, test: &str, field: &str, a: &(String, String, String)| {
        let (name, tc, at) = a;
        (u.file == "*" || u.file == name)
            && (if test == "*" {
                !tc.is_empty()
            } else {
                test == tc
            })
            && glob(field, at)
    };
    let unexpected: Vec<String> = accepted
        .iter()
        .filter(|a| {
            !UNCHECKED.iter().any(|u| {
                u.tests
                    .iter()
                    .any(|t| u.fields.iter().any(|f| covers(u, t, f, a)))
            })
        })
        .map(|(name, tc, field)| format!("{name}: [{tc}] {field}"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "verify accepts a change of:\n{}",
        unexpected.join("\n")
    );
    // Exact: every test and field an entry names needs it.
    for u in UNCHECKED {
        for test in u.tests {
            for field in u.fields {
                let needed = accepted.iter().any(|a| covers(u, test, field, a));
                assert!(
                    needed,
                    "{}: [{test}] {field} is checked after all ({})",
                    u.file, u.why
                );
            }
        }
    }
}

/// Unknown fields, at any level, and unknown values are errors.
#[test]
fn unknown_fields_and_values_are_errors() {
    fn objects(v: &serde_json::Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        match v {
            serde_json::Value::Object(m) => {
                out.push(path.clone());
                for (k, x) in m {
                    path.push(Seg::Key(k.clone()));
                    objects(x, path, out);
                    path.pop();
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    objects(x, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    for name in json_files(&committed()) {
        let text = std::fs::read_to_string(committed().join(&name)).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut paths = Vec::new();
        objects(&file, &mut Vec::new(), &mut paths);
        for path in paths {
            let mut copy = file.clone();
            // `notes` maps flag names to prose: a note no test uses is allowed.
            if matches!(path.last(), Some(Seg::Key(k)) if k == "notes") {
                continue;
            }
            at(&mut copy, &path)["x-unknown"] = 0.into();
            assert!(
                vectors::verify_text(&name, &serde_json::to_string(&copy).unwrap()).is_err(),
                "{name}: an unknown field in {} verified",
                show(&file, &path)
            );
        }
    }
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "seal.json",
            Box::new(|f| f["tests"][0]["operation"] = "frobnicate".into()),
        ),
        (
            "seal.json",
            Box::new(|f| f["tests"][4]["operation"] = "frobnicate".into()),
        ),
        (
            "session.json",
            Box::new(|f| f["tests"][0]["steps"][0]["op"] = "frobnicate".into()),
        ),
        (
            "session.json",
            Box::new(|f| f["tests"][0]["steps"][0]["msg_type"] = "frobnicate".into()),
        ),
        ("kid.json", Box::new(|f| f["tests"][0]["use"] = 2.into())),
        ("wrap.json", Box::new(|f| f["tests"][0]["kind"] = 9.into())),
        (
            "seal.json",
            Box::new(|f| f["tests"][0]["recipients"][0]["perm"] = 9.into()),
        ),
        (
            "wrap.json",
            Box::new(|f| f["tests"][2]["error"] = "frobnicate".into()),
        ),
    ];
    for (name, edit) in cases {
        assert!(
            tamper(name, edit).is_err(),
            "{name}: an unknown value verified"
        );
    }
}

/// A tcId is unique and of the form `<kind>/<slug>`.
#[test]
fn tcids_are_checked() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "seal.json",
            Box::new(|f| f["tests"][1]["tcId"] = f["tests"][0]["tcId"].clone()),
        ),
        (
            "seal.json",
            Box::new(|f| f["tests"][0]["tcId"] = "wrap/explicit".into()),
        ),
        (
            "seal.json",
            Box::new(|f| f["tests"][0]["tcId"] = "seal/".into()),
        ),
        (
            "kid.json",
            Box::new(|f| f["tests"][0]["tcId"] = "ed25519".into()),
        ),
    ];
    for (name, edit) in cases {
        assert!(tamper(name, edit).is_err(), "{name}: a bad tcId verified");
    }
}
