//! What every vector file and test shares: the file header, the test
//! metadata, hex fields, error names and the per-test randomness.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::cbor;
use crate::crypto::{CryptoError, SeededEntropy};
use crate::wire::{ErrorCode, WireError};

/// The file format's name; a breaking change of the layout bumps it.
pub const SCHEMA: &str = "keyway-vectors-v1";

/// Bytes, written as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hex(pub Vec<u8>);

impl Hex {
    /// The bytes as a fixed-size array, if the length is right.
    pub fn array<const N: usize>(&self) -> Result<[u8; N], String> {
        self.0
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected {N} bytes, got {}", self.0.len()))
    }
}

impl From<&[u8]> for Hex {
    fn from(b: &[u8]) -> Self {
        Hex(b.to_vec())
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&cbor::hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        cbor::unhex(&text)
            .map(Hex)
            .ok_or_else(|| serde::de::Error::custom("invalid hex"))
    }
}

/// Whether a test's input must be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Accepted, with the outputs given.
    Valid,
    /// Rejected, with the error given.
    Invalid,
}

/// The fields every test has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Stable identifier: `<kind>/<slug>`, never reused.
    #[serde(rename = "tcId")]
    pub tc_id: String,
    /// What the test shows.
    pub comment: String,
    /// The requirement IDs it exercises.
    pub requirements: Vec<String>,
    /// Flags explained in the file's `notes`.
    pub flags: Vec<String>,
    /// Valid or invalid.
    pub result: Verdict,
    /// For invalid tests: the protocol error code name (spec/errors.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For invalid tests: the reference implementation's specific reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Meta {
    /// A valid test.
    pub fn valid(tc_id: &str, comment: &str, requirements: &[&str], flags: &[&str]) -> Self {
        Self {
            tc_id: tc_id.into(),
            comment: comment.into(),
            requirements: requirements.iter().map(|r| r.to_string()).collect(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            result: Verdict::Valid,
            error: None,
            detail: None,
        }
    }

    /// This test, made invalid by `failure`.
    pub fn failing(mut self, failure: &Failure) -> Self {
        self.result = Verdict::Invalid;
        self.error = Some(failure.code.clone());
        self.detail = Some(failure.detail.clone());
        self
    }

    /// This test's metadata with the verdict of `outcome`: valid, or
    /// invalid with the failure's code and detail. A failure that is not a
    /// protocol error (the vector itself is unusable) is an error.
    pub fn judged<T>(&self, outcome: Result<T, Failure>) -> Result<(Self, Option<T>), String> {
        match outcome {
            Ok(v) => Ok((
                Self {
                    result: Verdict::Valid,
                    error: None,
                    detail: None,
                    ..self.clone()
                },
                Some(v),
            )),
            Err(f) if f.is_protocol() => Ok((self.clone().failing(&f), None)),
            Err(f) => Err(format!("{}: {}", f.code, f.detail)),
        }
    }
}

/// A rejection: the protocol error code name and the specific reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Code name from spec/errors.md.
    pub code: String,
    /// The reference implementation's reason.
    pub detail: String,
}

impl Failure {
    /// A vector that cannot be used as it is (not a protocol rejection).
    pub fn vector(detail: impl Into<String>) -> Self {
        Failure {
            code: "vector".into(),
            detail: detail.into(),
        }
    }

    /// Whether the code is a protocol error code name of errors.md.
    pub fn is_protocol(&self) -> bool {
        ErrorCode::ALL
            .iter()
            .any(|c| c.name() == Some(self.code.as_str()))
    }
}

fn code_name(code: ErrorCode) -> String {
    code.name().unwrap_or("unknown").to_string()
}

impl From<CryptoError> for Failure {
    fn from(e: CryptoError) -> Self {
        Failure {
            code: code_name(ErrorCode::from(&e)),
            detail: format!("{e:?}"),
        }
    }
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Self {
        Failure {
            code: code_name(ErrorCode::from(&e)),
            detail: format!("{:?}", e.kind),
        }
    }
}

/// One vector file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VectorFile<P, T> {
    /// The format name, `keyway-vectors-v1`.
    pub schema: String,
    /// The kind of construction.
    pub kind: String,
    /// Where the construction is specified.
    pub spec: String,
    /// How to check a test of this kind.
    pub recipe: String,
    /// What produced the file.
    pub generator: String,
    /// The meaning of each flag used.
    pub notes: BTreeMap<String, String>,
    /// Parameters shared by the tests.
    pub params: P,
    /// Number of tests.
    #[serde(rename = "numberOfTests")]
    pub number_of_tests: usize,
    /// The tests.
    pub tests: Vec<T>,
}

impl<P: Serialize, T: Serialize> VectorFile<P, T> {
    /// A file of `tests`.
    pub fn new(
        kind: &str,
        spec: &str,
        recipe: &str,
        notes: &[(&str, &str)],
        params: P,
        tests: Vec<T>,
    ) -> Self {
        Self {
            schema: SCHEMA.into(),
            kind: kind.into(),
            spec: spec.into(),
            recipe: recipe.into(),
            generator: format!(
                "keyway {} (`keyway vectors generate`)",
                env!("CARGO_PKG_VERSION")
            ),
            notes: notes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            params,
            number_of_tests: tests.len(),
            tests,
        }
    }

    /// Pretty JSON with a final newline: the committed form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .map_or_else(|e| format!("{{\"error\":\"{e}\"}}"), |s| s + "\n")
    }
}

