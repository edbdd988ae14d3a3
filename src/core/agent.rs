//! The firewall agent (F6, F7) as a sans-IO party: it obeys the signed,
//! fresh `pinhole-*` and `media-copy` requests of the servers it is
//! configured with (KW-FW-005, KW-FW-007), carries them out on a
//! [`Firewall`] backend — [`MemoryFirewall`] here, nftables in the server
//! program — and answers `ok` or `error`. Requests are idempotent
//! (KW-FW-008), so that a server may send them again after a restart, and
//! the agent closes every pinhole at the end of its lifetime by itself,
//! so that none outlives its session even if its server is gone
//! (KW-FW-004).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::clock::Now;
use super::deadlines::Deadlines;

use super::error::{ApiMisuse, ProtocolError};
use super::firewall::{Firewall, FirewallCommand, FirewallError, MemoryFirewall};
use super::party::{NoCommand, Outbox, Output, Party};
use super::transact::ServerTxns;
use super::transport::{Receive, ReplyTo};
use super::{Addr, Millis};
use crate::crypto::{CryptoError, Entropy, Expect, TrustStore, verify_message};
use crate::wire::{
    Certificate, ErrorCode, Extensions, Message, MsgType, OkResponse, Principal, Role, SessionId,
    Transport,
};

/// What a firewall agent is configured with.
#[derive(Debug, Clone)]
pub struct FirewallAgentConfig {
    /// Its account (role firewall), for logs and the application.
    pub account: Principal,
    /// Where it receives requests.
    pub addr: Addr,
    /// Anchors that confirm the servers' certificates.
    pub trust: TrustStore,
    /// The servers it obeys, with their certificates (KW-FW-005).
    pub servers: BTreeMap<Principal, Certificate>,
    /// How far a request's `time` may be from the agent's clock
    /// (KW-FW-007).
    pub window_secs: u64,
    /// Most closed pinholes remembered, so that an open sent again cannot
    /// reopen one (KW-FW-008); at the bound the oldest is forgotten
    /// (KW-SM-019).
    pub max_closed: usize,
}

/// The default freshness window (KW-FW-007): longer than a request is
/// retransmitted (32 s, KW-FRAME-011), with room for clocks a few seconds
/// apart.
pub const FRESHNESS_WINDOW_SECS: u64 = 60;

/// What a firewall agent tells its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallEvent {
    /// A pinhole was opened on the firewall.
    Opened {
        /// The server that asked.
        server: Principal,
        /// The server's pinhole identifier.
        pinhole: u64,
        /// Its session.
        session: SessionId,
    },
    /// A request was carried out that changed a held pinhole, or found it
    /// already as asked.
    Applied {
        /// The server that asked.
        server: Principal,
        /// The request's type.
        re: MsgType,
        /// The server's pinhole identifier.
        pinhole: u64,
    },
    /// A held pinhole was closed at its server's request (KW-FW-003).
    Closed {
        /// Its server.
        server: Principal,
        /// The server's pinhole identifier.
        pinhole: u64,
    },
    /// A pinhole reached the end of its lifetime and was closed by the
    /// agent (KW-FW-004).
    Expired {
        /// Its server.
        server: Principal,
        /// The server's pinhole identifier.
        pinhole: u64,
    },
    /// A request was refused with `code`.
    Refused {
        /// The request's type.
        re: MsgType,
        /// Why.
        code: ErrorCode,
        /// The server and pinhole it named, if it could be read.
        pinhole: Option<(Principal, u64)>,
    },
}

/// A pinhole the agent holds for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    /// Its identifier on the backend.
    backend: u64,
    session: SessionId,
    proto: Transport,
    dst: Addr,
    public: Option<Addr>,
    src: Option<Addr>,
    /// The end of its lifetime, in wall seconds (KW-FW-007).
    until: u64,
    /// The `time` of the last request applied to it.
    time: u64,
}

/// A server's pinhole, as the agent names it.
type PinholeKey = (Principal, u64);

/// See the module documentation.
pub struct FirewallAgent<F: Firewall = MemoryFirewall> {
    cfg: FirewallAgentConfig,
    backend: F,
    held: BTreeMap<PinholeKey, Held>,
    /// When each held pinhole's lifetime ends, on the monotonic clock.
    expiries: Deadlines<PinholeKey>,
    /// Pinholes closed, remembered while their lifetime would have lasted
    /// so that a replayed open cannot reopen them (KW-FW-008).
    closed: Deadlines<PinholeKey>,
    next_backend: u64,
    txns: ServerTxns,
    rejects: super::reject::DecodeRejects,
    out: Outbox<FirewallEvent>,
}

