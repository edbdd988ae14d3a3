//! Typed Keyway messages over the strict CBOR codec (spec/messages.md).
//!
//! [`Message::decode`] accepts exactly the deterministic encodings of valid
//! messages within the protocol limits; [`Message::encode`] produces them, so
//! `encode(decode(b)) == b` for every accepted `b` (KW-WIRE-002).
//!
//! Layer rule: imports only `cbor`.

#[macro_use]
mod macros;

mod codes;
pub mod describe;
mod error;
pub mod examples;
pub(crate) mod fields;
mod message;
mod sample;
mod structs;
mod types;
pub(crate) mod value;

pub use describe::{Entry, Node};
pub use error::{WireError, WireErrorKind};
pub use fields::{Extensions, FieldInfo, Schema};
pub use message::*;
pub use sample::{Sample, Source};
pub use structs::*;
pub use types::*;
pub use value::{Bytes, Fixed, List, Text, Time, UpTo, WireValue};

use crate::cbor::DecodeOptions;

/// The protocol version this implementation speaks (key 0 of every message).
pub const PROTOCOL_VERSION: u64 = 1;

/// Largest message in bytes (KW-LIMIT-001).
pub const MAX_MESSAGE_SIZE: usize = 16_384;

/// Deepest nesting of arrays, maps and tags in a message (KW-LIMIT-002).
pub const MAX_DEPTH: usize = 16;

/// Most entries of any one array or map in a message (KW-LIMIT-003).
pub const MAX_ITEMS: u64 = 64;

/// The CBOR limits every message is decoded with.
pub const PROTOCOL_LIMITS: DecodeOptions = DecodeOptions {
    deterministic: true,
    max_depth: MAX_DEPTH,
    max_items: MAX_ITEMS,
    max_input: MAX_MESSAGE_SIZE,
};

/// Every map-shaped structure with its CDDL rule name and fields.
pub fn schemas() -> impl Iterator<Item = &'static Schema> {
    MESSAGE_SCHEMAS.iter().chain(structs::NESTED_SCHEMAS.iter())
}

/// Decodes one message; see [`Message::decode`] (KW-WIRE-001).
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    Message::decode(bytes)
}

/// The deterministic encoding of a message; see [`Message::encode`]
/// (KW-WIRE-002).
pub fn encode(message: &Message) -> Vec<u8> {
    message.encode()
}
