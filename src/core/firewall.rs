//! The firewall a server drives (F6): pinholes opened from any source,
//! narrowed to one, closed; copies of what a pinhole passes, for a
//! recorder (F7). [`MemoryFirewall`] is the in-memory backend used by the
//! core's tests and the simulator; the server program adds nftables.
//!
//! A [`FirewallCommand`] reaches a backend only after the driver has
//! checked the server's signature on the control message that carried it
//! (KW-FW-005); this module models what the firewall does with it.
//!
//! Time is the caller's ([`Millis`]): a pinhole whose `expires_at` is not
//! after `now` is gone for every operation that takes `now` — it passes
//! nothing and cannot be narrowed or copied — even before
//! [`MemoryFirewall::expire`] reclaims it (KW-FW-004). Every map is a
//! `BTreeMap`, so iteration, and with it the simulator, is reproducible.

use std::collections::BTreeMap;

use super::{Addr, Millis};
use crate::wire::{SessionId, Transport};

/// A change a server asks of its firewall (`pinhole-open`,
/// `pinhole-narrow`, `pinhole-close`, `media-copy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallCommand {
    /// Pass packets of `proto` addressed to `dst` — or to `public`, which
    /// is then forwarded to `dst` like a NAT mapping (KW-FW-006) — from
    /// `src` only, or from any source when `src` is `None` (KW-FW-001),
    /// until `expires_at` (KW-FW-004).
    Open {
        /// The pinhole's identifier, chosen by the server.
        pinhole: u64,
        /// The session the pinhole belongs to.
        session: SessionId,
        /// The transport whose packets pass.
        proto: Transport,
        /// Where passed packets are delivered (the internal address).
        dst: Addr,
        /// The public address packets may also be sent to, mapped to `dst`.
        public: Option<Addr>,
        /// The only source allowed, or `None` for any source.
        src: Option<Addr>,
        /// When the pinhole stops passing packets.
        expires_at: Millis,
    },
    /// Restrict an open pinhole to packets from `src` (KW-FW-002).
    Narrow {
        /// The pinhole.
        pinhole: u64,
        /// The only source allowed from now on.
        src: Addr,
    },
    /// Remove a pinhole (KW-FW-003). Closing one that does not exist is not
    /// an error: see [`FirewallError::UnknownPinhole`].
    Close {
        /// The pinhole.
        pinhole: u64,
    },
    /// Copy every packet the pinhole passes to `sink`, a recorder
    /// (KW-REC-001); `None` stops copying.
    Copy {
        /// The pinhole.
        pinhole: u64,
        /// Where copies go, or `None` to stop copying.
        sink: Option<Addr>,
    },
}

impl FirewallCommand {
    /// The pinhole the command acts on.
    fn pinhole(&self) -> u64 {
        match self {
            Self::Open { pinhole, .. }
            | Self::Narrow { pinhole, .. }
            | Self::Close { pinhole }
            | Self::Copy { pinhole, .. } => *pinhole,
        }
    }
}

/// Why a firewall refused a command. A refused command changes nothing
/// (KW-ERR-004).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// `Narrow` or `Copy` of a pinhole the firewall does not hold. `Close`
    /// of such a pinhole succeeds instead: closing is idempotent, so a
    /// retransmitted `bye` (KW-FW-003) or a close racing expiry is harmless,
    /// as deleting a missing element is in the nftables backend.
    #[error("unknown pinhole {0}")]
    UnknownPinhole(u64),
    /// `Open` of a pinhole that is already open.
    #[error("pinhole {0} is already open")]
    DuplicatePinhole(u64),
    /// The pinhole's lifetime is over: an `Open` whose `expires_at` is not
    /// after `now`, or a `Narrow` or `Copy` of a pinhole that has expired but
    /// has not been reclaimed yet (KW-FW-004).
    #[error("pinhole {0} has expired")]
    Expired(u64),
    /// `Open` when the firewall already holds as many live pinholes as it
    /// can.
    #[error("too many pinholes")]
    TooManyPinholes,
}

/// A firewall as a server sees it: it applies commands and lists its
/// pinholes. Implemented in memory by [`MemoryFirewall`] and, in the server
/// program, over nftables.
pub trait Firewall {
    /// Carries out `command` at time `now`; on error nothing changes
    /// (KW-ERR-004).
    fn apply(&mut self, now: Millis, command: &FirewallCommand) -> Result<(), FirewallError>;
    /// The pinholes held, in identifier order, including any that have
    /// expired but have not been reclaimed yet (compare `expires_at` with
    /// the current time to tell them apart).
    fn pinholes(&self) -> Vec<PinholeView>;
}

