//! Keyway: a secure session-control protocol, its reference implementation
//! and its conformance suite. `spec/` is the normative specification;
//! `ARCHITECTURE.md` maps the layers.
//!
//! This is the protocol crate: it reads no clock, file or socket and draws
//! no randomness from the operating system (`clippy.toml` and
//! `tests/tidy.rs` enforce it). Everything that does — the `keyway` command
//! line, and later the tokio drivers, the store and the firewall backends —
//! is the `keyway-node` crate in `node/`, which depends on this one.
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
//! - [`vectors`]: golden vectors, generated and checked as text.
//!
//! # The run-loop contract
//!
//! Every party of [`core`] — [`core::Device`], [`core::Server`],
//! [`core::Recorder`] — is a value with no clock, socket or generator of
//! its own (after str0m and quinn-proto; spec/state-machines.md §1). Its
//! driver feeds it one input at a time — `handle_receive` for a datagram,
//! `handle_timeout` when its timer is due, `command` from the application —
//! each with the current time and a source of randomness. After every
//! input the driver drains `poll_output` until it returns `None`,
//! carrying out each output in order — a [`core::Output::Store`] durably
//! before the outputs after it, since those acknowledge it (KW-SM-001) —
//! and then sleeps until `poll_timeout` or the next input. An input that
//! is refused returns why ([`core::ProtocolError`]); an `error` answering
//! it, if the protocol has one, is among the outputs all the same.
//!
//! ```
//! use keyway::core::{Output, Server};
//! # fn run(server: &mut Server, now: u64, rng: &mut keyway::crypto::SeededEntropy,
//! #        datagram: (std::net::SocketAddr, Vec<u8>)) {
//! if let Err(refused) = server.handle_receive(now, datagram.0, &datagram.1, rng) {
//!     let _ = refused.code(); // the protocol's error code, for logs and counters
//! }
//! while let Some(output) = server.poll_output() {
//!     match output {
//!         Output::Transmit { to, message } => { let _ = (to, message.encode()); }
//!         Output::Store(write) => { let _ = write; }       // make durable first
//!         Output::Firewall(command) => { let _ = command; }
//!         Output::Event(event) => { let _ = event; }
//!     }
//! }
//! let _next_wakeup = server.poll_timeout();
//! # }
//! ```
//!
//! # Decoding
//!
//! A message is accepted only as the deterministic encoding of a valid
//! value, and every failure is typed, with its byte offset:
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

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
