//! The deterministic encoder (RFC 8949 §4.2.1): shortest heads, definite
//! lengths, map keys sorted bytewise by their encodings, the shortest float
//! that keeps the value, bignums in preferred serialization.
//!
//! The free functions write single heads and scalars; the wire layer uses
//! them directly and writes map keys in ascending order itself.

use super::error::EncodeError;
use super::float::{Float, FloatWidth};
use super::head::{
    MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGATIVE, MAJOR_SIMPLE, MAJOR_TAG, MAJOR_TEXT,
    MAJOR_UNSIGNED,
};
use super::item::Item;

/// Writes a head with the shortest argument encoding.
pub fn write_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let m = major << 5;
    match argument {
        0..=23 => out.push(m | argument as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, argument as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(argument as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(argument as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&argument.to_be_bytes());
        }
    }
}

/// An unsigned integer.
pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    write_head(out, MAJOR_UNSIGNED, value);
}

/// The negative integer `-1 - n`.
pub fn write_nint(out: &mut Vec<u8>, n: u64) {
    write_head(out, MAJOR_NEGATIVE, n);
}

/// A byte string.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_head(out, MAJOR_BYTES, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A text string.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    write_head(out, MAJOR_TEXT, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// The head of an array of `len` items.
pub fn write_array_header(out: &mut Vec<u8>, len: u64) {
    write_head(out, MAJOR_ARRAY, len);
}

/// The head of a map of `len` entries.
pub fn write_map_header(out: &mut Vec<u8>, len: u64) {
    write_head(out, MAJOR_MAP, len);
}

/// `false` or `true`.
pub fn write_bool(out: &mut Vec<u8>, value: bool) {
    out.push(if value { 0xf5 } else { 0xf4 });
}

/// A float in the shortest width that represents it exactly.
pub fn write_float(out: &mut Vec<u8>, value: Float) {
    match value.shortest() {
        FloatWidth::Half(h) => {
            out.push(0xf9);
            out.extend_from_slice(&h.to_be_bytes());
        }
        FloatWidth::Single(s) => {
            out.push(0xfa);
            out.extend_from_slice(&s.to_be_bytes());
        }
        FloatWidth::Double(d) => {
            out.push(0xfb);
            out.extend_from_slice(&d.to_be_bytes());
        }
    }
}

/// Encodes any item deterministically. Indefinite-length items become
/// definite, map entries are sorted, and bignums that fit an integer become
/// integers. Fails only when a map has two keys with the same encoding.
pub fn encode(item: &Item<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(&mut out, item)?;
    Ok(out)
}

/// [`encode`], appending to `out`.
pub fn encode_into(out: &mut Vec<u8>, item: &Item<'_>) -> Result<(), EncodeError> {
    match item {
        Item::Unsigned(v) => write_uint(out, *v),
        Item::Negative(n) => write_nint(out, *n),
        Item::Bytes(b) => write_bytes(out, b),
        Item::BytesChunks(chunks) => write_bytes(out, &chunks.concat()),
        Item::Text(t) => write_text(out, t),
        Item::TextChunks(chunks) => write_text(out, &chunks.concat()),
        Item::Array { items, .. } => {
            write_array_header(out, items.len() as u64);
            for item in items {
                encode_into(out, item)?;
            }
        }
        Item::Map { entries, .. } => {
            let mut encoded = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let mut k = Vec::new();
                encode_into(&mut k, key)?;
                let mut v = Vec::new();
                encode_into(&mut v, value)?;
                encoded.push((k, v));
            }
            encoded.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if encoded
                .windows(2)
                .any(|w| matches!(w, [a, b] if a.0 == b.0))
            {
                return Err(EncodeError::DuplicateMapKey);
            }
            write_map_header(out, encoded.len() as u64);
            for (k, v) in encoded {
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
            }
        }
        Item::Tag(tag @ (2 | 3), content) if bignum_bytes(content).is_some() => {
            let bytes = bignum_bytes(content).unwrap_or_default();
            write_bignum(out, *tag, &bytes);
        }
        Item::Tag(tag, content) => {
            write_head(out, MAJOR_TAG, *tag);
            encode_into(out, content)?;
        }
        Item::Bool(b) => write_bool(out, *b),
        Item::Null => out.push(0xf6),
        Item::Undefined => out.push(0xf7),
        Item::Simple(s) => write_head(out, MAJOR_SIMPLE, u64::from(s.value())),
        Item::Float(f) => write_float(out, *f),
    }
    Ok(())
}

fn bignum_bytes(content: &Item<'_>) -> Option<Vec<u8>> {
    match content {
        Item::Bytes(b) => Some(b.to_vec()),
        Item::BytesChunks(chunks) => Some(chunks.concat()),
        _ => None,
    }
}

/// RFC 8949 §3.4.3 preferred serialization: no leading zeros, and an
/// integer head when the value fits 64 bits.
fn write_bignum(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    let first_significant = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let magnitude = bytes.get(first_significant..).unwrap_or_default();
    if magnitude.len() <= 8 {
        let value = magnitude
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let major = if tag == 2 {
            MAJOR_UNSIGNED
        } else {
            MAJOR_NEGATIVE
        };
        write_head(out, major, value);
    } else {
        write_head(out, MAJOR_TAG, tag);
        write_bytes(out, magnitude);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn heads_use_the_shortest_argument() {
        let cases: [(u64, &str); 8] = [
            (0, "00"),
            (23, "17"),
            (24, "1818"),
            (255, "18ff"),
            (256, "190100"),
            (65536, "1a00010000"),
            (u64::from(u32::MAX), "1affffffff"),
            (u64::from(u32::MAX) + 1, "1b0000000100000000"),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_uint(&mut out, value);
            assert_eq!(hex(&out), expected);
        }
    }

    #[test]
    fn map_keys_are_sorted_bytewise_not_length_first() {
        // RFC 8949 §4.2.1 vs §4.2.3: 100 (0x1864) sorts before -1 (0x20).
        let item = Item::map(vec![
            (Item::Negative(0), Item::Unsigned(1)),
            (Item::Unsigned(100), Item::Unsigned(2)),
        ]);
        assert_eq!(hex(&encode(&item).unwrap()), "a21864022001");
    }

    #[test]
    fn duplicate_keys_cannot_be_encoded() {
        let item = Item::map(vec![
            (Item::text("a"), Item::Unsigned(1)),
            (Item::TextChunks(vec!["a".into()]), Item::Unsigned(2)),
        ]);
        assert_eq!(encode(&item), Err(EncodeError::DuplicateMapKey));
    }

    #[test]
    fn bignums_take_their_preferred_form() {
        let small = Item::Tag(2, Box::new(Item::bytes(vec![0u8, 0, 1, 0])));
        assert_eq!(hex(&encode(&small).unwrap()), "190100");
        let negative = Item::Tag(3, Box::new(Item::bytes(vec![0u8])));
        assert_eq!(hex(&encode(&negative).unwrap()), "20");
        let big = Item::Tag(
            2,
            Box::new(Item::bytes(vec![0u8, 1, 0, 0, 0, 0, 0, 0, 0, 0])),
        );
        assert_eq!(hex(&encode(&big).unwrap()), "c249010000000000000000");
    }

    #[test]
    fn indefinite_items_become_definite() {
        let item = Item::Array {
            items: vec![Item::BytesChunks(vec![vec![1u8].into(), vec![2u8].into()])],
            indefinite: true,
        };
        assert_eq!(hex(&encode(&item).unwrap()), "81420102");
    }
}
