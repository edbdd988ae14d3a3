//! The device (a user agent) as a sans-IO state machine: registration with
//! certificate issuance or an existing certificate (F1, F2), certificate
//! queries with a cache bounded by validity (F3), calls with sealed session
//! descriptions (F4), key reuse and rekey (F5), media, hang-up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::ControlFlow;

use super::bound::bound_or;
use super::error::{ApiMisuse, ProtocolError};
use super::request::{error_response, request_txn};
use super::transact::{ClientTxns, RetransmitPolicy, ServerTxns};
use super::{Addr, Millis, Output, secs};
use crate::crypto::{
    CertError, CryptoError, Entropy, Expect, Identity, KeyCache, KeyPolicy, RecipientSpec,
    SealContext, Secret32, SessionKeys, TrustAnchor, TrustStore, check_attestation, media_ad, open,
    open_media, register, seal, seal_media, verify_sealed_with,
};
use crate::wire::{
    Ack, Answer, AuthResponse, Bye, CertQuery, CertRequest, Certificate, Contact, ErrorCode,
    ErrorResponse, Extensions, Info, List, MediaKind, Message, MsgType, Nonce, Offer, OkResponse,
    Permission, Principal, RecipientKind, Register, Rekey, Role, SecretBytes32, SessionDesc,
    SessionId, SessionUpdate, Stream, Text, TxnId, UpTo, decode_plaintext, encode_plaintext,
};

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
    Register { request: Box<Register> },
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
    deferred: Vec<(Addr, Message)>,
    /// When an answered call gives up waiting for its `ack`.
    ack_deadline: Option<Millis>,
}

/// Most requests a call holds for a rekey not yet seen.
const DEFERRED: usize = 8;
/// Most certificate queries, and received items waiting for them, at once.
const PENDING: usize = 64;
/// Peer descriptions kept per call.
const DESCS_KEPT: usize = 4;
/// Ended sessions remembered (KW-SM-017).
const ENDED: usize = 1024;

/// Received items that wait for certificates to be confirmed.
enum Parked {
    Call(SessionId),
    Offer(Addr, Box<Offer>),
    Answer(Box<Answer>),
}

/// Registration progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegState {
    Idle,
    /// A first registration in progress.
    Pending,
    Registered {
        not_after: u64,
    },
    /// Registered, with a refresh or de-registration in progress.
    Renewing {
        not_after: u64,
    },
}

/// Most certificates kept in the cache.
const CERT_CACHE: usize = 256;
/// Bounds of the wait before a failed refresh is tried again (KW-SM-021).
const REFRESH_RETRY_MIN: Millis = 1_000;
const REFRESH_RETRY_MAX: Millis = 60_000;

/// See the module documentation.
pub struct Device {
    cfg: DeviceConfig,
    identity: Option<Identity>,
    cert: Option<Certificate>,
    reg: RegState,
    refresh_at: Option<Millis>,
    trust: TrustStore,
    certs: BTreeMap<Principal, Certificate>,
    queries: BTreeMap<Principal, TxnId>,
    parked: Vec<(BTreeSet<Principal>, Parked)>,
    calls: BTreeMap<SessionId, Call>,
    client: ClientTxns<Pending>,
    server: ServerTxns,
    kek: KeyCache,
    client_key: Option<(Nonce, u64, Secret32)>,
    rejects: super::reject::DecodeRejects,
    ended: VecDeque<SessionId>,
    outputs: VecDeque<Output<DeviceEvent>>,
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

type Emit = Output<DeviceEvent>;

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
            trust,
            certs: BTreeMap::new(),
            queries: BTreeMap::new(),
            parked: Vec::new(),
            calls: BTreeMap::new(),
            server: ServerTxns::new(1024),
            kek: KeyCache::new(256),
            client_key: None,
            rejects: Default::default(),
            ended: VecDeque::new(),
            outputs: VecDeque::new(),
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

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<DeviceEvent>> {
        self.outputs.pop_front()
    }

