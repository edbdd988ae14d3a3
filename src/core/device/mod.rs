//! The device (a user agent) as a sans-IO state machine: registration with
//! certificate issuance or an existing certificate (F1, F2), certificate
//! queries with a cache bounded by validity (F3), calls with sealed session
//! descriptions (F4), key reuse and rekey (F5), media, hang-up.
//!
//! This module holds the public types, the device's state, and the
//! dispatch of commands, datagrams and timers; what they set off is split
//! by concern: `register` (F1, F2), `certs` (other accounts' certificates
//! and what waits for them, F3), `call` (set-up, F4) and `session` (an
//! established call, F5).

mod call;
mod certs;
mod register;
mod session;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::ControlFlow;

use super::clock::Now;
use super::error::{ApiMisuse, ProtocolError};
use super::party::{Outbox, Output, Party};
use super::request::error_response;
use super::transact::{ClientTxns, RetransmitPolicy, ServerTxns};
use super::transport::{Proto, Receive, ReplyTo, Transmit};
use super::{Addr, Millis};
use crate::crypto::{
    Entropy, Identity, KeyCache, KeyPolicy, RecipientSpec, ReplayWindow, Secret32, SessionKeys,
    TrustAnchor, TrustStore,
};
use crate::wire::{
    Certificate, Contact, ErrorCode, ErrorResponse, Message, MsgType, Nonce, Permission, Principal,
    Register, SessionDesc, SessionId, TxnId,
};
use certs::Parked;
use register::RegState;
use session::keys_due;

/// Which servers a device trusts, and how it behaves (KW-POLICY-001).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// Permission for the device's own server, or no entry.
    pub own_server: Option<Permission>,
    /// Permission for the peer's domain server, or no entry.
    pub peer_server: Option<Permission>,
    /// Per destination domain, the permission for that domain's server,
    /// overriding `peer_server` (KW-POLICY-001); `None` trusts it with
    /// nothing.
    pub peer_servers: BTreeMap<String, Option<Permission>>,
    /// The local part of a domain's server account (`sc` in `sc@b.example`).
    pub server_local_part: String,
    /// Seal server entries anonymously (found by trial).
    pub anonymous_servers: bool,
    /// Refresh the registration when this percentage of the term has passed.
    pub refresh_percent: u64,
    /// The fewest PBKDF2 iterations a challenge may ask for (KW-REG-021);
    /// at least the protocol's 4096 (KW-CRYPTO-020).
    pub min_iterations: u64,
    /// Answer incoming calls without asking.
    pub auto_answer: bool,
    /// Initial hop limit of requests.
    pub hops: u64,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        Self {
            own_server: Some(Permission::ReadModify),
            peer_server: Some(Permission::Read),
            peer_servers: BTreeMap::new(),
            server_local_part: "sc".into(),
            anonymous_servers: false,
            refresh_percent: 80,
            min_iterations: *crate::crypto::register::ITERATIONS.start(),
            auto_answer: true,
            hops: 8,
        }
    }
}

/// What a device is configured with.
#[derive(Clone)]
pub struct DeviceConfig {
    /// Its account.
    pub account: Principal,
    /// The secret provisioned for it.
    pub secret: Vec<u8>,
    /// Its server's address.
    pub server: Addr,
    /// Its server's account.
    pub server_account: Principal,
    /// Where it receives signalling.
    pub contact: Contact,
    /// Where it receives media.
    pub media: Addr,
    /// Registration term to ask for, in seconds.
    pub expires: u64,
    /// Its domain's certificate authority.
    pub anchor: TrustAnchor,
    /// Trust and behaviour.
    pub policy: DevicePolicy,
    /// Retransmission timing.
    pub retransmit: RetransmitPolicy,
    /// Rekey timing.
    pub keys: KeyPolicy,
    /// Key pairs provisioned ahead (say, in a secure element); `None`: the
    /// device makes them at its first registration (KW-REG-001).
    pub identity: Option<Identity>,
}

/// The provisioned secret never reaches debug output (KW-CRYPTO-002).
impl core::fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("account", &self.account)
            .field("secret", &format_args!("<redacted>"))
            .field("server", &self.server)
            .field("server_account", &self.server_account)
            .field("contact", &self.contact)
            .field("media", &self.media)
            .field("expires", &self.expires)
            .field("policy", &self.policy)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// What the application asks a device to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    /// Register, requesting a new certificate (F1).
    Register,
    /// Register again with the certificate held (F2).
    RegisterWithCertificate,
    /// End the registration (and its certificate).
    Deregister,
    /// Fetch and confirm another account's certificate (F3).
    QueryCertificate(Principal),
    /// Call `to` (F4).
    Call(Principal),
    /// Send text in a call.
    Info(SessionId, String),
    /// Rekey a call now; `body`: sealed for the recipients rather than
    /// wrapped under the current key (F5).
    Rekey(SessionId, bool),
    /// Send one media frame.
    Media(SessionId, Vec<u8>),
    /// Hang up.
    HangUp(SessionId),
}

