//! How each field type is read from, written to and described in CBOR, and
//! the bounded containers that carry the CDDL size constraints.

use std::ops::Deref;

use super::describe::Node;
use super::error::{WireError, WireErrorKind};
use crate::cbor::{self, Reader};

/// A value that can be a field of a Keyway message.
pub trait WireValue: Sized {
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError>;
    /// Appends its deterministic encoding.
    fn encode(&self, out: &mut Vec<u8>);
    /// An annotated view for diagnostic output.
    fn describe(&self) -> Node;
}

impl WireValue for u64 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(r.uint()?)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_uint(out, *self);
    }
    fn describe(&self) -> Node {
        Node::Uint(*self)
    }
}

impl WireValue for bool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(r.bool()?)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_bool(out, *self);
    }
    fn describe(&self) -> Node {
        Node::Bool(*self)
    }
}

pub(crate) fn bad_length(offset: usize, actual: usize, min: usize, max: usize) -> WireError {
    WireError::new(offset, WireErrorKind::BadLength { actual, min, max })
}

/// Reads a byte string of exactly `N` bytes.
pub(crate) fn decode_fixed<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], WireError> {
    let at = r.offset();
    let bytes = r.bytes()?;
    bytes
        .try_into()
        .map_err(|_| bad_length(at, bytes.len(), N, N))
}

/// A byte string of exactly `N` bytes (CDDL `bstr .size N`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fixed<const N: usize>(pub [u8; N]);

impl<const N: usize> Fixed<N> {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> core::fmt::Debug for Fixed<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "h'{}'", cbor::hex(&self.0))
    }
}

impl<const N: usize> From<[u8; N]> for Fixed<N> {
    fn from(bytes: [u8; N]) -> Self {
        Self(bytes)
    }
}

impl<const N: usize> WireValue for Fixed<N> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        decode_fixed(r).map(Self)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_bytes(out, &self.0);
    }
    fn describe(&self) -> Node {
        Node::Bytes(self.0.to_vec())
    }
}

/// A byte string of `MIN..=MAX` bytes (CDDL `bstr .size (MIN..MAX)`).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes<const MIN: usize, const MAX: usize>(pub(crate) Vec<u8>);

impl<const MIN: usize, const MAX: usize> Bytes<MIN, MAX> {
    /// `None` when the length is out of bounds.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (MIN..=MAX).contains(&bytes.len()).then_some(Self(bytes))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The owned bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl<const MIN: usize, const MAX: usize> Deref for Bytes<MIN, MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> core::fmt::Debug for Bytes<MIN, MAX> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "h'{}'", cbor::hex(&self.0))
    }
}

impl<const MIN: usize, const MAX: usize> WireValue for Bytes<MIN, MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let bytes = r.bytes()?;
        Self::new(bytes.to_vec()).ok_or_else(|| bad_length(at, bytes.len(), MIN, MAX))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_bytes(out, &self.0);
    }
    fn describe(&self) -> Node {
        Node::Bytes(self.0.clone())
    }
}

/// A text string of at most `MAX` bytes (CDDL `tstr .size (0..MAX)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Text<const MAX: usize>(pub(crate) String);

impl<const MAX: usize> Text<MAX> {
    /// `None` when longer than `MAX` bytes.
    pub fn new(text: impl Into<String>) -> Option<Self> {
        let text = text.into();
        (text.len() <= MAX).then_some(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Deref for Text<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> WireValue for Text<MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let text = r.text()?;
        Self::new(text).ok_or_else(|| bad_length(at, text.len(), 0, MAX))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_text_string(out, &self.0);
    }
    fn describe(&self) -> Node {
        Node::Text(self.0.clone())
    }
}

/// An array of `MIN..=MAX` values (CDDL `[MIN*MAX T]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct List<T, const MIN: usize, const MAX: usize>(pub(crate) Vec<T>);

impl<T, const MIN: usize, const MAX: usize> List<T, MIN, MAX> {
    /// `None` when the number of items is out of bounds.
    pub fn new(items: Vec<T>) -> Option<Self> {
        (MIN..=MAX).contains(&items.len()).then_some(Self(items))
    }

    /// The items.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T, const MIN: usize, const MAX: usize> Deref for List<T, MIN, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: WireValue, const MIN: usize, const MAX: usize> WireValue for List<T, MIN, MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let len = r.array()?;
        let count = usize::try_from(len).unwrap_or(usize::MAX);
        if !(MIN..=MAX).contains(&count) {
            return Err(bad_length(at, count, MIN, MAX));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::decode(r)?);
        }
        r.leave();
        Ok(Self(items))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_array_header(out, self.0.len() as u64);
        for item in &self.0 {
            item.encode(out);
        }
    }
    fn describe(&self) -> Node {
        Node::Array(self.0.iter().map(WireValue::describe).collect())
    }
}

/// An unsigned integer of at most `MAX` (CDDL `uint .le MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UpTo<const MAX: u64>(pub(crate) u64);

impl<const MAX: u64> UpTo<MAX> {
    /// `None` when above `MAX`.
    pub fn new(value: u64) -> Option<Self> {
        (value <= MAX).then_some(Self(value))
    }

    /// The value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<const MAX: u64> WireValue for UpTo<MAX> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let value = r.uint()?;
        Self::new(value)
            .ok_or_else(|| WireError::new(at, WireErrorKind::OutOfRange { value, max: MAX }))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_uint(out, self.0);
    }
    fn describe(&self) -> Node {
        Node::Uint(self.0)
    }
}

/// A point in time: whole seconds since 1970-01-01T00:00:00Z, leap seconds
/// not counted (KW-WIRE-030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Time(pub u64);

impl WireValue for Time {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self(r.uint()?))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_uint(out, self.0);
    }
    fn describe(&self) -> Node {
        Node::Time(self.0)
    }
}
