//! The recorder (F7) as a sans-IO state machine: it obeys signed recording
//! commands from the servers it is configured with, learns media keys from
//! the sealed `keys` they carry, decrypts the media packets a firewall
//! copies to it, and lists and serves recordings to the accounts allowed
//! to see them (KW-REC-002..005). Its recordings are durable: every change
//! is a store write (KW-REC-005), and [`Recorder::restore`] goes on from
//! the store.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use super::clock::Now;
use super::deadlines::Deadlines;
use super::error::{ApiMisuse, ProtocolError};
use super::party::{NoCommand, Outbox, Output, Party};
use super::store::{RecordingRecord, StoreSnapshot, StoreWrite};
use super::transact::ServerTxns;
use super::transport::{Receive, ReplyTo};
use super::{Addr, Millis};
use crate::crypto::{
    CryptoError, Entropy, Expect, Identity, KeyCache, PendingKek, ReaderBinding, Secret32,
    TrustStore, ct_eq, data_ad, listing_ad, media_ad, open, open_media, seal_for_requester,
    verify_message, verify_sealed,
};
use crate::wire::{
    Bytes, Certificate, ErrorCode, Extensions, List, Media, MediaKeys, Message, MsgType,
    OkResponse, Principal, RecordData, RecordListing, RecordingId, RecordingInfo, RecordingMode,
    Role, SessionId, Time, TxnId, decode_plaintext, encode_plaintext,
};

/// What a recorder is configured with.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Its account and keys (KW-CERT-004).
    pub identity: Identity,
    /// Where it receives commands and copied media.
    pub addr: Addr,
    /// Anchors of the domains whose servers it obeys.
    pub trust: TrustStore,
    /// The servers it obeys, with their certificates (KW-FW-005 applied to
    /// recording commands).
    pub servers: BTreeMap<Principal, Certificate>,
    /// The certificates that requests to list and fetch are checked with;
    /// a request from an account not here is refused (KW-REC-005).
    pub readers: BTreeMap<Principal, Certificate>,
    /// Accounts that may see every recording; the parties of a recording
    /// may see it too (KW-REC-005).
    pub auditors: BTreeSet<Principal>,
    /// Most recordings kept; the oldest finished one is dropped first.
    pub capacity: usize,
    /// How far a request's `time` may be from the recorder's clock
    /// (KW-REC-006): [`FRESHNESS_WINDOW_SECS`](super::FRESHNESS_WINDOW_SECS)
    /// unless configured, as for the firewall agent (KW-FW-007).
    pub window_secs: u64,
}

/// One recorded media packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPacket {
    /// Its sender.
    pub from: Principal,
    /// The sender's stream.
    pub stream: u64,
    /// The sender's description number.
    pub epoch: u64,
    /// Sequence number.
    pub seq: u64,
    /// The plaintext frame, or the packet's ciphertext in
    /// ciphertext-and-keys mode.
    pub data: Vec<u8>,
}

/// A recording.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Its identifier.
    pub id: RecordingId,
    /// The session.
    pub session: SessionId,
    /// What is kept.
    pub mode: RecordingMode,
    /// The session's parties.
    pub parties: Vec<Principal>,
    /// The server that started it.
    pub server: Principal,
    /// When it started (seconds).
    pub started: u64,
    /// When it ended, if it has.
    pub ended: Option<u64>,
    /// Media keys by (sender, stream, description number).
    keys: BTreeMap<(Principal, u64, u64), Secret32>,
    /// Packets in arrival order, without duplicates.
    pub packets: Vec<RecordedPacket>,
    seen: BTreeSet<(Principal, u64, u64, u64)>,
    /// Bytes recorded.
    pub bytes: u64,
}

/// A recording as the store keeps it, without its packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecording {
    pub id: RecordingId,
    session: SessionId,
    mode: RecordingMode,
    parties: Vec<Principal>,
    server: Principal,
    started: u64,
    ended: Option<u64>,
    keys: BTreeMap<(Principal, u64, u64), Secret32>,
}

impl Recording {
    /// What the store keeps of it besides its packets.
    fn record(&self) -> RecordingRecord {
        RecordingRecord(Box::new(StoredRecording {
            id: self.id,
            session: self.session,
            mode: self.mode,
            parties: self.parties.clone(),
            server: self.server.clone(),
            started: self.started,
            ended: self.ended,
            keys: self.keys.clone(),
        }))
    }