/// The phase of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Fetching the certificates the offer needs.
    WaitingForCertificates,
    /// Offer sent.
    Offering,
    /// Answer sent, waiting for the ack.
    Answered,
    /// Both sides hold the session key.
    Established,
    /// Bye sent, waiting for its answer.
    Ending,
}

/// What a device tells its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Registered until `not_after`, with the certificate of `serial`.
    Registered {
        /// End of the registration and of the certificate.
        not_after: u64,
        /// Certificate serial.
        serial: u64,
        /// Whether the certificate was issued now (F1) or confirmed (F2).
        issued: bool,
    },
    /// De-registered.
    Deregistered,
    /// The registration's term ended without a refresh; so did the
    /// certificate.
    RegistrationExpired,
    /// Registration failed.
    RegistrationFailed(ErrorCode),
    /// A certificate was confirmed and cached (KW-QUERY-006).
    CertificateAccepted {
        /// Whose.
        account: Principal,
        /// Its issuer.
        issuer: String,
        /// Its serial.
        serial: u64,
        /// Its end.
        not_after: u64,
    },
    /// A certificate query failed.
    QueryFailed(Principal, ErrorCode),
    /// A call came in.
    IncomingCall(SessionId, Principal),
    /// A call is established.
    CallEstablished(SessionId, Principal),
    /// A call failed.
    CallFailed(SessionId, ErrorCode),
    /// A sealed body did not verify: someone changed it (KW-SEAL-006).
    TamperDetected(SessionId, ErrorCode),
    /// Text arrived in a call.
    InfoReceived(SessionId, String),
    /// A direction of a call moved to a new key epoch.
    Rekeyed {
        /// The call.
        session: SessionId,
        /// This device's sending direction (true) or receiving (false).
        sending: bool,
        /// The new epoch.
        epoch: u64,
    },
    /// A media frame arrived and decrypted.
    MediaReceived {
        /// The call.
        session: SessionId,
        /// Description number of the key used.
        epoch: u64,
        /// Sequence number.
        seq: u64,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A call ended.
    CallEnded(SessionId),
    /// Input was rejected (decode or check failure).
    Rejected(ErrorCode),
}

/// What an outstanding request of the device was for.
#[derive(Debug, Clone)]
enum Pending {
    Register {
        request: Box<Register>,
        /// Whether this attempt was started over once already.
        started_over: bool,
        /// The salt and iteration count of the challenge this request
        /// answers, pinned when it passes (KW-REG-021).
        verifier: Option<(Nonce, u64)>,
    },
    Query(Principal),
    Offer(SessionId),
    InSession(SessionId, MsgType),
}

struct Call {
    peer: Principal,
    /// The peer's certificate as confirmed when the call was set up: what
    /// its in-session signatures are checked with (KW-SM-020).
    peer_cert: Option<Certificate>,
    state: CallState,
    /// The content key of the offer: the session key of epoch 0.
    cek: Option<Secret32>,
    keys: Option<SessionKeys>,
    my_desc: SessionDesc,
    my_desc_number: u64,
    peer_descs: BTreeMap<u64, SessionDesc>,
    media_seq: u64,
    recipients: Vec<RecipientSpec>,
    /// Requests under an epoch whose rekey has not arrived yet: they were
    /// overtaken in the network and are taken up once it has (KW-KEY-004).
    deferred: Vec<(ReplyTo, Message)>,
    /// When an answered call gives up waiting for its `ack`.
    ack_deadline: Option<Millis>,
    /// The media packets received, per stream and description of the peer
    /// (KW-KEY-007).
    media_windows: BTreeMap<(u64, u64), ReplayWindow>,
}

/// Most certificate queries, and received items waiting for them, at once.
const PENDING: usize = 64;

