//! RFC 8949 Appendix A (examples of encoded items) and Appendix F
//! (not-well-formed items) as table-driven tests. KW-CBOR-001, KW-CBOR-002,
//! KW-CBOR-010.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use keyway::cbor::{CborErrorClass, DecodeOptions, decode, encode, to_diag};
use support::rfc8949::{APPENDIX_A, APPENDIX_F, data_lines, unhex};

#[test]
fn appendix_a_examples_print_their_diagnostic_notation() {
    let mut count = 0;
    for line in data_lines(APPENDIX_A) {
        let (hex, expected) = line.split_once('\t').unwrap();
        let bytes = unhex(hex);
        let item =
            decode(&bytes, &DecodeOptions::WELL_FORMED).unwrap_or_else(|e| panic!("{hex}: {e}"));
        assert_eq!(to_diag(&item), expected, "{hex}");
        count += 1;
    }
    assert_eq!(count, 81, "RFC 8949 Appendix A has 81 examples");
}

/// KW-CBOR-010: an example passes the deterministic check exactly when our
/// deterministic encoder reproduces it byte for byte.
#[test]
fn appendix_a_examples_are_deterministic_iff_they_reencode_identically() {
    let mut deterministic = 0;
    for line in data_lines(APPENDIX_A) {
        let (hex, _) = line.split_once('\t').unwrap();
        let bytes = unhex(hex);
        let item = decode(&bytes, &DecodeOptions::WELL_FORMED).unwrap();
        let canonical = encode(&item).unwrap();
        match decode(&bytes, &DecodeOptions::DETERMINISTIC) {
            Ok(strict) => {
                assert_eq!(strict, item, "{hex}");
                assert_eq!(canonical, bytes, "{hex} accepted but not canonical");
                deterministic += 1;
            }
            Err(e) => {
                assert_eq!(
                    e.kind.class(),
                    CborErrorClass::NotDeterministic,
                    "{hex}: {e}"
                );
                assert_ne!(canonical, bytes, "{hex} rejected but canonical");
                // The canonical form of a rejected example is itself accepted.
                decode(&canonical, &DecodeOptions::DETERMINISTIC).unwrap();
            }
        }
    }
    // 11 examples use indefinite lengths; 6 encode Infinity or NaN wider
    // than half precision.
    assert_eq!(deterministic, 81 - 11 - 6);
}

#[test]
fn appendix_f_examples_are_not_well_formed() {
    let mut count = 0;
    for line in data_lines(APPENDIX_F) {
        let bytes = unhex(line);
        for options in [DecodeOptions::WELL_FORMED, DecodeOptions::DETERMINISTIC] {
            let err = decode(&bytes, &options).expect_err(line);
            // The deterministic profile may see a determinism violation first
            // (e.g. an indefinite length that is also unterminated).
            let allowed: &[CborErrorClass] = if options.deterministic {
                &[CborErrorClass::Malformed, CborErrorClass::NotDeterministic]
            } else {
                &[CborErrorClass::Malformed]
            };
            assert!(allowed.contains(&err.kind.class()), "{line}: {err}");
            assert!(err.offset <= bytes.len(), "{line}: offset {}", err.offset);
        }
        count += 1;
    }
    assert_eq!(count, 94, "RFC 8949 Appendix F.1 lists 94 examples");
}