    /// A recording as the store kept it.
    fn restored(stored: StoredRecording, packets: Vec<RecordedPacket>) -> Self {
        let seen = packets
            .iter()
            .map(|p| (p.from.clone(), p.stream, p.epoch, p.seq))
            .collect();
        let bytes = packets.iter().map(|p| p.data.len() as u64).sum();
        Self {
            id: stored.id,
            session: stored.session,
            mode: stored.mode,
            parties: stored.parties,
            server: stored.server,
            started: stored.started,
            ended: stored.ended,
            keys: stored.keys,
            packets,
            seen,
            bytes,
        }
    }

    /// How many keys the recording has learned.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn info(&self) -> Option<RecordingInfo> {
        Some(RecordingInfo {
            recording: self.id,
            session: self.session,
            started: Time(self.started),
            ended: self.ended.map(Time),
            mode: self.mode,
            parties: List::new(self.parties.clone())?,
            packets: self.packets.len() as u64,
            bytes: self.bytes,
            ext: Extensions::new(),
        })
    }
}

/// What a recorder tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecorderEvent {
    /// A recording started.
    Started(RecordingId, SessionId),
    /// A recording learned the keys of a new description.
    KeysAdded(RecordingId, usize),
    /// A recording ended.
    Stopped(RecordingId),
    /// A copied media packet was decrypted (or kept, in
    /// ciphertext-and-keys mode) and recorded.
    Recorded {
        /// The recording.
        recording: RecordingId,
        /// The session.
        session: SessionId,
        /// The packet's sender.
        from: Principal,
        /// Its stream.
        stream: u64,
        /// Its description number.
        epoch: u64,
        /// Its sequence number.
        seq: u64,
        /// The decrypted frame (empty in ciphertext-and-keys mode).
        frame: Vec<u8>,
    },
    /// A copied packet could not be recorded.
    Unrecordable(SessionId, ErrorCode),
    /// A request was rejected.
    Rejected(ErrorCode),
}

/// See the module documentation.
pub struct Recorder {
    cfg: RecorderConfig,
    recordings: BTreeMap<RecordingId, Recording>,
    /// Live recordings by session and the server that started them: two
    /// servers may record one session without disturbing each other.
    by_session: BTreeMap<SessionId, BTreeMap<Principal, RecordingId>>,
    kek: KeyCache,
    /// Signed requests carried out, by sender and transaction, until
    /// their `time` leaves the window: none is carried out twice
    /// (KW-REC-007). Not durable: after a
    /// restart, what a replay could do is bounded by the state rules
    /// (KW-REC-008..010).
    seen: Deadlines<(Principal, TxnId)>,
    txns: ServerTxns,
    rejects: super::reject::DecodeRejects,
    out: Outbox<RecorderEvent>,
}

impl core::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Recorder({}, {} recordings)",
            self.cfg.identity.account,
            self.recordings.len()
        )
    }
}

/// Largest chunk of `record-data`, before it is sealed.
const CHUNK: usize = 8192;
/// Largest listing, before it is sealed: with the rest of its
/// `record-listing`, within a message (KW-LIMIT-001).
const LISTING: usize = 16_000;
/// Most packets one recording keeps.
const PACKETS_PER_RECORDING: usize = 100_000;
/// Most signed requests remembered at once (KW-REC-007, KW-SM-020): a
/// request beyond them is refused with `busy`, never let through
/// unremembered.
const SEEN: usize = 65_536;

impl Recorder {
    /// A recorder with no recordings.
    pub fn new(cfg: RecorderConfig) -> Self {
        Self {
            cfg,
            recordings: BTreeMap::new(),
            by_session: BTreeMap::new(),
            kek: KeyCache::new(64),
            seen: Deadlines::default(),
            txns: ServerTxns::new(1024),
            rejects: Default::default(),
            out: Outbox::default(),
        }
    }

    /// A recorder restarted from what its store holds (KW-REC-005).
    pub fn restore(cfg: RecorderConfig, snapshot: StoreSnapshot) -> Self {
        let mut recorder = Self::new(cfg);
        for (id, (record, packets)) in snapshot.recordings {
            let rec = Recording::restored(*record.0, packets);
            if rec.ended.is_none() {
                recorder
                    .by_session
                    .entry(rec.session)
                    .or_default()
                    .insert(rec.server.clone(), id);
            }
            recorder.recordings.insert(id, rec);
        }
        recorder
    }

