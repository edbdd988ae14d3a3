//! Differential: whatever our decoder accepts, ciborium (an independent,
//! maintained decoder) decodes to the same value (KW-CBOR-020).
#![no_main]

#[path = "../../tests/support/oracle.rs"]
mod oracle;

use keyway::cbor::{DecodeOptions, decode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(ours) = decode(data, &DecodeOptions::WELL_FORMED) else {
        return;
    };
    match ciborium::from_reader::<ciborium::Value, _>(data) {
        Ok(theirs) => assert!(oracle::same_value(&ours, &theirs), "{ours:?} vs {theirs:?}"),
        Err(e) => assert!(
            oracle::beyond_ciborium(&ours),
            "ciborium rejected what we accept: {e}"
        ),
    }
});