/// See the module documentation.
pub struct Device {
    cfg: DeviceConfig,
    identity: Option<Identity>,
    cert: Option<Certificate>,
    reg: RegState,
    /// When to refresh the registration (KW-REG-014).
    refresh_at: Option<Millis>,
    /// When the registration's term ends, on the monotonic clock
    /// (KW-REG-016).
    lapse_at: Option<Millis>,
    trust: TrustStore,
    certs: BTreeMap<Principal, Certificate>,
    queries: BTreeMap<Principal, TxnId>,
    parked: Vec<(BTreeSet<Principal>, Parked)>,
    calls: BTreeMap<SessionId, Call>,
    client: ClientTxns<Pending>,
    server: ServerTxns,
    kek: KeyCache,
    client_key: Option<(Nonce, u64, Secret32)>,
    /// The salt and iteration count of the last registration that passed
    /// (KW-REG-021): a challenge with another salt or fewer iterations is
    /// refused.
    pin: Option<(Nonce, u64)>,
    rejects: super::reject::DecodeRejects,
    ended: VecDeque<SessionId>,
    out: Outbox<DeviceEvent>,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Device({}, {} calls)",
            self.cfg.account,
            self.calls.len()
        )
    }
}

/// What handling one input comes to: `Err` says why it was refused.
type Outcome = Result<(), ProtocolError>;

impl Device {
    /// A device that has not registered yet.
    pub fn new(cfg: DeviceConfig) -> Self {
        let trust = TrustStore::new(vec![cfg.anchor.clone()]);
        Self {
            client: ClientTxns::new(cfg.retransmit),
            identity: cfg.identity.clone().filter(|i| i.account == cfg.account),
            cfg,
            cert: None,
            reg: RegState::Idle,
            refresh_at: None,
            lapse_at: None,
            trust,
            certs: BTreeMap::new(),
            queries: BTreeMap::new(),
            parked: Vec::new(),
            calls: BTreeMap::new(),
            server: ServerTxns::new(1024),
            kek: KeyCache::new(256),
            client_key: None,
            pin: None,
            rejects: Default::default(),
            ended: VecDeque::new(),
            out: Outbox::default(),
        }
    }

    // ------------------------------------------------------------ getters

    /// The account.
    pub fn account(&self) -> &Principal {
        &self.cfg.account
    }

    /// The certificate held, if any.
    pub fn certificate(&self) -> Option<&Certificate> {
        self.cert.as_ref()
    }

    /// When the registration ends, if registered (also while a refresh is
    /// in progress).
    pub fn registered_until(&self) -> Option<u64> {
        match self.reg {
            RegState::Registered { not_after } | RegState::Renewing { not_after } => {
                Some(not_after)
            }
            RegState::Idle | RegState::Pending => None,
        }
    }

    /// The state of a call.
    pub fn call_state(&self, session: &SessionId) -> Option<CallState> {
        self.calls.get(session).map(|c| c.state)
    }

    /// The peer's certificate as this device confirmed it when the call was
    /// set up (KW-SM-020): what it checks the peer's signatures with.
    pub fn peer_certificate(&self, session: &SessionId) -> Option<&Certificate> {
        self.calls.get(session).and_then(|c| c.peer_cert.as_ref())
    }

