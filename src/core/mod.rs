//! Sans-IO state machines of every party: [`Device`], [`Server`],
//! [`Recorder`], and the [`Firewall`] a server drives. Each takes decoded
//! input, the current time and randomness from its caller and returns what
//! to do as [`Output`]s; none reads a clock, opens a socket or draws from a
//! global generator.
//!
//! The run-loop contract (after str0m and quinn-proto): after every call
//! that feeds a state machine (`handle_receive`, `handle_timeout`, a
//! command), the caller drains `poll_output` until it returns `None`,
//! carrying out each output in order — a [`Output::Store`] before the
//! messages that follow it, since those acknowledge it — and then sleeps
//! until `poll_timeout` (if any) or the next input.
//!
//! ```
//! use keyway::core::{Output, Server};
//! # fn run(server: &mut Server, now: u64, rng: &mut keyway::crypto::SeededEntropy,
//! #        datagram: (std::net::SocketAddr, Vec<u8>)) {
//! // `Err` says why the datagram was refused; an `error` answering it,
//! // if the protocol has one, is among the outputs all the same.
//! if let Err(refused) = server.handle_receive(now, datagram.0, &datagram.1, rng) {
//!     let _ = refused.code();
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
//! Layer rule: imports `cbor`, `wire` and `crypto`.

mod bound;
mod device;
mod error;
mod firewall;
mod recorder;
mod reject;
mod routing;
mod server;
mod store;
mod transact;

pub use device::{CallState, Device, DeviceCommand, DeviceConfig, DeviceEvent, DevicePolicy};
pub use error::{ApiMisuse, ProtocolError};
pub use firewall::{
    Filtered, Firewall, FirewallCommand, FirewallError, MemoryFirewall, PinholeView,
};
pub use recorder::{RecordedPacket, Recorder, RecorderConfig, RecorderEvent, Recording};
pub use routing::{Route, ServerDirectory};
pub use server::{
    FirewallPlan, RecordPolicy, RecorderLink, Server, ServerConfig, ServerEvent, ServerPolicy,
    SessionEnd,
};
pub use store::{MemoryStore, Registration, Store, StoreError, StoreSnapshot, StoreWrite};
pub use transact::RetransmitPolicy;

use std::net::SocketAddr;

use crate::wire::Message;

/// Milliseconds on the caller's clock. Protocol times (seconds since the
/// epoch) are `now / 1000`.
pub type Millis = u64;

/// A node's network address.
pub type Addr = SocketAddr;

/// Seconds for protocol fields from a clock in milliseconds.
pub fn secs(now: Millis) -> u64 {
    now / 1000
}

/// What a state machine asks its driver to do. Messages travel unboxed:
/// each output is moved through a queue once, and most are messages.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output<E> {
    /// Send `message` to `to`.
    Transmit {
        /// Destination address.
        to: Addr,
        /// The message.
        message: Message,
    },
    /// Make this durable before carrying out the outputs after it.
    Store(StoreWrite),
    /// Change the firewall.
    Firewall(FirewallCommand),
    /// Tell the application.
    Event(E),
}
