//! CBOR (RFC 8949): a strict decoder written with nom, a generic item model,
//! a deterministic encoder, a schema-driven pull reader and diagnostic
//! notation.
//!
//! Two levels of strictness, both rejecting every item that is not
//! well-formed with a typed error and its byte offset (KW-CBOR-001):
//! - [`DecodeOptions::WELL_FORMED`] accepts all of RFC 8949, including
//!   indefinite lengths, tags, simple values and all three float widths;
//! - [`DecodeOptions::DETERMINISTIC`] accepts only core deterministic
//!   encoding (RFC 8949 §4.2.1; KW-CBOR-010 to KW-CBOR-015).
//!
//! Layer rule: this module imports nothing else from the crate.

mod decode;
mod diag;
mod encode;
mod error;
mod float;
mod head;
mod item;
mod reader;

pub use decode::{DecodeOptions, decode};
pub use diag::{format_float, hex, to_diag, unhex, write_diag, write_hex_bytes, write_text};
pub use encode::{
    encode, encode_into, write_array_header, write_bool, write_bytes, write_float, write_head,
    write_map_header, write_nint, write_text as write_text_string, write_uint,
};
pub use error::{CborError, CborErrorClass, CborErrorKind, EncodeError};
pub use float::{Float, FloatWidth};
pub use item::{Item, Simple};
pub use reader::{Key, KeyOrder, Reader};
