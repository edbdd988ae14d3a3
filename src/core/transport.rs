//! What a datagram came in on and what a message goes out on
//! (spec/transport.md), named the way str0m names them: a party is told
//! the transport, the TCP connection, the source and the destination of
//! every message it receives, and says the same of every message it sends,
//! so that a response goes back the way its request came (KW-FRAME-004)
//! and a request over TCP is not retransmitted (KW-FRAME-011).

use super::Addr;
use crate::wire::{Message, Transport};

/// A TCP connection, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// One datagram per message (KW-FRAME-001).
    Udp,
    /// Length-prefixed on a TCP connection (KW-FRAME-002): a received
    /// message names its connection; a message to send names the
    /// connection of the request it answers, or `None` for any connection
    /// to the destination, which the driver opens if it has none.
    Tcp(Option<ConnId>),
}

impl Proto {
    /// The transport of a contact or route: UDP, or TCP on any connection.
    pub fn of(transport: Transport) -> Self {
        match transport {
            Transport::Udp => Self::Udp,
            Transport::Tcp => Self::Tcp(None),
        }
    }

    /// Whether the transport delivers reliably, so that a request is not
    /// retransmitted (KW-FRAME-011).
    pub fn is_reliable(self) -> bool {
        matches!(self, Self::Tcp(_))
    }
}

/// A message received, as the driver hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receive<'a> {
    /// The transport it came on (for TCP, with its connection).
    pub proto: Proto,
    /// The peer's address.
    pub source: Addr,
    /// The local address it arrived at.
    pub destination: Addr,
    /// The message's bytes: one datagram, or one frame of a TCP stream.
    pub contents: &'a [u8],
}

impl<'a> Receive<'a> {
    /// A UDP datagram.
    pub fn udp(source: Addr, destination: Addr, contents: &'a [u8]) -> Self {
        Self {
            proto: Proto::Udp,
            source,
            destination,
            contents,
        }
    }

    /// Where a response to this message goes (KW-FRAME-004).
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            proto: self.proto,
            peer: self.source,
            local: self.destination,
        }
    }
}

/// The way back to a request's sender: its transport and connection, its
/// address, and the local address it was sent to (KW-FRAME-004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo {
    /// The transport, with the connection for TCP.
    pub proto: Proto,
    /// The requester's address.
    pub peer: Addr,
    /// The local address the request arrived at, which the response is
    /// sent from.
    pub local: Addr,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// The transport (and connection) to send it on.
    pub proto: Proto,
    /// The local address to send it from.
    pub source: Addr,
    /// Where it goes.
    pub destination: Addr,
    /// The message; the driver encodes it (`Message::encode`).
    pub message: Message,
}

impl Transmit {
    /// A response, sent back the way its request came.
    pub fn reply(to: ReplyTo, message: Message) -> Self {
        Self {
            proto: to.proto,
            source: to.local,
            destination: to.peer,
            message,
        }
    }
}