/// One pinhole as listed by [`Firewall::pinholes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinholeView {
    /// Its identifier.
    pub pinhole: u64,
    /// Its session.
    pub session: SessionId,
    /// The transport it passes.
    pub proto: Transport,
    /// Where it delivers.
    pub dst: Addr,
    /// The public address mapped to `dst`, if any (KW-FW-006).
    pub public: Option<Addr>,
    /// The only source it passes, or `None` for any.
    pub src: Option<Addr>,
    /// When it stops passing packets.
    pub expires_at: Millis,
    /// Where copies of what it passes go, if anywhere (KW-REC-001).
    pub copy_to: Option<Addr>,
}

/// What a firewall does with one packet: where it goes, and where copies
/// of it go. The default — nothing delivered, no copies — is a drop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filtered {
    /// The address the packet is delivered to, or `None` if it is dropped.
    pub deliver: Option<Addr>,
    /// Addresses that receive a copy (recorders, KW-REC-001).
    pub copies: Vec<Addr>,
}

/// A pinhole's state, keyed by its identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pinhole {
    session: SessionId,
    proto: Transport,
    dst: Addr,
    public: Option<Addr>,
    src: Option<Addr>,
    expires_at: Millis,
    copy_to: Option<Addr>,
}

impl Pinhole {
    /// Whether the pinhole still exists at `now` (KW-FW-004).
    fn live(&self, now: Millis) -> bool {
        self.expires_at > now
    }

    /// Whether a live pinhole passes a packet of `proto` from `from` to
    /// `to`. A packet for the public address matches too, since the
    /// firewall forwards it to `dst` (KW-FW-006).
    fn passes(&self, now: Millis, proto: Transport, from: Addr, to: Addr) -> bool {
        self.live(now)
            && self.proto == proto
            && (self.dst == to || self.public == Some(to))
            && self.src.is_none_or(|src| src == from)
    }

    fn view(&self, pinhole: u64) -> PinholeView {
        PinholeView {
            pinhole,
            session: self.session,
            proto: self.proto,
            dst: self.dst,
            public: self.public,
            src: self.src,
            expires_at: self.expires_at,
            copy_to: self.copy_to,
        }
    }
}

/// A firewall in memory: default deny, pinholes by identifier, counters of
/// what it passed and dropped. Used by the core's tests and the simulator.
#[derive(Debug, Clone)]
pub struct MemoryFirewall {
    pinholes: BTreeMap<u64, Pinhole>,
    capacity: usize,
    passed: u64,
    dropped: u64,
}

impl MemoryFirewall {
    /// A firewall with no pinholes that holds at most `capacity`.
    pub fn new(capacity: usize) -> Self {
        Self {
            pinholes: BTreeMap::new(),
            capacity,
            passed: 0,
            dropped: 0,
        }
    }

    /// What happens to a packet of `proto` from `from` arriving for `to`.
    /// It passes if a live pinhole of that transport is for `to` (its `dst`
    /// or its `public` address) and admits `from`; it is then delivered to
    /// the pinhole's `dst` and copied to its sink, if any. Anything else is
    /// dropped (default deny, KW-FW-001).
    ///
    /// If several pinholes admit the packet, one narrowed to `from` wins
    /// over one open to any source — it is the one KW-FW-002 made for this
    /// peer, and so the one a recording copy (KW-REC-001) hangs off — and
    /// among equals the lowest identifier wins, so the choice is
    /// reproducible.
    pub fn filter(&mut self, now: Millis, proto: Transport, from: Addr, to: Addr) -> Filtered {
        let mut best: Option<&Pinhole> = None;
        for pinhole in self.pinholes.values() {
            if !pinhole.passes(now, proto, from, to) {
                continue;
            }
            let narrowed = pinhole.src.is_some();
            match best {
                // An earlier (lower-id) match stands unless this one is
                // narrowed and that one is not.
                Some(current) if current.src.is_some() || !narrowed => {}
                _ => best = Some(pinhole),
            }
            if narrowed {
                break;
            }
        }
        match best {
            Some(pinhole) => {
                let filtered = Filtered {
                    deliver: Some(pinhole.dst),
                    copies: pinhole.copy_to.into_iter().collect(),
                };
                self.passed = self.passed.saturating_add(1);
                filtered
            }
            None => {
                self.dropped = self.dropped.saturating_add(1);
                Filtered::default()
            }
        }
    }

