//! The server as a sans-IO state machine: registrar and certificate
//! authority (F1, F2), certificate queries (F3), routing (F8), the trusted
//! server's part in sealed sessions (F4, F5), and the firewall and
//! recording requests it derives from them (F6, F7).
//!
//! Every request is dispatched by type (KW-REG-003). A rejected request is
//! answered with an `error` and changes nothing but the transaction cache
//! (KW-ERR-004), not even a challenge nonce, which only a `register` that
//! passes spends (KW-SM-007). What the server's behaviour after a restart
//! depends on is written through to its store, one group per input
//! (KW-SM-024, KW-SM-025), and [`Server::restore`] goes on from it.

mod durable;
mod firewall;
mod insession;
mod ports;
mod recording;
mod registrar;
mod relay;
mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::clock::Now;
use super::deadlines::Deadlines;
use super::error::{ApiMisuse, ProtocolError};
use super::party::{NoCommand, Outbox, Output, Party};
use super::request::error_response;
use super::routing::ServerDirectory;
use super::store::{Registration, StoreSnapshot, StoreWrite};
use super::transact::{ClientTxns, RetransmitPolicy, ServerTxns};
use super::transport::{Receive, ReplyTo, Transmit};
use super::{Addr, Millis};
use crate::crypto::register::Verifier;
use crate::crypto::{
    CertificateAuthority, Entropy, Identity, KeyCache, KeyPolicy, Secret32, TrustAnchor, TrustStore,
};
use crate::wire::{
    Certificate, Domain, ErrorCode, Message, MsgType, Nonce, Permission, Principal, PublicKey,
    RecordingId, RecordingMode, SessionId, Transport, TxnId,
};

pub(crate) use durable::StoredSession;
pub(crate) use session::ServerSession;

/// Which sessions a server records (KW-POLICY-002, KW-REC-001).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecordPolicy {
    /// None.
    #[default]
    Nothing,
    /// Every session with a party of this domain.
    Everything,
    /// Sessions with one of these accounts of this domain as a party.
    Accounts(BTreeSet<Principal>),
}

impl RecordPolicy {
    /// Whether a session with `party` (of the server's domain) is
    /// recorded.
    pub fn selects(&self, party: &Principal) -> bool {
        match self {
            Self::Nothing => false,
            Self::Everything => true,
            Self::Accounts(accounts) => accounts.contains(party),
        }
    }
}

/// How a server behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Shortest registration term granted (KW-REG-013).
    pub min_expires: u64,
    /// Longest registration term granted (KW-REG-013).
    pub max_expires: u64,
    /// Lifetime of a challenge nonce, in seconds (KW-REG-005).
    pub challenge_secs: u64,
    /// PBKDF2 iterations announced for unknown accounts, so that a
    /// challenge does not tell which accounts exist.
    pub decoy_iterations: u64,
    /// Rewrite local parties' media addresses to the firewall's public
    /// address when permitted to modify (KW-SEAL-007, KW-FW-006).
    pub rewrite_media: bool,
    /// Servers every offer from a local caller must make recipients —
    /// this server by any entry it opens, others by an explicit entry —
    /// or be refused with `recipient-missing` (KW-POLICY-002).
    pub required_recipients: BTreeSet<Principal>,
    /// Longest life of a session without a `bye`, in seconds; every pinhole
    /// ends with it (KW-FW-004).
    pub session_secs: u64,
    /// Which sessions are recorded.
    pub record: RecordPolicy,
    /// Most sessions followed at once; further offers are refused with
    /// `busy`.
    pub max_sessions: usize,
    /// Most requests outstanding at once — forwarded, or the server's own
    /// to firewall and recorder; a request to forward beyond it is refused
    /// with `busy` (KW-SM-019).
    pub max_outstanding: usize,
    /// Replace the content key of offers it may modify, when it can
    /// re-wrap every entry after it (claim 39, KW-SM-011).
    pub rekey_offers: bool,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            challenge_secs: 30,
            decoy_iterations: 4096,
            rewrite_media: true,
            required_recipients: BTreeSet::new(),
            session_secs: 3600,
            record: RecordPolicy::Nothing,
            max_sessions: 10_000,
            max_outstanding: 10_000,
            rekey_offers: false,
        }
    }
}

