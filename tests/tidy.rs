//! Tidy checks that keep spec, code and tests in step (run by `cargo test`):
//! requirement identifiers are defined once and cited only when defined;
//! every requirement of an implemented area is cited by a test; every claim
//! is traced; the CDDL and the Rust schemas agree key for key.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use keyway::wire::{self, MsgType};

/// Areas whose requirements are implemented: each must be cited by a test.
const IMPLEMENTED_AREAS: &[&str] = &[
    "CBOR", "WIRE", "LIMIT", "CRYPTO", "VEC", "REG", "CERT", "QUERY", "ROUTE", "SEAL", "KEY", "FW",
    "REC", "POLICY", "ERR", "SM",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "corpus" | "artifacts" | ".git") {
                files_under(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `KW-AREA-NNN` in `text`.
fn ids_in(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("KW-") {
        let candidate = &rest[at..];
        let area_len = candidate[3..]
            .bytes()
            .take_while(u8::is_ascii_uppercase)
            .count();
        let tail = &candidate[3 + area_len..];
        if area_len > 0
            && tail.len() >= 4
            && tail.as_bytes()[0] == b'-'
            && tail.as_bytes()[1..4].iter().all(u8::is_ascii_digit)
            && !tail.as_bytes().get(4).is_some_and(u8::is_ascii_digit)
        {
            ids.push(candidate[..3 + area_len + 4].to_string());
        }
        rest = &rest[at + 3..];
    }
    ids
}

fn area(id: &str) -> &str {
    id.split('-').nth(1).unwrap()
}

/// Requirement definitions: `- **KW-AREA-NNN** (LEVEL) …` in spec/*.md.
fn definitions() -> BTreeMap<String, PathBuf> {
    let mut files = Vec::new();
    files_under(&root().join("spec"), ".md", &mut files);
    let mut defined = BTreeMap::new();
    for file in files {
        for line in read(&file).lines() {
            let Some(rest) = line.trim_start().strip_prefix("- **") else {
                continue;
            };
            if !rest.starts_with("KW-") {
                continue;
            }
            let Some((id, after)) = rest.split_once("** (") else {
                continue;
            };
            if id == "KW-EXAMPLE-000" {
                continue;
            }
            assert_eq!(
                ids_in(id),
                vec![id.to_string()],
                "malformed identifier {id:?}"
            );
            let level = after.split(')').next().unwrap();
            assert!(
                ["MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY"].contains(&level),
                "{id}: level {level:?}"
            );
            if let Some(first) = defined.insert(id.to_string(), file.clone()) {
                panic!(
                    "{id} defined twice: {} and {}",
                    first.display(),
                    file.display()
                );
            }
        }
    }
    defined
}

fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["src", "tests", "fuzz", "bench", "conformance"] {
        files_under(&root().join(dir), ".rs", &mut files);
    }
    files
}

#[test]
fn requirement_identifiers_are_defined_once_and_well_formed() {
    let defined = definitions();
    assert!(
        defined.len() > 100,
        "found only {} requirements",
        defined.len()
    );
}

/// Code, tests and the spec itself cite only defined requirements.
#[test]
fn cited_requirements_are_defined() {
    let defined = definitions();
    let mut files = sources();
    files_under(&root().join("spec"), ".md", &mut files);
    files_under(&root().join("spec"), ".cddl", &mut files);
    for file in ["README.md", "ARCHITECTURE.md"] {
        files.push(root().join(file));
    }
    let mut unknown = BTreeSet::new();
    for file in files.iter().filter(|f| f.exists()) {
        for id in ids_in(&read(file)) {
            if !defined.contains_key(&id) && id != "KW-EXAMPLE-000" && id != "KW-AREA-NNN" {
                unknown.insert(format!("{id} in {}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "undefined requirements cited:\n{unknown:#?}"
    );
}

/// The text of test code: files under tests/, `#[cfg(test)]` modules, and
/// the golden vectors (each vector is a test and names its requirements).
fn test_code() -> String {
    let mut text = String::new();
    let mut vector_files = Vec::new();
    files_under(&root().join("vectors"), ".json", &mut vector_files);
    for file in vector_files {
        text.push_str(&read(&file));
    }
    for file in sources() {
        let content = read(&file);
        if file.starts_with(root().join("tests")) {
            text.push_str(&content);
        } else if let Some(at) = content.find("#[cfg(test)]") {
            text.push_str(&content[at..]);
        }
    }
    text
}

/// Every requirement of an implemented area has a test that cites it.
#[test]
fn implemented_requirements_are_tested() {
    let tested: BTreeSet<String> = ids_in(&test_code()).into_iter().collect();
    let defined = definitions();
    let missing: Vec<&String> = defined
        .keys()
        .filter(|id| IMPLEMENTED_AREAS.contains(&area(id)) && !tested.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "requirements no test cites: {missing:?}"
    );
}

/// Every claim 1–58 has one row; every reference in it resolves.
#[test]
fn every_claim_is_traced() {
    let defined = definitions();
    let text = read(&root().join("spec/traceability.md"));
    let mut claims = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(claim) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        let ids = ids_in(line);
        assert!(!ids.is_empty(), "claim {claim} has no requirement");
        for id in &ids {
            assert!(defined.contains_key(id), "claim {claim}: {id} undefined");
        }
        assert!(claims.insert(claim, ids).is_none(), "claim {claim} twice");
    }
    let numbers: Vec<u32> = claims.keys().copied().collect();
    assert_eq!(numbers, (1..=58).collect::<Vec<_>>());

    // Vector references (`kind/slug`) name existing tcIds.
    let mut vector_text = String::new();
    let mut vector_files = Vec::new();
    files_under(&root().join("vectors"), ".json", &mut vector_files);
    for file in vector_files {
        vector_text.push_str(&read(&file));
    }
    for reference in text.split('`').skip(1).step_by(2) {
        let is_tc_id = reference.split_once('/').is_some_and(|(kind, slug)| {
            !kind.is_empty()
                && !slug.is_empty()
                && reference
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'/')
        });
        if is_tc_id {
            assert!(
                vector_text.contains(&format!("\"tcId\": \"{reference}\"")),
                "traceability cites vector {reference}, which does not exist"
            );
        }
    }

    // `file::test` references name existing tests.
    for reference in text.split('`').skip(1).step_by(2) {
        if let Some((file, test)) = reference
            .split_once("::")
            .filter(|(f, t)| !f.is_empty() && !t.is_empty())
        {
            let path = root().join("tests").join(format!("{file}.rs"));
            let content = read(&path);
            assert!(
                content.contains(&format!("fn {test}(")),
                "traceability cites {reference}, which does not exist"
            );
        }
    }
}

/// One member of a CDDL map rule: key, whether optional, name comment.
#[derive(Debug, PartialEq, Eq)]
struct Member {
    key: u64,
    required: bool,
    name: String,
}

/// The map rules of keyway.cddl (`name = {` … `}`), written one member per
/// line as its header says, and the enumerations (`name = &(a: 0, …)`).
type MapRules = BTreeMap<String, Vec<Member>>;
type EnumRules = BTreeMap<String, Vec<(String, u64)>>;

fn cddl_rules() -> (MapRules, EnumRules) {
    let text = read(&root().join("spec/keyway.cddl"));
    let mut maps = BTreeMap::new();
    let mut enums = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_suffix(" = {") {
            let mut members = Vec::new();
            for member in lines.by_ref() {
                let member = member.trim();
                if member == "}" {
                    break;
                }
                if member == "extension" || member.starts_with(';') {
                    continue;
                }
                let (body, comment) = member.split_once(';').expect(member);
                let (optional, body) = match body.trim().strip_prefix("? ") {
                    Some(b) => (true, b),
                    None => (false, body.trim()),
                };
                let key = body
                    .split(':')
                    .next()
                    .unwrap()
                    .trim()
                    .parse()
                    .expect(member);
                members.push(Member {
                    key,
                    required: !optional,
                    name: comment.trim().to_string(),
                });
            }
            assert!(
                maps.insert(name.to_string(), members).is_none(),
                "{name} twice"
            );
        } else if let Some((name, body)) = line.split_once(" = &(") {
            let mut body = body.to_string();
            while !body.contains(')') {
                body.push_str(lines.next().unwrap());
            }
            let values = body
                .split(')')
                .next()
                .unwrap()
                .split(',')
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    let (n, c) = v.split_once(':').unwrap();
                    (n.trim().to_string(), c.trim().parse().unwrap())
                })
                .collect();
            enums.insert(name.to_string(), values);
        }
    }
    (maps, enums)
}

/// KW-WIRE-011, KW-WIRE-015: every map rule of the CDDL and every Rust
/// structure have the same keys, presence and names, and the registry
/// gives a message-level key one name.
#[test]
fn cddl_and_rust_schemas_agree() {
    let (mut maps, _) = cddl_rules();
    let mut registry: BTreeMap<u64, String> = BTreeMap::new();
    for schema in wire::schemas() {
        let members = maps
            .remove(schema.cddl)
            .unwrap_or_else(|| panic!("no CDDL rule {}", schema.cddl));
        let mut expected = Vec::new();
        if let Some(code) = schema.message_type {
            expected.push(Member {
                key: 0,
                required: true,
                name: "v".into(),
            });
            expected.push(Member {
                key: 1,
                required: true,
                name: "type".into(),
            });
            let type_line = read(&root().join("spec/keyway.cddl"))
                .lines()
                .skip_while(|l| *l != format!("{} = {{", schema.cddl))
                .nth(2)
                .unwrap()
                .to_string();
            assert!(
                type_line.trim().starts_with(&format!("1: {code},")),
                "{}: type line {type_line:?}",
                schema.cddl
            );
        }
        for field in schema.fields {
            expected.push(Member {
                key: field.key,
                required: field.required,
                name: field.name.replace('_', "-"),
            });
        }
        assert_eq!(
            members, expected,
            "CDDL rule {} and its Rust structure differ",
            schema.cddl
        );
        if schema.message_type.is_some() {
            for m in &members {
                let name = registry.entry(m.key).or_insert_with(|| m.name.clone());
                assert_eq!(*name, m.name, "key {} has two names", m.key);
            }
        }
    }
    assert!(
        maps.is_empty(),
        "CDDL map rules without a Rust structure: {:?}",
        maps.keys()
    );

    // The registry table of messages.md lists exactly these keys and names.
    let doc = read(&root().join("spec/messages.md"));
    for (key, name) in &registry {
        assert!(
            doc.contains(&format!("| {key} | {name} |")),
            "messages.md registry lacks key {key} ({name})"
        );
    }
}

/// The CDDL enumerations match the Rust ones, code for code.
#[test]
fn cddl_enumerations_match() {
    let (_, enums) = cddl_rules();
    let check = |name: &str, rust: Vec<(String, u64)>| {
        assert_eq!(enums.get(name), Some(&rust), "enumeration {name}");
    };
    check(
        "message-type",
        MsgType::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    check(
        "suite",
        wire::Suite::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    check(
        "transport",
        wire::Transport::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    check(
        "role",
        wire::Role::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    check(
        "recipient-kind",
        wire::RecipientKind::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    check(
        "permission",
        wire::Permission::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    check(
        "recording-mode",
        wire::RecordingMode::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    check(
        "media-kind",
        wire::MediaKind::ALL
            .iter()
            .map(|t| (t.name().into(), t.code()))
            .collect(),
    );
    assert_eq!(enums.len(), 8, "an enumeration without a check");
}

/// errors.md lists exactly the codes the code defines.
#[test]
fn error_code_table_matches() {
    let doc = read(&root().join("spec/errors.md"));
    let mut listed = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let (Some(code), Some(name)) = (
            cells.get(1).and_then(|c| c.parse::<u16>().ok()),
            cells.get(2),
        ) {
            listed.push((code, name.to_string()));
        }
    }
    let rust: Vec<(u16, String)> = wire::ErrorCode::ALL
        .iter()
        .map(|c| (c.0, c.name().unwrap().to_string()))
        .collect();
    assert_eq!(listed, rust);
}