    /// Removes the pinholes whose `expires_at` is not after `now` and
    /// returns their identifiers in order, so that no pinhole outlives its
    /// session even if the server's close is lost (KW-FW-004). The driver
    /// calls this on its timer; until then expired pinholes already pass
    /// nothing.
    pub fn expire(&mut self, now: Millis) -> Vec<u64> {
        let expired: Vec<u64> = self
            .pinholes
            .iter()
            .filter(|(_, pinhole)| !pinhole.live(now))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.pinholes.remove(id);
        }
        expired
    }

    /// Whether no pinhole is held (counting expired ones not yet reclaimed).
    pub fn is_empty(&self) -> bool {
        self.pinholes.is_empty()
    }

    /// How many pinholes are held (counting expired ones not yet
    /// reclaimed); never more than the capacity.
    pub fn len(&self) -> usize {
        self.pinholes.len()
    }

    /// Packets [`filter`](Self::filter) passed.
    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// Packets [`filter`](Self::filter) dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The live pinhole `id`, for a command that modifies it. Every check
    /// happens here, before anything changes (KW-ERR-004).
    fn live_mut(&mut self, now: Millis, id: u64) -> Result<&mut Pinhole, FirewallError> {
        match self.pinholes.get_mut(&id) {
            None => Err(FirewallError::UnknownPinhole(id)),
            Some(pinhole) if !pinhole.live(now) => Err(FirewallError::Expired(id)),
            Some(pinhole) => Ok(pinhole),
        }
    }

    /// Opens pinhole `id` after checking everything that could refuse it,
    /// so that a refusal changes nothing (KW-ERR-004).
    fn open(&mut self, now: Millis, id: u64, pinhole: Pinhole) -> Result<(), FirewallError> {
        if self.pinholes.get(&id).is_some_and(|held| held.live(now)) {
            return Err(FirewallError::DuplicatePinhole(id));
        }
        // A pinhole that would never pass a packet is a mistake in the
        // server's lifetime (KW-FW-004), not something to hold.
        if !pinhole.live(now) {
            return Err(FirewallError::Expired(id));
        }
        // Capacity counts live pinholes only: an expired one is gone
        // (KW-FW-004) and must not make an Open fail just because the
        // driver has not called `expire` yet.
        let live = self.pinholes.values().filter(|held| held.live(now)).count();
        if live >= self.capacity {
            return Err(FirewallError::TooManyPinholes);
        }
        // An expired pinhole with the same identifier is replaced. When the
        // table is full of live and expired entries, the expired ones are
        // reclaimed here so that it never holds more than `capacity`; a
        // driver that wants every expiry reported calls `expire` first.
        self.pinholes.remove(&id);
        if self.pinholes.len() >= self.capacity {
            self.pinholes.retain(|_, held| held.live(now));
        }
        self.pinholes.insert(id, pinhole);
        Ok(())
    }
}

impl Firewall for MemoryFirewall {
    fn apply(&mut self, now: Millis, command: &FirewallCommand) -> Result<(), FirewallError> {
        let id = command.pinhole();
        match command {
            FirewallCommand::Open {
                session,
                proto,
                dst,
                public,
                src,
                expires_at,
                ..
            } => self.open(
                now,
                id,
                Pinhole {
                    session: *session,
                    proto: *proto,
                    dst: *dst,
                    public: *public,
                    src: *src,
                    expires_at: *expires_at,
                    copy_to: None,
                },
            ),
            // Re-narrowing replaces the source: a later description may
            // move the peer's media address (KW-FW-002).
            FirewallCommand::Narrow { src, .. } => {
                self.live_mut(now, id)?.src = Some(*src);
                Ok(())
            }
            // Idempotent: an unknown pinhole is already closed (see
            // `FirewallError::UnknownPinhole`); an expired one is removed.
            FirewallCommand::Close { .. } => {
                self.pinholes.remove(&id);
                Ok(())
            }
            FirewallCommand::Copy { sink, .. } => {
                self.live_mut(now, id)?.copy_to = *sink;
                Ok(())
            }
        }
    }