    /// When [`Device::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
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
        let lapse = match self.reg {
            RegState::Registered { not_after } | RegState::Renewing { not_after } => {
                Some(not_after.saturating_add(1).saturating_mul(1000))
            }
            RegState::Idle | RegState::Pending => None,
        };
        [
            self.client.next_timeout(),
            self.refresh_at,
            self.server.next_timeout(),
            acks,
            rekeys,
            lapse,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn emit(&mut self, event: DeviceEvent) {
        self.outputs.push_back(Emit::Event(event));
    }

    fn send(&mut self, to: Addr, message: Message) {
        self.outputs.push_back(Emit::Transmit { to, message });
    }

    fn request(&mut self, now: Millis, txn: TxnId, message: Message, pending: Pending) {
        let to = self.cfg.server;
        self.client.start(now, txn, to, message.clone(), pending);
        self.send(to, message);
    }

    fn respond(&mut self, now: Millis, to: Addr, txn: TxnId, response: Message) {
        self.server.answer(now, txn, to, response.clone());
        self.send(to, response);
    }

    fn server_of(&self, account: &Principal) -> Option<Principal> {
        Principal::new(&format!(
            "{}@{}",
            self.cfg.policy.server_local_part,
            account.domain()
        ))
        .ok()
    }

    // ------------------------------------------------------------ commands

    /// Carries out an application command, or says why it cannot; a
    /// refused command changes nothing.
    pub fn command(
        &mut self,
        now: Millis,
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

    fn register(&mut self, now: Millis, with_cert: bool, rng: &mut impl Entropy) {
        // KW-REG-001: the key pairs are made here, once.
        let identity = match &self.identity {
            Some(i) => i.clone(),
            None => {
                let i = Identity::generate(self.cfg.account.clone(), rng);
                self.identity = Some(i.clone());
                i
            }
        };
        let (csr, cert): (Option<CertRequest>, Option<Certificate>) = match (&self.cert, with_cert)
        {
            (Some(c), true) => (None, Some(c.clone())),
            _ => (Some(register::make_csr(&identity)), None),
        };
        let request = Register {
            txn: TxnId(rng.array()),
            from: self.cfg.account.clone(),
            contact: self.cfg.contact,
            expires: self.cfg.expires,
            csr,
            cert,
            auth: None,
            ext: Extensions::new(),
        };
        self.send_register(now, request);
    }

    fn deregister(&mut self, now: Millis, rng: &mut impl Entropy) {
        let request = Register {
            txn: TxnId(rng.array()),
            from: self.cfg.account.clone(),
            contact: self.cfg.contact,
            expires: 0,
            csr: None,
            cert: None,
            auth: None,
            ext: Extensions::new(),
        };
        self.send_register(now, request);
    }

    fn send_register(&mut self, now: Millis, request: Register) {
        self.reg = match self.reg {
            RegState::Registered { not_after } | RegState::Renewing { not_after } => {
                RegState::Renewing { not_after }
            }
            RegState::Idle | RegState::Pending => RegState::Pending,
        };
        self.refresh_at = None;
        let txn = request.txn;
        let pending = Pending::Register {
            request: Box::new(request.clone()),
        };
        self.request(now, txn, Message::Register(request), pending);
    }

    /// Holds `item` until the certificates of `missing` are confirmed, and
    /// asks for them — even one held, which is not the one needed
    /// (KW-SM-022). Parked first, so that a query refused at once fails
    /// the item with it.
    fn park(
        &mut self,
        now: Millis,
        missing: BTreeSet<Principal>,
        item: Parked,
        rng: &mut impl Entropy,
    ) {
        let targets: Vec<Principal> = missing.iter().cloned().collect();
        self.parked.push((missing, item));
        for target in &targets {
            self.fetch(now, target, rng);
        }
    }

    /// A certificate the application asks for, unless one is held.
    fn query(&mut self, now: Millis, target: &Principal, rng: &mut impl Entropy) {
        if self.valid_cert(target, now).is_none() {
            self.fetch(now, target, rng);
        }
    }

    /// Asks the device's server for `target`'s certificate, unless a query
    /// for it is outstanding.
    fn fetch(&mut self, now: Millis, target: &Principal, rng: &mut impl Entropy) {
        if self.queries.contains_key(target) {
            return;
        }
        if self.queries.len() >= PENDING {
            // Bounded; what waits for it fails when it is not answered.
            self.failed(
                now,
                Pending::Query(target.clone()),
                ErrorCode::BUSY,
                None,
                rng,
            );
            return;
        }
        let txn = TxnId(rng.array());
        let message = Message::CertQuery(CertQuery {
            txn,
            from: self.cfg.account.clone(),
            hops: UpTo::new(self.cfg.policy.hops).unwrap_or_default(),
            via: None,
            target: target.clone(),
            ext: Extensions::new(),
        });
        self.queries.insert(target.clone(), txn);
        self.request(now, txn, message, Pending::Query(target.clone()));
    }

    fn valid_cert(&self, account: &Principal, now: Millis) -> Option<&Certificate> {
        // KW-QUERY-006: kept no longer than the certificate's term.
        self.certs
            .get(account)
            .filter(|c| c.tbs.not_after.0 >= secs(now) && c.tbs.not_before.0 <= secs(now))
    }

    fn call(&mut self, now: Millis, to: Principal, rng: &mut impl Entropy) {
        let session = SessionId(rng.array());
        let my_desc = self.new_desc(rng);
        self.calls.insert(
            session,
            Call {
                peer: to,
                peer_cert: None,
                state: CallState::WaitingForCertificates,
                cek: None,
                keys: None,
                my_desc,
                my_desc_number: 0,
                peer_descs: BTreeMap::new(),
                media_seq: 0,
                recipients: Vec::new(),
                deferred: Vec::new(),
                ack_deadline: None,
            },
        );
        self.continue_call(now, session, rng);
    }

    fn new_desc(&self, rng: &mut impl Entropy) -> SessionDesc {
        let stream = Stream {
            id: 1,
            kind: MediaKind::Audio,
            addr: self.cfg.media,
            params: Text::new("opus/48000/2").unwrap_or_default(),
            key: SecretBytes32(rng.array()),
            ext: Extensions::new(),
        };
        SessionDesc {
            salt: Nonce(rng.array()),
            streams: List(vec![stream]),
            ext: Extensions::new(),
        }
    }

    /// The certificates a call's offer needs: the peer's and the trusted
    /// servers' (KW-POLICY-001).
    fn call_needs(&self, peer: &Principal) -> Vec<(Principal, RecipientKind, Permission)> {
        let mut needs = vec![(peer.clone(), RecipientKind::Destination, Permission::Read)];
        if let Some(perm) = self.cfg.policy.own_server {
            needs.push((self.cfg.server_account.clone(), RecipientKind::Server, perm));
        }
        if peer.domain() != self.cfg.account.domain() {
            let perm = self
                .cfg
                .policy
                .peer_servers
                .get(peer.domain())
                .copied()
                .unwrap_or(self.cfg.policy.peer_server);
            if let (Some(perm), Some(server)) = (perm, self.server_of(peer)) {
                needs.push((server, RecipientKind::Server, perm));
            }
        }
        needs
    }

    fn continue_call(&mut self, now: Millis, session: SessionId, rng: &mut impl Entropy) {
        let Some(peer) = self.calls.get(&session).map(|c| c.peer.clone()) else {
            return;
        };
        let needs = self.call_needs(&peer);
        let missing: BTreeSet<Principal> = needs
            .iter()
            .filter(|(p, _, _)| self.valid_cert(p, now).is_none())
            .map(|(p, _, _)| p.clone())
            .collect();
        if !missing.is_empty() {
            self.park(now, missing, Parked::Call(session), rng);
            return;
        }
        self.send_offer(now, session, &needs, rng);
    }

    fn spec_for(
        &self,
        account: &Principal,
        kind: RecipientKind,
        perm: Permission,
        now: Millis,
    ) -> Option<RecipientSpec> {
        let cert = self.valid_cert(account, now)?;
        Some(self.spec_from_cert(account, cert, kind, perm))
    }

    fn spec_from_cert(
        &self,
        account: &Principal,
        cert: &Certificate,
        kind: RecipientKind,
        perm: Permission,
    ) -> RecipientSpec {
        RecipientSpec {
            id: account.clone(),
            kx_key: cert.tbs.kx_key,
            kind,
            perm,
            anonymous: kind == RecipientKind::Server && self.cfg.policy.anonymous_servers,
        }
    }

    /// Keeps a confirmed certificate, within the cache's bound (KW-SM-019).
    fn remember_cert(&mut self, account: Principal, cert: Certificate) {
        if !self.certs.contains_key(&account) && self.certs.len() >= CERT_CACHE {
            self.certs.pop_first();
        }
        self.certs.insert(account, cert);
    }

    fn send_offer(
        &mut self,
        now: Millis,
        session: SessionId,
        needs: &[(Principal, RecipientKind, Permission)],
        rng: &mut impl Entropy,
    ) {
        let (Some(identity), Some(cert)) = (self.identity.clone(), self.cert.clone()) else {
            self.fail_call(session, ErrorCode::NOT_REGISTERED);
            return;
        };
        let specs: Vec<RecipientSpec> = needs
            .iter()
            .filter_map(|(p, k, perm)| self.spec_for(p, *k, *perm, now))
            .collect();
        let Some(call) = self.calls.get(&session) else {
            return;
        };
        let plaintext = encode_plaintext(&call.my_desc);
        let peer = call.peer.clone();
        let ctx = SealContext {
            session: &session,
            cid: 0,
        };
        let (body, cek) = match seal(ctx, &identity, &specs, &plaintext, None, &mut self.kek, rng) {
            Ok(x) => x,
            Err(e) => {
                self.fail_call(session, ErrorCode::from(&e));
                return;
            }
        };
        let txn = TxnId(rng.array());
        let offer = Offer {
            txn,
            from: self.cfg.account.clone(),
            to: peer,
            session,
            hops: UpTo::new(self.cfg.policy.hops).unwrap_or_default(),
            via: None,
            cert: Some(cert),
            body,
            ext: Extensions::new(),
        };
        if let Some(call) = self.calls.get_mut(&session) {
            call.state = CallState::Offering;
            call.cek = Some(cek);
            call.recipients = specs;
        }
        self.request(now, txn, Message::Offer(offer), Pending::Offer(session));
    }

    /// Ends a call whose answer cannot be used: a `bye` under the offer's
    /// key tells the callee and the servers that read the session to end
    /// it too, rather than wait for their timeouts.
    fn abandon_call(
        &mut self,
        now: Millis,
        session: SessionId,
        code: Option<ErrorCode>,
        rng: &mut impl Entropy,
    ) {
        let me = self.cfg.account.clone();
        let hops = UpTo::new(self.cfg.policy.hops).unwrap_or_default();
        let bye = self.calls.get(&session).and_then(|call| {
            let cek = call.cek.clone()?;
            let mut keys = SessionKeys::new(session, me.clone(), call.peer.clone(), cek, secs(now));
            let sealed = keys.send.seal(MsgType::Bye, &[]).ok()?;
            Some(Bye {
                txn: TxnId(rng.array()),
                from: me,
                to: call.peer.clone(),
                session,
                hops,
                via: None,
                epoch: sealed.epoch,
                seq: sealed.seq,
                payload: crate::wire::Bytes::new(sealed.payload)?,
                ext: Extensions::new(),
            })
        });
        match code {
            Some(code) => self.fail_call(session, code),
            None => self.end_call(session),
        }
        if let Some(bye) = bye {
            let txn = bye.txn;
            self.request(
                now,
                txn,
                Message::Bye(bye),
                Pending::InSession(session, MsgType::Bye),
            );
        }
    }

    fn fail_call(&mut self, session: SessionId, code: ErrorCode) {
        if self.calls.remove(&session).is_some() {
            self.remember_ended(session);
            self.kek.forget_session(&session);
            self.emit(DeviceEvent::CallFailed(session, code));
        }
    }

    /// KW-SM-017: an ended session is not started again by a replayed
    /// offer; the most recent ones are remembered.
    fn remember_ended(&mut self, session: SessionId) {
        if self.ended.len() >= ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back(session);
    }

    fn in_session_header(
        &self,
        session: &SessionId,
        rng: &mut impl Entropy,
    ) -> Option<(TxnId, Principal)> {
        let call = self.calls.get(session)?;
        Some((TxnId(rng.array()), call.peer.clone()))
    }

    fn info(
        &mut self,
        now: Millis,
        session: SessionId,
        text: String,
        desc: Option<SessionDesc>,
        rng: &mut impl Entropy,
    ) {
        let Some((txn, peer)) = self.in_session_header(&session, rng) else {
            return;
        };
        let update = SessionUpdate {
            text: Text::new(text),
            desc,
            ext: Extensions::new(),
        };
        let plaintext = encode_plaintext(&update);
        let Some(keys) = self.calls.get_mut(&session).and_then(|c| c.keys.as_mut()) else {
            return;
        };
        let Ok(sealed) = keys.send.seal(MsgType::Info, &plaintext) else {
            return;
        };
        let Some(payload) = crate::wire::Bytes::new(sealed.payload) else {
            return;
        };
        let message = Message::Info(Info {
            txn,
            from: self.cfg.account.clone(),
            to: peer,
            session,
            hops: UpTo::new(self.cfg.policy.hops).unwrap_or_default(),
            via: None,
            epoch: sealed.epoch,
            seq: sealed.seq,
            payload,
            ext: Extensions::new(),
        });
        self.request(
            now,
            txn,
            message,
            Pending::InSession(session, MsgType::Info),
        );
        let due = keys_due(self.calls.get(&session), now, &self.cfg.keys);
        if due {
            self.rekey(now, session, false, rng);
        }
    }

    fn rekey(&mut self, now: Millis, session: SessionId, body: bool, rng: &mut impl Entropy) {
        let Some((txn, peer)) = self.in_session_header(&session, rng) else {
            return;
        };
        let identity = self.identity.clone();
        let Some(call) = self.calls.get_mut(&session) else {
            return;
        };
        if call.state != CallState::Established {
            return;
        }
        let Some(keys) = call.keys.as_mut() else {
            return;
        };
        let (epoch, seq, sealed_body, wrapped) = if body {
            // KW-CRYPTO-042, body form: the new key sealed for the
            // recipients of the call, trusted servers included.
            let Some(identity) = identity else { return };
            let key = Secret32::new(rng.array());
            let ctx = SealContext {
                session: &session,
                cid: 0,
            };
            // KW-SM-016: the body names the epoch it starts.
            let next = keys.send.current_epoch().saturating_add(1);
            let Ok((sealed, _)) = seal(
                ctx,
                &identity,
                &call.recipients,
                &crate::crypto::rekey_body_plaintext(next),
                Some(&key),
                &mut self.kek,
                rng,
            ) else {
                return;
            };
            let Ok((epoch, seq)) = keys.send.rekey_with_key(key, secs(now)) else {
                return;
            };
            (epoch, seq, Some(sealed), None)
        } else {
            let Ok(r) = keys.send.rekey_wrapped(secs(now), rng) else {
                return;
            };
            (
                r.epoch,
                r.seq,
                None,
                crate::wire::Bytes::new(r.wrapped.to_vec()),
            )
        };
        let message = Message::Rekey(Rekey {
            txn,
            from: self.cfg.account.clone(),
            to: peer,
            session,
            hops: UpTo::new(self.cfg.policy.hops).unwrap_or_default(),
            via: None,
            body: sealed_body,
            epoch,
            seq,
            payload: None,
            wrapped,
            ext: Extensions::new(),
        });
        self.request(
            now,
            txn,
            message,
            Pending::InSession(session, MsgType::Rekey),
        );
        self.emit(DeviceEvent::Rekeyed {
            session,
            sending: true,
            epoch,
        });
        // New media keys with the new epoch (F7 follows them).
        let desc = self.new_desc(rng);
        if let Some(call) = self.calls.get_mut(&session) {
            call.my_desc = desc.clone();
            call.my_desc_number += 1;
        }
        self.info(now, session, String::new(), Some(desc), rng);
    }

    fn media(&mut self, session: SessionId, frame: &[u8]) {
        let me = self.cfg.account.clone();
        let Some(call) = self.calls.get_mut(&session) else {
            return;
        };
        if call.state != CallState::Established {
            return;
        }
        let Some(peer_desc) = call.peer_descs.values().next_back() else {
            return;
        };
        let (Some(mine), Some(theirs)) = (call.my_desc.streams.first(), peer_desc.streams.first())
        else {
            return;
        };
        let seq = call.media_seq;
        call.media_seq += 1;
        let ad = media_ad(&session, &me, mine.id, call.my_desc_number, seq);
        let payload = seal_media(&Secret32::new(mine.key.0), &ad, frame);
        let Some(payload) = crate::wire::Bytes::new(payload) else {
            return;
        };
        let to = theirs.addr;
        let message = Message::Media(crate::wire::Media {
            from: me,
            session,
            epoch: call.my_desc_number,
            seq,
            payload,
            stream: mine.id,
            ext: Extensions::new(),
        });
        self.send(to, message);
    }

    fn hang_up(&mut self, now: Millis, session: SessionId, rng: &mut impl Entropy) {
        let Some((txn, peer)) = self.in_session_header(&session, rng) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&session) else {
            return;
        };
        let Some(keys) = call.keys.as_mut() else {
            // Offered, not answered: a bye under the offer's key tells the
            // callee and the servers (the abandon path); without one, the
            // offer was never sent.
            let offered = call.cek.is_some();
            if offered {
                self.abandon_call(now, session, None, rng);
            } else {
                self.end_call(session);
            }
            return;
        };
        let Ok(sealed) = keys.send.seal(MsgType::Bye, &[]) else {
            return;
        };
        let Some(payload) = crate::wire::Bytes::new(sealed.payload) else {
            return;
        };
        call.state = CallState::Ending;
        let message = Message::Bye(Bye {
            txn,
            from: self.cfg.account.clone(),
            to: peer,
            session,
            hops: UpTo::new(self.cfg.policy.hops).unwrap_or_default(),
            via: None,
            epoch: sealed.epoch,
            seq: sealed.seq,
            payload,
            ext: Extensions::new(),
        });
        self.request(now, txn, message, Pending::InSession(session, MsgType::Bye));
    }

    fn end_call(&mut self, session: SessionId) {
        if self.calls.remove(&session).is_some() {
            self.remember_ended(session);
            self.kek.forget_session(&session);
            self.emit(DeviceEvent::CallEnded(session));
        }
    }

    // ------------------------------------------------------------ timers

    /// Retransmissions, timeouts and the registration refresh.
    pub fn handle_timeout(&mut self, now: Millis, rng: &mut impl Entropy) {
        let due = self.client.due(now);
        for (to, message) in due.resend {
            self.send(to, message);
        }
        for (_, pending) in due.timed_out {
            self.failed(now, pending, ErrorCode::TIMEOUT, None, rng);
        }
        self.server.expire(now);
        self.lapse(now);
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            self.register(now, false, rng);
        }
        for call in self.calls.values_mut() {
            if let Some(keys) = call.keys.as_mut() {
                keys.recv.expire(secs(now));
            }
        }
        // An answer whose ack never came: the caller is gone.
        let unacknowledged: Vec<SessionId> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.state == CallState::Answered && c.ack_deadline.is_some_and(|t| t <= now)
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
        now: Millis,
        pending: Pending,
        code: ErrorCode,
        min_expires: Option<u64>,
        rng: &mut impl Entropy,
    ) {
        match pending {
            Pending::Register { request } => {
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
                .decode(now, from, bytes, &mut self.outputs, DeviceEvent::Rejected)?;
        let response = matches!(
            message,
            Message::Challenge(_)
                | Message::RegisterOk(_)
                | Message::CertNotify(_)
                | Message::Error(_)
                | Message::Answer(_)
                | Message::Ok(_)
        );
        if response && from != self.cfg.server {
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

    /// A registration attempt failed. A refresh that fails leaves the
    /// registration as it was and is tried again before the term ends
    /// (KW-SM-021); a failed de-registration leaves it to lapse.
    fn registration_failed(&mut self, now: Millis, code: ErrorCode, deregistering: bool) {
        self.emit(DeviceEvent::RegistrationFailed(code));
        match self.reg {
            RegState::Renewing { not_after } if secs(now) <= not_after => {
                self.reg = RegState::Registered { not_after };
                if !deregistering {
                    let left = not_after.saturating_mul(1000).saturating_sub(now);
                    let wait = (left / 4).clamp(REFRESH_RETRY_MIN, REFRESH_RETRY_MAX);
                    self.refresh_at = Some(now.saturating_add(wait));
                }
            }
            RegState::Renewing { .. } | RegState::Pending => {
                self.reg = RegState::Idle;
                self.cert = None;
            }
            RegState::Idle | RegState::Registered { .. } => {}
        }
    }

    /// The registration's term ended without a refresh (KW-REG-016).
    fn lapse(&mut self, now: Millis) {
        let ended = match self.reg {
            RegState::Registered { not_after } | RegState::Renewing { not_after } => {
                secs(now) > not_after
            }
            RegState::Idle | RegState::Pending => false,
        };
        if ended {
            self.reg = RegState::Idle;
            self.cert = None;
            self.refresh_at = None;
            self.emit(DeviceEvent::RegistrationExpired);
        }
    }

    fn on_challenge(
        &mut self,
        now: Millis,
        challenge: crate::wire::Challenge,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let Some(Pending::Register { .. }) = self.client.context(&challenge.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::Challenge));
        };
        let Some((_, _, Pending::Register { request })) =
            self.client.complete(&challenge.txn, self.cfg.server)
        else {
            return Err(ProtocolError::Unsolicited(MsgType::Challenge));
        };
        let key = match &self.client_key {
            Some((salt, n, key)) if *salt == challenge.salt && *n == challenge.iterations => {
                key.clone()
            }
            _ => {
                match register::client_key(&self.cfg.secret, &challenge.salt, challenge.iterations)
                {
                    Ok(key) => {
                        self.client_key = Some((challenge.salt, challenge.iterations, key.clone()));
                        key
                    }
                    Err(e) => {
                        let code = ErrorCode::from(&e);
                        self.registration_failed(now, code, request.expires == 0);
                        return Err(ProtocolError::BadResponse {
                            re: MsgType::Challenge,
                            code,
                        });
                    }
                }
            }
        };
        let mut answer = Register {
            txn: TxnId(rng.array()),
            auth: None,
            ..*request
        };
        let message = register::auth_message(&challenge.nonce, &answer);
        let kx_proof = match (&answer.csr, &challenge.kx_challenge, &self.identity) {
            (Some(_), Some(e), Some(identity)) => register::kx_proof(
                &self.cfg.account,
                &identity.kx,
                e,
                &challenge.nonce,
                &message,
            )
            .ok(),
            _ => None,
        };
        answer.auth = Some(AuthResponse {
            nonce: challenge.nonce,
            proof: register::proof(&key, &message),
            kx_proof,
            ext: Extensions::new(),
        });
        let txn = answer.txn;
        let pending = Pending::Register {
            request: Box::new(answer.clone()),
        };
        self.request(now, txn, Message::Register(answer), pending);
        Ok(())
    }

    fn on_register_ok(&mut self, now: Millis, ok: crate::wire::RegisterOk) -> Outcome {
        let unusable = |this: &mut Self, code: ErrorCode| {
            this.registration_failed(now, code, false);
            Err(ProtocolError::BadResponse {
                re: MsgType::RegisterOk,
                code,
            })
        };
        let Some(Pending::Register { .. }) = self.client.context(&ok.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::RegisterOk));
        };
        let Some((_, _, Pending::Register { request })) =
            self.client.complete(&ok.txn, self.cfg.server)
        else {
            return Err(ProtocolError::Unsolicited(MsgType::RegisterOk));
        };
        if request.expires == 0 {
            self.reg = RegState::Idle;
            self.cert = None;
            self.emit(DeviceEvent::Deregistered);
            return Ok(());
        }
        let Some(cert) = ok.cert.clone() else {
            return unusable(self, ErrorCode::CERT_NOT_FOUND);
        };
        let identity_matches = self.identity.as_ref().is_some_and(|i| {
            cert.tbs.kx_key == i.kx.public() && cert.tbs.sig_key == i.signing.public()
        });
        let checked = self.trust.check(
            &cert,
            Expect {
                subject: &self.cfg.account,
                role: Some(Role::Device),
                now: secs(now),
            },
        );
        // KW-REG-008, KW-REG-009, KW-REG-012: an issued certificate ends with
        // the registration; a confirmed one does not end before it.
        let issued_now = request.csr.is_some();
        let term_ok = if issued_now {
            cert.tbs.not_after.0 == ok.not_after.0
        } else {
            cert.tbs.not_after.0 >= ok.not_after.0
        };
        if checked.is_err() || !identity_matches || !term_ok {
            return unusable(self, ErrorCode::CERT_INVALID);
        }
        let issued = request.csr.is_some();
        self.emit(DeviceEvent::Registered {
            not_after: ok.not_after.0,
            serial: cert.tbs.serial,
            issued,
        });
        self.cert = Some(cert);
        self.reg = RegState::Registered {
            not_after: ok.not_after.0,
        };
        // KW-REG-014: refresh before the term ends.
        let term_ms = ok.expires.saturating_mul(1000);
        self.refresh_at =
            Some(now.saturating_add(term_ms.saturating_mul(self.cfg.policy.refresh_percent) / 100));
        Ok(())
    }

