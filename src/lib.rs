//! Keyway: a secure session-control protocol, its reference implementation
//! and its conformance suite. `spec/` is the normative specification;
//! `ARCHITECTURE.md` maps the layers.
//!
//! The layers, each importing only those before it:
//! - [`cbor`]: a strict decoder (nom), a deterministic encoder, a pull
//!   reader for schema-driven decoding, diagnostic notation;
//! - [`wire`]: every Keyway message as a typed value, decoded only from its
//!   deterministic encoding and encoded back to exactly those bytes;
//! - [`crypto`]: suite keyway-v1 — keys, certificates, registration proofs,
//!   sealed bodies with per-recipient key wrap, session keys;
//! - [`core`]: sans-IO state machines of device, server, recorder and
//!   firewall: inputs, `now` and randomness in, outputs out;
//! - [`sim`]: a whole deployment in memory on a virtual clock;
//! - [`vectors`]: golden vectors, generated and checked;
//! - [`cli`]: the `keyway` command line.
//!
//! ```
//! use keyway::wire::{Message, MsgType, examples};
//!
//! let offer = examples::all().remove(5);
//! assert_eq!(offer.msg_type(), MsgType::Offer);
//! let bytes = offer.encode();
//! let decoded = Message::decode(&bytes)?;
//! assert_eq!(decoded, offer);
//! assert_eq!(decoded.encode(), bytes); // KW-WIRE-002
//!
//! // One changed byte: a typed error with its offset, never a panic.
//! let mut bad = bytes.clone();
//! bad[4] = 0x0e; // the type becomes 14, which is not defined
//! let err = Message::decode(&bad).unwrap_err();
//! assert_eq!(err.offset, 4);
//! # Ok::<(), keyway::wire::WireError>(())
//! ```

pub mod cbor;
pub mod core;
pub mod crypto;
pub mod wire;

pub mod vectors;

pub mod sim;

pub mod cli;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
