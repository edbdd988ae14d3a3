//! Sans-IO state machines of every party: [`Device`], [`Server`],
//! [`Recorder`] and [`FirewallAgent`], and the reading side of a
//! recorder, [`RecordingReader`]. Each takes decoded input, the
//! current time and randomness from its caller and returns what to do as
//! [`Output`]s; none reads a clock, opens a socket, touches a store or
//! draws from a global generator.
//!
//! They keep one contract with their drivers, [`Party`] (party.rs,
//! spec/state-machines.md §1); [`carry`] and [`drain`] are the loop that
//! carries their outputs out.
//!
//! Layer rule: imports `cbor`, `wire` and `crypto`.

mod agent;
mod bound;
mod clock;
mod deadlines;
mod device;
mod error;
mod firewall;
mod party;
mod reader;
mod recorder;
mod reject;
mod request;
mod routing;
mod server;
mod store;
mod transact;
mod transport;

pub use agent::{
    FRESHNESS_WINDOW_SECS, FirewallAgent, FirewallAgentConfig, FirewallEvent, MAX_CLOSED,
};
pub use clock::Now;
pub use device::{CallState, Device, DeviceCommand, DeviceConfig, DeviceEvent, DevicePolicy};
pub use error::{ApiMisuse, ProtocolError};
pub use firewall::{
    Filtered, Firewall, FirewallCommand, FirewallError, MemoryFirewall, PinholeView,
};
pub use party::{Driver, NoCommand, Output, Party, carry, drain};
pub use reader::{Read, ReadError, RecordingReader};
pub use recorder::{RecordedPacket, Recorder, RecorderConfig, RecorderEvent, Recording};
pub use routing::{Route, ServerDirectory};
#[cfg(feature = "testkit")]
pub use server::{Faults, Forgery};
pub use server::{
    FirewallLink, FirewallPlan, RecordPolicy, RecorderLink, Server, ServerConfig, ServerEvent,
    ServerPolicy, SessionEnd,
};
pub use store::{
    EndedSession, MemoryStore, RecordingRecord, Registration, SessionRecord, Store, StoreError,
    StoreSnapshot, StoreWrite,
};
pub use transact::RetransmitPolicy;
pub use transport::{ConnId, Proto, Receive, ReplyTo, Transmit};

use std::net::SocketAddr;

/// Milliseconds on one of a party's clocks ([`Now`]).
pub type Millis = u64;

/// A node's network address.
pub type Addr = SocketAddr;