    /// The recording of a session.
    pub fn recording_of(&self, session: &SessionId) -> Option<&Recording> {
        self.recordings.values().find(|r| r.session == *session)
    }

    /// Every recording, by identifier.
    pub fn recordings(&self) -> impl Iterator<Item = &Recording> {
        self.recordings.values()
    }

    fn emit(&mut self, event: RecorderEvent) {
        self.out.event(event);
    }

    fn respond(&mut self, now: Now, to: ReplyTo, txn: TxnId, response: Message) {
        self.txns
            .respond(now.mono, to, txn, response, &mut self.out);
    }

    fn reject(
        &mut self,
        now: Now,
        to: ReplyTo,
        txn: TxnId,
        re: MsgType,
        code: ErrorCode,
    ) -> Result<(), ProtocolError> {
        let event = RecorderEvent::Rejected(code);
        self.txns
            .refuse(now.mono, to, txn, re, code, &mut self.out, event)
    }

    /// A datagram arrived. `Err` says why it was refused; an `error`
    /// answering it, if any, is among the outputs.
    fn receive(
        &mut self,
        now: Now,
        receive: Receive<'_>,
        rng: &mut impl Entropy,
    ) -> Result<(), ProtocolError> {
        let from = receive.reply_to();
        let message = self.rejects.decode(
            now.mono,
            from,
            receive.contents,
            &mut self.out,
            RecorderEvent::Rejected,
        )?;
        if let Message::Media(media) = message {
            return self.on_media(media);
        }
        let re = message.msg_type();
        // A response: the recorder sends no requests (KW-ERR-001); told as
        // `Rejected`.
        let event = RecorderEvent::Rejected;
        let txn = match self
            .txns
            .admit(now.mono, from, &message, &mut self.out, event)
        {
            ControlFlow::Continue(txn) => txn,
            ControlFlow::Break(outcome) => return outcome,
        };
        let outcome = match &message {
            Message::RecordStart(_) | Message::RecordKey(_) | Message::RecordStop(_) => {
                self.on_command(now, &message)
            }
            Message::RecordList(_) | Message::RecordFetch(_) => {
                self.on_read(now, &message, receive.contents, rng)
            }
            _ => Err(ErrorCode::UNKNOWN_MESSAGE_TYPE),
        };
        match outcome {
            Ok(response) => {
                self.remember(now, &message);
                self.respond(now, from, txn, response);
                Ok(())
            }
            Err(code) => self.reject(now, from, txn, re, code),
        }
    }

    /// The checks every signed request passes after its signature, before
    /// anything is carried out: it is fresh (KW-REC-006) and not one
    /// already carried out (KW-REC-007).
    fn admit_signed(&mut self, now: Now, message: &Message) -> Result<(), ErrorCode> {
        let (from, txn, time) = signed_parts(message).ok_or(ErrorCode::UNKNOWN_MESSAGE_TYPE)?;
        // KW-REC-006: as the firewall agent (KW-FW-007), either way.
        if time.abs_diff(now.wall_secs()) > self.cfg.window_secs {
            return Err(ErrorCode::STALE_REQUEST);
        }
        // KW-REC-007: a duplicate from the request's own source within the
        // transaction cache was answered from it (KW-FRAME-012) before
        // reaching here; any other repetition — another source, or after
        // the cache — is refused and not carried out again.
        if self.seen.contains(&(from.clone(), txn)) {
            return Err(ErrorCode::REPLAY);
        }
        let _ = self.seen.take_due(now.mono);
        if self.seen.len() >= SEEN {
            return Err(ErrorCode::BUSY);
        }
        Ok(())
    }

    /// KW-REC-007: a request carried out is remembered until its `time`
    /// leaves the window (fresh until `time + window` inclusive), so that
    /// it is never carried out again.
    fn remember(&mut self, now: Now, message: &Message) {
        if let Some((from, txn, time)) = signed_parts(message) {
            let until = time
                .saturating_add(self.cfg.window_secs)
                .saturating_add(1)
                .saturating_mul(1000);
            let at = now.mono_at_wall(until).max(now.mono.saturating_add(1));
            self.seen.set((from.clone(), txn), at);
        }
    }

