//! Property tests of the CBOR codec: roundtrips, determinism of the encoder,
//! robustness on arbitrary bytes, and agreement with ciborium as an
//! independent oracle. KW-CBOR-001, KW-CBOR-010, KW-CBOR-020.

// Tests may panic on unexpected input: that is how they fail. They may
// also read files, which clippy.toml bans in the protocol crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::disallowed_types
)]

mod support;

use keyway::cbor::{CborErrorClass, DecodeOptions, Item, decode, encode};
use quickcheck::{Gen, QuickCheck, TestResult};
use support::cbor_gen::{AnyItem, loose_encode};
use support::oracle::{beyond_ciborium, same_value};

fn qc() -> QuickCheck {
    QuickCheck::new().tests(2000).max_tests(20000)
}

/// The encoder's output always passes the deterministic check, and decoding
/// it gives back an item that re-encodes to the same bytes.
#[test]
fn encoder_output_is_deterministic_and_roundtrips() {
    fn prop(item: AnyItem) -> bool {
        let bytes = encode(&item.0).unwrap();
        let decoded = decode(&bytes, &DecodeOptions::DETERMINISTIC).unwrap();
        encode(&decoded).unwrap() == bytes
    }
    qc().quickcheck(prop as fn(AnyItem) -> bool);
}

/// Items without indefinite lengths, non-preferred bignums or chunked
/// strings decode to exactly themselves after a deterministic encode.
#[test]
fn definite_items_roundtrip_exactly() {
    fn definite(item: &Item<'_>) -> bool {
        match item {
            Item::BytesChunks(_) | Item::TextChunks(_) => false,
            Item::Array { items, indefinite } => !indefinite && items.iter().all(definite),
            Item::Map {
                entries,
                indefinite,
            } => !indefinite && entries.iter().all(|(k, v)| definite(k) && definite(v)),
            Item::Tag(2 | 3, _) => false,
            Item::Tag(_, c) => definite(c),
            _ => true,
        }
    }
    fn sorted(item: &Item<'static>) -> Item<'static> {
        // Decoding yields map entries in encoded (sorted) order.
        let bytes = encode(item).unwrap();
        decode(&bytes, &DecodeOptions::WELL_FORMED)
            .unwrap()
            .into_owned()
    }
    fn prop(item: AnyItem) -> TestResult {
        if !definite(&item.0) {
            return TestResult::discard();
        }
        let bytes = encode(&item.0).unwrap();
        let decoded = decode(&bytes, &DecodeOptions::DETERMINISTIC).unwrap();
        TestResult::from_bool(decoded == sorted(&item.0))
    }
    qc().quickcheck(prop as fn(AnyItem) -> TestResult);
}

/// Any valid encoding of an item decodes to the same value; the
/// deterministic decoder accepts it exactly when it is the canonical one.
#[test]
fn every_encoding_decodes_and_only_the_canonical_one_is_deterministic() {
    fn prop(item: AnyItem, seed: u64) -> bool {
        let mut g = Gen::new(seed as usize % 64 + 1);
        let mut loose = Vec::new();
        loose_encode(&mut g, &mut loose, &item.0);
        let canonical = encode(&item.0).unwrap();
        let decoded = decode(&loose, &DecodeOptions::WELL_FORMED).unwrap();
        let same_value = encode(&decoded).unwrap() == canonical;
        let strict = decode(&loose, &DecodeOptions::DETERMINISTIC);
        let verdict_matches = match strict {
            Ok(_) => loose == canonical,
            Err(e) => loose != canonical && e.kind.class() == CborErrorClass::NotDeterministic,
        };
        same_value && verdict_matches
    }
    qc().quickcheck(prop as fn(AnyItem, u64) -> bool);
}

/// The decoder never panics, and any error offset lies within the input.
#[test]
fn arbitrary_bytes_never_panic() {
    fn prop(bytes: Vec<u8>) -> bool {
        [DecodeOptions::WELL_FORMED, DecodeOptions::DETERMINISTIC]
            .iter()
            .all(|options| match decode(&bytes, options) {
                Ok(_) => true,
                Err(e) => e.offset <= bytes.len(),
            })
    }
    qc().tests(20000).quickcheck(prop as fn(Vec<u8>) -> bool);
}

/// Mutations of valid encodings (bit flips, truncation, insertion) never
/// panic, and whatever the deterministic decoder accepts re-encodes to
/// exactly the input.
#[test]
fn mutated_encodings_never_panic_and_accepted_ones_are_canonical() {
    fn prop(item: AnyItem, flips: Vec<(usize, u8)>, cut: usize) -> bool {
        let mut bytes = encode(&item.0).unwrap();
        for (at, mask) in flips.iter().take(3) {
            let len = bytes.len();
            if let Some(b) = bytes.get_mut(at % len.max(1)) {
                *b ^= mask;
            }
        }
        bytes.truncate(bytes.len() - cut % (bytes.len() + 1) / 4);
        let _ = decode(&bytes, &DecodeOptions::WELL_FORMED);
        match decode(&bytes, &DecodeOptions::DETERMINISTIC) {
            Ok(item) => encode(&item).unwrap() == bytes,
            Err(e) => e.offset <= bytes.len(),
        }
    }
    qc().quickcheck(prop as fn(AnyItem, Vec<(usize, u8)>, usize) -> bool);
}

/// Differential: every item our decoder accepts, ciborium decodes to the
/// same value (ciborium cannot hold simple values other than the four named
/// ones, nor bignums beyond 128 bits; such items are skipped).
#[test]
fn ciborium_agrees_on_everything_we_accept() {
    fn prop(item: AnyItem, seed: u64) -> TestResult {
        let mut g = Gen::new(seed as usize % 64 + 1);
        let mut bytes = Vec::new();
        loose_encode(&mut g, &mut bytes, &item.0);
        let ours = decode(&bytes, &DecodeOptions::WELL_FORMED).unwrap();
        match ciborium::from_reader::<ciborium::Value, _>(bytes.as_slice()) {
            Ok(theirs) => TestResult::from_bool(same_value(&ours, &theirs)),
            Err(_) if beyond_ciborium(&ours) => TestResult::discard(),
            Err(e) => TestResult::error(format!("ciborium rejected {bytes:02x?}: {e}")),
        }
    }
    qc().quickcheck(prop as fn(AnyItem, u64) -> TestResult);
}

/// Inputs the fuzzers found (`tests/data/fuzz-regressions/`), replayed:
/// whatever we accept, ciborium decodes to the same value.
#[test]
fn fuzz_regressions_agree_with_ciborium() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        if let Ok(ours) = decode(&bytes, &DecodeOptions::WELL_FORMED) {
            match ciborium::from_reader::<ciborium::Value, _>(bytes.as_slice()) {
                Ok(theirs) => assert!(same_value(&ours, &theirs), "{:?}", entry.path()),
                Err(_) => assert!(beyond_ciborium(&ours), "{:?}", entry.path()),
            }
        }
        count += 1;
    }
    assert!(count > 0);
}
