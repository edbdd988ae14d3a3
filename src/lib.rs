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
//!   firewall agent, behind one contract ([`core::Party`]): inputs, the
//!   time and randomness in, outputs out;
//! - [`vectors`]: golden vectors, generated and checked as text;
//! - `testkit` and `sim` (feature `testkit`): provisioning of test
//!   deployments, the lab, and a whole deployment in memory on a virtual
//!   clock — drivers of `core`, never part of a real deployment.
//!
//! # The run-loop contract
//!
//! Every party of [`core`] — [`core::Device`], [`core::Server`],
//! [`core::Recorder`], [`core::FirewallAgent`] — is a value with no clock,
//! socket, store or generator of its own (after str0m and quinn-proto;
//! spec/state-machines.md §1), and implements [`core::Party`]. Its driver
//! feeds it one input at a time — `handle_receive` for a message, with
//! the transport, source and destination it came with; `handle_timeout`
//! when its deadline has come; `command` from the application — each with
//! the time on two clocks ([`core::Now`]: monotonic for timers, wall for
//! certificate terms) and a source of randomness. After every input the
//! driver takes `poll_output` until it returns `None` and carries the
//! outputs out in order ([`core::carry`] does it): a
//! [`core::Output::Store`] group is committed before anything after it,
//! since that acknowledges it, and a failed commit restarts the party
//! from its store (KW-SM-024). It then sleeps until `poll_timeout` or the
//! next input. An input that is refused returns why
//! ([`core::ProtocolError`]); an `error` answering it, if the protocol has
//! one, is among the outputs all the same.
//!
//! ```
//! use keyway::core::{Driver, Now, Party, Receive, Server, StoreError, StoreWrite, Transmit};
//! # fn run(server: &mut Server, rng: &mut keyway::crypto::SeededEntropy,
//! #        datagram: (std::net::SocketAddr, std::net::SocketAddr, Vec<u8>)) {
//! struct Node;
//! impl<E> Driver<E> for Node {
//!     fn transmit(&mut self, t: Transmit) {
//!         let _ = (t.proto, t.source, t.destination, t.message.encode()); // send it
//!     }
//!     fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError> {
//!         let _ = group; // one transaction, durable before returning
//!         Ok(())
//!     }
//!     fn event(&mut self, _event: E) {}
//! }
//! let now = Now { mono: 5_000, wall: 1_800_000_000_000 };
//! let (source, destination, bytes) = &datagram;
//! if let Err(refused) = server.handle_receive(now, Receive::udp(*source, *destination, bytes), rng) {
//!     let _ = refused.code(); // the protocol's error code, for logs and counters
//! }
//! if keyway::core::drain(server, &mut Node).is_err() {
//!     // The store failed: restart the server from it (Server::restore).
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

#[cfg(feature = "testkit")]
pub mod sim;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