    /// A server's command: checked against the servers obeyed, then
    /// carried out (KW-REC-002, KW-REC-003) as the recording's state
    /// allows (KW-REC-008..010). Every check comes before any change, so
    /// a refusal changes nothing (KW-ERR-004).
    fn on_command(&mut self, now: Now, message: &Message) -> Result<Message, ErrorCode> {
        let (txn, server) = match message {
            Message::RecordStart(m) => (m.txn, &m.from),
            Message::RecordKey(m) => (m.txn, &m.from),
            Message::RecordStop(m) => (m.txn, &m.from),
            _ => return Err(ErrorCode::UNKNOWN_MESSAGE_TYPE),
        };
        let cert = self
            .cfg
            .servers
            .get(server)
            .ok_or(ErrorCode::FORBIDDEN)?
            .clone();
        let expect = Expect {
            subject: server,
            role: Some(Role::Server),
            now: now.wall_secs(),
        };
        self.cfg
            .trust
            .check(&cert, expect)
            .map_err(|e| ErrorCode::from(&CryptoError::Cert(e)))?;
        verify_message(message, &cert).map_err(|e| ErrorCode::from(&e))?;
        self.admit_signed(now, message)?;
        let recording = match message {
            Message::RecordStart(m) => {
                let (keys, pending) =
                    self.open_keys(now, &m.keys, &m.session, MsgType::RecordStart, &cert)?;
                if let Some(existing) = self.recordings.get_mut(&m.recording) {
                    // A retransmission that outlived the transaction cache,
                    // or its server restarted (KW-SM-025): the keys it
                    // knows now are added. KW-REC-008: only to the same,
                    // live recording; nothing else about it changes.
                    let same = existing.session == m.session
                        && existing.server == m.from
                        && existing.mode == m.mode
                        && existing.parties.iter().eq(m.parties.iter());
                    if !same || existing.ended.is_some() {
                        return Err(ErrorCode::BAD_STATE);
                    }
                    let new = new_keys(existing, &keys)?;
                    self.kek.commit(pending);
                    if !new.is_empty() {
                        let added = new.len();
                        existing.keys.extend(new);
                        let record = existing.record();
                        self.out.store(StoreWrite::PutRecording(record));
                        self.emit(RecorderEvent::KeysAdded(m.recording, added));
                    }
                } else {
                    // KW-REC-008: one live recording of a session per
                    // server.
                    if self
                        .by_session
                        .get(&m.session)
                        .is_some_and(|live| live.contains_key(&m.from))
                    {
                        return Err(ErrorCode::BAD_STATE);
                    }
                    let mut rec = Recording {
                        id: m.recording,
                        session: m.session,
                        mode: m.mode,
                        parties: m.parties.iter().cloned().collect(),
                        server: m.from.clone(),
                        started: now.wall_secs(),
                        ended: None,
                        keys: BTreeMap::new(),
                        packets: Vec::new(),
                        seen: BTreeSet::new(),
                        bytes: 0,
                    };
                    let new = new_keys(&rec, &keys)?;
                    if !self.make_room() {
                        return Err(ErrorCode::BUSY);
                    }
                    rec.keys.extend(new);
                    self.kek.commit(pending);
                    self.out.store(StoreWrite::PutRecording(rec.record()));
                    self.recordings.insert(m.recording, rec);
                    self.by_session
                        .entry(m.session)
                        .or_default()
                        .insert(m.from.clone(), m.recording);
                    self.emit(RecorderEvent::Started(m.recording, m.session));
                }
                m.recording
            }
            Message::RecordKey(m) => {
                let (keys, pending) =
                    self.open_keys(now, &m.keys, &m.session, MsgType::RecordKey, &cert)?;
                let rec = self
                    .recordings
                    .get_mut(&m.recording)
                    .filter(|r| r.server == m.from && r.session == m.session)
                    .ok_or(ErrorCode::UNKNOWN_RECORDING)?;
                // KW-REC-008: a stopped recording takes no more keys.
                if rec.ended.is_some() {
                    return Err(ErrorCode::BAD_STATE);
                }
                // KW-REC-009: the keys of description `epoch` of one
                // sender.
                let sender = keys
                    .keys
                    .iter()
                    .next()
                    .map(|k| k.sender.clone())
                    .ok_or(ErrorCode::BAD_STATE)?;
                if keys
                    .keys
                    .iter()
                    .any(|k| k.sender != sender || k.epoch != m.epoch)
                {
                    return Err(ErrorCode::BAD_STATE);
                }
                let new = new_keys(rec, &keys)?;
                if !new.is_empty() {
                    // KW-REC-009: descriptions only move forward; one the
                    // recording has, or is past, adds nothing.
                    let highest = rec
                        .keys
                        .keys()
                        .filter(|(s, _, _)| *s == sender)
                        .map(|(_, _, epoch)| *epoch)
                        .max();
                    if highest.is_some_and(|h| h >= m.epoch) {
                        return Err(ErrorCode::STALE_EPOCH);
                    }
                    let added = new.len();
                    rec.keys.extend(new);
                    let record = rec.record();
                    self.out.store(StoreWrite::PutRecording(record));
                    self.emit(RecorderEvent::KeysAdded(m.recording, added));
                }
                // Keys it holds already (a retransmission): nothing changes.
                self.kek.commit(pending);
                m.recording
            }
            Message::RecordStop(m) => {
                let rec = self
                    .recordings
                    .get_mut(&m.recording)
                    .filter(|r| r.server == m.from && r.session == m.session)
                    .ok_or(ErrorCode::UNKNOWN_RECORDING)?;
                if rec.ended.is_none() {
                    rec.ended = Some(now.wall_secs());
                    let record = rec.record();
                    self.out.store(StoreWrite::PutRecording(record));
                    if let Some(live) = self.by_session.get_mut(&m.session) {
                        live.remove(&m.from);
                        if live.is_empty() {
                            self.by_session.remove(&m.session);
                        }
                    }
                    self.kek.forget_session(&m.session);
                    self.emit(RecorderEvent::Stopped(m.recording));
                }
                m.recording
            }
            _ => return Err(ErrorCode::UNKNOWN_MESSAGE_TYPE),
        };
        Ok(Message::Ok(OkResponse {
            txn,
            session: None,
            epoch: None,
            re: message.msg_type(),
            pinhole: None,
            recording: Some(recording),
            ext: Extensions::new(),
        }))
    }

