//! Errors of the wire layer: bytes that are not a valid Keyway message.

use thiserror::Error;

use crate::cbor::{CborError, CborErrorKind};

/// A message was rejected at `offset` because of `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} at byte {offset}")]
pub struct WireError {
    /// Byte offset of the offending item from the start of the message.
    pub offset: usize,
    /// What was wrong.
    pub kind: WireErrorKind,
}

impl WireError {
    pub(crate) fn new(offset: usize, kind: WireErrorKind) -> Self {
        Self { offset, kind }
    }
}

impl From<CborError> for WireError {
    fn from(e: CborError) -> Self {
        Self::new(e.offset, WireErrorKind::Cbor(e.kind))
    }
}

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireErrorKind {
    /// Not well-formed, not deterministic, beyond a CBOR limit, or of the
    /// wrong CBOR type.
    #[error("{0}")]
    Cbor(CborErrorKind),
    /// The message is larger than the protocol allows (KW-LIMIT-001).
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The version field holds a version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
    /// The type field holds no known message type.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// A required field is absent.
    #[error("missing required field {key} ({name})")]
    MissingField {
        /// The field's key.
        key: u64,
        /// The field's name.
        name: &'static str,
    },
    /// A non-negative key this structure does not define (KW-WIRE-011).
    #[error("unknown critical field {0}")]
    UnknownCriticalField(u64),
    /// A byte or text string, or an array, with a length outside its bounds.
    #[error("length {actual} outside {min}..={max}")]
    BadLength {
        /// Length found.
        actual: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// An integer beyond the range its field allows.
    #[error("value {value} out of range (at most {max})")]
    OutOfRange {
        /// Value found.
        value: u64,
        /// Largest allowed.
        max: u64,
    },
    /// An enumerated field holds a code the spec does not define.
    #[error("unknown {what} value {value}")]
    UnknownEnumValue {
        /// The enumeration.
        what: &'static str,
        /// Value found.
        value: u64,
    },
    /// A text field that breaks its syntax (e.g. an account name).
    #[error("invalid {what}: {why}")]
    InvalidSyntax {
        /// What the field holds.
        what: &'static str,
        /// The rule broken.
        why: &'static str,
    },
    /// Fields that must not appear together, or of which one is required.
    #[error("{0}")]
    FieldCombination(&'static str),
}
