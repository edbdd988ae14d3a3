//! Golden test vectors (spec/crypto.md): generated from fixed seeds,
//! written as JSON with hex fields in the layout of Wycheproof. Each kind
//! has one `complete` function that recomputes a test from its inputs —
//! outputs, intermediates and verdict. Generation writes the inputs and
//! lets `complete` fill in the rest; verification runs `complete` on each
//! test read and compares the whole file with the result, so that every
//! field is checked (KW-VEC-005).
//!
//! Every test carries a stable `tcId`, the requirement IDs it exercises,
//! `valid` or `invalid` with the protocol error code name, and the
//! intermediate values of the construction, so that a failure points at
//! one step. Each test's randomness comes from a generator seeded with its
//! `tcId`, so adding a test never changes another.
//!
//! Everything here is a function of text: writing the files into a
//! directory and reading them back is `keyway-node`'s (`vectors_dir`), as
//! the protocol crate touches no file.
//!
//! Layer rule: imports `cbor`, `wire` and `crypto`.

mod cert;
mod challenge;
mod common;
mod kid;
mod msgsig;
mod reader;
mod register;
mod seal;
mod session;
mod wrap;

pub use common::{Hex, Meta, VectorFile, Verdict};

/// The kinds, in the order they are generated: (file stem, generator,
/// verifier over the file's JSON text).
type Kind = (
    &'static str,
    fn() -> String,
    fn(&str) -> Result<usize, Vec<String>>,
);

const KINDS: &[Kind] = &[
    ("kid", kid::generate, kid::verify_json),
    ("cert", cert::generate, cert::verify_json),
    ("attest", cert::generate_attest, cert::verify_attest_json),
    (
        "register-verifier",
        register::generate_verifier,
        register::verify_verifier_json,
    ),
    (
        "register-proof",
        register::generate_proof,
        register::verify_proof_json,
    ),
    ("challenge", challenge::generate, challenge::verify_json),
    ("csr", register::generate_csr, register::verify_csr_json),
    (
        "kx-pop",
        register::generate_kx_pop,
        register::verify_kx_pop_json,
    ),
    ("wrap", wrap::generate, wrap::verify_json),
    ("seal", seal::generate, seal::verify_json),
    ("session", session::generate, session::verify_json),
    ("media", session::generate_media, session::verify_media_json),
    ("msgsig", msgsig::generate, msgsig::verify_json),
    ("reader", reader::generate, reader::verify_json),
];

/// The name of every vector file, in the order they are generated: a
/// directory of vectors holds exactly these (KW-VEC-001).
pub fn file_names() -> Vec<String> {
    KINDS
        .iter()
        .map(|(stem, _, _)| format!("{stem}.json"))
        .collect()
}

/// Every vector file: (file name, JSON text).
pub fn generate_all() -> Vec<(String, String)> {
    KINDS
        .iter()
        .map(|(stem, generate, _)| (format!("{stem}.json"), generate()))
        .collect()
}

/// Checks the text of one vector file named `name` (e.g. `wrap.json`);
/// returns the number of tests or every failure.
pub fn verify_text(name: &str, text: &str) -> Result<usize, Vec<String>> {
    KINDS
        .iter()
        .find(|(stem, _, _)| format!("{stem}.json") == name)
        .map_or_else(
            || Err(vec![format!("{name}: unknown vector kind")]),
            |(_, _, verify)| verify(text),
        )
}
