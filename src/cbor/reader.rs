//! A pull reader for schema-driven decoding of deterministically encoded
//! CBOR: the caller asks for the item it expects next and gets it, or a
//! typed error with the absolute byte offset. Nothing is allocated.
//!
//! Every head is checked for core deterministic encoding (RFC 8949 §4.2.1);
//! indefinite lengths are rejected; [`Reader::skip`] validates whole items
//! with the generic decoder in deterministic mode.

use super::decode::{DecodeOptions, decode_prefix, key_order_violation};
use super::error::{CborError, CborErrorKind};
use super::head::{
    Arg, Head, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGATIVE, MAJOR_SIMPLE, MAJOR_TAG,
    MAJOR_TEXT, MAJOR_UNSIGNED, head, major_name,
};

/// An integer map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A non-negative key.
    Unsigned(u64),
    /// The negative key `-1 - n`.
    Negative(u64),
}

/// Remembers the previous key of one map, to enforce bytewise order and
/// uniqueness of keys (RFC 8949 §4.2.1, §5.6).
#[derive(Debug, Default)]
pub struct KeyOrder<'a> {
    previous: Option<&'a [u8]>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    base: usize,
    depth: usize,
    options: DecodeOptions,
}

impl<'a> Reader<'a> {
    /// A reader over `input`; fails if the input exceeds `options.max_input`.
    /// The reader always requires deterministic encoding.
    pub fn new(input: &'a [u8], options: DecodeOptions) -> Result<Self, CborError> {
        if input.len() > options.max_input {
            // KW-LIMIT-001: detected at the first byte beyond the limit.
            return Err(CborError::new(
                options.max_input,
                CborErrorKind::InputTooLarge(input.len()),
            ));
        }
        Ok(Self {
            input,
            pos: 0,
            base: 0,
            depth: 0,
            options: DecodeOptions {
                deterministic: true,
                ..options
            },
        })
    }

    /// Reads a byte string that holds an encoded item (CDDL `bstr .cbor`)
    /// and returns a reader over its content that keeps offsets absolute
    /// and the depth budget. The caller should `finish` that reader.
    pub fn embedded(&mut self) -> Result<Reader<'a>, CborError> {
        let content = self.bytes()?;
        let content_start = self.pos - content.len();
        Ok(Self {
            input: content,
            pos: 0,
            base: self.base + content_start,
            depth: self.depth,
            options: self.options,
        })
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Whether all input has been read.
    pub fn is_at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn error(&self, at: usize, kind: CborErrorKind) -> CborError {
        CborError::new(self.base + at, kind)
    }

    /// Reads one head, checked for shortest form and definite length.
    fn read_head(&mut self) -> Result<(Head, usize), CborError> {
        let start = self.pos;
        let rest = self.rest();
        let (after, h) =
            head(rest).map_err(|e| super::decode::to_error(e, rest.len(), self.base + start))?;
        if h.major != MAJOR_SIMPLE && !h.is_shortest() {
            return Err(self.error(start, CborErrorKind::NonShortestArgument));
        }
        if h.arg == Arg::Indefinite {
            let kind = match h.major {
                MAJOR_UNSIGNED | MAJOR_NEGATIVE | MAJOR_TAG => {
                    CborErrorKind::IndefiniteNotAllowed(h.major)
                }
                MAJOR_SIMPLE => CborErrorKind::UnexpectedBreak,
                _ => CborErrorKind::IndefiniteLength,
            };
            return Err(self.error(start, kind));
        }
        self.pos += rest.len() - after.len();
        Ok((h, start))
    }

    fn expect(&mut self, major: u8, expected: &'static str) -> Result<(u64, usize), CborError> {
        let saved = self.pos;
        let (h, start) = self.read_head()?;
        match h.arg {
            Arg::Value { value, .. } if h.major == major => Ok((value, start)),
            _ => {
                self.pos = saved;
                Err(self.error(
                    start,
                    CborErrorKind::UnexpectedType {
                        expected,
                        found: major_name(h.major),
                    },
                ))
            }
        }
    }