    /// The media keys of a command, sealed for this recorder by the server
    /// and checked like any sealed body (KW-SEAL-009), with the key that
    /// opened them, to keep once the command is carried out (KW-ERR-004).
    fn open_keys(
        &mut self,
        now: Now,
        sealed: &crate::wire::Sealed,
        session: &SessionId,
        re: MsgType,
        server_cert: &Certificate,
    ) -> Result<(MediaKeys, Option<PendingKek>), ErrorCode> {
        let opened = open(sealed, session, &self.cfg.identity, &mut self.kek)
            .map_err(|e| ErrorCode::from(&e))?;
        verify_sealed(
            sealed,
            crate::crypto::SealContext::of(sealed, session, re, None),
            &opened.plaintext,
            &opened.cek,
            server_cert,
            &self.cfg.trust,
            now.wall_secs(),
        )
        .map_err(|e| ErrorCode::from(&e))?;
        let keys =
            decode_plaintext::<MediaKeys>(&opened.plaintext).map_err(|e| ErrorCode::from(&e))?;
        Ok((keys, opened.pending))
    }

    /// Drops the oldest finished recording when full; false when every
    /// recording is still live.
    fn make_room(&mut self) -> bool {
        if self.recordings.len() < self.cfg.capacity.max(1) {
            return true;
        }
        let oldest = self
            .recordings
            .values()
            .filter(|r| r.ended.is_some())
            .min_by_key(|r| (r.started, r.id))
            .map(|r| r.id);
        match oldest {
            Some(id) => {
                self.out.store(StoreWrite::DeleteRecording(id));
                self.recordings.remove(&id).is_some()
            }
            None => false,
        }
    }

    /// A copied media packet (KW-REC-004), for every live recording of its
    /// session; refused when no recording could keep it.
    fn on_media(&mut self, media: Media) -> Result<(), ProtocolError> {
        let ids: Vec<RecordingId> = self
            .by_session
            .get(&media.session)
            .map(|live| live.values().copied().collect())
            .unwrap_or_default();
        let mut outcome = Err(ErrorCode::UNKNOWN_RECORDING);
        for id in ids {
            let recorded = self.record(id, &media);
            if outcome.is_err() {
                outcome = recorded;
            }
        }
        outcome.map_err(|code| {
            self.emit(RecorderEvent::Unrecordable(media.session, code));
            ProtocolError::Dropped {
                re: MsgType::Media,
                code,
            }
        })
    }

