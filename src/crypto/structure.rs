//! The structured inputs of every construction: `cbor([label, parts…])`
//! (spec/crypto.md §1), and the labels, in one place.

use crate::cbor;

pub const KID: &str = "keyway-v1 kid";
pub const CERT: &str = "keyway-v1 cert";
pub const ATTEST: &str = "keyway-v1 attest";
pub const CLIENT_KEY: &[u8] = b"keyway-v1 client key";
pub const AUTH: &str = "keyway-v1 auth";
pub const AUTH_MASK: &str = "keyway-v1 auth mask";
pub const CSR: &str = "keyway-v1 csr";
pub const KX_POP: &str = "keyway-v1 kx-pop";
pub const CHALLENGE: &str = "keyway-v1 challenge";
pub const CERT_POP: &str = "keyway-v1 cert-pop";
pub const BODY: &str = "keyway-v1 body";
pub const CONTENT: &str = "keyway-v1 content";
pub const KEY_COMMIT: &str = "keyway-v1 key commit";
pub const SEAL: &str = "keyway-v1 seal";
pub const EDIT: &str = "keyway-v1 edit";
pub const KEK: &str = "keyway-v1 kek";
pub const WRAP: &[u8] = b"keyway-v1 wrap";
pub const MSG: &str = "keyway-v1 msg";
pub const REKEY: &str = "keyway-v1 rekey";
pub const MEDIA: &str = "keyway-v1 media";
pub const MSG_SIG: &str = "keyway-v1 msg-sig";
pub const READER_KEY: &str = "keyway-v1 reader key";
pub const RECORD_LISTING_AD: &str = "keyway-v1 record-listing";
pub const RECORD_DATA_AD: &str = "keyway-v1 record-data";

/// One element of a structured input.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// A text string (accounts, domains).
    Text(&'a str),
    /// A byte string (keys, identifiers, digests, encodings).
    Bytes(&'a [u8]),
    /// An unsigned integer (codes, counters).
    Uint(u64),
    /// `null`, for an absent optional value.
    Null,
    /// `true` or `false` (a chunk's `more`, KW-CRYPTO-070).
    Bool(bool),
    /// An item already encoded deterministically (the permission map).
    Encoded(&'a [u8]),
}

/// `cbor([label, parts…])`.
pub fn structure(label: &str, parts: &[Part<'_>]) -> Vec<u8> {
    // The longest structure on a hot path (a KEK info) is 119 bytes.
    let mut out = Vec::with_capacity(128);
    cbor::write_array_header(&mut out, 1 + parts.len() as u64);
    cbor::write_text_string(&mut out, label);
    for part in parts {
        match part {
            Part::Text(t) => cbor::write_text_string(&mut out, t),
            Part::Bytes(b) => cbor::write_bytes(&mut out, b),
            Part::Uint(n) => cbor::write_uint(&mut out, *n),
            Part::Null => out.push(0xf6),
            Part::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Part::Encoded(item) => out.extend_from_slice(item),
        }
    }
    out
}

/// An optional byte string as a part.
pub fn opt_bytes(b: Option<&[u8]>) -> Part<'_> {
    b.map_or(Part::Null, Part::Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_are_deterministic_cbor_arrays() {
        let s = structure(
            KID,
            &[
                Part::Uint(1),
                Part::Bytes(&[0xaa]),
                Part::Null,
                Part::Bool(true),
                Part::Bool(false),
            ],
        );
        let item = cbor::decode(&s, &cbor::DecodeOptions::DETERMINISTIC).unwrap();
        assert_eq!(
            cbor::to_diag(&item),
            r#"["keyway-v1 kid", 1, h'aa', null, true, false]"#
        );
    }
}
