//! Errors of the CBOR layer. Every error carries the byte offset of the
//! offending data item (or of the byte that could not be read).

use thiserror::Error;

/// CBOR input was rejected at `offset` because of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{kind} at byte {offset}")]
pub struct CborError {
    /// Byte offset, from the start of the outermost input, of the head (or
    /// byte) at which the problem was detected.
    pub offset: usize,
    /// What was wrong.
    pub kind: CborErrorKind,
}

impl CborError {
    pub(crate) fn new(offset: usize, kind: CborErrorKind) -> Self {
        Self { offset, kind }
    }
}

/// The reason CBOR input was rejected.
///
/// Variants are grouped by [`CborErrorClass`]: not well-formed (RFC 8949 §3,
/// Appendix F), beyond a configured limit, well-formed but not
/// deterministically encoded (RFC 8949 §4.2.1), or of the wrong type for a
/// typed reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CborErrorKind {
    /// The input ends inside a head or before a declared item is complete.
    #[error("unexpected end of input")]
    Truncated,
    /// A string's declared length is longer than the input that remains.
    #[error("declared length {0} exceeds the remaining input")]
    LengthBeyondInput(u64),
    /// Additional information 28, 29 or 30 (reserved).
    #[error("reserved additional information value {0}")]
    ReservedAdditionalInfo(u8),
    /// Additional information 31 on major type 0, 1 or 6.
    #[error("indefinite length is not defined for major type {0}")]
    IndefiniteNotAllowed(u8),
    /// The break stop code (0xff) where no indefinite-length item is open.
    #[error("break stop code outside an indefinite-length item")]
    UnexpectedBreak,
    /// A chunk of an indefinite-length string that is not a definite-length
    /// string of the same major type.
    #[error("indefinite-length string chunk is not a definite-length string of the same type")]
    BadStringChunk,
    /// A two-byte simple value below 32 (RFC 8949 §3.3).
    #[error("two-byte encoding of simple value {0} (must be 32 or more)")]
    BadSimpleValue(u8),
    /// A text string (or chunk) that is not valid UTF-8.
    #[error("text string is not valid UTF-8")]
    InvalidUtf8,
    /// Bytes remain after the single top-level data item.
    #[error("trailing bytes after the data item")]
    TrailingBytes,

    /// Nesting of arrays, maps and tags deeper than the limit.
    #[error("nesting deeper than the limit of {0}")]
    DepthLimit(usize),
    /// Input longer than the limit.
    #[error("input of {0} bytes exceeds the size limit")]
    InputTooLarge(usize),
    /// An array or map that declares more entries than the limit allows.
    #[error("collection of {0} entries exceeds the limit")]
    TooManyItems(u64),

    /// An argument (integer, length or tag number) not in its shortest form.
    #[error("argument not in its shortest form")]
    NonShortestArgument,
    /// An indefinite-length string, array or map.
    #[error("indefinite-length item")]
    IndefiniteLength,
    /// Map keys not in bytewise lexicographic order of their encodings.
    #[error("map keys not in bytewise order of their encodings")]
    UnsortedMapKeys,
    /// The same map key twice.
    #[error("duplicate map key")]
    DuplicateMapKey,
    /// A float that a shorter float encoding would represent exactly.
    #[error("floating-point value not in its shortest form")]
    NonShortestFloat,
    /// A bignum with leading zero bytes, or one that fits major type 0 or 1.
    #[error("bignum not in preferred serialization")]
    NonPreferredBignum,

    /// A typed reader expected one kind of item and found another.
    #[error("expected {expected}, found {found}")]
    UnexpectedType {
        /// What the schema asked for.
        expected: &'static str,
        /// What the input held.
        found: &'static str,
    },
}

/// The four families of [`CborErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CborErrorClass {
    /// Not well-formed CBOR.
    Malformed,
    /// Beyond a configured limit.
    Limit,
    /// Well-formed, but not deterministically encoded.
    NotDeterministic,
    /// Well-formed, but not the type a typed reader asked for.
    Type,
}

impl CborErrorKind {
    /// The family this error belongs to.
    pub fn class(&self) -> CborErrorClass {
        use CborErrorKind::*;
        match self {
            Truncated
            | LengthBeyondInput(_)
            | ReservedAdditionalInfo(_)
            | IndefiniteNotAllowed(_)
            | UnexpectedBreak
            | BadStringChunk
            | BadSimpleValue(_)
            | InvalidUtf8
            | TrailingBytes => CborErrorClass::Malformed,
            DepthLimit(_) | InputTooLarge(_) | TooManyItems(_) => CborErrorClass::Limit,
            NonShortestArgument | IndefiniteLength | UnsortedMapKeys | DuplicateMapKey
            | NonShortestFloat | NonPreferredBignum => CborErrorClass::NotDeterministic,
            UnexpectedType { .. } => CborErrorClass::Type,
        }
    }
}

/// The deterministic encoder was given an item it cannot encode
/// deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Two keys of one map encode to the same bytes.
    #[error("duplicate map key")]
    DuplicateMapKey,
}