    fn record(&mut self, id: RecordingId, media: &Media) -> Result<(), ErrorCode> {
        let rec = self
            .recordings
            .get_mut(&id)
            .ok_or(ErrorCode::UNKNOWN_RECORDING)?;
        let seen_key = (media.from.clone(), media.stream, media.epoch, media.seq);
        if rec.seen.contains(&seen_key) {
            // The same packet copied at two pinholes: kept once.
            return Ok(());
        }
        if rec.packets.len() >= PACKETS_PER_RECORDING {
            return Err(ErrorCode::BUSY);
        }
        let key = rec
            .keys
            .get(&(media.from.clone(), media.stream, media.epoch))
            .ok_or(ErrorCode::STALE_EPOCH)?;
        let ad = media_ad(
            &media.session,
            &media.from,
            media.stream,
            media.epoch,
            media.seq,
        );
        let frame = open_media(key, &ad, &media.payload).map_err(|e| ErrorCode::from(&e))?;
        let (data, event_frame) = match rec.mode {
            RecordingMode::CiphertextAndKeys => (media.payload.0.clone(), Vec::new()),
            _ => (frame.clone(), frame),
        };
        rec.bytes = rec.bytes.saturating_add(data.len() as u64);
        rec.seen.insert(seen_key);
        let packet = RecordedPacket {
            from: media.from.clone(),
            stream: media.stream,
            epoch: media.epoch,
            seq: media.seq,
            data,
        };
        rec.packets.push(packet.clone());
        self.out.store(StoreWrite::AppendPacket {
            recording: id,
            packet,
        });
        self.emit(RecorderEvent::Recorded {
            recording: id,
            session: media.session,
            from: media.from.clone(),
            stream: media.stream,
            epoch: media.epoch,
            seq: media.seq,
            frame: event_frame,
        });
        Ok(())
    }

    /// Whether `account` may see `rec` (KW-REC-005).
    fn may_read(&self, account: &Principal, rec: &Recording) -> bool {
        self.cfg.auditors.contains(account) || rec.parties.contains(account)
    }

    /// `record-list` and `record-fetch`, signed by their sender, whose
    /// certificate the recorder must hold (KW-REC-005); answered sealed
    /// for it (KW-REC-011). `request` is the request as received.
    fn on_read<R: Entropy>(
        &mut self,
        now: Now,
        message: &Message,
        request: &[u8],
        rng: &mut R,
    ) -> Result<Message, ErrorCode> {
        let account = match message {
            Message::RecordList(m) => &m.from,
            Message::RecordFetch(m) => &m.from,
            _ => return Err(ErrorCode::UNKNOWN_MESSAGE_TYPE),
        };
        let cert = self
            .cfg
            .readers
            .get(account)
            .ok_or(ErrorCode::RECORDING_FORBIDDEN)?
            .clone();
        // A reader's certificate must still be valid (KW-CERT-002).
        let expect = Expect {
            subject: account,
            role: None,
            now: now.wall_secs(),
        };
        self.cfg
            .trust
            .check(&cert, expect)
            .map_err(|e| ErrorCode::from(&CryptoError::Cert(e)))?;
        verify_message(message, &cert).map_err(|e| ErrorCode::from(&e))?;
        self.admit_signed(now, message)?;
        // KW-REC-011: what is read is sealed for the requester, with the
        // key of the certificate just confirmed, and bound to the request
        // as received (KW-CRYPTO-070).
        let recorder = self.cfg.identity.account.clone();
        let recorder_kx = self.cfg.identity.kx.public();
        let binding = ReaderBinding {
            recorder: &recorder,
            recorder_kx: &recorder_kx,
            requester: account,
            requester_kx: &cert.tbs.kx_key,
            request,
        };
        let sealed = |ad: &[u8], plaintext: &[u8], rng: &mut R| {
            seal_for_requester(&binding, &self.cfg.identity.kx, ad, plaintext, rng)
                .map_err(|e| ErrorCode::from(&e))
        };
        match message {
            Message::RecordList(m) => {
                // At most 64, and as many as fit in one message.
                let mut infos: Vec<RecordingInfo> = Vec::new();
                let mut size = 3;
                for info in self
                    .recordings
                    .values()
                    .filter(|r| m.session.is_none_or(|s| s == r.session))
                    .filter(|r| self.may_read(account, r))
                    .filter_map(Recording::info)
                {
                    let n = encode_plaintext(&info).len();
                    if infos.len() >= 64 || size + n > LISTING {
                        break;
                    }
                    size += n;
                    infos.push(info);
                }
                let list: List<RecordingInfo, 0, 64> =
                    List::new(infos).ok_or(ErrorCode::INTERNAL)?;
                let (epk, ct) = sealed(&listing_ad(&m.txn), &encode_plaintext(&list), rng)?;
                Ok(Message::RecordListing(RecordListing {
                    txn: m.txn,
                    recordings: Bytes::new(ct).ok_or(ErrorCode::INTERNAL)?,
                    epk,
                    ext: Extensions::new(),
                }))
            }
            Message::RecordFetch(m) => {
                let rec = self
                    .recordings
                    .get(&m.recording)
                    .ok_or(ErrorCode::UNKNOWN_RECORDING)?;
                if !self.may_read(account, rec) {
                    return Err(ErrorCode::RECORDING_FORBIDDEN);
                }
                // Chunk `index` is packet `index`'s data (KW-REC-005).
                let index = usize::try_from(m.index).map_err(|_| ErrorCode::SCHEMA)?;
                let packet = rec.packets.get(index).ok_or(ErrorCode::SCHEMA)?;
                let chunk: Vec<u8> = packet.data.iter().take(CHUNK).copied().collect();
                let more = index.saturating_add(1) < rec.packets.len();
                let ad = data_ad(&m.txn, &m.recording, m.index, more);
                let (epk, ct) = sealed(&ad, &chunk, rng)?;
                Ok(Message::RecordData(RecordData {
                    txn: m.txn,
                    recording: m.recording,
                    chunk: Bytes::new(ct).ok_or(ErrorCode::INTERNAL)?,
                    index: m.index,
                    more,
                    epk,
                    ext: Extensions::new(),
                }))
            }
            _ => Err(ErrorCode::UNKNOWN_MESSAGE_TYPE),
        }
    }
}