    /// The calls in progress.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.calls.keys().copied().collect()
    }

    /// How many key-encryption keys this device keeps (KW-CRYPTO-050):
    /// only those of messages it accepted (KW-ERR-004).
    pub fn cached_keys(&self) -> usize {
        self.kek.len()
    }

    // ------------------------------------------------------------ polling

    /// When the device must next be woken (see [`Party::poll_timeout`]):
    /// calls are few, so they are looked through.
    fn next_deadline(&self) -> Option<Millis> {
        let acks = self.calls.values().filter_map(|c| c.ack_deadline).min();
        // KW-KEY-003: the periodic rekey by time.
        let rekeys = self
            .calls
            .values()
            .filter(|c| c.state == CallState::Established)
            .filter_map(|c| c.keys.as_ref())
            .map(|k| {
                k.send
                    .epoch_started()
                    .saturating_add(self.cfg.keys.rekey_after_secs)
                    .saturating_mul(1000)
            })
            .min();
        [
            self.client.next_timeout(),
            self.refresh_at,
            self.server.next_timeout(),
            acks,
            rekeys,
            self.lapse_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn emit(&mut self, event: DeviceEvent) {
        self.out.event(event);
    }

    /// Sends a message of the device's own: signalling from its contact
    /// over its transport, media from its media address over UDP.
    fn send(&mut self, to: Addr, message: Message) {
        let (proto, source) = match message {
            Message::Media(_) => (Proto::Udp, self.cfg.media),
            _ => (Proto::of(self.cfg.contact.transport), self.cfg.contact.addr),
        };
        self.out.transmit(Transmit {
            proto,
            source,
            destination: to,
            message,
        });
    }

    /// Sends a request to the device's server, kept to retransmit until
    /// answered (every request of a device goes to its server).
    fn request(&mut self, now: Now, txn: TxnId, mut message: Message, pending: Pending) {
        // KW-CRYPTO-061: every in-session request is signed by its sender,
        // so that servers, which hold the session key, cannot forge one.
        if let Some(identity) = &self.identity {
            let _ = crate::crypto::sign_message(&mut message, &identity.signing);
        }
        let transmit = Transmit {
            proto: Proto::of(self.cfg.contact.transport),
            source: self.cfg.contact.addr,
            destination: self.cfg.server,
            message,
        };
        self.client.start(now.mono, txn, transmit.clone(), pending);
        self.out.transmit(transmit);
    }

    fn respond(&mut self, now: Now, to: ReplyTo, txn: TxnId, response: Message) {
        self.server
            .respond(now.mono, to, txn, response, &mut self.out);
    }

    // ------------------------------------------------------------ commands

    fn carry_out(
        &mut self,
        now: Now,
        command: DeviceCommand,
        rng: &mut impl Entropy,
    ) -> Result<(), ApiMisuse> {
        self.check_command(&command)?;
        match command {
            DeviceCommand::Register => self.register(now, false, rng),
            DeviceCommand::RegisterWithCertificate => self.register(now, true, rng),
            DeviceCommand::Deregister => self.deregister(now, rng),
            DeviceCommand::QueryCertificate(target) => self.query(now, &target, rng),
            DeviceCommand::Call(to) => self.call(now, to, rng),
            DeviceCommand::Info(session, text) => self.info(now, session, text, None, rng),
            DeviceCommand::Rekey(session, body) => self.rekey(now, session, body, rng),
            DeviceCommand::Media(session, frame) => self.media(session, &frame),
            DeviceCommand::HangUp(session) => self.hang_up(now, session, rng),
        }
        Ok(())
    }

    fn check_command(&self, command: &DeviceCommand) -> Result<(), ApiMisuse> {
        let call = |session: &SessionId| {
            self.calls
                .get(session)
                .ok_or(ApiMisuse::UnknownSession(*session))
        };
        let established = |session: &SessionId| match call(session)?.state {
            CallState::Established => Ok(()),
            _ => Err(ApiMisuse::NotEstablished(*session)),
        };
        match command {
            DeviceCommand::Call(_) if self.identity.is_none() || self.cert.is_none() => {
                Err(ApiMisuse::NotRegistered)
            }
            DeviceCommand::QueryCertificate(target)
                if !self.queries.contains_key(target) && self.queries.len() >= PENDING =>
            {
                Err(ApiMisuse::TooManyQueries)
            }
            // Text goes under the session key, which a callee holds from
            // its answer on.
            DeviceCommand::Info(session, _) => match call(session)?.keys {
                Some(_) => Ok(()),
                None => Err(ApiMisuse::NotEstablished(*session)),
            },
            DeviceCommand::Rekey(session, _) | DeviceCommand::Media(session, _) => {
                established(session)
            }
            DeviceCommand::HangUp(session) => call(session).map(|_| ()),
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------ timers

    /// Retransmissions, timeouts and the registration refresh.
    fn timeout(&mut self, now: Now, rng: &mut impl Entropy) {
        let due = self.client.due(now.mono);
        for transmit in due.resend {
            self.out.transmit(transmit);
        }
        for (_, pending) in due.timed_out {
            self.failed(now, pending, ErrorCode::TIMEOUT, None, rng);
        }
        self.server.expire(now.mono);
        self.lapse(now);
        if self.refresh_at.is_some_and(|t| t <= now.mono) {
            self.refresh_at = None;
            self.register(now, false, rng);
        }
        for call in self.calls.values_mut() {
            if let Some(keys) = call.keys.as_mut() {
                keys.recv.expire(now.mono_secs());
            }
        }
        // An answer whose ack never came: the caller is gone.
        let unacknowledged: Vec<SessionId> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.state == CallState::Answered && c.ack_deadline.is_some_and(|t| t <= now.mono)
            })
            .map(|(s, _)| *s)
            .collect();
        for session in unacknowledged {
            self.fail_call(session, ErrorCode::TIMEOUT);
        }
        let due: Vec<SessionId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.state == CallState::Established)
            .filter(|(s, _)| keys_due(self.calls.get(*s), now, &self.cfg.keys))
            .map(|(s, _)| *s)
            .collect();
        for session in due {
            self.rekey(now, session, false, rng);
        }
    }

    fn failed(
        &mut self,
        now: Now,
        pending: Pending,
        code: ErrorCode,
        min_expires: Option<u64>,
        rng: &mut impl Entropy,
    ) {
        match pending {
            Pending::Register {
                request,
                started_over,
                ..
            } => {
                // The nonce answered is unknown: the server lost it in a
                // restart (KW-SM-025); the attempt starts over, once.
                if code == ErrorCode::STALE_NONCE && request.auth.is_some() && !started_over {
                    let again = Register {
                        txn: TxnId(rng.array()),
                        auth: None,
                        ..*request
                    };
                    self.send_register_again(now, again, true);
                    return;
                }
                // KW-REG-009: too little of the certificate held is left to
                // register with (F2): a new one is asked for (F1).
                if code == ErrorCode::CERT_EXPIRED && request.cert.is_some() {
                    if let Some(identity) = self.identity.as_ref() {
                        let again = Register {
                            txn: TxnId(rng.array()),
                            csr: Some(crate::crypto::register::make_csr(identity)),
                            cert: None,
                            auth: None,
                            ..*request
                        };
                        self.send_register_again(now, again, started_over);
                        return;
                    }
                }
                if code == ErrorCode::INTERVAL_TOO_BRIEF {
                    if let Some(min) = min_expires.filter(|m| *m > request.expires) {
                        let retry = Register {
                            txn: TxnId(rng.array()),
                            expires: min,
                            auth: None,
                            ..*request
                        };
                        self.send_register(now, retry);
                        return;
                    }
                }
                self.registration_failed(now, code, request.expires == 0);
            }
            Pending::Query(target) => {
                self.queries.remove(&target);
                self.emit(DeviceEvent::QueryFailed(target.clone(), code));
                // Whatever waited for this certificate fails with it.
                let waiting: Vec<Parked> = {
                    let (hit, keep): (Vec<_>, Vec<_>) = self
                        .parked
                        .drain(..)
                        .partition(|(needs, _)| needs.contains(&target));
                    self.parked = keep;
                    hit.into_iter().map(|(_, p)| p).collect()
                };
                for item in waiting {
                    match item {
                        Parked::Call(session) => self.fail_call(session, code),
                        Parked::Offer(from, offer) => {
                            let error = error_response(offer.txn, MsgType::Offer, code);
                            self.respond(now, from, offer.txn, error);
                        }
                        Parked::Answer(answer) => self.fail_call(answer.session, code),
                    }
                }
            }
            Pending::Offer(session) => self.fail_call(session, code),
            Pending::InSession(session, MsgType::Bye) => self.end_call(session),
            // KW-SM-023: the peer no longer has the call, or cannot be
            // reached: the call is over (as RFC 5057 ends a SIP dialog on
            // 481 and 408).
            // A call already ending is left to its `bye`.
            Pending::InSession(session, _)
                if [
                    ErrorCode::UNKNOWN_SESSION,
                    ErrorCode::TIMEOUT,
                    ErrorCode::NOT_REGISTERED,
                ]
                .contains(&code)
                    && self.call_state(&session) != Some(CallState::Ending) =>
            {
                self.fail_call(session, code)
            }
            Pending::InSession(_, _) => {}
        }
    }

    // ------------------------------------------------------------ input

    /// A message arrived. `Err` says why it was refused; an `error`
    /// answering it, if the protocol has one, is among the outputs.
    fn receive(&mut self, now: Now, receive: Receive<'_>, rng: &mut impl Entropy) -> Outcome {
        let from = receive.reply_to();
        let message = self.rejects.decode(
            now.mono,
            from,
            receive.contents,
            &mut self.out,
            DeviceEvent::Rejected,
        )?;
        let response = matches!(
            message,
            Message::Challenge(_)
                | Message::RegisterOk(_)
                | Message::CertNotify(_)
                | Message::Error(_)
                | Message::Answer(_)
                | Message::Ok(_)
        );
        if response && receive.source != self.cfg.server {
            // KW-FRAME-013: every request of a device goes to its server.
            return Err(ProtocolError::Unsolicited(message.msg_type()));
        }
        match message {
            Message::Challenge(c) => self.on_challenge(now, c, rng),
            Message::RegisterOk(ok) => self.on_register_ok(now, ok),
            Message::CertNotify(n) => self.on_cert_notify(now, n, rng),
            Message::Error(e) => self.on_error(now, e, rng),
            Message::Answer(a) => self.on_answer(now, a, rng),
            Message::Ok(ok) => self.on_ok(ok),
            Message::Media(m) => self.on_media(now, m),
            other => self.on_request(now, from, other, rng),
        }
    }

    fn on_error(&mut self, now: Now, error: ErrorResponse, rng: &mut impl Entropy) -> Outcome {
        let Some((_, pending)) = error
            .txn
            .and_then(|txn| self.client.complete(&txn, self.cfg.server))
        else {
            return Err(ProtocolError::Unsolicited(MsgType::Error));
        };
        // KW-ERR-002: an unknown code counts as its class's first.
        self.failed(
            now,
            pending,
            error.code.understood(),
            error.min_expires,
            rng,
        );
        Ok(())
    }

    fn on_request(
        &mut self,
        now: Now,
        from: ReplyTo,
        request: Message,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let re = request.msg_type();
        // A response type a device never waits for (KW-ERR-001) is told
        // as `Rejected`.
        let event = DeviceEvent::Rejected;
        let txn = match self
            .server
            .admit(now.mono, from, &request, &mut self.out, event)
        {
            ControlFlow::Continue(txn) => txn,
            ControlFlow::Break(outcome) => return outcome,
        };
        if let Some(code) = self.forged_in_session(&request) {
            return self.reject_request(now, from, txn, re, code);
        }
        match request {
            Message::Offer(offer) => self.on_offer(now, from, offer, false, rng),
            Message::Ack(ack) => self.on_ack(now, from, ack),
            Message::Info(info) => self.on_info(now, from, info),
            Message::Rekey(rekey) => self.on_rekey(now, from, rekey),
            Message::Bye(bye) => self.on_bye(now, from, bye),
            // A request only servers and recorders carry out (KW-ERR-001).
            _ => self.reject_request(now, from, txn, re, ErrorCode::UNKNOWN_MESSAGE_TYPE),
        }
    }

    /// Why an in-session request of one of this device's calls is not its
    /// peer's: it is only when signed with the key of the certificate
    /// confirmed when the call was set up (KW-CRYPTO-061, KW-SM-020), so
    /// that a server holding the session key cannot forge it. `None` for
    /// other messages, and for a call this device does not have, which its
    /// handler answers.
    fn forged_in_session(&self, request: &Message) -> Option<ErrorCode> {
        let (session, sender) = match request {
            Message::Ack(m) => (&m.session, &m.from),
            Message::Info(m) => (&m.session, &m.from),
            Message::Rekey(m) => (&m.session, &m.from),
            Message::Bye(m) => (&m.session, &m.from),
            _ => return None,
        };
        let call = self.calls.get(session).filter(|c| &c.peer == sender)?;
        let Some(cert) = &call.peer_cert else {
            return Some(ErrorCode::BAD_STATE);
        };
        crate::crypto::verify_message(request, cert)
            .err()
            .map(|e| ErrorCode::from(&e))
    }

    /// Refuses a request: an `error` response, an event, and the error.
    fn reject_request(
        &mut self,
        now: Now,
        to: ReplyTo,
        txn: TxnId,
        re: MsgType,
        code: ErrorCode,
    ) -> Outcome {
        let event = DeviceEvent::Rejected(code);
        self.server
            .refuse(now.mono, to, txn, re, code, &mut self.out, event)
    }
}

impl Party for Device {
    type Event = DeviceEvent;
    type Command = DeviceCommand;

    fn handle_receive(
        &mut self,
        now: Now,
        receive: Receive<'_>,
        rng: &mut impl Entropy,
    ) -> Result<(), ProtocolError> {
        self.out.begin();
        let outcome = self.receive(now, receive, rng);
        self.out.end();
        outcome
    }

    fn handle_timeout(&mut self, now: Now, rng: &mut impl Entropy) {
        self.out.begin();
        self.timeout(now, rng);
        self.out.end();
    }

    /// Carries out an application command, or says why it cannot; a
    /// refused command changes nothing.
    fn command(
        &mut self,
        now: Now,
        command: DeviceCommand,
        rng: &mut impl Entropy,
    ) -> Result<(), ApiMisuse> {
        self.out.begin();
        let outcome = self.carry_out(now, command, rng);
        self.out.end();
        outcome
    }

    fn poll_output(&mut self) -> Option<Output<DeviceEvent>> {
        self.out.poll()
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.next_deadline()
    }
}
