//! Each normative CBOR rule of spec/encoding.md as a named test that
//! quotes it, with a positive control.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use keyway::cbor::{CborError, CborErrorKind, DecodeOptions, Item, decode, encode};

fn err(bytes: &[u8], options: &DecodeOptions) -> CborError {
    decode(bytes, options).expect_err("accepted")
}

fn wf(bytes: &[u8]) -> CborError {
    err(bytes, &DecodeOptions::WELL_FORMED)
}

fn det(bytes: &[u8]) -> CborError {
    err(bytes, &DecodeOptions::DETERMINISTIC)
}

fn at(offset: usize, kind: CborErrorKind) -> CborError {
    CborError { offset, kind }
}

/// KW-CBOR-001: "A decoder rejects input that is not well-formed", with the
/// offset of the offending head.
#[test]
fn kw_cbor_001_not_well_formed_input_is_rejected_at_its_head() {
    use CborErrorKind::*;
    assert_eq!(wf(&[0x82, 0x01, 0x19, 0x01]), at(2, Truncated));
    assert_eq!(wf(&[0x82, 0x01, 0x1c]), at(2, ReservedAdditionalInfo(28)));
    assert_eq!(wf(&[0x81, 0x1f]), at(1, IndefiniteNotAllowed(0)));
    assert_eq!(wf(&[0x81, 0xff]), at(1, UnexpectedBreak));
    assert_eq!(wf(&[0xbf, 0x00, 0xff]), at(2, UnexpectedBreak));
    assert_eq!(
        wf(&[0x5f, 0x41, 0x00, 0x61, 0x61, 0xff]),
        at(3, BadStringChunk)
    );
    assert_eq!(wf(&[0x5f, 0x5f, 0xff, 0xff]), at(1, BadStringChunk));
    assert_eq!(wf(&[0xf8, 0x1f]), at(0, BadSimpleValue(31)));
    assert_eq!(wf(&[0x9f, 0x01]), at(2, Truncated));
    assert_eq!(wf(&[0x43, 0x01]), at(0, LengthBeyondInput(3)));
    // Positive control: the same shapes, well-formed.
    for ok in [
        &[0x82, 0x01, 0x19, 0x01, 0x00][..],
        &[0x9f, 0x01, 0xff],
        &[0xf8, 0x20],
        &[0x5f, 0x41, 0x00, 0xff],
    ] {
        decode(ok, &DecodeOptions::WELL_FORMED).unwrap();
    }
}

/// KW-CBOR-002: "Every text string, and every chunk of an indefinite-length
/// text string, is valid UTF-8".
#[test]
fn kw_cbor_002_text_must_be_utf8_chunk_by_chunk() {
    assert_eq!(
        wf(&[0x82, 0x62, 0xc3, 0x28]),
        at(1, CborErrorKind::InvalidUtf8)
    );
    // "ü" split between two chunks: each chunk alone is invalid.
    assert_eq!(
        wf(&[0x7f, 0x61, 0xc3, 0x61, 0xbc, 0xff]),
        at(1, CborErrorKind::InvalidUtf8)
    );
    let whole = decode(&[0x7f, 0x62, 0xc3, 0xbc, 0xff], &DecodeOptions::WELL_FORMED).unwrap();
    assert_eq!(whole, Item::TextChunks(vec!["\u{fc}".into()]));
}

/// KW-CBOR-003: "The input is exactly one data item".
#[test]
fn kw_cbor_003_trailing_bytes_are_rejected() {
    assert_eq!(wf(&[0x01, 0x02]), at(1, CborErrorKind::TrailingBytes));
    assert_eq!(det(&[0x80, 0x80]), at(1, CborErrorKind::TrailingBytes));
    decode(&[0x01], &DecodeOptions::DETERMINISTIC).unwrap();
}