    fn pinholes(&self) -> Vec<PinholeView> {
        self.pinholes
            .iter()
            .map(|(id, pinhole)| pinhole.view(*id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: SessionId = SessionId([0x5e; 16]);
    const UDP: Transport = Transport::Udp;

    fn addr(text: &str) -> Addr {
        text.parse().unwrap()
    }

    fn caller() -> Addr {
        addr("192.0.2.10:40000")
    }

    fn callee() -> Addr {
        addr("198.51.100.20:50000")
    }

    fn stranger() -> Addr {
        addr("203.0.113.66:6666")
    }

    fn recorder() -> Addr {
        addr("192.0.2.99:7000")
    }

    fn open(pinhole: u64, dst: Addr, src: Option<Addr>, expires_at: Millis) -> FirewallCommand {
        FirewallCommand::Open {
            pinhole,
            session: SESSION,
            proto: UDP,
            dst,
            public: None,
            src,
            expires_at,
        }
    }

    /// KW-FW-001, KW-FW-002: the pinhole to the caller's media address is
    /// opened from any source when the offer is decrypted, then narrowed to
    /// the callee's address when the answer is; the reverse direction is
    /// opened from the caller only.
    #[test]
    fn open_from_any_then_narrow() {
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(1, caller(), None, 60_000)).unwrap();

        // Before the answer: any source reaches the caller.
        assert_eq!(
            fw.filter(10, UDP, stranger(), caller()).deliver,
            Some(caller())
        );
        assert_eq!(
            fw.filter(10, UDP, callee(), caller()).deliver,
            Some(caller())
        );

        fw.apply(
            20,
            &FirewallCommand::Narrow {
                pinhole: 1,
                src: callee(),
            },
        )
        .unwrap();
        fw.apply(20, &open(2, callee(), Some(caller()), 60_000))
            .unwrap();

        // After: only the callee reaches the caller, only the caller the callee.
        assert_eq!(
            fw.filter(30, UDP, stranger(), caller()),
            Filtered::default()
        );
        assert_eq!(
            fw.filter(30, UDP, callee(), caller()).deliver,
            Some(caller())
        );
        assert_eq!(
            fw.filter(30, UDP, caller(), callee()).deliver,
            Some(callee())
        );
        assert_eq!(
            fw.filter(30, UDP, stranger(), callee()),
            Filtered::default()
        );
        assert_eq!((fw.passed(), fw.dropped()), (4, 2));
        assert_eq!(fw.pinholes()[0].src, Some(callee()));
    }

    /// KW-FW-006: a packet for the public address the server wrote into the
    /// description is delivered to the internal address it maps to.
    #[test]
    fn nat_public_address_delivers_to_internal() {
        let internal = addr("10.0.0.5:40000");
        let public = addr("192.0.2.1:61000");
        let mut fw = MemoryFirewall::new(8);
        let command = FirewallCommand::Open {
            pinhole: 7,
            session: SESSION,
            proto: UDP,
            dst: internal,
            public: Some(public),
            src: None,
            expires_at: 60_000,
        };
        fw.apply(0, &command).unwrap();
        assert_eq!(fw.filter(1, UDP, callee(), public).deliver, Some(internal));
        assert_eq!(
            fw.filter(1, UDP, callee(), internal).deliver,
            Some(internal)
        );
        assert_eq!(
            fw.filter(1, UDP, callee(), addr("192.0.2.1:61001")).deliver,
            None
        );
        assert_eq!(fw.pinholes()[0].public, Some(public));
    }

    /// KW-REC-001: every packet the pinhole passes is copied to the
    /// recorder until copying stops (KW-REC-003); dropped packets are not
    /// copied.
    #[test]
    fn copy_to_sink_then_stop() {
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(1, caller(), Some(callee()), 60_000))
            .unwrap();
        fw.apply(
            0,
            &FirewallCommand::Copy {
                pinhole: 1,
                sink: Some(recorder()),
            },
        )
        .unwrap();
        assert_eq!(
            fw.filter(1, UDP, callee(), caller()),
            Filtered {
                deliver: Some(caller()),
                copies: vec![recorder()]
            }
        );
        assert_eq!(fw.filter(1, UDP, stranger(), caller()), Filtered::default());
        assert_eq!(fw.pinholes()[0].copy_to, Some(recorder()));

        fw.apply(
            2,
            &FirewallCommand::Copy {
                pinhole: 1,
                sink: None,
            },
        )
        .unwrap();
        assert_eq!(
            fw.filter(3, UDP, callee(), caller()),
            Filtered {
                deliver: Some(caller()),
                copies: vec![]
            }
        );
        assert_eq!(fw.pinholes()[0].copy_to, None);
    }

    /// KW-FW-003: after `bye` closes the pinholes, nothing passes.
    #[test]
    fn close_then_packets_dropped() {
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(1, caller(), Some(callee()), 60_000))
            .unwrap();
        assert!(fw.filter(1, UDP, callee(), caller()).deliver.is_some());
        fw.apply(2, &FirewallCommand::Close { pinhole: 1 }).unwrap();
        assert!(fw.is_empty());
        assert_eq!(fw.filter(3, UDP, callee(), caller()), Filtered::default());
        assert_eq!((fw.passed(), fw.dropped()), (1, 1));
    }