/// The firewall in front of a server's domain: the agent that carries out
/// its requests (KW-FW-005), and the public addresses its media addresses
/// are rewritten to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirewallPlan {
    /// The firewall agent.
    pub agent: FirewallLink,
    /// The firewall's public address.
    pub public_ip: IpAddr,
    /// First public port handed out.
    pub first_port: u16,
    /// How many ports are handed out, from `first_port` on.
    pub ports: u16,
}

/// Where a server's firewall agent listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirewallLink {
    /// Its address.
    pub addr: Addr,
    /// The transport to reach it over.
    pub transport: Transport,
}

/// The recorder a server sends recordings to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderLink {
    /// Its account.
    pub account: Principal,
    /// Its address (commands and copied media go here).
    pub addr: Addr,
    /// The transport commands go over.
    pub transport: Transport,
    /// Its X25519 key, from its certificate (KW-CERT-004).
    pub kx_key: PublicKey,
    /// What it keeps.
    pub mode: RecordingMode,
}

/// What a server is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Its account and keys.
    pub identity: Identity,
    /// Its certificate (role server, KW-CERT-004).
    pub cert: Certificate,
    /// Its domain's certificate authority (KW-CERT-001).
    pub ca: CertificateAuthority,
    /// Anchors it confirms certificates with: its own domain's and those of
    /// the domains it attests for (KW-CERT-005).
    pub anchors: Vec<TrustAnchor>,
    /// Where it receives signalling, and sends from.
    pub addr: Addr,
    /// Next hops toward other domains (KW-ROUTE-001).
    pub directory: ServerDirectory,
    /// The accounts of its domain and their verifiers (KW-REG-006).
    pub accounts: BTreeMap<Principal, Verifier>,
    /// Behaviour.
    pub policy: ServerPolicy,
    /// Retransmission of the requests it sends or forwards.
    pub retransmit: RetransmitPolicy,
    /// Rekey policy it follows sessions with.
    pub keys: KeyPolicy,
    /// Its firewall, if its domain has one.
    pub firewall: Option<FirewallPlan>,
    /// Its recorder, if it records.
    pub recorder: Option<RecorderLink>,
    /// Secret for decoy salts of unknown accounts.
    pub decoy_secret: Secret32,
}

/// Faults a test can make a server commit, as a misbehaving server would;
/// never part of a real server's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Change bodies this server may only read (KW-SEAL-006).
    pub tamper_read_only: bool,
    /// Change bodies this server may only read and sign the change as an
    /// edit of its own, as if it had read-modify permission (KW-SEAL-006,
    /// KW-CRYPTO-036 step 3).
    pub forge_edit: bool,
    /// Edit a body twice (a change, then its undoing) and forward the two
    /// edits in the wrong order, whatever its permission (KW-CRYPTO-036
    /// step 3: the chain of `prev` and `next`).
    pub reorder_edits: bool,
}

/// What a misbehaving server did to a body (`Faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Forgery {
    /// Signed an edit it had no read-modify permission for.
    Edit,
    /// Forwarded edits out of order.
    Reordered,
}

/// Why a session ended at a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// An authenticated `bye` (KW-FW-003).
    Bye,
    /// The offer failed or timed out, or the firewall could not open what
    /// it needed (KW-SM-026).
    Failed,
    /// The answer was relayed and no `ack` followed (KW-SM-027).
    Unacknowledged,
    /// The session's term ran out (KW-FW-004).
    Expired,
}

