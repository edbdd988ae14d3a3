//! Tidy checks that keep spec, code and tests in step (run by `cargo test`):
//! requirement identifiers are defined once, well formed wherever they are
//! written, and cited (in Rust, the spec, the vectors or the independent
//! Python checker) only when defined; every requirement of an implemented
//! area is cited by a test; every claim is traced; the CDDL and the Rust
//! schemas agree key for key; the protocol crate's dependencies reach no
//! OS generator and no I/O.

// Tests may panic on unexpected input: that is how they fail. They may
// also run `cargo tree`, which clippy.toml bans in the protocol crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::disallowed_types
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

/// The areas of spec/README.md's table (`| CBOR | encoding.md | … |`).
fn areas() -> &'static BTreeSet<String> {
    static AREAS: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    AREAS.get_or_init(|| {
        read(&root().join("spec/README.md"))
            .lines()
            .filter_map(|line| line.strip_prefix("| ")?.split_once(" |"))
            .map(|(area, _)| area)
            .filter(|area| !area.is_empty() && area.bytes().all(|b| b.is_ascii_uppercase()))
            .map(str::to_string)
            .collect()
    })
}

/// Something in text meant as a requirement identifier: `KW-` then
/// letters, an optional `-` and digits; the same in another case when the
/// letters name a known area; or `kw_area_nnn`, how a test name cites one.
/// `KW-SEAL-*` and `KW-<AREA>-<NNN>` speak of identifiers and are not one;
/// `kw-wrap-32`, a benchmark's name, names no area.
#[derive(Debug)]
struct IdToken {
    /// 1-based line of the token.
    line: usize,
    /// The token as written, with any letters or digits run on to it.
    text: String,
    /// The identifier, `KW-AREA-NNN`, when the token is well formed: `KW-`,
    /// an upper-case area, `-` and exactly three digits, or all of it in
    /// lower case with `_` in a test name.
    id: Option<String>,
}

/// Every identifier-like token of `text`, in order.
fn id_tokens(text: &str) -> Vec<IdToken> {
    let bytes = text.as_bytes();
    let run = |from: usize, pred: fn(&u8) -> bool| {
        from + bytes[from..].iter().take_while(|b| pred(b)).count()
    };
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let prefix = bytes.get(i..i + 3).unwrap_or_default();
        let snake = prefix == b"kw_";
        let at_boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if !at_boundary || !(snake || prefix.eq_ignore_ascii_case(b"kw-")) {
            line += usize::from(bytes[i] == b'\n');
            i += 1;
            continue;
        }
        let area_end = run(i + 3, u8::is_ascii_alphabetic);
        let area = &text[i + 3..area_end];
        // The separator is the prefix's own (`-` or `_`); a missing one is
        // a malformation, not the end of the token.
        let separated = bytes.get(area_end) == Some(&prefix[2]);
        let digits_from = area_end + usize::from(separated);
        let digits_end = run(digits_from, u8::is_ascii_digit);
        let end = run(digits_end, u8::is_ascii_alphanumeric);
        let meant = prefix == b"KW-" || areas().contains(&area.to_ascii_uppercase());
        if area.is_empty() || digits_end == digits_from || !meant {
            i = area_end.max(i + 1);
            continue;
        }
        let case_ok = if snake {
            area.bytes().all(|b| b.is_ascii_lowercase())
        } else {
            prefix == b"KW-" && area.bytes().all(|b| b.is_ascii_uppercase())
        };
        let well_formed =
            case_ok && separated && digits_end - digits_from == 3 && end == digits_end;
        tokens.push(IdToken {
            line,
            text: text[i..end].to_string(),
            id: well_formed.then(|| {
                format!(
                    "KW-{}-{}",
                    area.to_ascii_uppercase(),
                    &text[digits_from..digits_end]
                )
            }),
        });
        // A token holds no newline, so the line count stays right.
        i = end;
    }
    tokens
}

/// Every well-formed requirement identifier cited in `text`.
fn ids_in(text: &str) -> Vec<String> {
    id_tokens(text).into_iter().filter_map(|t| t.id).collect()
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
    for dir in ["src", "tests", "node", "fuzz", "bench", "conformance"] {
        files_under(&root().join(dir), ".rs", &mut files);
    }
    files
}

