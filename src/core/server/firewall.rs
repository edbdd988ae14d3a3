//! A server's requests to its firewall agent (F6): `pinhole-open`,
//! `pinhole-narrow`, `pinhole-close` and `media-copy`, signed (KW-FW-005),
//! with the time they are made (KW-FW-007), sent as requests of the
//! server's own and retransmitted until answered. What is waiting on them
//! is in session.rs (KW-SM-026).

use super::session::Pinhole;
use super::{Pending, Server};
use crate::core::Addr;
use crate::core::clock::Now;
use crate::core::transport::Proto;
use crate::crypto::{Entropy, sign_message, unsigned};
use crate::wire::{
    Extensions, MediaCopy, Message, PinholeClose, PinholeNarrow, PinholeOpen, SessionId, Time,
    Transport, TxnId,
};

/// What a server asks of its firewall about one pinhole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FwOp {
    /// Open it as described (KW-FW-001, KW-FW-002, KW-FW-006).
    Open(Pinhole),
    /// Pass only packets from this source (KW-FW-002).
    Narrow(Addr),
    /// Close it (KW-FW-003).
    Close,
    /// Start or stop copying to `sink` (KW-REC-001, KW-REC-003).
    Copy { sink: Addr, on: bool },
}

impl Server {
    /// Sends one signed request about `pinhole` of `session` to the
    /// firewall agent; its transaction, or `None` when the server has no
    /// firewall or too many requests are outstanding.
    pub(super) fn firewall_request(
        &mut self,
        now: Now,
        session: SessionId,
        pinhole: u64,
        op: FwOp,
        rng: &mut impl Entropy,
    ) -> Option<TxnId> {
        let agent = self.cfg.firewall?.agent;
        let txn = TxnId(rng.array());
        let from = self.account().clone();
        let time = Time(now.wall_secs());
        let mut message = match op {
            FwOp::Open(p) => Message::PinholeOpen(PinholeOpen {
                txn,
                from,
                session,
                sig: unsigned(),
                time,
                pinhole,
                proto: Transport::Udp,
                dst: p.dst,
                src: p.src,
                // KW-FW-004, KW-FW-007: from `time` to the session's term.
                lifetime: p.until.saturating_sub(time.0),
                public: p.public,
                ext: Extensions::new(),
            }),
            FwOp::Narrow(src) => Message::PinholeNarrow(PinholeNarrow {
                txn,
                from,
                sig: unsigned(),
                time,
                pinhole,
                src,
                ext: Extensions::new(),
            }),
            FwOp::Close => Message::PinholeClose(PinholeClose {
                txn,
                from,
                sig: unsigned(),
                time,
                pinhole,
                ext: Extensions::new(),
            }),
            FwOp::Copy { sink, on } => Message::MediaCopy(MediaCopy {
                txn,
                from,
                sig: unsigned(),
                time,
                pinhole,
                sink,
                copy: on,
                ext: Extensions::new(),
            }),
        };
        let re = message.msg_type();
        sign_message(&mut message, &self.cfg.identity.signing);
        let transmit = self.transmit_to(Proto::of(agent.transport), agent.addr, message);
        self.request(now, transmit, txn, Pending::Firewall { session, re })
            .then_some(txn)
    }
}