/// What a server tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A certificate was issued (F1).
    CertificateIssued {
        /// The subject.
        account: Principal,
        /// Its serial.
        serial: u64,
        /// Its first second.
        not_before: u64,
        /// Its last second.
        not_after: u64,
    },
    /// A registration was stored.
    Registered {
        /// The account.
        account: Principal,
        /// Its certificate's serial.
        serial: u64,
        /// The registration's end.
        not_after: u64,
    },
    /// A registration ended (de-registration or expiry) and its certificate
    /// with it.
    Unregistered {
        /// The account.
        account: Principal,
        /// The serial of the certificate revoked, if it was still valid.
        revoked: Option<u64>,
    },
    /// A certificate was served to a query (F3).
    CertificateServed {
        /// Whose.
        account: Principal,
        /// With an attestation.
        attested: bool,
    },
    /// The server opened a sealed body with its own entry (F4).
    BodyOpened {
        /// The session.
        session: SessionId,
        /// The message.
        re: MsgType,
        /// The entry's permission.
        perm: Permission,
    },
    /// The server now holds the session's key (KW-KEY-001).
    KeyLearned(SessionId),
    /// The server changed a body with a signed edit (KW-SEAL-007).
    Edited(SessionId, MsgType),
    /// The session's key is no longer the caller's: this server replaced
    /// it in the offer, or learned the replacement from the answer
    /// (KW-CRYPTO-040, KW-SM-011).
    KeyReplaced(SessionId),
    /// Fault injection: the server changed a body it may only read.
    Tampered(SessionId, MsgType),
    /// Fault injection: the server forged or reordered a body's edits.
    Forged(SessionId, MsgType, Forgery),
    /// The server followed a rekey of a session (KW-KEY-006).
    Rekeyed {
        /// The session.
        session: SessionId,
        /// The party that rekeyed.
        from: Principal,
        /// The new epoch.
        epoch: u64,
    },
    /// The server decrypted an in-session message (KW-KEY-006).
    Observed(SessionId, MsgType),
    /// Recording of a session started (KW-REC-001).
    RecordingStarted(SessionId, RecordingId),
    /// The firewall refused a request, or did not answer it (KW-SM-026).
    FirewallFailed {
        /// The session.
        session: SessionId,
        /// The request's type.
        re: MsgType,
        /// The firewall's code, or `timeout`.
        code: ErrorCode,
    },
    /// A session ended here.
    SessionEnded(SessionId, SessionEnd),
    /// The server went on from its store (KW-SM-025).
    Restored {
        /// Registrations it holds.
        registrations: usize,
        /// Sessions it follows again.
        sessions: usize,
    },
    /// A request was rejected with `code`.
    Rejected(MsgType, ErrorCode),
    /// A message that is not a request or an expected response was
    /// dropped.
    Dropped(ErrorCode),
}

/// What a request this server sent or forwarded was for.
#[derive(Debug, Clone)]
enum Pending {
    /// Forwarded on behalf of `prev`.
    Relay {
        prev: ReplyTo,
        re: MsgType,
        requester: Principal,
        session: Option<SessionId>,
        /// The account a forwarded `cert-query` asked for.
        target: Option<Principal>,
    },
    /// A request to the firewall agent about a session's pinhole.
    Firewall { session: SessionId, re: MsgType },
    /// A command to the recorder.
    Recorder,
}

/// Deadlines a session has besides its term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SessionTimer {
    /// The session's term (KW-SM-013).
    Term,
    /// The `ack` after a relayed answer (KW-SM-027).
    Ack,
}

/// Sessions that ended, remembered so that a replayed offer cannot start
/// them again (KW-SM-017).
const ENDED: usize = 10_000;

