//! Sans-IO state machines of every party: [`Device`], [`Server`],
//! [`Recorder`], and the [`Firewall`] a server drives. Each takes decoded
//! input, the current time and randomness from its caller and returns what
//! to do as [`Output`]s; none reads a clock, opens a socket or draws from a
//! global generator.
//!
//! They follow the run-loop contract written at the top of the crate
//! (spec/state-machines.md §1).
//!
//! Layer rule: imports `cbor`, `wire` and `crypto`.

mod bound;
mod device;
mod error;
mod firewall;
mod recorder;
mod reject;
mod request;
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