/// The keys of `keys` that `rec` does not hold yet. KW-REC-010: a key it
/// holds is never replaced, so a command naming another key for a
/// (sender, stream, description) it has — or two keys for one — is
/// refused. Compared in constant time (KW-CRYPTO-002).
fn new_keys(
    rec: &Recording,
    keys: &MediaKeys,
) -> Result<BTreeMap<(Principal, u64, u64), Secret32>, ErrorCode> {
    let mut new: BTreeMap<(Principal, u64, u64), Secret32> = BTreeMap::new();
    for k in keys.keys.iter() {
        let slot = (k.sender.clone(), k.stream, k.epoch);
        let held = rec.keys.get(&slot).or_else(|| new.get(&slot));
        match held {
            Some(held) if ct_eq(held.expose(), &k.key.0) => {}
            Some(_) => return Err(ErrorCode::BAD_STATE),
            None => {
                new.insert(slot, Secret32::new(k.key.0));
            }
        }
    }
    Ok(new)
}

/// The sender, transaction and `time` of a signed request to a recorder.
fn signed_parts(message: &Message) -> Option<(&Principal, TxnId, u64)> {
    match message {
        Message::RecordStart(m) => Some((&m.from, m.txn, m.time.0)),
        Message::RecordKey(m) => Some((&m.from, m.txn, m.time.0)),
        Message::RecordStop(m) => Some((&m.from, m.txn, m.time.0)),
        Message::RecordList(m) => Some((&m.from, m.txn, m.time.0)),
        Message::RecordFetch(m) => Some((&m.from, m.txn, m.time.0)),
        _ => None,
    }
}

impl Party for Recorder {
    type Event = RecorderEvent;
    type Command = NoCommand;

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

    /// Forgets answered transactions, and requests no longer fresh.
    fn handle_timeout(&mut self, now: Now, _rng: &mut impl Entropy) {
        self.out.begin();
        self.txns.expire(now.mono);
        let _ = self.seen.take_due(now.mono);
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

    fn poll_output(&mut self) -> Option<Output<RecorderEvent>> {
        self.out.poll()
    }

    fn poll_timeout(&self) -> Option<Millis> {
        [self.txns.next_timeout(), self.seen.next()]
            .into_iter()
            .flatten()
            .min()
    }
}