/// KW-CBOR-004: "a declared length longer than the remaining input is
/// rejected before any allocation".
#[test]
fn kw_cbor_004_declared_lengths_do_not_drive_allocation() {
    use CborErrorKind::LengthBeyondInput;
    let huge_string = [0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
    assert_eq!(wf(&huge_string), at(0, LengthBeyondInput(u64::MAX)));
    let huge_array = [0x9b, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(wf(&huge_array), at(0, LengthBeyondInput(0xffff_ffff)));
    let huge_map = [0xba, 0x00, 0x00, 0x00, 0x02, 0x01, 0x02, 0x03];
    assert_eq!(wf(&huge_map), at(0, LengthBeyondInput(2)));
    // Nested arrays each claiming the rest of the input: no quadratic blow-up.
    let mut nested = Vec::new();
    for _ in 0..100 {
        nested.extend_from_slice(&[0x9a, 0x00, 0x0f, 0xff, 0xff]);
    }
    assert!(decode(&nested, &DecodeOptions::WELL_FORMED).is_err());
}

/// KW-CBOR-005: "A decoder bounds the nesting of arrays, maps and tags".
#[test]
fn kw_cbor_005_nesting_is_bounded_without_stack_overflow() {
    let options = DecodeOptions::WELL_FORMED;
    let deep = |n: usize, open: u8| {
        let mut v = vec![open; n];
        v.push(0x00);
        v
    };
    decode(&deep(options.max_depth, 0x81), &options).unwrap();
    assert_eq!(
        wf(&deep(options.max_depth + 1, 0x81)),
        at(128, CborErrorKind::DepthLimit(128))
    );
    // Tags nest too; a million of them is an error, not a crash.
    assert_eq!(
        wf(&deep(1_000_000, 0xc0)),
        at(128, CborErrorKind::DepthLimit(128))
    );
    assert_eq!(
        wf(&deep(1_000_000, 0x9f)),
        at(128, CborErrorKind::DepthLimit(128))
    );
}

/// KW-CBOR-010, KW-CBOR-011: "Integers, lengths, counts and tag numbers use
/// the shortest head that holds them".
#[test]
fn kw_cbor_011_shortest_heads_only() {
    use CborErrorKind::NonShortestArgument;
    for bytes in [
        &[0x18, 0x17][..],
        &[0x19, 0x00, 0xff],
        &[0x1a, 0x00, 0x00, 0xff, 0xff],
        &[0x1b, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff],
        &[0x38, 0x00],
        &[0x58, 0x01, 0x00],
        &[0x98, 0x00],
        &[0xd8, 0x01, 0x00],
    ] {
        assert_eq!(det(bytes), at(0, NonShortestArgument), "{bytes:02x?}");
        decode(bytes, &DecodeOptions::WELL_FORMED).unwrap();
    }
    decode(&[0x18, 0x18], &DecodeOptions::DETERMINISTIC).unwrap();
}

/// KW-CBOR-012: "Strings, arrays and maps have definite lengths."
#[test]
fn kw_cbor_012_definite_lengths_only() {
    for bytes in [
        &[0x5f, 0xff][..],
        &[0x7f, 0xff],
        &[0x9f, 0xff],
        &[0xbf, 0xff],
    ] {
        assert_eq!(det(bytes), at(0, CborErrorKind::IndefiniteLength));
    }
}

/// KW-CBOR-013: "keys … sorted by the bytewise lexicographic order of their
/// deterministic encodings. This is not the length-first order".
#[test]
fn kw_cbor_013_bytewise_key_order_not_length_first() {
    // {100: 0, -1: 0} is bytewise order; {-1: 0, 100: 0} is length-first.
    decode(
        &[0xa2, 0x18, 0x64, 0x00, 0x20, 0x00],
        &DecodeOptions::DETERMINISTIC,
    )
    .unwrap();
    assert_eq!(
        det(&[0xa2, 0x20, 0x00, 0x18, 0x64, 0x00]),
        at(3, CborErrorKind::UnsortedMapKeys)
    );
    // ["aa"] vs false: 0x62 < 0xf4 bytewise, although "aa" is longer.
    decode(
        &[0xa2, 0x62, 0x61, 0x61, 0x00, 0xf4, 0x00],
        &DecodeOptions::DETERMINISTIC,
    )
    .unwrap();
    assert_eq!(
        det(&[0xa2, 0xf4, 0x00, 0x62, 0x61, 0x61, 0x00]),
        at(3, CborErrorKind::UnsortedMapKeys)
    );
    // The encoder agrees.
    let item = Item::map(vec![
        (Item::Negative(0), Item::Unsigned(0)),
        (Item::Unsigned(100), Item::Unsigned(0)),
    ]);
    assert_eq!(
        encode(&item).unwrap(),
        vec![0xa2, 0x18, 0x64, 0x00, 0x20, 0x00]
    );
}

/// KW-CBOR-014: "No two keys of a map have the same encoding."
#[test]
fn kw_cbor_014_duplicate_keys_are_rejected() {
    assert_eq!(
        det(&[0xa2, 0x01, 0x00, 0x01, 0x00]),
        at(3, CborErrorKind::DuplicateMapKey)
    );
    assert_eq!(
        det(&[0xa2, 0x61, 0x61, 0x00, 0x61, 0x61, 0x01]),
        at(4, CborErrorKind::DuplicateMapKey)
    );
}

/// KW-CBOR-015: "A float uses the shortest of half, single and double
/// precision that represents its value exactly …, and a bignum … has no
/// leading zero bytes and does not fit in 64 bits".
#[test]
fn kw_cbor_015_shortest_floats_and_preferred_bignums() {
    use CborErrorKind::{NonPreferredBignum, NonShortestFloat};
    assert_eq!(
        det(&[0xfa, 0x3f, 0xc0, 0x00, 0x00]),
        at(0, NonShortestFloat)
    ); // 1.5
    assert_eq!(
        det(&[0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
        at(0, NonShortestFloat)
    );
    assert_eq!(
        det(&[0xfa, 0x7f, 0xc0, 0x00, 0x00]),
        at(0, NonShortestFloat)
    ); // NaN
    decode(&[0xf9, 0x3e, 0x00], &DecodeOptions::DETERMINISTIC).unwrap();
    decode(
        &[0xfa, 0x47, 0xc3, 0x50, 0x00],
        &DecodeOptions::DETERMINISTIC,
    )
    .unwrap(); // 100000.0
    // A NaN whose payload needs single precision stays single.
    decode(
        &[0xfa, 0x7f, 0x80, 0x00, 0x01],
        &DecodeOptions::DETERMINISTIC,
    )
    .unwrap();

    assert_eq!(det(&[0xc2, 0x41, 0x01]), at(0, NonPreferredBignum));
    assert_eq!(det(&[0xc3, 0x40]), at(0, NonPreferredBignum));
    let mut leading_zero = vec![0xc2, 0x4a, 0x00, 0x01];
    leading_zero.extend_from_slice(&[0; 8]);
    assert_eq!(det(&leading_zero), at(0, NonPreferredBignum));
    let mut big = vec![0xc2, 0x49, 0x01];
    big.extend_from_slice(&[0; 8]);
    decode(&big, &DecodeOptions::DETERMINISTIC).unwrap();
}
