//! Snapshots of the diagnostic notation of one example of every message:
//! the annotated form `keyway decode` prints, and the plain RFC 8949 §8
//! form `keyway cbor diag` prints. A change to either is a visible diff.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use keyway::cbor::{self, DecodeOptions};
use keyway::wire::examples;

#[test]
fn diagnostic_notation_of_every_message() {
    for message in examples::all() {
        let bytes = message.encode();
        let plain = cbor::to_diag(&cbor::decode(&bytes, &DecodeOptions::DETERMINISTIC).unwrap());
        let annotated = message.describe().to_annotated_diag();
        let name = message.msg_type().name();
        insta::assert_snapshot!(name, format!("{annotated}\n\n{plain}\n"));
    }
}

#[test]
fn json_of_every_message() {
    for message in examples::all() {
        let json = serde_json::to_string_pretty(&message.describe().to_json()).unwrap();
        insta::assert_snapshot!(format!("{}.json", message.msg_type().name()), json);
    }
}