impl<F: Firewall> core::fmt::Debug for FirewallAgent<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "FirewallAgent({}, {} pinholes)",
            self.cfg.account,
            self.held.len()
        )
    }
}

/// The default bound on remembered closes.
pub const MAX_CLOSED: usize = 100_000;

impl<F: Firewall> FirewallAgent<F> {
    /// An agent driving `backend`, which holds no pinhole of its servers.
    pub fn new(cfg: FirewallAgentConfig, backend: F) -> Self {
        Self {
            cfg,
            backend,
            held: BTreeMap::new(),
            expiries: Deadlines::default(),
            closed: Deadlines::default(),
            next_backend: 1,
            txns: ServerTxns::new(4096),
            rejects: Default::default(),
            out: Outbox::default(),
        }
    }

    /// Its account.
    pub fn account(&self) -> &Principal {
        &self.cfg.account
    }

    /// The backend, to pass packets through (a simulation) or inspect.
    pub fn firewall(&self) -> &F {
        &self.backend
    }

    /// The backend, mutably (counters of packets passed).
    pub fn firewall_mut(&mut self) -> &mut F {
        &mut self.backend
    }

    /// How many pinholes the agent holds for its servers.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn refuse(
        &mut self,
        now: Now,
        to: ReplyTo,
        message: &Message,
        txn: crate::wire::TxnId,
        code: ErrorCode,
    ) -> Result<(), ProtocolError> {
        let re = message.msg_type();
        let pinhole = sender(message).map(|server| (server.clone(), pinhole_of(message)));
        let event = FirewallEvent::Refused { re, code, pinhole };
        self.txns
            .refuse(now.mono, to, txn, re, code, &mut self.out, event)
    }

    fn receive(&mut self, now: Now, receive: Receive<'_>) -> Result<(), ProtocolError> {
        let to = receive.reply_to();
        let refused = |code| FirewallEvent::Refused {
            re: MsgType::Error,
            code,
            pinhole: None,
        };
        let message =
            self.rejects
                .decode(now.mono, to, receive.contents, &mut self.out, refused)?;
        let re = message.msg_type();
        // The agent sends no requests: nothing is a response to it.
        let txn = match self
            .txns
            .admit(now.mono, to, &message, &mut self.out, refused)
        {
            ControlFlow::Continue(txn) => txn,
            ControlFlow::Break(outcome) => return outcome,
        };
        match self.carry_out(now, &message) {
            Ok(pinhole) => {
                let ok = Message::Ok(OkResponse {
                    txn,
                    session: None,
                    epoch: None,
                    re,
                    pinhole: Some(pinhole),
                    recording: None,
                    ext: Extensions::new(),
                });
                self.txns.respond(now.mono, to, txn, ok, &mut self.out);
                Ok(())
            }
            Err(code) => self.refuse(now, to, &message, txn, code),
        }
    }

    /// Checks a request (KW-FW-005, KW-FW-007) and carries it out
    /// (KW-FW-008); returns the server's pinhole identifier. Every check
    /// comes before any change, so a refusal changes nothing (KW-ERR-004).
    fn carry_out(&mut self, now: Now, message: &Message) -> Result<u64, ErrorCode> {
        let (server, time) = match message {
            Message::PinholeOpen(m) => (&m.from, m.time.0),
            Message::PinholeNarrow(m) => (&m.from, m.time.0),
            Message::PinholeClose(m) => (&m.from, m.time.0),
            Message::MediaCopy(m) => (&m.from, m.time.0),
            _ => return Err(ErrorCode::UNKNOWN_MESSAGE_TYPE),
        };
        // KW-FW-005: a server it obeys, whose certificate is valid now,
        // signed it.
        let cert = self.cfg.servers.get(server).ok_or(ErrorCode::FORBIDDEN)?;
        let expect = Expect {
            subject: server,
            role: Some(Role::Server),
            now: now.wall_secs(),
        };
        self.cfg
            .trust
            .check(cert, expect)
            .map_err(|e| ErrorCode::from(&CryptoError::Cert(e)))?;
        verify_message(message, cert).map_err(|e| ErrorCode::from(&e))?;
        // KW-FW-007: fresh.
        if time.abs_diff(now.wall_secs()) > self.cfg.window_secs {
            return Err(ErrorCode::STALE_REQUEST);
        }
        let key = (server.clone(), pinhole_of(message));
        // KW-FW-007: requests about one pinhole take effect in the order
        // they were made; an older one arriving late changes nothing back.
        if self.held.get(&key).is_some_and(|held| time < held.time) {
            return Err(ErrorCode::STALE_REQUEST);
        }
        match message {
            Message::PinholeOpen(m) => {
                let want = Held {
                    backend: 0,
                    session: m.session,
                    proto: m.proto,
                    dst: m.dst,
                    public: m.public,
                    src: m.src,
                    until: m.time.0.saturating_add(m.lifetime),
                    time,
                };
                self.open(now, key.clone(), want)?;
            }
            Message::PinholeNarrow(m) => {
                self.narrow(now, &key, m.src, time)?;
                self.applied(&key, MsgType::PinholeNarrow);
            }
            Message::PinholeClose(_) => self.close(now, key.clone()),
            // Stopping a copy of a pinhole not held: nothing is copied, as
            // asked (KW-FW-008).
            Message::MediaCopy(m) if !m.copy && !self.held.contains_key(&key) => {}
            Message::MediaCopy(m) => {
                let held = self.held.get(&key).ok_or(ErrorCode::UNKNOWN_PINHOLE)?;
                let command = FirewallCommand::Copy {
                    pinhole: held.backend,
                    sink: m.copy.then_some(m.sink),
                };
                self.backend
                    .apply(now.mono, &command)
                    .map_err(|e| backend_code(&e))?;
                if let Some(held) = self.held.get_mut(&key) {
                    held.time = time;
                }
                self.applied(&key, MsgType::MediaCopy);
            }
            _ => return Err(ErrorCode::UNKNOWN_MESSAGE_TYPE),
        }
        Ok(key.1)
    }

    /// Restricts a held pinhole to packets from `src` (KW-FW-002).
    fn narrow(
        &mut self,
        now: Now,
        key: &PinholeKey,
        src: Addr,
        time: u64,
    ) -> Result<(), ErrorCode> {
        let held = self.held.get(key).ok_or(ErrorCode::UNKNOWN_PINHOLE)?;
        if held.src != Some(src) {
            let command = FirewallCommand::Narrow {
                pinhole: held.backend,
                src,
            };
            self.backend
                .apply(now.mono, &command)
                .map_err(|e| backend_code(&e))?;
        }
        if let Some(held) = self.held.get_mut(key) {
            held.src = Some(src);
            held.time = time;
        }
        Ok(())
    }

    /// KW-FW-008: an open of a pinhole held with the same destination,
    /// addresses and lifetime changes nothing, but that one naming a
    /// source narrows it (a server sends its pinholes again, as they now
    /// are, after a restart); with other fields, or of one closed, it is
    /// refused.
    fn open(&mut self, now: Now, key: PinholeKey, want: Held) -> Result<(), ErrorCode> {
        if let Some(held) = self.held.get(&key) {
            let same = held.session == want.session
                && held.proto == want.proto
                && held.dst == want.dst
                && held.public == want.public
                && held.until == want.until;
            if !same {
                return Err(ErrorCode::BAD_STATE);
            }
            if let Some(src) = want.src {
                self.narrow(now, &key, src, want.time)?;
            }
            self.applied(&key, MsgType::PinholeOpen);
            return Ok(());
        }
        if self.closed.contains(&key) {
            return Err(ErrorCode::BAD_STATE);
        }
        let until_ms = want.until.saturating_mul(1000);
        if until_ms <= now.wall {
            // A pinhole that would pass nothing is a mistake of its
            // server's lifetime, not something to hold (KW-FW-004).
            return Err(ErrorCode::BAD_STATE);
        }
        let expires_at = now.mono_at_wall(until_ms);
        let backend = self.next_backend;
        let command = FirewallCommand::Open {
            pinhole: backend,
            session: want.session,
            proto: want.proto,
            dst: want.dst,
            public: want.public,
            src: want.src,
            expires_at,
        };
        self.backend
            .apply(now.mono, &command)
            .map_err(|e| backend_code(&e))?;
        self.next_backend = backend.saturating_add(1);
        self.expiries.set(key.clone(), expires_at);
        self.out.event(FirewallEvent::Opened {
            server: key.0.clone(),
            pinhole: key.1,
            session: want.session,
        });
        self.held.insert(key, Held { backend, ..want });
        Ok(())
    }

    fn applied(&mut self, key: &PinholeKey, re: MsgType) {
        self.out.event(FirewallEvent::Applied {
            server: key.0.clone(),
            re,
            pinhole: key.1,
        });
    }

    /// Closes a pinhole, held or not (KW-FW-008), and remembers it while
    /// its lifetime would have lasted; one never seen is remembered for
    /// twice the freshness window, in case its open was overtaken.
    fn close(&mut self, now: Now, key: PinholeKey) {
        let until = match self.held.remove(&key) {
            Some(held) => {
                self.expiries.remove(&key);
                // Idempotent at the backend too: closing is never refused.
                let _ = self.backend.apply(
                    now.mono,
                    &FirewallCommand::Close {
                        pinhole: held.backend,
                    },
                );
                self.out.event(FirewallEvent::Closed {
                    server: key.0.clone(),
                    pinhole: key.1,
                });
                now.mono_at_wall(held.until.saturating_mul(1000))
            }
            None => now
                .mono
                .saturating_add(self.cfg.window_secs.saturating_mul(2000)),
        };
        if self.closed.len() >= self.cfg.max_closed.max(1) {
            let _ = self.closed.pop_first();
        }
        self.closed.set(key, until.max(now.mono.saturating_add(1)));
    }

    fn timeout(&mut self, now: Now) {
        for key in self.expiries.take_due(now.mono) {
            if let Some(held) = self.held.remove(&key) {
                let _ = self.backend.apply(
                    now.mono,
                    &FirewallCommand::Close {
                        pinhole: held.backend,
                    },
                );
                self.out.event(FirewallEvent::Expired {
                    server: key.0.clone(),
                    pinhole: key.1,
                });
            }
        }
        let _ = self.closed.take_due(now.mono);
        self.txns.expire(now.mono);
    }
}