    fn on_cert_notify(
        &mut self,
        now: Millis,
        notify: crate::wire::CertNotify,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let Some(Pending::Query(_)) = self.client.context(&notify.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::CertNotify));
        };
        let Some((_, _, Pending::Query(target))) =
            self.client.complete(&notify.txn, self.cfg.server)
        else {
            return Err(ProtocolError::Unsolicited(MsgType::CertNotify));
        };
        self.queries.remove(&target);
        let cert = notify.cert;
        let checked = if target.domain() == self.cfg.account.domain() {
            self.trust
                .check(
                    &cert,
                    Expect {
                        subject: &target,
                        role: None,
                        now: secs(now),
                    },
                )
                .map_err(crate::crypto::CryptoError::Cert)
        } else {
            match &notify.attestation {
                Some(att) => check_attestation(
                    &self.trust,
                    att,
                    &cert,
                    &target,
                    &self.cfg.account,
                    secs(now),
                ),
                None => Err(crate::crypto::CryptoError::Cert(CertError::UnknownIssuer)),
            }
        };
        match checked {
            Ok(()) => {
                self.emit(DeviceEvent::CertificateAccepted {
                    account: target.clone(),
                    issuer: cert.tbs.issuer.as_str().into(),
                    serial: cert.tbs.serial,
                    not_after: cert.tbs.not_after.0,
                });
                self.remember_cert(target.clone(), cert);
                self.resume(now, &target, rng);
                Ok(())
            }
            Err(e) => {
                let code = ErrorCode::from(&e);
                self.failed(now, Pending::Query(target), code, None, rng);
                Err(ProtocolError::BadResponse {
                    re: MsgType::CertNotify,
                    code,
                })
            }
        }
    }

    /// Continues what waited for `account`'s certificate.
    fn resume(&mut self, now: Millis, account: &Principal, rng: &mut impl Entropy) {
        for (needs, _) in &mut self.parked {
            needs.remove(account);
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .parked
            .drain(..)
            .partition(|(needs, _)| needs.is_empty());
        self.parked = waiting;
        for (_, item) in ready {
            // A parked item's refusal is its own, told by its events and
            // `error` response, not the refusal of the input that freed it.
            let _ = match item {
                Parked::Call(session) => {
                    self.continue_call(now, session, rng);
                    Ok(())
                }
                Parked::Offer(from, offer) => self.on_offer(now, from, *offer, true, rng),
                Parked::Answer(answer) => self.on_answer_ready(now, *answer, rng),
            };
        }
    }

    fn on_error(&mut self, now: Millis, error: ErrorResponse, rng: &mut impl Entropy) -> Outcome {
        let Some((_, _, pending)) = error
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

    fn on_ok(&mut self, ok: OkResponse) -> Outcome {
        let Some(Pending::InSession(..)) = self.client.context(&ok.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::Ok));
        };
        match self.client.complete(&ok.txn, self.cfg.server) {
            Some((_, _, Pending::InSession(session, MsgType::Bye))) => self.end_call(session),
            Some(_) => {}
            None => return Err(ProtocolError::Unsolicited(MsgType::Ok)),
        }
        Ok(())
    }

    /// Confirms certificates a body names against the cache (attested) or
    /// the device's own anchor.
    fn validator(
        &self,
        now: Millis,
    ) -> impl Fn(&Certificate, &Principal, Option<Role>) -> Result<(), CertError> + '_ {
        move |cert, subject, role| {
            let cached = self.certs.get(subject).is_some_and(|c| c == cert);
            if cached {
                let t = secs(now);
                if t < cert.tbs.not_before.0 {
                    return Err(CertError::NotYetValid);
                }
                if t > cert.tbs.not_after.0 {
                    return Err(CertError::Expired);
                }
                if role.is_some_and(|r| r != cert.tbs.role) {
                    return Err(CertError::RoleMismatch);
                }
                return Ok(());
            }
            self.trust.check(
                cert,
                Expect {
                    subject,
                    role,
                    now: secs(now),
                },
            )
        }
    }

    /// The certificate a message's sender is checked with (KW-SM-022): one
    /// of the device's own domain as the message carries it (its anchor
    /// confirms it); otherwise the one the device holds, confirmed by its
    /// server, provided it has the keys of the one the message carries — a
    /// refresh replaces a certificate, not its keys. `None`: the device
    /// must fetch the account's certificate first.
    fn sender_cert(
        &self,
        account: &Principal,
        carried: Option<&Certificate>,
        now: Millis,
    ) -> Option<Certificate> {
        let held = self.valid_cert(account, now);
        match (carried, held) {
            (Some(c), _) if account.domain() == self.cfg.account.domain() => Some(c.clone()),
            (Some(c), Some(h)) if same_keys(c, h) => Some(h.clone()),
            (None, Some(h)) => Some(h.clone()),
            _ => None,
        }
    }

    /// Accounts whose certificates a body's check needs and the device does
    /// not hold: the sender (with the certificate its message carries) and
    /// every editor.
    fn missing_for(
        &self,
        now: Millis,
        body: &crate::wire::Sealed,
        carried: Option<&Certificate>,
    ) -> BTreeSet<Principal> {
        let mut missing = BTreeSet::new();
        if body.sender.domain() != self.cfg.account.domain()
            && self.sender_cert(&body.sender, carried, now).is_none()
        {
            missing.insert(body.sender.clone());
        }
        missing.extend(
            body.edits
                .iter()
                .flat_map(|e| e.iter())
                .map(|e| &e.editor)
                .filter(|p| {
                    p.domain() != self.cfg.account.domain() && self.valid_cert(p, now).is_none()
                })
                .cloned(),
        );
        missing
    }

    fn on_request(
        &mut self,
        now: Millis,
        from: Addr,
        request: Message,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let re = request.msg_type();
        // A response type a device never waits for (KW-ERR-001) is told
        // as `Rejected`.
        let event = DeviceEvent::Rejected;
        let txn = match self
            .server
            .admit(now, from, &request, &mut self.outputs, event)
        {
            ControlFlow::Continue(txn) => txn,
            ControlFlow::Break(outcome) => return outcome,
        };
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

    /// An offer; `resumed` once it waited for certificates, which are not
    /// fetched twice.
    fn on_offer(
        &mut self,
        now: Millis,
        from: Addr,
        offer: Offer,
        resumed: bool,
        rng: &mut impl Entropy,
    ) -> Outcome {
        // A session is offered once (KW-SM-017), by the account that sealed
        // it (KW-SM-016).
        let refusal =
            if self.calls.contains_key(&offer.session) || self.ended.contains(&offer.session) {
                Some(ErrorCode::BAD_STATE)
            } else if offer.body.sender != offer.from {
                Some(ErrorCode::PERMISSION_DENIED)
            } else if offer
                .cert
                .as_ref()
                .is_some_and(|c| c.tbs.subject != offer.from)
            {
                Some(ErrorCode::CERT_SUBJECT_MISMATCH)
            } else if self.parked.len() >= PENDING {
                Some(ErrorCode::BUSY)
            } else {
                None
            };
        if let Some(code) = refusal {
            return self.reject_request(now, from, offer.txn, MsgType::Offer, code);
        }
        let mut missing = self.missing_for(now, &offer.body, offer.cert.as_ref());
        // The answer is sealed for the device's own server too
        // (KW-POLICY-001): its certificate is needed before answering.
        if self.cfg.policy.own_server.is_some()
            && self.valid_cert(&self.cfg.server_account, now).is_none()
        {
            missing.insert(self.cfg.server_account.clone());
        }
        // The servers the caller made recipients already hold the session
        // key; the answer and this device's rekeys are sealed for them too,
        // read only, so that they keep following the session (KW-KEY-006).
        let caller_servers = self.caller_servers(&offer);
        for server in &caller_servers {
            if self.valid_cert(server, now).is_none() {
                missing.insert(server.clone());
            }
        }
        let txn = offer.txn;
        let reject = |this: &mut Self, code: ErrorCode| {
            this.reject_request(now, from, txn, MsgType::Offer, code)
        };
        if !missing.is_empty() {
            if resumed {
                // Fetched, and still not the certificate the offer carries:
                // its keys are not the account's (KW-SM-022).
                return reject(self, ErrorCode::CERT_INVALID);
            }
            self.park(now, missing, Parked::Offer(from, Box::new(offer)), rng);
            return Ok(());
        }
        let Some(identity) = self.identity.clone() else {
            return reject(self, ErrorCode::NOT_REGISTERED);
        };
        let Some(caller_cert) = self.sender_cert(&offer.from, offer.cert.as_ref(), now) else {
            return reject(self, ErrorCode::CERT_NOT_FOUND);
        };
        let opened = match open(&offer.body, &offer.session, &identity, &mut self.kek) {
            Ok(o) => o,
            Err(e) => {
                return reject(self, ErrorCode::from(&e));
            }
        };
        let verdict = {
            let validate = self.validator(now);
            verify_sealed_with(
                &offer.body,
                &offer.session,
                &opened.plaintext,
                &opened.cek,
                &caller_cert,
                &validate,
            )
        };
        if let Err(e) = verdict {
            // KW-SEAL-009: a change nobody may have made is reported.
            let code = ErrorCode::from(&e);
            self.emit(DeviceEvent::TamperDetected(offer.session, code));
            return reject(self, code);
        }
        let Ok(peer_desc) = decode_plaintext::<SessionDesc>(&opened.plaintext) else {
            return reject(self, ErrorCode::SCHEMA);
        };
        self.emit(DeviceEvent::IncomingCall(offer.session, offer.from.clone()));
        if !self.cfg.policy.auto_answer {
            return reject(self, ErrorCode::FORBIDDEN);
        }
        // The answer reuses the offer's key (KW-CRYPTO-040, claim 19).
        let my_desc = self.new_desc(rng);
        let mut needs = vec![(
            offer.from.clone(),
            RecipientKind::Destination,
            Permission::Read,
        )];
        if let Some(perm) = self.cfg.policy.own_server {
            needs.push((self.cfg.server_account.clone(), RecipientKind::Server, perm));
        }
        for server in caller_servers {
            needs.push((server, RecipientKind::Server, Permission::Read));
        }
        // The caller's certificate is confirmed: the answer is sealed for it.
        let specs: Vec<RecipientSpec> = needs
            .iter()
            .filter_map(|(p, k, perm)| match p == &offer.from {
                true => Some(self.spec_from_cert(p, &caller_cert, *k, *perm)),
                false => self.spec_for(p, *k, *perm, now),
            })
            .collect();
        let ctx = SealContext {
            session: &offer.session,
            cid: 0,
        };
        let plaintext = encode_plaintext(&my_desc);
        let body = match seal(
            ctx,
            &identity,
            &specs,
            &plaintext,
            Some(&opened.cek),
            &mut self.kek,
            rng,
        ) {
            Ok((body, _)) => body,
            Err(e) => {
                return reject(self, ErrorCode::from(&e));
            }
        };
        // Accepted: keep what it taught us (KW-ERR-004).
        self.remember_cert(offer.from.clone(), caller_cert.clone());
        self.kek.commit(opened.pending.clone());
        let answer = Message::Answer(Answer {
            txn: offer.txn,
            from: self.cfg.account.clone(),
            to: offer.from.clone(),
            session: offer.session,
            cert: self.cert.clone(),
            body,
            ext: Extensions::new(),
        });
        let keys = SessionKeys::new(
            offer.session,
            self.cfg.account.clone(),
            offer.from.clone(),
            opened.cek.clone(),
            secs(now),
        );
        let mut peer_descs = BTreeMap::new();
        peer_descs.insert(0, peer_desc);
        self.calls.insert(
            offer.session,
            Call {
                peer: offer.from.clone(),
                peer_cert: Some(caller_cert.clone()),
                state: CallState::Answered,
                cek: Some(opened.cek),
                keys: Some(keys),
                my_desc,
                my_desc_number: 0,
                peer_descs,
                media_seq: 0,
                recipients: specs,
                deferred: Vec::new(),
                ack_deadline: Some(now.saturating_add(self.cfg.retransmit.give_up)),
            },
        );
        self.respond(now, from, offer.txn, answer);
        Ok(())
    }

    /// The servers named in an offer's entries, other than this device's
    /// own (which its policy already covers).
    fn caller_servers(&self, offer: &Offer) -> Vec<Principal> {
        let mut servers: Vec<Principal> = offer
            .body
            .recipients
            .iter()
            .filter(|r| r.kind == RecipientKind::Server)
            .filter_map(|r| r.id.clone())
            .filter(|id| *id != self.cfg.server_account)
            .collect();
        servers.dedup();
        servers
    }

    fn on_answer(&mut self, now: Millis, answer: Answer, rng: &mut impl Entropy) -> Outcome {
        if !matches!(self.client.context(&answer.txn), Some(Pending::Offer(s)) if *s == answer.session)
            || self.client.complete(&answer.txn, self.cfg.server).is_none()
        {
            return Err(ProtocolError::Unsolicited(MsgType::Answer));
        }
        let missing = self.missing_for(now, &answer.body, answer.cert.as_ref());
        if !missing.is_empty() {
            self.park(now, missing, Parked::Answer(Box::new(answer)), rng);
            return Ok(());
        }
        self.on_answer_ready(now, answer, rng)
    }

    /// An answer whose certificates are at hand. A refused answer fails the
    /// call; one that is not the callee's own ends it with a `bye`.
    fn on_answer_ready(&mut self, now: Millis, answer: Answer, rng: &mut impl Entropy) -> Outcome {
        let session = answer.session;
        let unusable = |code: ErrorCode| {
            Err(ProtocolError::BadResponse {
                re: MsgType::Answer,
                code,
            })
        };
        let (Some(identity), Some(call)) = (self.identity.clone(), self.calls.get(&session)) else {
            // The call ended while the answer waited for certificates.
            return unusable(ErrorCode::UNKNOWN_SESSION);
        };
        let peer = call.peer.clone();
        // KW-SM-016: the answer is the callee's own.
        if answer.from != peer || answer.body.sender != peer {
            self.emit(DeviceEvent::TamperDetected(
                session,
                ErrorCode::PERMISSION_DENIED,
            ));
            self.abandon_call(now, session, Some(ErrorCode::PERMISSION_DENIED), rng);
            return unusable(ErrorCode::PERMISSION_DENIED);
        }
        let Some(peer_cert) = self.sender_cert(&peer, answer.cert.as_ref(), now) else {
            // KW-SM-022: fetched, and still other keys than the answer's;
            // the callee learns from the bye.
            let code = match self.valid_cert(&peer, now) {
                Some(_) => ErrorCode::CERT_INVALID,
                None => ErrorCode::CERT_NOT_FOUND,
            };
            self.abandon_call(now, session, Some(code), rng);
            return unusable(code);
        };
        if peer_cert.tbs.subject != peer {
            self.abandon_call(now, session, Some(ErrorCode::CERT_SUBJECT_MISMATCH), rng);
            return unusable(ErrorCode::CERT_SUBJECT_MISMATCH);
        }
        let opened = match open(&answer.body, &session, &identity, &mut self.kek) {
            Ok(o) => o,
            Err(e) => {
                let code = ErrorCode::from(&e);
                self.fail_call(session, code);
                return unusable(code);
            }
        };
        // KW-CRYPTO-040: the answer reuses the offer's key as the callee
        // received it; only a server the offer let modify it may have
        // replaced it (KW-SM-011).
        let same_key = call.cek.as_ref() == Some(&opened.cek)
            || call
                .recipients
                .iter()
                .any(|r| r.kind == RecipientKind::Server && r.perm == Permission::ReadModify);
        let verdict = {
            let validate = self.validator(now);
            verify_sealed_with(
                &answer.body,
                &session,
                &opened.plaintext,
                &opened.cek,
                &peer_cert,
                &validate,
            )
        };
        if let Err(e) = verdict {
            let code = ErrorCode::from(&e);
            self.emit(DeviceEvent::TamperDetected(session, code));
            self.abandon_call(now, session, Some(code), rng);
            return unusable(code);
        }
        let (true, Ok(peer_desc)) = (same_key, decode_plaintext::<SessionDesc>(&opened.plaintext))
        else {
            self.fail_call(session, ErrorCode::DECRYPT_FAILED);
            return unusable(ErrorCode::DECRYPT_FAILED);
        };
        self.kek.commit(opened.pending.clone());
        let keys = SessionKeys::new(
            session,
            self.cfg.account.clone(),
            peer.clone(),
            opened.cek.clone(),
            secs(now),
        );
        if let Some(call) = self.calls.get_mut(&session) {
            call.cek = Some(opened.cek);
            call.keys = Some(keys);
            call.peer_descs.insert(0, peer_desc);
            call.peer_cert = Some(peer_cert);
            call.state = CallState::Established;
        }
        self.emit(DeviceEvent::CallEstablished(session, peer.clone()));
        let txn = TxnId(rng.array());
        let ack = Message::Ack(Ack {
            txn,
            from: self.cfg.account.clone(),
            to: peer,
            session,
            hops: UpTo::new(self.cfg.policy.hops).unwrap_or_default(),
            via: None,
            ext: Extensions::new(),
        });
        self.request(now, txn, ack, Pending::InSession(session, MsgType::Ack));
        Ok(())
    }

    fn call_from(&self, session: &SessionId, from: &Principal) -> bool {
        self.calls.get(session).is_some_and(|c| &c.peer == from)
    }

    fn ok(
        &mut self,
        now: Millis,
        to: Addr,
        txn: TxnId,
        re: MsgType,
        session: SessionId,
        epoch: Option<u64>,
    ) {
        let response = Message::Ok(OkResponse {
            txn,
            session: Some(session),
            epoch,
            re,
            pinhole: None,
            recording: None,
            ext: Extensions::new(),
        });
        self.respond(now, to, txn, response);
    }

    /// Refuses a request: an `error` response, an event, and the error.
    fn reject_request(
        &mut self,
        now: Millis,
        to: Addr,
        txn: TxnId,
        re: MsgType,
        code: ErrorCode,
    ) -> Outcome {
        self.emit(DeviceEvent::Rejected(code));
        self.respond(now, to, txn, error_response(txn, re, code));
        Err(ProtocolError::Refused { re, code })
    }

    fn on_ack(&mut self, now: Millis, from: Addr, ack: Ack) -> Outcome {
        if !self.call_from(&ack.session, &ack.from) {
            return self.reject_request(
                now,
                from,
                ack.txn,
                MsgType::Ack,
                ErrorCode::UNKNOWN_SESSION,
            );
        }
        let mut established = None;
        if let Some(call) = self.calls.get_mut(&ack.session) {
            if call.state == CallState::Answered {
                call.state = CallState::Established;
                call.ack_deadline = None;
                established = Some(call.peer.clone());
            }
        }
        if let Some(peer) = established {
            self.emit(DeviceEvent::CallEstablished(ack.session, peer));
        }
        self.ok(now, from, ack.txn, MsgType::Ack, ack.session, None);
        Ok(())
    }

    fn on_info(&mut self, now: Millis, from: Addr, info: Info) -> Outcome {
        if !self.call_from(&info.session, &info.from) {
            return self.reject_request(
                now,
                from,
                info.txn,
                MsgType::Info,
                ErrorCode::UNKNOWN_SESSION,
            );
        }
        let opened = self
            .calls
            .get_mut(&info.session)
            .and_then(|c| c.keys.as_mut())
            .map(|k| {
                k.recv.open_unrecorded(
                    MsgType::Info,
                    info.epoch,
                    info.seq,
                    &info.payload,
                    secs(now),
                )
            });
        let (plaintext, seen) = match opened {
            Some(Ok(p)) => p,
            Some(Err(CryptoError::StaleEpoch(epoch))) if self.ahead(&info.session, epoch) => {
                self.defer(info.session, from, Message::Info(info));
                return Ok(());
            }
            Some(Err(e)) => {
                return self.reject_request(
                    now,
                    from,
                    info.txn,
                    MsgType::Info,
                    ErrorCode::from(&e),
                );
            }
            None => {
                return self.reject_request(
                    now,
                    from,
                    info.txn,
                    MsgType::Info,
                    ErrorCode::BAD_STATE,
                );
            }
        };
        match decode_plaintext::<SessionUpdate>(&plaintext) {
            Ok(update) => {
                // Accepted: its sequence number is spent (KW-KEY-005).
                if let Some(keys) = self
                    .calls
                    .get_mut(&info.session)
                    .and_then(|c| c.keys.as_mut())
                {
                    keys.recv.record(seen, secs(now));
                }
                if let Some(desc) = update.desc {
                    if let Some(call) = self.calls.get_mut(&info.session) {
                        let next = call
                            .peer_descs
                            .keys()
                            .next_back()
                            .map_or(0, |n| n.saturating_add(1));
                        call.peer_descs.insert(next, desc);
                        // Bounded: frames under older descriptions are late.
                        while call.peer_descs.len() > DESCS_KEPT {
                            call.peer_descs.pop_first();
                        }
                    }
                }
                if let Some(text) = update.text.filter(|t| !t.is_empty()) {
                    self.emit(DeviceEvent::InfoReceived(
                        info.session,
                        text.as_str().into(),
                    ));
                }
                self.ok(now, from, info.txn, MsgType::Info, info.session, None);
                Ok(())
            }
            Err(_) => self.reject_request(now, from, info.txn, MsgType::Info, ErrorCode::SCHEMA),
        }
    }

    fn on_rekey(&mut self, now: Millis, from: Addr, rekey: Rekey) -> Outcome {
        if !self.call_from(&rekey.session, &rekey.from) {
            return self.reject_request(
                now,
                from,
                rekey.txn,
                MsgType::Rekey,
                ErrorCode::UNKNOWN_SESSION,
            );
        }
        let policy = self.cfg.keys;
        let new_key = match (&rekey.body, &self.identity) {
            (Some(body), Some(identity)) => {
                // KW-SM-016, KW-SM-020: sealed and signed by the peer, as
                // confirmed when the call was set up, for this epoch.
                let bound = self
                    .calls
                    .get(&rekey.session)
                    .and_then(|c| c.peer_cert.as_ref());
                let opened = match bound {
                    Some(cert) => {
                        let validate = bound_or(cert, self.validator(now));
                        crate::crypto::open_rekey_body(
                            body,
                            &rekey.session,
                            &rekey.from,
                            rekey.epoch,
                            identity,
                            cert,
                            &validate,
                        )
                    }
                    None => Err(CryptoError::Cert(CertError::UnknownIssuer)),
                };
                match opened {
                    Ok(key) => Some(key),
                    Err(e) => {
                        return self.reject_request(
                            now,
                            from,
                            rekey.txn,
                            MsgType::Rekey,
                            ErrorCode::from(&e),
                        );
                    }
                }
            }
            _ => None,
        };
        let result = match self
            .calls
            .get_mut(&rekey.session)
            .and_then(|c| c.keys.as_mut())
        {
            Some(keys) => match (new_key, &rekey.wrapped) {
                (Some(key), _) => {
                    keys.recv
                        .accept_rekey_key(rekey.epoch, rekey.seq, key, secs(now), &policy)
                }
                (None, Some(wrapped)) => keys.recv.accept_rekey_wrapped(
                    rekey.epoch,
                    rekey.seq,
                    wrapped,
                    secs(now),
                    &policy,
                ),
                (None, None) => Err(crate::crypto::CryptoError::DecryptFailed),
            },
            None => Err(crate::crypto::CryptoError::StaleEpoch(rekey.epoch)),
        };
        match result {
            Ok(()) => {
                self.emit(DeviceEvent::Rekeyed {
                    session: rekey.session,
                    sending: false,
                    epoch: rekey.epoch,
                });
                self.ok(
                    now,
                    from,
                    rekey.txn,
                    MsgType::Rekey,
                    rekey.session,
                    Some(rekey.epoch),
                );
                let deferred = self
                    .calls
                    .get_mut(&rekey.session)
                    .map(|c| core::mem::take(&mut c.deferred))
                    .unwrap_or_default();
                // Each held request answers for itself, by its own
                // response; the rekey that freed it was accepted.
                for (from, request) in deferred {
                    let _ = match request {
                        Message::Info(info) => self.on_info(now, from, info),
                        Message::Bye(bye) => self.on_bye(now, from, bye),
                        _ => Ok(()),
                    };
                }
                Ok(())
            }
            Err(e) => {
                self.reject_request(now, from, rekey.txn, MsgType::Rekey, ErrorCode::from(&e))
            }
        }
    }

    fn on_bye(&mut self, now: Millis, from: Addr, bye: Bye) -> Outcome {
        if !self.call_from(&bye.session, &bye.from) {
            // The call may already be over: answer so the peer stops.
            self.ok(now, from, bye.txn, MsgType::Bye, bye.session, None);
            return Ok(());
        }
        let opened = self
            .calls
            .get_mut(&bye.session)
            .and_then(|c| c.keys.as_mut())
            .map(|k| {
                k.recv
                    .open(MsgType::Bye, bye.epoch, bye.seq, &bye.payload, secs(now))
            });
        match opened {
            Some(Ok(_)) => {
                self.ok(now, from, bye.txn, MsgType::Bye, bye.session, None);
                self.end_call(bye.session);
                Ok(())
            }
            Some(Err(CryptoError::StaleEpoch(epoch))) if self.ahead(&bye.session, epoch) => {
                self.defer(bye.session, from, Message::Bye(bye));
                Ok(())
            }
            Some(Err(e)) => {
                self.reject_request(now, from, bye.txn, MsgType::Bye, ErrorCode::from(&e))
            }
            None => self.reject_request(now, from, bye.txn, MsgType::Bye, ErrorCode::BAD_STATE),
        }
    }

    /// Whether `epoch` is after the receiving direction's current one: a
    /// rekey is still on its way.
    fn ahead(&self, session: &SessionId, epoch: u64) -> bool {
        self.calls
            .get(session)
            .and_then(|c| c.keys.as_ref())
            .is_some_and(|k| k.recv.current_epoch().checked_add(1) == Some(epoch))
    }

    /// Holds a request until its epoch's rekey arrives; unanswered
    /// meanwhile, so its sender keeps retransmitting. Past the bound it is
    /// dropped, and the sender's retransmission brings it back.
    fn defer(&mut self, session: SessionId, from: Addr, request: Message) {
        let Some(call) = self.calls.get_mut(&session) else {
            return;
        };
        if call.deferred.len() < DEFERRED {
            call.deferred.push((from, request));
        } else if let Some(txn) = request_txn(&request) {
            self.server.abandon(txn, from);
        }
    }

    /// A media frame of a call: decrypted with the key of its sender's
    /// stream and description (KW-CRYPTO-043), or dropped.
    fn on_media(&mut self, _now: Millis, media: crate::wire::Media) -> Outcome {
        let dropped = |code: ErrorCode| {
            Err(ProtocolError::Dropped {
                re: MsgType::Media,
                code,
            })
        };
        let Some(call) = self
            .calls
            .get(&media.session)
            .filter(|c| c.peer == media.from)
        else {
            return dropped(ErrorCode::UNKNOWN_SESSION);
        };
        let Some(stream) = call
            .peer_descs
            .get(&media.epoch)
            .and_then(|d| d.streams.iter().find(|s| s.id == media.stream))
        else {
            return dropped(ErrorCode::STALE_EPOCH);
        };
        let ad = media_ad(
            &media.session,
            &media.from,
            media.stream,
            media.epoch,
            media.seq,
        );
        match open_media(&Secret32::new(stream.key.0), &ad, &media.payload) {
            Ok(frame) => {
                self.emit(DeviceEvent::MediaReceived {
                    session: media.session,
                    epoch: media.epoch,
                    seq: media.seq,
                    frame,
                });
                Ok(())
            }
            Err(e) => {
                let code = ErrorCode::from(&e);
                self.emit(DeviceEvent::Rejected(code));
                dropped(code)
            }
        }
    }
}

/// Whether two certificates certify the same key pairs.
fn same_keys(a: &Certificate, b: &Certificate) -> bool {
    a.tbs.subject == b.tbs.subject && a.tbs.sig_key == b.tbs.sig_key && a.tbs.kx_key == b.tbs.kx_key
}

fn keys_due(call: Option<&Call>, now: Millis, policy: &KeyPolicy) -> bool {
    call.and_then(|c| c.keys.as_ref())
        .is_some_and(|k| k.send.needs_rekey(secs(now), policy))
}