/// The spec this build implements: requirement IDs a vector cites must be
/// defined here (KW-VEC-004).
const SPEC: &[&str] = &[
    include_str!("../../spec/README.md"),
    include_str!("../../spec/overview.md"),
    include_str!("../../spec/encoding.md"),
    include_str!("../../spec/messages.md"),
    include_str!("../../spec/errors.md"),
    include_str!("../../spec/flows.md"),
    include_str!("../../spec/crypto.md"),
    include_str!("../../spec/state-machines.md"),
    include_str!("../../spec/transport.md"),
    include_str!("../../spec/traceability.md"),
    include_str!("../../spec/vectors.md"),
];

/// Whether `id` is defined (`- **KW-AREA-NNN** (LEVEL) …`) in spec/.
pub fn requirement_defined(id: &str) -> bool {
    let head = format!("- **{id}** (");
    SPEC.iter()
        .flat_map(|text| text.lines())
        .any(|line| line.trim_start().starts_with(&head))
}

/// The file-level rules of spec/vectors.md that concern one test's
/// metadata: the form and uniqueness of `tcId`, cited requirements defined,
/// flags explained in `notes`.
fn check_meta(
    kind: &str,
    m: &Meta,
    notes: &BTreeMap<String, String>,
    ids: &mut std::collections::BTreeSet<String>,
    failures: &mut Vec<String>,
) {
    let slug = m.tc_id.strip_prefix(kind).and_then(|s| s.strip_prefix('/'));
    if slug.is_none_or(str::is_empty) {
        failures.push(format!("{}: tcId is not {kind}/<slug>", m.tc_id));
    }
    if !ids.insert(m.tc_id.clone()) {
        failures.push(format!("{}: duplicate tcId", m.tc_id));
    }
    if m.requirements.is_empty() {
        failures.push(format!("{}: names no requirement", m.tc_id));
    }
    for r in &m.requirements {
        if !requirement_defined(r) {
            failures.push(format!(
                "{}: requirement {r} is not defined in spec/",
                m.tc_id
            ));
        }
    }
    for flag in &m.flags {
        if !notes.contains_key(flag) {
            failures.push(format!("{}: flag {flag} not in notes", m.tc_id));
        }
    }
}

/// Every difference between a file as given and as recomputed, as
/// "path: what"; tests are named by their `tcId`.
fn diff(path: &str, given: &Value, want: &Value, out: &mut Vec<String>) {
    match (given, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, gv) in g {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match w.get(k) {
                    Some(wv) => diff(&at, gv, wv, out),
                    None => out.push(format!("{at}: unknown or unexpected field")),
                }
            }
            for (k, wv) in w.iter().filter(|(k, _)| !g.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing (recomputed {wv})"));
            }
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                let name = match gv.get("tcId").and_then(Value::as_str) {
                    Some(tc) if path == "tests" => tc.to_string(),
                    _ => format!("{path}[{i}]"),
                };
                diff(&name, gv, wv, out);
            }
        }
        _ if given == want => {}
        _ => out.push(format!("{path}: file has {given}, recomputed {want}")),
    }
}

/// Checks a vector file (KW-VEC-001, KW-VEC-005): parses it, recomputes every test from
/// its inputs with `complete` — outputs, intermediates, `result`, `error`
/// and `detail` — and compares the whole file, field by field, with the
/// recomputed one. A field the file has and the recomputation does not
/// (an unknown field, or an output where none is due) is a failure, as is
/// one it lacks; so is an input `complete` cannot use. Returns the number
/// of tests or every failure as "tcId: what".
pub fn verify_file<P, T>(
    text: &str,
    kind: &str,
    meta: fn(&T) -> &Meta,
    complete: impl Fn(&P, &T) -> Result<T, String>,
) -> Result<usize, Vec<String>>
where
    P: Serialize + for<'de> Deserialize<'de>,
    T: Clone + Serialize + for<'de> Deserialize<'de>,
{
    let given: Value = serde_json::from_str(text).map_err(|e| vec![format!("parse: {e}")])?;
    let file: VectorFile<P, T> =
        serde_json::from_value(given.clone()).map_err(|e| vec![format!("parse: {e}")])?;
    let mut failures = Vec::new();
    if file.schema != SCHEMA || file.kind != kind {
        failures.push(format!(
            "header: schema {:?} kind {:?}",
            file.schema, file.kind
        ));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut tests = Vec::with_capacity(file.tests.len().min(16));
    for test in &file.tests {
        let m = meta(test);
        check_meta(kind, m, &file.notes, &mut ids, &mut failures);
        match complete(&file.params, test) {
            Ok(t) => tests.push(t),
            Err(what) => {
                failures.push(format!("{}: {what}", m.tc_id));
                tests.push(test.clone());
            }
        }
    }
    // KW-VEC-004: valid and invalid tests in every kind but key identifiers.
    let invalid = file
        .tests
        .iter()
        .filter(|t| meta(t).result == Verdict::Invalid)
        .count();
    if kind != "kid" && (invalid == 0 || invalid == file.tests.len()) {
        failures.push(format!(
            "header: {invalid} of {} tests invalid",
            file.tests.len()
        ));
    }
    let recomputed = VectorFile {
        number_of_tests: tests.len(),
        tests,
        ..file
    };
    match serde_json::to_value(&recomputed) {
        Ok(want) => diff("", &given, &want, &mut failures),
        Err(e) => failures.push(format!("serialise: {e}")),
    }
    if failures.is_empty() {
        Ok(recomputed.tests.len())
    } else {
        Err(failures)
    }
}

/// The randomness of one test: a generator seeded by its `tcId`.
pub fn entropy_for(tc_id: &str) -> SeededEntropy {
    SeededEntropy::from_label(&format!("{SCHEMA}/{tc_id}"))
}

/// Compares a recomputed value with the vector's.
pub fn same(what: &str, expected: &[u8], actual: &[u8]) -> Result<(), String> {
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {}, computed {}",
            cbor::hex(expected),
            cbor::hex(actual)
        ))
    }
}