    /// KW-FW-003: closing is idempotent — a retransmitted `bye` closes an
    /// already-closed (or never opened) pinhole without error.
    #[test]
    fn close_unknown_is_ok() {
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(1, caller(), None, 60_000)).unwrap();
        fw.apply(1, &FirewallCommand::Close { pinhole: 1 }).unwrap();
        assert_eq!(fw.apply(2, &FirewallCommand::Close { pinhole: 1 }), Ok(()));
        assert_eq!(fw.apply(2, &FirewallCommand::Close { pinhole: 99 }), Ok(()));
        assert!(fw.is_empty());
    }

    /// KW-FW-004: a pinhole passes nothing from its `expires_at` on, even
    /// before `expire` reclaims it; `expire` then removes and reports it.
    #[test]
    fn expiry_by_time() {
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(1, caller(), None, 1_000)).unwrap();
        fw.apply(0, &open(2, callee(), None, 5_000)).unwrap();
        assert!(fw.filter(999, UDP, stranger(), caller()).deliver.is_some());
        assert_eq!(
            fw.filter(1_000, UDP, stranger(), caller()),
            Filtered::default()
        );
        // Expired but not reclaimed: listed, yet gone for commands.
        assert_eq!(fw.len(), 2);
        assert_eq!(
            fw.apply(
                1_000,
                &FirewallCommand::Narrow {
                    pinhole: 1,
                    src: callee()
                }
            ),
            Err(FirewallError::Expired(1))
        );
        assert_eq!(
            fw.apply(
                1_000,
                &FirewallCommand::Copy {
                    pinhole: 1,
                    sink: Some(recorder())
                }
            ),
            Err(FirewallError::Expired(1))
        );

        assert_eq!(fw.expire(999), Vec::<u64>::new());
        assert_eq!(fw.expire(1_000), vec![1]);
        assert_eq!(fw.len(), 1);
        assert!(
            fw.filter(4_999, UDP, stranger(), callee())
                .deliver
                .is_some()
        );
        assert_eq!(fw.expire(10_000), vec![2]);
        assert!(fw.is_empty());
    }

    /// KW-FW-004: an `Open` whose lifetime is already over is refused, and
    /// an expired identifier may be opened again.
    #[test]
    fn open_expired_refused_and_expired_id_reusable() {
        let mut fw = MemoryFirewall::new(8);
        assert_eq!(
            fw.apply(5, &open(1, caller(), None, 5)),
            Err(FirewallError::Expired(1))
        );
        assert!(fw.is_empty());
        fw.apply(5, &open(1, caller(), None, 10)).unwrap();
        fw.apply(10, &open(1, callee(), None, 20)).unwrap();
        assert_eq!(fw.len(), 1);
        assert_eq!(fw.pinholes()[0].dst, callee());
    }

    /// KW-ERR-004: a refused command changes no pinhole and no counter.
    #[test]
    fn failed_commands_leave_state_unchanged() {
        let mut fw = MemoryFirewall::new(2);
        fw.apply(0, &open(1, caller(), None, 60_000)).unwrap();
        fw.apply(0, &open(2, callee(), Some(caller()), 60_000))
            .unwrap();
        let before = fw.pinholes();

        let refused = [
            (
                open(1, stranger(), Some(stranger()), 90_000),
                FirewallError::DuplicatePinhole(1),
            ),
            (
                open(3, stranger(), None, 90_000),
                FirewallError::TooManyPinholes,
            ),
            (
                FirewallCommand::Narrow {
                    pinhole: 9,
                    src: stranger(),
                },
                FirewallError::UnknownPinhole(9),
            ),
            (
                FirewallCommand::Copy {
                    pinhole: 9,
                    sink: Some(recorder()),
                },
                FirewallError::UnknownPinhole(9),
            ),
        ];
        for (command, error) in refused {
            assert_eq!(fw.apply(1, &command), Err(error));
            assert_eq!(fw.pinholes(), before);
        }
        assert_eq!((fw.passed(), fw.dropped()), (0, 0));
    }

    /// At most `capacity` live pinholes; a slot held by an expired pinhole
    /// is free again (KW-FW-004), and the table never exceeds capacity.
    #[test]
    fn capacity() {
        let mut fw = MemoryFirewall::new(2);
        fw.apply(0, &open(1, caller(), None, 1_000)).unwrap();
        fw.apply(0, &open(2, callee(), None, 60_000)).unwrap();
        assert_eq!(
            fw.apply(0, &open(3, stranger(), None, 60_000)),
            Err(FirewallError::TooManyPinholes)
        );
        assert_eq!(fw.len(), 2);
        // Closing frees a slot.
        fw.apply(1, &FirewallCommand::Close { pinhole: 2 }).unwrap();
        fw.apply(1, &open(3, stranger(), None, 60_000)).unwrap();
        // Pinhole 1 expires: its slot is reclaimed by the next Open.
        fw.apply(1_000, &open(4, callee(), None, 60_000)).unwrap();
        assert_eq!(fw.len(), 2);
        let ids: Vec<u64> = fw.pinholes().iter().map(|p| p.pinhole).collect();
        assert_eq!(ids, vec![3, 4]);

        let mut none = MemoryFirewall::new(0);
        assert_eq!(
            none.apply(0, &open(1, caller(), None, 60_000)),
            Err(FirewallError::TooManyPinholes)
        );
    }

    /// KW-FW-001: with no pinhole, or none for the destination, every packet
    /// is dropped.
    #[test]
    fn default_deny() {
        let mut fw = MemoryFirewall::new(8);
        assert_eq!(fw.filter(0, UDP, caller(), callee()), Filtered::default());
        fw.apply(0, &open(1, caller(), None, 60_000)).unwrap();
        assert_eq!(fw.filter(1, UDP, caller(), callee()), Filtered::default());
        assert_eq!(fw.filter(1, UDP, caller(), stranger()), Filtered::default());
        assert_eq!((fw.passed(), fw.dropped()), (0, 3));
    }

    /// A pinhole passes only its own transport.
    #[test]
    fn proto_mismatch_dropped() {
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(1, caller(), None, 60_000)).unwrap();
        assert_eq!(
            fw.filter(1, Transport::Tcp, callee(), caller()),
            Filtered::default()
        );
        assert_eq!(
            fw.filter(1, UDP, callee(), caller()).deliver,
            Some(caller())
        );
    }

    /// KW-FW-002, KW-REC-001: when a pinhole open to any source and one
    /// narrowed to the sender both match, the narrowed one decides, so its
    /// recording copy is made.
    #[test]
    fn narrowed_pinhole_wins_over_wildcard() {
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(1, caller(), None, 60_000)).unwrap();
        fw.apply(0, &open(2, caller(), Some(callee()), 60_000))
            .unwrap();
        fw.apply(
            0,
            &FirewallCommand::Copy {
                pinhole: 2,
                sink: Some(recorder()),
            },
        )
        .unwrap();
        assert_eq!(
            fw.filter(1, UDP, callee(), caller()).copies,
            vec![recorder()]
        );
        assert_eq!(
            fw.filter(1, UDP, stranger(), caller()).copies,
            Vec::<Addr>::new()
        );

        // Among pinholes open to any source, the lowest identifier wins:
        // the copy hangs off pinhole 3, not the later 4.
        let mut fw = MemoryFirewall::new(8);
        fw.apply(0, &open(3, caller(), None, 60_000)).unwrap();
        fw.apply(0, &open(4, caller(), None, 60_000)).unwrap();
        fw.apply(
            0,
            &FirewallCommand::Copy {
                pinhole: 3,
                sink: Some(recorder()),
            },
        )
        .unwrap();
        assert_eq!(
            fw.filter(1, UDP, stranger(), caller()).copies,
            vec![recorder()]
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            FirewallError::UnknownPinhole(3).to_string(),
            "unknown pinhole 3"
        );
        assert_eq!(
            FirewallError::DuplicatePinhole(3).to_string(),
            "pinhole 3 is already open"
        );
        assert_eq!(
            FirewallError::Expired(3).to_string(),
            "pinhole 3 has expired"
        );
        assert_eq!(
            FirewallError::TooManyPinholes.to_string(),
            "too many pinholes"
        );
    }
}