/// See the module documentation.
pub struct Server {
    cfg: ServerConfig,
    faults: Faults,
    trust: TrustStore,
    registrations: BTreeMap<Principal, Registration>,
    /// When each registration's term ends (KW-REG-016).
    registration_ends: Deadlines<Principal>,
    revoked: BTreeMap<(Domain, u64), u64>,
    /// When each revocation stops mattering.
    revocation_ends: Deadlines<(Domain, u64)>,
    next_serial: u64,
    /// The key challenge nonces are made and checked with: a server keeps
    /// no state per challenge, so no one can fill or evict it (KW-REG-018).
    nonce_key: Secret32,
    /// Nonces of registers that passed, until their lifetime ends
    /// (KW-REG-005); nothing else can enter.
    spent: BTreeMap<Nonce, u64>,
    spent_ends: Deadlines<Nonce>,
    client: ClientTxns<Pending>,
    server: ServerTxns,
    sessions: BTreeMap<SessionId, ServerSession>,
    session_timers: Deadlines<(SessionId, SessionTimer)>,
    /// Sessions the current input changed: their records are written when
    /// it is handled.
    dirty: BTreeSet<SessionId>,
    kek: KeyCache,
    next_pinhole: u64,
    ports: ports::PortMap,
    /// Sessions that ended, with what an `EndSession` remembers.
    ended: BTreeMap<SessionId, super::store::EndedSession>,
    ended_ends: Deadlines<SessionId>,
    rejects: super::reject::DecodeRejects,
    out: Outbox<ServerEvent>,
}

impl core::fmt::Debug for Server {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Server({}, {} registrations, {} sessions)",
            self.cfg.identity.account,
            self.registrations.len(),
            self.sessions.len()
        )
    }
}

/// What handling one input comes to: `Err` says why it was refused.
type Outcome = Result<(), ProtocolError>;

impl Server {
    /// A server with an empty store.
    pub fn new(cfg: ServerConfig) -> Self {
        let trust = TrustStore::new(cfg.anchors.clone());
        Self {
            faults: Faults::default(),
            trust,
            registrations: BTreeMap::new(),
            registration_ends: Deadlines::default(),
            revoked: BTreeMap::new(),
            revocation_ends: Deadlines::default(),
            next_serial: 1,
            nonce_key: crate::crypto::primitives::hkdf32(
                cfg.decoy_secret.expose(),
                cfg.identity.account.as_str().as_bytes(),
                b"keyway-v1 challenge nonces",
            ),
            spent: BTreeMap::new(),
            spent_ends: Deadlines::default(),
            client: ClientTxns::new(cfg.retransmit),
            server: ServerTxns::new(4096),
            sessions: BTreeMap::new(),
            session_timers: Deadlines::default(),
            dirty: BTreeSet::new(),
            kek: KeyCache::new(1024),
            next_pinhole: 1,
            ports: ports::PortMap::new(cfg.firewall.as_ref()),
            ended: BTreeMap::new(),
            ended_ends: Deadlines::default(),
            rejects: Default::default(),
            out: Outbox::default(),
            cfg,
        }
    }

    /// A server restarted from what its store holds (KW-REG-010,
    /// KW-SM-025). It goes on with the sessions it followed: it sends its
    /// firewall and recorder again what it had asked of them, closes the
    /// pinholes of sessions that ended, and retransmits an offer it had
    /// forwarded and not seen answered; those outputs are waiting when it
    /// returns.
    pub fn restore(
        cfg: ServerConfig,
        snapshot: StoreSnapshot,
        now: Now,
        rng: &mut impl Entropy,
    ) -> Self {
        let mut server = Self::new(cfg);
        server.out.begin();
        server.restore_from(snapshot, now, rng);
        server.out.end();
        server
    }

    /// Makes the server misbehave, for tests of what others detect.
    #[cfg(feature = "testkit")]
    pub fn inject_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Its account.
    pub fn account(&self) -> &Principal {
        &self.cfg.identity.account
    }

