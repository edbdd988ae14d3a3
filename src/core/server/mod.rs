//! The server as a sans-IO state machine: registrar and certificate
//! authority (F1, F2), certificate queries (F3), routing (F8), the trusted
//! server's part in sealed sessions (F4, F5), and the firewall and
//! recording commands it derives from them (F6, F7).
//!
//! Every request is dispatched by type (KW-REG-003). A rejected request is
//! answered with an `error` and changes nothing but the transaction cache
//! (KW-ERR-004); the one exception is a challenge nonce, which any answer
//! spends (KW-REG-005).

mod registrar;
mod relay;
mod session;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::ops::ControlFlow;

use super::error::ProtocolError;
use super::firewall::{FirewallCommand, PinholeView};
use super::request::error_response;
use super::routing::ServerDirectory;
use super::store::{StoreSnapshot, StoreWrite};
use super::transact::{ClientTxns, RetransmitPolicy, ServerTxns};
use super::{Addr, Millis, Output, secs};
use crate::crypto::register::Verifier;
use crate::crypto::{
    CertificateAuthority, Entropy, Identity, KeyCache, KeyPolicy, Secret32, TrustAnchor, TrustStore,
};
use crate::wire::{
    Certificate, Domain, ErrorCode, Message, MsgType, Nonce, Permission, Principal, PublicKey,
    RecordingId, RecordingMode, SessionId, TxnId,
};

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
    fn selects(&self, party: &Principal) -> bool {
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
    /// Reject an offer from a local caller that does not make this server
    /// a recipient (`recipient-missing`, KW-POLICY-002).
    pub require_own_entry: bool,
    /// Longest life of a session without a `bye`, in seconds; every pinhole
    /// ends with it (KW-FW-004).
    pub session_secs: u64,
    /// Which sessions are recorded.
    pub record: RecordPolicy,
    /// Most sessions followed at once; further offers are refused with
    /// `busy`.
    pub max_sessions: usize,
    /// Replace the content key of offers it may modify, when it can
    /// re-wrap every entry after it (claim 39, KW-SM-011).
    pub rekey_offers: bool,
    /// Fault injection for tests and the simulator: change bodies this
    /// server may only read, as a misbehaving server would (KW-SEAL-006).
    /// Never set in a real deployment.
    pub tamper_read_only: bool,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            challenge_secs: 30,
            decoy_iterations: 4096,
            rewrite_media: true,
            require_own_entry: false,
            session_secs: 3600,
            record: RecordPolicy::Nothing,
            max_sessions: 10_000,
            rekey_offers: false,
            tamper_read_only: false,
        }
    }
}

/// The firewall in front of a server's domain, as the server plans it:
/// the public address its media addresses are rewritten to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirewallPlan {
    /// The firewall's public address.
    pub public_ip: IpAddr,
    /// First public port handed out.
    pub first_port: u16,
    /// How many ports are handed out, round robin.
    pub ports: u16,
}

/// The recorder a server sends recordings to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderLink {
    /// Its account.
    pub account: Principal,
    /// Its address (commands and copied media go here).
    pub addr: Addr,
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
    /// Where it receives signalling.
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

/// Why a session ended at a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// An authenticated `bye` (KW-FW-003).
    Bye,
    /// The offer failed or timed out.
    Failed,
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
    /// A session ended here.
    SessionEnded(SessionId, SessionEnd),
    /// A request was rejected with `code`.
    Rejected(MsgType, ErrorCode),
    /// A message that is not a request or an expected response was
    /// dropped.
    Dropped(ErrorCode),
}

/// A challenge issued and not yet answered (KW-REG-005).
struct OutstandingNonce {
    account: Principal,
    expires_at: Millis,
    kx: Option<crate::crypto::KxKeyPair>,
}

/// What a request this server sent or forwarded was for.
#[derive(Debug, Clone)]
enum Pending {
    /// Forwarded on behalf of `prev`.
    Relay {
        prev: Addr,
        re: MsgType,
        requester: Principal,
        session: Option<SessionId>,
        /// The account a forwarded `cert-query` asked for.
        target: Option<Principal>,
    },
    /// A command to the recorder.
    Recorder,
}

/// Most outstanding challenge nonces, and per account.
const NONCES: usize = 4096;
const NONCES_PER_ACCOUNT: usize = 4;
/// Most requests a server forwards or sends at once.
const OUTSTANDING: usize = 10_000;
/// Sessions that ended, remembered so that a replayed offer cannot start
/// them again (KW-SM-017).
const ENDED: usize = 10_000;

