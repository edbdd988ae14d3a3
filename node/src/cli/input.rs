//! Reading a command's input: a file or standard input, binary or hex text,
//! never more than a fixed number of bytes.
//!
//! Every error about the input's content carries a byte offset. Offsets of
//! hex-text errors count bytes of the text as read (not characters, not
//! digits), so they point into the file the user has; offsets of the size
//! limit count bytes of the data, as decode errors do.

use std::io::Read;

/// Hex text may hold two digits per byte plus generous whitespace.
pub const HEX_TEXT_FACTOR: usize = 4;

/// Why input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file or stream could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: String,
        /// Why not.
        source: std::io::Error,
    },
    /// More data than the limit: the byte at offset `limit` is one too many.
    #[error("input exceeds the limit of {limit} bytes at byte {limit}")]
    TooLarge {
        /// The largest number of bytes accepted.
        limit: usize,
    },
    /// More hex text than [`HEX_TEXT_FACTOR`] times the data limit, with
    /// no error in the part that was read.
    #[error("hex text exceeds the limit of {limit} bytes at byte {limit} of the hex text")]
    HexTextTooLarge {
        /// The largest number of bytes of text accepted.
        limit: usize,
    },
    /// A byte that is neither a hex digit nor ASCII whitespace. It is shown
    /// as a number because it may be part of a multi-byte character or a
    /// control character that a terminal would not show.
    #[error("invalid hex digit {} at byte {at} of the hex text", ShownByte(*.found))]
    BadHexDigit {
        /// The byte.
        found: u8,
        /// Its offset in the hex text.
        at: usize,
    },
    /// An odd number of hex digits: the last one has no pair.
    #[error(
        "odd number of hex digits ({digits}): the last, at byte {at} of the hex text, has no pair"
    )]
    OddHexLength {
        /// How many digits the text holds.
        digits: usize,
        /// Offset in the hex text of the unpaired digit.
        at: usize,
    },
}

/// `0x67 ('g')` for a printable ASCII byte, `0xc3` for any other.
struct ShownByte(u8);

impl std::fmt::Display for ShownByte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02x}", self.0)?;
        if self.0.is_ascii_graphic() {
            write!(f, " ('{}')", char::from(self.0))?;
        }
        Ok(())
    }
}

/// Reads `path` (`-` for standard input) up to `limit + 1` bytes: one byte
/// more than the limit tells "exactly at" from "beyond" without reading an
/// endless stream.
fn read_prefix(path: &str, limit: usize) -> Result<Vec<u8>, InputError> {
    let io_error = |source| InputError::Io {
        path: path.to_owned(),
        source,
    };
    let mut data = Vec::new();
    let cap = (limit as u64).saturating_add(1);
    if path == "-" {
        std::io::stdin()
            .lock()
            .take(cap)
            .read_to_end(&mut data)
            .map_err(io_error)?;
    } else {
        std::fs::File::open(path)
            .map_err(io_error)?
            .take(cap)
            .read_to_end(&mut data)
            .map_err(io_error)?;
    }
    Ok(data)
}

/// Reads all of `path` (`-` for standard input), failing beyond `limit` bytes.
pub fn read_limited(path: &str, limit: usize) -> Result<Vec<u8>, InputError> {
    let data = read_prefix(path, limit)?;
    if data.len() > limit {
        return Err(InputError::TooLarge { limit });
    }
    Ok(data)
}

/// Reads hex text from `path` (`-` for standard input) and decodes it,
/// failing beyond `limit` bytes of data or [`HEX_TEXT_FACTOR`] times that
/// of text. Of several failures the first in the text is reported, so an
/// oversize text with a bad digit early on is reported for the digit.
pub fn read_hex_limited(path: &str, limit: usize) -> Result<Vec<u8>, InputError> {
    let text_limit = limit.saturating_mul(HEX_TEXT_FACTOR);
    let text = read_prefix(path, text_limit)?;
    match text.get(..text_limit) {
        Some(head) if text.len() > text_limit => {
            // The text is cut short here, so an unpaired last digit is no
            // error of the input: only a bad digit or too much data is.
            hex_digits(head, limit)?;
            Err(InputError::HexTextTooLarge { limit: text_limit })
        }
        _ => parse_hex_limited(&text, limit),
    }
}