    /// Its certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cfg.cert
    }

    /// The current registration of `account`, if any.
    pub fn registration(&self, account: &Principal) -> Option<&Registration> {
        self.registrations.get(account)
    }

    /// How many registrations it holds.
    pub fn registration_count(&self) -> usize {
        self.registrations.len()
    }

    /// The certificates it holds revoked, by issuer and serial: each only
    /// until the certificate ends (KW-SM-019).
    pub fn revoked(&self) -> impl Iterator<Item = &(Domain, u64)> {
        self.revoked.keys()
    }

    /// Sessions this server follows, by identifier.
    pub fn session_ids(&self) -> Vec<SessionId> {
        self.sessions.keys().copied().collect()
    }

    /// Whether this server holds the key of `session` (KW-KEY-001).
    pub fn holds_key(&self, session: &SessionId) -> bool {
        self.sessions.get(session).is_some_and(|s| s.cek.is_some())
    }

    /// How many key-encryption keys this server keeps (KW-CRYPTO-050):
    /// only those of messages it accepted (KW-ERR-004).
    pub fn cached_keys(&self) -> usize {
        self.kek.len()
    }

    /// When the session ends at the latest (monotonic), if this server
    /// follows it.
    pub fn session_expiry(&self, session: &SessionId) -> Option<Millis> {
        self.sessions.get(session).map(|s| s.expires_at)
    }

    /// The public address an internal media address is mapped to
    /// (KW-SM-012).
    pub fn public_address(&self, internal: &Addr) -> Option<Addr> {
        self.ports.get(internal)
    }

    fn event(&mut self, event: ServerEvent) {
        self.out.event(event);
    }

    /// A write of the current input, applied to what the server holds in
    /// memory as it is emitted.
    fn store(&mut self, write: StoreWrite) {
        match &write {
            StoreWrite::PutRegistration(r) => {
                self.registrations.insert(r.account.clone(), r.clone());
            }
            StoreWrite::DeleteRegistration(a) => {
                self.registrations.remove(a);
            }
            _ => {}
        }
        self.out.store(write);
    }

    /// Answers a request and remembers the answer for duplicates.
    fn respond(&mut self, now: Now, to: ReplyTo, txn: TxnId, response: Message) {
        self.server
            .respond(now.mono, to, txn, response, &mut self.out);
    }

    /// Rejects a request: an `error` response, an event, and the error.
    fn reject(
        &mut self,
        now: Now,
        to: ReplyTo,
        txn: TxnId,
        re: MsgType,
        code: ErrorCode,
    ) -> Outcome {
        let event = ServerEvent::Rejected(re, code);
        self.server
            .refuse(now.mono, to, txn, re, code, &mut self.out, event)
    }

    /// Whether a request with `txn` can be forwarded now: not when that
    /// `txn` is already outstanding here (a reused `txn` would capture
    /// another's response) or too many are.
    fn can_forward(&self, txn: &TxnId) -> Result<(), ErrorCode> {
        if self.client.contains(txn) {
            return Err(ErrorCode::BAD_STATE);
        }
        if self.client.len() >= self.cfg.policy.max_outstanding {
            return Err(ErrorCode::BUSY);
        }
        Ok(())
    }

    /// Sends a request of this server's own, kept to retransmit until
    /// answered. Returns false, sending nothing, when the `txn` is already
    /// outstanding or too many are.
    fn request(&mut self, now: Now, transmit: Transmit, txn: TxnId, pending: Pending) -> bool {
        let started = self.start_request(now, txn, transmit.clone(), pending);
        if started {
            self.out.transmit(transmit);
        }
        started
    }

    /// Keeps a request to retransmit until answered, without sending it;
    /// false when the `txn` is already outstanding or too many are
    /// (KW-SM-019).
    fn start_request(
        &mut self,
        now: Now,
        txn: TxnId,
        transmit: Transmit,
        pending: Pending,
    ) -> bool {
        self.client.len() < self.cfg.policy.max_outstanding
            && self.client.start(now.mono, txn, transmit, pending)
    }

    /// A session the current input changes: its record is written when the
    /// input is handled (KW-SM-025).
    fn session_mut(&mut self, session: &SessionId) -> Option<&mut ServerSession> {
        let s = self.sessions.get_mut(session)?;
        self.dirty.insert(*session);
        Some(s)
    }

    /// Writes the records of the sessions the input changed, then closes
    /// the input's group (KW-SM-024).
    fn end_input(&mut self, now: Now) {
        for id in core::mem::take(&mut self.dirty) {
            if let Some(record) = self.session_record(id, now) {
                self.out.store(StoreWrite::PutSession(record));
            }
        }
        self.out.end();
    }

    // ------------------------------------------------------------ input

    fn receive(&mut self, now: Now, receive: Receive<'_>, rng: &mut impl Entropy) -> Outcome {
        let from = receive.reply_to();
        let message = self.rejects.decode(
            now.mono,
            from,
            receive.contents,
            &mut self.out,
            ServerEvent::Dropped,
        )?;
        match message {
            Message::Answer(_)
            | Message::Ok(_)
            | Message::Error(_)
            | Message::CertNotify(_)
            | Message::Challenge(_)
            | Message::RegisterOk(_) => self.on_response(now, receive.source, message, rng),
            request => self.on_request(now, from, request, rng),
        }
    }

    fn on_request(
        &mut self,
        now: Now,
        from: ReplyTo,
        request: Message,
        rng: &mut impl Entropy,
    ) -> Outcome {
        // A response type this server never waits for (KW-ERR-001).
        let event = ServerEvent::Dropped;
        let txn = match self
            .server
            .admit(now.mono, from, &request, &mut self.out, event)
        {
            std::ops::ControlFlow::Continue(txn) => txn,
            std::ops::ControlFlow::Break(outcome) => return outcome,
        };
        let re = request.msg_type();
        // KW-REG-003: dispatch by type.
        match request {
            Message::Register(r) => self.on_register(now, from, r, rng),
            Message::CertQuery(q) => self.on_cert_query(now, from, q),
            Message::Offer(o) => self.on_offer(now, from, o, rng),
            Message::Ack(_) | Message::Info(_) | Message::Rekey(_) | Message::Bye(_) => {
                self.on_in_session(now, from, request, rng)
            }
            _ => self.reject(now, from, txn, re, ErrorCode::UNKNOWN_MESSAGE_TYPE),
        }
    }

    fn on_response(
        &mut self,
        now: Now,
        from: Addr,
        response: Message,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let txn = match &response {
            Message::Answer(m) => Some(m.txn),
            Message::Ok(m) => Some(m.txn),
            Message::Error(m) => m.txn,
            Message::CertNotify(m) => Some(m.txn),
            _ => None,
        };
        let Some((txn, (_, pending))) =
            txn.and_then(|t| self.client.complete(&t, from).map(|done| (t, done)))
        else {
            // Late duplicate, or not ours.
            self.event(ServerEvent::Dropped(ErrorCode::BAD_STATE));
            return Err(ProtocolError::Unsolicited(response.msg_type()));
        };
        match pending {
            Pending::Recorder => Ok(()),
            Pending::Firewall { session, re } => {
                let outcome = match &response {
                    Message::Ok(_) => Ok(()),
                    // KW-ERR-002: an unknown code counts as its class's first.
                    Message::Error(e) => Err(e.code.understood()),
                    _ => Err(ErrorCode::SCHEMA),
                };
                self.firewall_answered(now, session, re, txn, outcome, rng);
                Ok(())
            }
            Pending::Relay {
                prev,
                re,
                requester,
                session,
                target,
            } => {
                let ctx = relay::RelayContext {
                    prev,
                    re,
                    requester: &requester,
                    session,
                    target: target.as_ref(),
                };
                self.relay_response(now, ctx, response, rng)
            }
        }
    }

    // ------------------------------------------------------------ timers

    /// Retransmissions, timeouts, and the ends of registrations, nonces,
    /// revocations and sessions; each found through its deadline index.
    fn timeout(&mut self, now: Now, rng: &mut impl Entropy) {
        let due = self.client.due(now.mono);
        for transmit in due.resend {
            self.out.transmit(transmit);
        }
        for (txn, pending) in due.timed_out {
            match pending {
                Pending::Relay {
                    prev, re, session, ..
                } => {
                    // KW-ROUTE-004: the hop before learns the request failed.
                    self.respond(now, prev, txn, error_response(txn, re, ErrorCode::TIMEOUT));
                    if let (MsgType::Offer, Some(s)) = (re, session) {
                        self.end_session(now, s, SessionEnd::Failed, rng);
                    }
                }
                Pending::Firewall { session, re } => {
                    self.firewall_answered(now, session, re, txn, Err(ErrorCode::TIMEOUT), rng);
                }
                Pending::Recorder => {}
            }
        }
        self.server.expire(now.mono);
        self.expire_registrations(now);
        self.prune(now);
        for (session, timer) in self.session_timers.take_due(now.mono) {
            let end = match timer {
                SessionTimer::Term => SessionEnd::Expired,
                SessionTimer::Ack => SessionEnd::Unacknowledged,
            };
            self.end_session(now, session, end, rng);
        }
    }

    /// Forgets revocations of certificates that have ended, ended
    /// sessions whose term is over and spent nonces whose lifetime is
    /// over (KW-REG-018), in memory and in the store.
    fn prune(&mut self, now: Now) {
        let revocations = self.revocation_ends.take_due(now.mono);
        let ended = self.ended_ends.take_due(now.mono);
        let spent = self.spent_ends.take_due(now.mono);
        if revocations.is_empty() && ended.is_empty() && spent.is_empty() {
            return;
        }
        for nonce in spent {
            self.spent.remove(&nonce);
        }
        for key in revocations {
            self.revoked.remove(&key);
            self.trust.forget_revocation(&key.0, key.1);
        }
        for session in ended {
            self.ended.remove(&session);
        }
        self.store(StoreWrite::Prune { wall: now.wall });
    }

    /// Remembers an ended session until its term would have ended
    /// (KW-SM-017), within the bound.
    fn remember_ended(
        &mut self,
        session: SessionId,
        ended: super::store::EndedSession,
        until: Millis,
    ) {
        if self.ended.len() >= ENDED {
            if let Some((oldest, _)) = self.ended_ends.pop_first() {
                self.ended.remove(&oldest);
            }
        }
        self.ended.insert(session, ended);
        self.ended_ends.set(session, until);
    }

    fn poll_deadline(&self) -> Option<Millis> {
        [
            self.client.next_timeout(),
            self.server.next_timeout(),
            self.registration_ends.next(),
            self.revocation_ends.next(),
            self.session_timers.next(),
            self.spent_ends.next(),
            self.ended_ends.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Party for Server {
    type Event = ServerEvent;
    type Command = NoCommand;

    fn handle_receive(
        &mut self,
        now: Now,
        receive: Receive<'_>,
        rng: &mut impl Entropy,
    ) -> Result<(), ProtocolError> {
        self.out.begin();
        let outcome = self.receive(now, receive, rng);
        self.end_input(now);
        outcome
    }

    fn handle_timeout(&mut self, now: Now, rng: &mut impl Entropy) {
        self.out.begin();
        self.timeout(now, rng);
        self.end_input(now);
    }

    fn command(
        &mut self,
        _now: Now,
        command: NoCommand,
        _rng: &mut impl Entropy,
    ) -> Result<(), ApiMisuse> {
        match command {}
    }

    fn poll_output(&mut self) -> Option<Output<ServerEvent>> {
        self.out.poll()
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.poll_deadline()
    }
}
