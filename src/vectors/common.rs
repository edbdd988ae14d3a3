//! What every vector file and test shares: the file header, the test
//! metadata, hex fields, error names and the per-test randomness.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

    /// An invalid test that fails with `error`.
    pub fn invalid(
        tc_id: &str,
        comment: &str,
        requirements: &[&str],
        flags: &[&str],
        error: &Failure,
    ) -> Self {
        Self {
            result: Verdict::Invalid,
            error: Some(error.code.clone()),
            detail: Some(error.detail.clone()),
            ..Self::valid(tc_id, comment, requirements, flags)
        }
    }

    /// This test, made invalid by `failure`.
    pub fn failing(mut self, failure: &Failure) -> Self {
        self.result = Verdict::Invalid;
        self.error = Some(failure.code.clone());
        self.detail = Some(failure.detail.clone());
        self
    }

    /// Checks an outcome against the test's verdict.
    pub fn expect<T>(&self, outcome: Result<T, Failure>) -> Result<Option<T>, String> {
        match (self.result, outcome) {
            (Verdict::Valid, Ok(v)) => Ok(Some(v)),
            (Verdict::Valid, Err(f)) => Err(format!(
                "expected valid, failed with {} ({})",
                f.code, f.detail
            )),
            (Verdict::Invalid, Ok(_)) => Err("expected invalid, accepted".into()),
            (Verdict::Invalid, Err(f)) => {
                if Some(&f.code) != self.error.as_ref() || Some(&f.detail) != self.detail.as_ref() {
                    Err(format!(
                        "expected {:?} ({:?}), failed with {} ({})",
                        self.error, self.detail, f.code, f.detail
                    ))
                } else {
                    Ok(None)
                }
            }
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

/// Parses a file and checks every test with `run`; returns the number of
/// tests or every failure as "tcId: what".
pub fn verify_file<P, T>(
    text: &str,
    kind: &str,
    meta: fn(&T) -> &Meta,
    run: impl Fn(&P, &T) -> Result<(), String>,
) -> Result<usize, Vec<String>>
where
    P: for<'de> Deserialize<'de>,
    T: for<'de> Deserialize<'de>,
{
    let file: VectorFile<P, T> =
        serde_json::from_str(text).map_err(|e| vec![format!("parse: {e}")])?;
    let mut failures = Vec::new();
    if file.schema != SCHEMA || file.kind != kind {
        failures.push(format!(
            "header: schema {:?} kind {:?}",
            file.schema, file.kind
        ));
    }
    if file.number_of_tests != file.tests.len() {
        failures.push("header: numberOfTests does not match".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    for test in &file.tests {
        let m = meta(test);
        if !ids.insert(m.tc_id.clone()) {
            failures.push(format!("{}: duplicate tcId", m.tc_id));
        }
        for flag in &m.flags {
            if !file.notes.contains_key(flag) {
                failures.push(format!("{}: flag {flag} not in notes", m.tc_id));
            }
        }
        if let Err(what) = run(&file.params, test) {
            failures.push(format!("{}: {what}", m.tc_id));
        }
    }
    if failures.is_empty() {
        Ok(file.tests.len())
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