    /// The major type of the next item, if any.
    pub fn peek_major(&self) -> Option<u8> {
        self.rest().first().map(|b| b >> 5)
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_UNSIGNED, "unsigned integer")
            .map(|(v, _)| v)
    }

    /// A byte string, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let (len, start) = self.expect(MAJOR_BYTES, "byte string")?;
        self.take(len, start)
    }

    /// A text string, borrowed from the input.
    pub fn text(&mut self) -> Result<&'a str, CborError> {
        let (len, start) = self.expect(MAJOR_TEXT, "text string")?;
        let bytes = self.take(len, start)?;
        core::str::from_utf8(bytes).map_err(|_| self.error(start, CborErrorKind::InvalidUtf8))
    }

    fn take(&mut self, len: u64, head_start: usize) -> Result<&'a [u8], CborError> {
        let rest = self.rest();
        match usize::try_from(len).ok().and_then(|n| rest.get(..n)) {
            Some(bytes) => {
                self.pos += bytes.len();
                Ok(bytes)
            }
            None => Err(self.error(head_start, CborErrorKind::LengthBeyondInput(len))),
        }
    }

    /// `false` or `true`.
    pub fn bool(&mut self) -> Result<bool, CborError> {
        let saved = self.pos;
        let (h, start) = self.read_head()?;
        match (h.major, h.info) {
            (MAJOR_SIMPLE, 20) => Ok(false),
            (MAJOR_SIMPLE, 21) => Ok(true),
            _ => {
                self.pos = saved;
                Err(self.error(
                    start,
                    CborErrorKind::UnexpectedType {
                        expected: "boolean",
                        found: major_name(h.major),
                    },
                ))
            }
        }
    }

    /// The head of an array: its length. Enters one nesting level; call
    /// [`Reader::leave`] after its items.
    pub fn array(&mut self) -> Result<u64, CborError> {
        let (len, start) = self.expect(MAJOR_ARRAY, "array")?;
        self.enter_container(len, 1, start)?;
        Ok(len)
    }

    /// The head of a map: its number of entries. Enters one nesting level;
    /// call [`Reader::leave`] after its entries.
    pub fn map(&mut self) -> Result<u64, CborError> {
        let (len, start) = self.expect(MAJOR_MAP, "map")?;
        self.enter_container(len, 2, start)?;
        Ok(len)
    }

    fn enter_container(&mut self, len: u64, min_bytes: u64, start: usize) -> Result<(), CborError> {
        if self.depth >= self.options.max_depth {
            return Err(self.error(start, CborErrorKind::DepthLimit(self.options.max_depth)));
        }
        if len > self.options.max_items {
            return Err(self.error(start, CborErrorKind::TooManyItems(len)));
        }
        if len.saturating_mul(min_bytes) > self.rest().len() as u64 {
            return Err(self.error(start, CborErrorKind::LengthBeyondInput(len)));
        }
        self.depth += 1;
        Ok(())
    }

    /// Leaves the array or map entered last.
    pub fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// An integer map key, checked against the previous key of the same map.
    /// Returns the key and its offset.
    pub fn map_key(&mut self, order: &mut KeyOrder<'a>) -> Result<(Key, usize), CborError> {
        let start = self.pos;
        let (h, _) = self.read_head()?;
        let key = match (h.major, h.arg) {
            (MAJOR_UNSIGNED, Arg::Value { value, .. }) => Key::Unsigned(value),
            (MAJOR_NEGATIVE, Arg::Value { value, .. }) => Key::Negative(value),
            _ => {
                return Err(self.error(
                    start,
                    CborErrorKind::UnexpectedType {
                        expected: "integer map key",
                        found: major_name(h.major),
                    },
                ));
            }
        };
        let encoded = self.input.get(start..self.pos).unwrap_or_default();
        if let Some(kind) = key_order_violation(order.previous, encoded) {
            return Err(self.error(start, kind));
        }
        order.previous = Some(encoded);
        Ok((key, self.base + start))
    }

    /// Validates one whole item (deterministic, within the remaining depth
    /// budget) and returns its encoding.
    pub fn skip(&mut self) -> Result<&'a [u8], CborError> {
        let options = DecodeOptions {
            max_depth: self.options.max_depth.saturating_sub(self.depth),
            ..self.options
        };
        let rest = self.rest();
        let (_, used) = decode_prefix(rest, &options, self.offset())?;
        let raw = rest.get(..used).unwrap_or_default();
        self.pos += used;
        Ok(raw)
    }

    /// Fails if any input remains.
    pub fn finish(&self) -> Result<(), CborError> {
        if self.is_at_end() {
            Ok(())
        } else {
            Err(self.error(self.pos, CborErrorKind::TrailingBytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader<'_> {
        Reader::new(bytes, DecodeOptions::DETERMINISTIC).unwrap()
    }

    #[test]
    fn reads_a_map_with_ordered_keys() {
        // {1: h'aa', 2: "b", -1: true}
        let bytes = [0xa3, 0x01, 0x41, 0xaa, 0x02, 0x61, b'b', 0x20, 0xf5];
        let mut r = reader(&bytes);
        let mut order = KeyOrder::default();
        assert_eq!(r.map().unwrap(), 3);
        assert_eq!(r.map_key(&mut order).unwrap(), (Key::Unsigned(1), 1));
        assert_eq!(r.bytes().unwrap(), &[0xaa]);
        assert_eq!(r.map_key(&mut order).unwrap(), (Key::Unsigned(2), 4));
        assert_eq!(r.text().unwrap(), "b");
        assert_eq!(r.map_key(&mut order).unwrap(), (Key::Negative(0), 7));
        assert!(r.bool().unwrap());
        r.leave();
        r.finish().unwrap();
    }

    #[test]
    fn rejects_unsorted_and_duplicate_keys_at_the_key() {
        let bytes = [0xa2, 0x02, 0x00, 0x01, 0x00];
        let mut r = reader(&bytes);
        let mut order = KeyOrder::default();
        r.map().unwrap();
        r.map_key(&mut order).unwrap();
        r.uint().unwrap();
        let err = r.map_key(&mut order).unwrap_err();
        assert_eq!(err, CborError::new(3, CborErrorKind::UnsortedMapKeys));

        let bytes = [0xa2, 0x01, 0x00, 0x01, 0x00];
        let mut r = reader(&bytes);
        let mut order = KeyOrder::default();
        r.map().unwrap();
        r.map_key(&mut order).unwrap();
        r.uint().unwrap();
        let err = r.map_key(&mut order).unwrap_err();
        assert_eq!(err, CborError::new(3, CborErrorKind::DuplicateMapKey));
    }

    #[test]
    fn wrong_type_leaves_the_position_unchanged() {
        let bytes = [0x61, b'a'];
        let mut r = reader(&bytes);
        let err = r.uint().unwrap_err();
        assert_eq!(err.offset, 0);
        assert!(matches!(err.kind, CborErrorKind::UnexpectedType { .. }));
        assert_eq!(r.text().unwrap(), "a");
    }

    #[test]
    fn non_shortest_and_indefinite_heads_are_rejected() {
        assert_eq!(
            reader(&[0x18, 0x01]).uint().unwrap_err().kind,
            CborErrorKind::NonShortestArgument
        );
        assert_eq!(
            reader(&[0x9f, 0xff]).array().unwrap_err().kind,
            CborErrorKind::IndefiniteLength
        );
    }

    #[test]
    fn declared_lengths_beyond_the_input_fail_before_any_read() {
        let err = reader(&[0x9a, 0xff, 0xff, 0xff, 0xff]).array().unwrap_err();
        assert_eq!(err.kind, CborErrorKind::LengthBeyondInput(0xffff_ffff));
        let err = reader(&[0x5a, 0xff, 0xff, 0xff, 0xff]).bytes().unwrap_err();
        assert_eq!(err.kind, CborErrorKind::LengthBeyondInput(0xffff_ffff));
    }

    #[test]
    fn embedded_readers_report_absolute_offsets() {
        // h'<< 18 01 >>' at offset 1 inside an array.
        let bytes = [0x81, 0x42, 0x18, 0x01];
        let mut r = reader(&bytes);
        r.array().unwrap();
        let mut nested = r.embedded().unwrap();
        let err = nested.uint().unwrap_err();
        assert_eq!(err, CborError::new(2, CborErrorKind::NonShortestArgument));
    }

    #[test]
    fn skip_validates_the_whole_item() {
        let bytes = [0x82, 0x01, 0xa2, 0x02, 0x00, 0x01, 0x00];
        let mut r = reader(&bytes);
        r.array().unwrap();
        assert_eq!(r.skip().unwrap(), &[0x01]);
        let err = r.skip().unwrap_err();
        assert_eq!(err, CborError::new(5, CborErrorKind::UnsortedMapKeys));
    }
}
