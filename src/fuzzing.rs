//! The bodies of the cargo-fuzz targets in `fuzz/` (feature `fuzzing`), kept
//! here so that normal builds compile and lint them. Each checks more than
//! "does not crash": what is accepted must re-encode to the same bytes.

use crate::cbor::{self, DecodeOptions};
use crate::wire::{ErrorCode, Message};

/// Generic CBOR: both strictness levels; deterministic acceptance implies
/// byte-identical re-encoding; every error offset is within the input.
pub fn cbor_decode(data: &[u8]) {
    match cbor::decode(data, &DecodeOptions::WELL_FORMED) {
        Ok(item) => {
            let _ = cbor::to_diag(&item);
        }
        Err(e) => assert!(e.offset <= data.len(), "offset beyond input"),
    }
    if let Ok(item) = cbor::decode(data, &DecodeOptions::DETERMINISTIC) {
        assert_eq!(
            cbor::encode(&item).ok().as_deref(),
            Some(data),
            "deterministic input must re-encode identically"
        );
    }
}

/// Keyway messages: accepted messages re-encode identically and describe
/// themselves; rejected ones map to a wire error code.
pub fn wire_decode(data: &[u8]) {
    match Message::decode(data) {
        Ok(message) => {
            assert_eq!(message.encode(), data, "encode(decode(b)) != b");
            let node = message.describe();
            let _ = node.to_annotated_diag();
            let _ = node.to_json();
        }
        Err(e) => {
            assert!(e.offset <= data.len(), "offset beyond input");
            assert_eq!(
                ErrorCode::from(&e).class(),
                1,
                "decode errors are wire errors"
            );
        }
    }
}
