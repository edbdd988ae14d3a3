//! The CDDL of spec/keyway.cddl against the code, with the `cddl` crate as
//! an independent structural check (it cannot judge deterministic encoding;
//! our decoder does that), and the byte-exact examples of spec/examples/.

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

use std::path::PathBuf;

use keyway::cbor;
use keyway::wire::{self, Message, Sample, Source, examples};

use std::sync::OnceLock;

use cddl::validator::Validator;

const CDDL: &str = include_str!("../spec/keyway.cddl");

/// Parsing the CDDL is slow; it is done once for all tests.
fn parsed() -> &'static cddl::ast::CDDL<'static> {
    static PARSED: OnceLock<cddl::ast::CDDL<'static>> = OnceLock::new();
    PARSED.get_or_init(|| cddl::cddl_from_str(CDDL, true).unwrap())
}

fn validate(bytes: &[u8]) -> Result<(), String> {
    let value: ciborium::Value = ciborium::from_reader(bytes).map_err(|e| e.to_string())?;
    let mut validator = cddl::validator::cbor::CBORValidator::new(parsed(), value.into(), None);
    validator.validate().map_err(|e| e.to_string())
}

fn example_path(message: &Message) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("spec/examples")
        .join(format!("{}.hex", message.msg_type().name()))
}

/// Hex, 32 bytes per line.
fn hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(32).map(|c| cbor::hex(c) + "\n").collect()
}

/// The example files hold exactly the encodings of `wire::examples`.
/// Regenerate with `KEYWAY_UPDATE_EXAMPLES=1 cargo test --test cddl`.
#[test]
fn spec_examples_are_the_encoded_examples() {
    let update = std::env::var_os("KEYWAY_UPDATE_EXAMPLES").is_some();
    for message in examples::all() {
        let path = example_path(&message);
        let bytes = message.encode();
        if update {
            std::fs::write(&path, hex_lines(&bytes)).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (KEYWAY_UPDATE_EXAMPLES=1 writes it)",
                path.display()
            )
        });
        // The files break the hex into lines (`hex_lines`); whitespace is
        // no part of the encoding.
        let digits: String = text.split_whitespace().collect();
        assert_eq!(
            cbor::unhex(&digits).unwrap(),
            bytes,
            "{} is stale",
            path.display()
        );
    }
}

/// Every example message validates against keyway.cddl.
#[test]
fn examples_validate_against_the_cddl() {
    for message in examples::all() {
        validate(&message.encode()).unwrap_or_else(|e| panic!("{:?}: {e}", message.msg_type()));
    }
}

/// Sampled messages of every type, with extension fields, validate too.
#[test]
fn sampled_messages_validate_against_the_cddl() {
    let mut src = Source::new(0x6b65_7977_6179);
    let mut checked = 0;
    while checked < 300 {
        let message = Message::sample(&mut src);
        let bytes = message.encode();
        if bytes.len() > wire::MAX_MESSAGE_SIZE {
            continue;
        }
        validate(&bytes)
            .unwrap_or_else(|e| panic!("{:?}: {e}\n{}", message.msg_type(), cbor::hex(&bytes)));
        checked += 1;
    }
}

/// The cddl crate is a real check: it rejects a message of the wrong shape.
#[test]
fn the_cddl_rejects_a_wrong_shape() {
    let mut bytes = examples::all()[0].encode(); // register
    // The contact [0, h'c000020a', 5070] becomes [2, ...]: no such transport.
    let at = bytes.windows(2).position(|w| w == [0x83, 0x00]).unwrap();
    bytes[at + 1] = 0x02;
    assert!(validate(&bytes).is_err());
}