/// Every file that may cite a requirement: the Rust sources, the spec, the
/// documents, the golden vectors, and the independent checker, which is
/// written from the spec and cites it in Python and Markdown.
fn citing_files() -> Vec<PathBuf> {
    let mut files = sources();
    files_under(&root().join("spec"), ".md", &mut files);
    files_under(&root().join("spec"), ".cddl", &mut files);
    for dir in ["conformance", "bench", "fuzz", "node"] {
        files_under(&root().join(dir), ".md", &mut files);
    }
    files_under(&root().join("conformance"), ".py", &mut files);
    // Each vector is a test and names its requirements (see test_code).
    files_under(&root().join("vectors"), ".json", &mut files);
    for file in ["README.md", "ARCHITECTURE.md"] {
        files.push(root().join(file));
    }
    files.retain(|f| f.exists());
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

/// Code, tests, the independent checker and the spec itself cite only
/// defined requirements.
#[test]
fn cited_requirements_are_defined() {
    let defined = definitions();
    let files = citing_files();
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "py")),
        "no Python file of conformance/independent/ scanned"
    );
    let mut unknown = BTreeSet::new();
    for file in &files {
        for id in ids_in(&read(file)) {
            if !defined.contains_key(&id) && id != "KW-EXAMPLE-000" {
                unknown.insert(format!("{id} in {}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "undefined requirements cited:\n{unknown:#?}"
    );
}

/// Nothing that looks like a requirement identifier is a misspelt one
/// (`KW-CBOR-0011`, `KW-CBOR-11`, `KW-Cbor-011`, `kw-cbor-011`, `KW-CBOR011`):
/// the other checks see only well-formed identifiers, so a slip would go
/// unchecked, neither cited nor reported.
#[test]
fn requirement_like_tokens_are_well_formed() {
    let mut malformed = Vec::new();
    // This file spells slips on purpose, to test the scanner.
    let this_file = root().join("tests/tidy.rs");
    for file in citing_files().into_iter().filter(|f| *f != this_file) {
        for token in id_tokens(&read(&file)) {
            if token.id.is_none() {
                let shown = file.strip_prefix(root()).unwrap_or(&file).display();
                malformed.push(format!("{shown}:{}: {}", token.line, token.text));
            }
        }
    }
    assert!(
        malformed.is_empty(),
        "malformed requirement identifiers (KW-AREA-NNN: upper-case area, three digits):\n{}",
        malformed.join("\n")
    );
}

/// The scanner itself: what it takes for an identifier, what it reports as
/// a malformed one, and what it leaves alone.
#[test]
fn id_tokens_tell_identifiers_slips_and_other_text_apart() {
    let text = "KW-CBOR-011, (KW-WIRE-002) kw_cbor_014_dups kw_cert_002_a_and_kw_cert_003_b\n\
                KW-CBOR-0011 KW-CBOR-11 KW-Cbor-011 kw-cbor-011 KW-CBOR011 KW-CBOR-011a \
                kw_cbor_01_x KW-NOAREA-1\n\
                KW-SEAL-* KW-AREA-NNN KW-<AREA>-<NNN> kw-wrap-32 kw_wrap_032 XKW-CBOR-0111";
    // The areas come from the spec's table; every implemented one is there.
    for area in IMPLEMENTED_AREAS.iter().chain(&["FRAME"]) {
        assert!(
            areas().contains(*area),
            "{area} not in spec/README.md's table"
        );
    }
    let tokens = id_tokens(text);
    let ids: Vec<&str> = tokens.iter().filter_map(|t| t.id.as_deref()).collect();
    assert_eq!(
        ids,
        [
            "KW-CBOR-011",
            "KW-WIRE-002",
            "KW-CBOR-014",
            "KW-CERT-002",
            "KW-CERT-003"
        ]
    );
    let slips: Vec<(usize, &str)> = tokens
        .iter()
        .filter(|t| t.id.is_none())
        .map(|t| (t.line, t.text.as_str()))
        .collect();
    assert_eq!(
        slips,
        [
            (2, "KW-CBOR-0011"),
            (2, "KW-CBOR-11"),
            (2, "KW-Cbor-011"),
            (2, "kw-cbor-011"),
            (2, "KW-CBOR011"),
            (2, "KW-CBOR-011a"),
            (2, "kw_cbor_01"),
            (2, "KW-NOAREA-1"),
        ]
    );
}

/// The text of test code: files under tests/ and node/tests/, `#[cfg(test)]` modules, and
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
        if file.starts_with(root().join("tests")) || file.starts_with(root().join("node/tests")) {
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

/// The normal dependencies of the protocol crate (package `keyway`, not
/// `keyway-node`), one `name vX.Y.Z` line each, on this machine's target.
fn protocol_dependencies() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "-p",
            "keyway",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(tree.lines().any(|l| l.starts_with("keyway ")), "{tree}");
    tree.lines().map(str::to_string).collect()
}

/// The protocol layers take randomness from their caller (ARCHITECTURE.md,
/// KW-CRYPTO-004): nothing the protocol crate depends on can reach the
/// operating system's generator. The I/O crate, `keyway-node`, which must
/// seed generators, is not checked.
#[test]
fn the_library_cannot_reach_os_randomness() {
    for line in protocol_dependencies() {
        let name = line.split(' ').next().unwrap_or_default();
        assert!(
            !matches!(name, "getrandom" | "rand" | "os_rng"),
            "the library depends on {line}"
        );
    }
}

/// The protocol crate does no I/O (ARCHITECTURE.md): beside clippy.toml's
/// bans on its own code, none of its dependencies is an async runtime,
/// socket or system-call wrapper or database, and it cannot depend on
/// `keyway-node` (cargo would refuse the cycle anyway). `libc` is not on
/// the list: `cpufeatures`, under the hash and cipher crates, needs it on
/// aarch64 and loongarch64 to ask the kernel which CPU features exist,
/// which is no I/O of the protocol's.
#[test]
fn the_protocol_crate_cannot_reach_io() {
    for line in protocol_dependencies() {
        let name = line.split(' ').next().unwrap_or_default();
        assert!(
            !matches!(
                name,
                "tokio" | "mio" | "socket2" | "rusqlite" | "libsqlite3-sys" | "nix" | "keyway-node"
            ),
            "the protocol crate depends on {line}"
        );
    }
}