/// Hex text to bytes; ASCII whitespace anywhere is ignored.
pub fn parse_hex(text: &[u8]) -> Result<Vec<u8>, InputError> {
    parse_hex_limited(text, usize::MAX)
}

/// [`parse_hex`], failing as soon as the data would exceed `limit` bytes.
pub fn parse_hex_limited(text: &[u8], limit: usize) -> Result<Vec<u8>, InputError> {
    let digits = hex_digits(text, limit)?;
    match digits.unpaired {
        Some(at) => Err(InputError::OddHexLength {
            digits: digits.count,
            at,
        }),
        None => Ok(digits.bytes),
    }
}

/// The bytes of hex text, how many digits it held, and the offset of a
/// last digit left without a pair.
struct HexDigits {
    bytes: Vec<u8>,
    count: usize,
    unpaired: Option<usize>,
}

fn hex_digits(text: &[u8], limit: usize) -> Result<HexDigits, InputError> {
    // Sized by the text, which is bounded by the caller, not by a claim in it.
    let mut bytes = Vec::with_capacity((text.len() / 2).min(limit));
    let mut count = 0;
    let mut high: Option<(u8, usize)> = None;
    for (at, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(InputError::BadHexDigit { found: c, at }),
        };
        count += 1;
        match high.take() {
            Some((h, _)) => {
                if bytes.len() == limit {
                    return Err(InputError::TooLarge { limit });
                }
                bytes.push((h << 4) | nibble);
            }
            None => high = Some((nibble, at)),
        }
    }
    Ok(HexDigits {
        bytes,
        count,
        unpaired: high.map(|(_, at)| at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ignores_whitespace_and_rejects_the_rest() {
        assert_eq!(parse_hex(b" 0a FF\n10\t").unwrap(), vec![0x0a, 0xff, 0x10]);
        assert!(matches!(
            parse_hex(b"0g"),
            Err(InputError::BadHexDigit { found: b'g', at: 1 })
        ));
    }

    #[test]
    fn hex_errors_give_the_offending_byte_and_its_byte_offset() {
        // "é" is two bytes: the first is reported, as a number.
        let e = parse_hex(" 00é".as_bytes()).unwrap_err();
        assert!(matches!(e, InputError::BadHexDigit { found: 0xc3, at: 3 }));
        assert_eq!(
            e.to_string(),
            "invalid hex digit 0xc3 at byte 3 of the hex text"
        );
        // A byte offset, not a character index: "é" counts two.
        let e = parse_hex("é".as_bytes()).unwrap_err();
        assert!(matches!(e, InputError::BadHexDigit { found: 0xc3, at: 0 }));
        assert_eq!(
            parse_hex(b"0g").unwrap_err().to_string(),
            "invalid hex digit 0x67 ('g') at byte 1 of the hex text"
        );
        let e = parse_hex(b"12 3\n").unwrap_err();
        assert!(matches!(e, InputError::OddHexLength { digits: 3, at: 3 }));
        assert_eq!(
            e.to_string(),
            "odd number of hex digits (3): the last, at byte 3 of the hex text, has no pair"
        );
    }

    #[test]
    fn hex_data_beyond_the_limit_fails_at_the_first_byte_too_many() {
        assert_eq!(parse_hex_limited(b"0102", 2).unwrap(), vec![1, 2]);
        let e = parse_hex_limited(b"010203 zz", 2).unwrap_err();
        assert!(matches!(e, InputError::TooLarge { limit: 2 }));
        assert_eq!(
            e.to_string(),
            "input exceeds the limit of 2 bytes at byte 2"
        );
        // A bad digit before the limit is reached comes first.
        assert!(matches!(
            parse_hex_limited(b"01zz0203", 2),
            Err(InputError::BadHexDigit { found: b'z', at: 2 })
        ));
    }
}