/// See the module documentation.
pub struct Server {
    cfg: ServerConfig,
    trust: TrustStore,
    registrations: BTreeMap<Principal, super::store::Registration>,
    revoked: BTreeMap<(Domain, u64), u64>,
    next_serial: u64,
    nonces: BTreeMap<Nonce, OutstandingNonce>,
    client: ClientTxns<Pending>,
    server: ServerTxns,
    sessions: BTreeMap<SessionId, ServerSession>,
    kek: KeyCache,
    next_pinhole: u64,
    next_port: u16,
    public_of: BTreeMap<Addr, Addr>,
    /// Sessions that ended, until their term would have (KW-SM-017).
    ended: BTreeMap<SessionId, Millis>,
    rejects: super::reject::DecodeRejects,
    outputs: VecDeque<Output<ServerEvent>>,
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

type Emit = Output<ServerEvent>;

/// What handling one input comes to: `Err` says why it was refused.
type Outcome = Result<(), ProtocolError>;

impl Server {
    /// A server with an empty store.
    pub fn new(cfg: ServerConfig) -> Self {
        Self::restore(cfg, StoreSnapshot::default())
    }

    /// A server restarted from what its store holds (KW-REG-010). Sessions
    /// are not stored: call [`Server::reconcile_firewall`] with the
    /// firewall's pinholes to close those left over (KW-FW-004).
    pub fn restore(cfg: ServerConfig, snapshot: StoreSnapshot) -> Self {
        let mut trust = TrustStore::new(cfg.anchors.clone());
        for (issuer, serial) in snapshot.revoked.keys() {
            trust.revoke(issuer.clone(), *serial);
        }
        Self {
            trust,
            registrations: snapshot.registrations,
            revoked: snapshot.revoked,
            next_serial: snapshot.next_serial.max(1),
            nonces: BTreeMap::new(),
            client: ClientTxns::new(cfg.retransmit),
            server: ServerTxns::new(4096),
            sessions: BTreeMap::new(),
            kek: KeyCache::new(1024),
            next_pinhole: 1,
            next_port: 0,
            public_of: BTreeMap::new(),
            ended: BTreeMap::new(),
            rejects: Default::default(),
            outputs: VecDeque::new(),
            cfg,
        }
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
    pub fn registration(&self, account: &Principal) -> Option<&super::store::Registration> {
        self.registrations.get(account)
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

    /// When the session ends at the latest, if this server follows it.
    pub fn session_expiry(&self, session: &SessionId) -> Option<Millis> {
        self.sessions.get(session).map(|s| s.expires_at)
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<ServerEvent>> {
        self.outputs.pop_front()
    }

    /// When [`Server::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let registrations = self
            .registrations
            .values()
            .map(|r| r.not_after.saturating_add(1).saturating_mul(1000))
            .min();
        let sessions = self.sessions.values().map(|s| s.expires_at).min();
        let nonces = self.nonces.values().map(|n| n.expires_at).min();
        let ended = self.ended.values().copied().min();
        [
            self.client.next_timeout(),
            self.server.next_timeout(),
            registrations,
            sessions,
            nonces,
            ended,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn emit(&mut self, event: ServerEvent) {
        self.outputs.push_back(Emit::Event(event));
    }

    fn send(&mut self, to: Addr, message: Message) {
        self.outputs.push_back(Emit::Transmit { to, message });
    }

    fn store(&mut self, write: StoreWrite) {
        let mut snapshot = StoreSnapshot {
            registrations: core::mem::take(&mut self.registrations),
            revoked: core::mem::take(&mut self.revoked),
            next_serial: self.next_serial,
        };
        snapshot.apply(&write);
        self.registrations = snapshot.registrations;
        self.revoked = snapshot.revoked;
        self.next_serial = snapshot.next_serial;
        self.outputs.push_back(Emit::Store(write));
    }

    fn firewall(&mut self, command: FirewallCommand) {
        self.outputs.push_back(Emit::Firewall(command));
    }

    /// Answers a request and remembers the answer for duplicates.
    fn respond(&mut self, now: Millis, to: Addr, txn: TxnId, response: Message) {
        self.server.answer(now, txn, to, response.clone());
        self.send(to, response);
    }

    /// Rejects a request: an `error` response, an event, and the error.
    fn reject(
        &mut self,
        now: Millis,
        to: Addr,
        txn: TxnId,
        re: MsgType,
        code: ErrorCode,
    ) -> Outcome {
        self.emit(ServerEvent::Rejected(re, code));
        self.respond(now, to, txn, error_response(txn, re, code));
        Err(ProtocolError::Refused { re, code })
    }

    /// Whether a request with `txn` can be forwarded now: not when that
    /// `txn` is already outstanding here (a reused `txn` would capture
    /// another's response) or too many are.
    fn can_forward(&self, txn: &TxnId) -> Result<(), ErrorCode> {
        if self.client.contains(txn) {
            return Err(ErrorCode::BAD_STATE);
        }
        if self.client.len() >= OUTSTANDING {
            return Err(ErrorCode::BUSY);
        }
        Ok(())
    }

    /// Sends a request of this server's own, kept to retransmit until
    /// answered. Returns false, sending nothing, when the `txn` is already
    /// outstanding or too many are.
    fn request(
        &mut self,
        now: Millis,
        to: Addr,
        txn: TxnId,
        message: Message,
        pending: Pending,
    ) -> bool {
        let started = self.start_request(now, to, txn, &message, pending);
        if started {
            self.send(to, message);
        }
        started
    }

    /// Keeps a request to retransmit until answered, without sending it;
    /// false when the `txn` is already outstanding or too many are
    /// (KW-SM-019).
    fn start_request(
        &mut self,
        now: Millis,
        to: Addr,
        txn: TxnId,
        message: &Message,
        pending: Pending,
    ) -> bool {
        self.client.len() < OUTSTANDING && self.client.start(now, txn, to, message.clone(), pending)
    }

    /// Closes the pinholes of sessions this server no longer has — after a
    /// restart, every pinhole (KW-FW-004).
    pub fn reconcile_firewall(&mut self, pinholes: &[PinholeView]) {
        for p in pinholes {
            let known = self
                .sessions
                .get(&p.session)
                .is_some_and(|s| s.pinholes.contains(&p.pinhole));
            if !known {
                self.firewall(FirewallCommand::Close { pinhole: p.pinhole });
            }
        }
        self.next_pinhole = pinholes
            .iter()
            .map(|p| p.pinhole.saturating_add(1))
            .max()
            .unwrap_or(1)
            .max(self.next_pinhole);
    }

    // ------------------------------------------------------------ input

    /// A datagram arrived from `from`. `Err` says why it was refused; an
    /// `error` answering it, if the protocol has one, is among the outputs.
    pub fn handle_receive(
        &mut self,
        now: Millis,
        from: Addr,
        bytes: &[u8],
        rng: &mut impl Entropy,
    ) -> Outcome {
        let message =
            self.rejects
                .decode(now, from, bytes, &mut self.outputs, ServerEvent::Dropped)?;
        match message {
            Message::Answer(_)
            | Message::Ok(_)
            | Message::Error(_)
            | Message::CertNotify(_)
            | Message::Challenge(_)
            | Message::RegisterOk(_) => self.on_response(now, from, message, rng),
            request => self.on_request(now, from, request, rng),
        }
    }

    fn on_request(
        &mut self,
        now: Millis,
        from: Addr,
        request: Message,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let re = request.msg_type();
        // A response type this server never waits for (KW-ERR-001) is told
        // as `Dropped`.
        let event = ServerEvent::Dropped;
        let txn = match self
            .server
            .admit(now, from, &request, &mut self.outputs, event)
        {
            ControlFlow::Continue(txn) => txn,
            ControlFlow::Break(outcome) => return outcome,
        };
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
        now: Millis,
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
        let Some((_, _, pending)) = txn.and_then(|t| self.client.complete(&t, from)) else {
            // Late duplicate, or not ours.
            self.emit(ServerEvent::Dropped(ErrorCode::BAD_STATE));
            return Err(ProtocolError::Unsolicited(response.msg_type()));
        };
        match pending {
            Pending::Recorder => Ok(()),
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

    /// Retransmissions, timeouts, and the ends of registrations, nonces and
    /// sessions.
    pub fn handle_timeout(&mut self, now: Millis, rng: &mut impl Entropy) {
        let due = self.client.due(now);
        for (to, message) in due.resend {
            self.send(to, message);
        }
        for (txn, pending) in due.timed_out {
            if let Pending::Relay {
                prev, re, session, ..
            } = pending
            {
                // KW-ROUTE-004: the hop before learns the request failed.
                self.respond(now, prev, txn, error_response(txn, re, ErrorCode::TIMEOUT));
                if let (MsgType::Offer, Some(s)) = (re, session) {
                    self.end_session(now, s, SessionEnd::Failed, rng);
                }
            }
        }
        self.server.expire(now);
        self.nonces.retain(|_, n| n.expires_at > now);
        self.ended.retain(|_, until| *until > now);
        self.expire_registrations(now);
        let ended: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for session in ended {
            self.end_session(now, session, SessionEnd::Expired, rng);
        }
        for s in self.sessions.values_mut() {
            if let Some(keys) = s.keys.as_mut() {
                keys.send.expire(secs(now));
                keys.recv.expire(secs(now));
            }
        }
    }
}
