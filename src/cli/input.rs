//! Reading a command's input: a file or standard input, binary or hex text,
//! never more than a fixed number of bytes.

use std::io::Read;

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
    /// More input than the limit.
    #[error("input exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// A character that is neither a hex digit nor whitespace.
    #[error("invalid hex digit {found:?} at character {at}")]
    BadHexDigit {
        /// The character.
        found: char,
        /// Its index among the characters of the input.
        at: usize,
    },
    /// An odd number of hex digits.
    #[error("odd number of hex digits")]
    OddHexLength,
}

/// Reads all of `path` (`-` for standard input), failing beyond `limit` bytes.
pub fn read_limited(path: &str, limit: usize) -> Result<Vec<u8>, InputError> {
    let io_error = |source| InputError::Io {
        path: path.to_owned(),
        source,
    };
    let mut data = Vec::new();
    // One byte more than the limit tells "exactly at" from "beyond".
    let cap = limit as u64 + 1;
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
    if data.len() > limit {
        return Err(InputError::TooLarge(limit));
    }
    Ok(data)
}

/// Hex text to bytes; ASCII whitespace anywhere is ignored.
pub fn parse_hex(text: &[u8]) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    for (at, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => {
                return Err(InputError::BadHexDigit {
                    found: char::from(c),
                    at,
                });
            }
        };
        match high.take() {
            Some(h) => out.push((h << 4) | nibble),
            None => high = Some(nibble),
        }
    }
    if high.is_some() {
        return Err(InputError::OddHexLength);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ignores_whitespace_and_rejects_the_rest() {
        assert_eq!(parse_hex(b" 0a FF\n10\t").unwrap(), vec![0x0a, 0xff, 0x10]);
        assert!(matches!(
            parse_hex(b"0g"),
            Err(InputError::BadHexDigit { found: 'g', at: 1 })
        ));
        assert!(matches!(parse_hex(b"abc"), Err(InputError::OddHexLength)));
        assert!(matches!(
            parse_hex("é".as_bytes()),
            Err(InputError::BadHexDigit { at: 0, .. })
        ));
    }
}