impl<F: Firewall> Party for FirewallAgent<F> {
    type Event = FirewallEvent;
    type Command = NoCommand;

    fn handle_receive(
        &mut self,
        now: Now,
        receive: Receive<'_>,
        _rng: &mut impl Entropy,
    ) -> Result<(), ProtocolError> {
        self.out.begin();
        let outcome = self.receive(now, receive);
        self.out.end();
        outcome
    }

    fn handle_timeout(&mut self, now: Now, _rng: &mut impl Entropy) {
        self.out.begin();
        self.timeout(now);
        self.out.end();
    }

    fn command(
        &mut self,
        _now: Now,
        command: NoCommand,
        _rng: &mut impl Entropy,
    ) -> Result<(), ApiMisuse> {
        match command {}
    }

    fn poll_output(&mut self) -> Option<Output<FirewallEvent>> {
        self.out.poll()
    }

    fn poll_timeout(&self) -> Option<Millis> {
        [
            self.expiries.next(),
            self.closed.next(),
            self.txns.next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The pinhole a firewall request names.
fn pinhole_of(message: &Message) -> u64 {
    match message {
        Message::PinholeOpen(m) => m.pinhole,
        Message::PinholeNarrow(m) => m.pinhole,
        Message::PinholeClose(m) => m.pinhole,
        Message::MediaCopy(m) => m.pinhole,
        _ => 0,
    }
}

/// The server a firewall request names.
fn sender(message: &Message) -> Option<&Principal> {
    match message {
        Message::PinholeOpen(m) => Some(&m.from),
        Message::PinholeNarrow(m) => Some(&m.from),
        Message::PinholeClose(m) => Some(&m.from),
        Message::MediaCopy(m) => Some(&m.from),
        _ => None,
    }
}

/// The protocol's code for a backend's refusal.
fn backend_code(error: &FirewallError) -> ErrorCode {
    match error {
        FirewallError::UnknownPinhole(_) => ErrorCode::UNKNOWN_PINHOLE,
        FirewallError::DuplicatePinhole(_) | FirewallError::Expired(_) => ErrorCode::BAD_STATE,
        FirewallError::TooManyPinholes => ErrorCode::FIREWALL_FAILURE,
    }
}
