//! A trusted server's part in sessions: reading sealed bodies it holds an
//! entry for (F4), rewriting local media addresses with a signed edit,
//! following the session's keys (F5), and the firewall (F6) and recording
//! (F7) commands derived from what it read.

use std::collections::BTreeMap;

use super::{Outcome, Pending, Server, ServerEvent, SessionEnd};
use crate::core::bound::bound_or;
use crate::core::error::ProtocolError;
use crate::core::firewall::FirewallCommand;
use crate::core::{Addr, Millis, secs};
use crate::crypto::{
    CryptoError, DirectionKeys, Entropy, Expect, KeyCache, RecipientSpec, Rekeying, SealContext,
    Secret32, SessionKeys, edit, open, open_with_key, reencrypt_without_edit, seal, sign_message,
    unsigned, verify_sealed_with,
};
use crate::wire::{
    Answer, Certificate, ErrorCode, Extensions, List, MediaKey, MediaKeys, Message, MsgType, Offer,
    Permission, Principal, RecipientKind, RecordKey, RecordStart, RecordStop, RecordingId, Sealed,
    SecretBytes32, SessionDesc, SessionId, SessionUpdate, Transport, TxnId, decode_plaintext,
    encode_plaintext,
};

/// Most in-session messages kept for a rekey not yet seen.
const DEFERRED: usize = 8;

/// What a server keeps of a session it follows.
pub(crate) struct ServerSession {
    caller: Principal,
    callee: Principal,
    /// The session key: held only after unwrapping it from this server's
    /// own entry (KW-KEY-001).
    pub(super) cek: Option<Secret32>,
    /// The offer's key as the caller sealed it, when this server replaced
    /// it (KW-SM-011): a caller's `bye` before the answer is under it.
    offer_key: Option<Secret32>,
    /// Descriptions as forwarded (what the peer sees), by party and number.
    descs: BTreeMap<(Principal, u64), SessionDesc>,
    /// Media addresses before this server rewrote them, by party.
    internal: BTreeMap<Principal, Vec<Addr>>,
    /// Both directions: `send` is caller → callee.
    pub(super) keys: Option<SessionKeys>,
    pub(super) pinholes: Vec<u64>,
    /// Pinholes that pass media to the caller, narrowed on the answer.
    caller_pinholes: Vec<u64>,
    recording: Option<RecordingId>,
    next_cid: u64,
    /// In-session messages of an epoch not yet followed.
    deferred: Vec<(Principal, MsgType, u64, u64, Vec<u8>)>,
    /// The parties' certificates, as confirmed on the offer and answer:
    /// what their body-form rekeys are checked with.
    certs: BTreeMap<Principal, Certificate>,
    pub(super) expires_at: Millis,
}

/// Descriptions kept per party: the media keys of older ones are no longer
/// needed once the recorder has them.
const DESCS_PER_PARTY: usize = 4;

impl ServerSession {
    fn latest_desc(&self, party: &Principal) -> Option<(u64, &SessionDesc)> {
        self.descs
            .range((party.clone(), 0)..=(party.clone(), u64::MAX))
            .next_back()
            .map(|((_, n), d)| (*n, d))
    }
}

/// The media addresses of a description.
fn addrs(desc: &SessionDesc) -> Vec<Addr> {
    desc.streams.iter().map(|s| s.addr).collect()
}

impl Server {
    /// Checks the certificates a body names with this server's anchors.
    fn check_body(
        &self,
        now: Millis,
        body: &Sealed,
        session: &SessionId,
        plaintext: &[u8],
        cek: &Secret32,
        sender_cert: &Certificate,
    ) -> Result<(), CryptoError> {
        let trust = &self.trust;
        verify_sealed_with(
            body,
            session,
            plaintext,
            cek,
            sender_cert,
            &|cert, subject, role| {
                trust.check(
                    cert,
                    Expect {
                        subject,
                        role,
                        now: secs(now),
                    },
                )
            },
        )
    }

    /// The sender's certificate: carried in the message, or the local
    /// registration's.
    fn sender_cert(
        &self,
        now: Millis,
        carried: Option<&Certificate>,
        sender: &Principal,
    ) -> Option<Certificate> {
        carried.cloned().or_else(|| {
            self.current_registration(sender, now)
                .map(|g| g.cert.clone())
        })
    }

    /// The firewall's public address for an internal media address
    /// (KW-FW-006): one per internal address, kept across sessions, as an
    /// endpoint-independent NAT mapping is, so that every peer sees a
    /// party at the same address.
    fn public_addr(&mut self, internal: Addr) -> Option<Addr> {
        if let Some(public) = self.public_of.get(&internal) {
            return Some(*public);
        }
        let plan = self.cfg.firewall?;
        let ports = plan.ports.max(1);
        if self.public_of.len() >= usize::from(ports) {
            // Every port is mapped: give up the mappings no session uses.
            let in_use: std::collections::BTreeSet<Addr> = self
                .sessions
                .values()
                .flat_map(|s| s.internal.values().flatten().copied())
                .collect();
            self.public_of
                .retain(|internal, _| in_use.contains(internal));
        }
        let taken: std::collections::BTreeSet<Addr> = self.public_of.values().copied().collect();
        // A port is never given to two internal addresses at once.
        for _ in 0..ports {
            let port = plan.first_port.saturating_add(self.next_port % ports);
            self.next_port = self.next_port.wrapping_add(1);
            let public = Addr::new(plan.public_ip, port);
            if !taken.contains(&public) {
                self.public_of.insert(internal, public);
                return Some(public);
            }
        }
        None
    }

    /// Whether every media address of a local party's description is at
    /// the address it registered: a server opens pinholes only to its own
    /// parties (KW-SM-018).
    fn at_contact(&self, now: Millis, party: &Principal, desc: &SessionDesc) -> bool {
        self.current_registration(party, now).is_some_and(|g| {
            desc.streams
                .iter()
                .all(|s| s.addr.ip() == g.contact.addr.ip())
        })
    }

    /// Rewrites a local party's description to public addresses, if this
    /// server may and is configured to (KW-SEAL-007).
    fn rewrite(&mut self, desc: &SessionDesc, perm: Option<Permission>) -> Option<SessionDesc> {
        if perm != Some(Permission::ReadModify) || !self.cfg.policy.rewrite_media {
            return None;
        }
        self.cfg.firewall?;
        let mut out = desc.clone();
        for stream in out.streams.0.iter_mut() {
            stream.addr = self.public_addr(stream.addr)?;
        }
        Some(out)
    }

    /// What a misbehaving reader writes (fault injection, KW-SEAL-006).
    fn tampered(desc: &SessionDesc) -> SessionDesc {
        let mut out = desc.clone();
        for stream in out.streams.0.iter_mut() {
            stream.addr.set_port(stream.addr.port().wrapping_add(1));
        }
        out
    }

    /// Changes a body: a signed edit when permitted, or the injected fault.
    /// An offer's edit replaces its content key when the policy asks for
    /// it and every entry after this server can be re-wrapped (claim 39,
    /// KW-SM-011); `passed` are the servers the offer came through. Returns
    /// the body to forward, its control information, and the new content
    /// key if it was replaced.
    #[allow(clippy::too_many_arguments)]
    fn change_body(
        &mut self,
        now: Millis,
        body: &Sealed,
        session: SessionId,
        re: MsgType,
        cek: &Secret32,
        desc: &SessionDesc,
        local: bool,
        perm: Option<Permission>,
        passed: Option<&[Principal]>,
        rng: &mut impl Entropy,
    ) -> (Sealed, SessionDesc, Option<Secret32>) {
        let rewritten = match local {
            true => self.rewrite(desc, perm),
            false => None,
        };
        let passed =
            passed.filter(|_| self.cfg.policy.rekey_offers && perm == Some(Permission::ReadModify));
        if rewritten.is_some() || passed.is_some() {
            let changed = rewritten.clone().unwrap_or_else(|| desc.clone());
            let plaintext = encode_plaintext(&changed);
            if let Some(passed) = passed {
                // The X25519 key of each entry after this server: only its
                // own accounts' are known; any other, or an anonymous
                // entry, means the key is kept (KW-CRYPTO-035).
                let key_of = |_: usize, r: &crate::wire::Recipient| {
                    let id = r.id.as_ref()?;
                    self.current_registration(id, now)
                        .map(|g| g.cert.tbs.kx_key)
                };
                let rekeyed = edit(
                    body,
                    &session,
                    &self.cfg.identity,
                    &self.cfg.cert,
                    cek,
                    &plaintext,
                    Rekeying::NewKey {
                        via: passed,
                        key_of: &key_of,
                    },
                    &mut KeyCache::new(1),
                    rng,
                );
                if let Ok((edited, key)) = rekeyed {
                    self.emit(ServerEvent::Edited(session, re));
                    self.emit(ServerEvent::KeyReplaced(session));
                    return (edited, changed, Some(key));
                }
            }
            if rewritten.is_some() {
                let edited = edit(
                    body,
                    &session,
                    &self.cfg.identity,
                    &self.cfg.cert,
                    cek,
                    &plaintext,
                    Rekeying::KeepKey,
                    &mut self.kek,
                    rng,
                );
                if let Ok((edited, _)) = edited {
                    self.emit(ServerEvent::Edited(session, re));
                    return (edited, changed, None);
                }
            }
        }
        if self.cfg.policy.tamper_read_only && perm != Some(Permission::ReadModify) {
            let changed = Self::tampered(desc);
            if let Ok(tampered) =
                reencrypt_without_edit(body, &session, cek, &encode_plaintext(&changed))
            {
                self.emit(ServerEvent::Tampered(session, re));
                return (tampered, changed, None);
            }
        }
        (body.clone(), desc.clone(), None)
    }

    fn open_pinhole(
        &mut self,
        session: SessionId,
        dst: Addr,
        public: Option<Addr>,
        src: Option<Addr>,
        expires_at: Millis,
    ) -> u64 {
        let pinhole = self.next_pinhole;
        self.next_pinhole = self.next_pinhole.saturating_add(1);
        self.firewall(FirewallCommand::Open {
            pinhole,
            session,
            proto: Transport::Udp,
            dst,
            public,
            src,
            expires_at,
        });
        pinhole
    }

    /// F4 at a server: route, read if trusted, rewrite a local caller's
    /// media, open its pinholes from any source (KW-FW-001), forward.
    pub(super) fn on_offer(
        &mut self,
        now: Millis,
        from: Addr,
        o: Offer,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let reject =
            |this: &mut Self, code: ErrorCode| this.reject(now, from, o.txn, MsgType::Offer, code);
        let hop = match self.next_hop(now, &o.to, o.via.as_ref(), o.hops) {
            Ok(hop) => hop,
            Err(code) => return reject(self, code),
        };
        if let Err(code) = self.can_forward(&o.txn) {
            return reject(self, code);
        }
        // KW-SM-017: a session is offered once; a replayed offer of one
        // that ended does not start it again.
        if self.sessions.contains_key(&o.session) || self.ended.contains_key(&o.session) {
            return reject(self, ErrorCode::BAD_STATE);
        }
        let caller_local = self.is_local(&o.from);
        // KW-SEAL-003: our entry, explicit or by trial.
        let opened = match open(&o.body, &o.session, &self.cfg.identity, &mut self.kek) {
            Ok(opened) => Some(opened),
            Err(CryptoError::NoEntry) => None,
            Err(e) => return reject(self, ErrorCode::from(&e)),
        };
        let Some(opened) = opened else {
            if caller_local && self.cfg.policy.require_own_entry {
                return reject(self, ErrorCode::RECIPIENT_MISSING);
            }
            // KW-SEAL-008: forwarded byte for byte.
            let forwarded = Message::Offer(Offer {
                via: hop.via,
                hops: hop.hops,
                ..o.clone()
            });
            return self.forward(now, from, hop.addr, forwarded, o.from.clone(), None);
        };
        if self.sessions.len() >= self.cfg.policy.max_sessions {
            return reject(self, ErrorCode::BUSY);
        }
        let Some(caller_cert) = self.sender_cert(now, o.cert.as_ref(), &o.from) else {
            return reject(self, ErrorCode::CERT_NOT_FOUND);
        };
        // KW-SM-016: the offer is from the account that sealed it.
        if caller_cert.tbs.subject != o.from {
            return reject(self, ErrorCode::CERT_SUBJECT_MISMATCH);
        }
        if o.body.sender != o.from {
            return reject(self, ErrorCode::PERMISSION_DENIED);
        }
        if let Err(e) = self.check_body(
            now,
            &o.body,
            &o.session,
            &opened.plaintext,
            &opened.cek,
            &caller_cert,
        ) {
            return reject(self, ErrorCode::from(&e));
        }
        let desc = match decode_plaintext::<SessionDesc>(&opened.plaintext) {
            Ok(desc) => desc,
            Err(e) => return reject(self, ErrorCode::from(&e)),
        };
        if caller_local && self.cfg.firewall.is_some() && !self.at_contact(now, &o.from, &desc) {
            return reject(self, ErrorCode::FORBIDDEN);
        }
        // Accepted: the key that opened it may now be kept (KW-ERR-004).
        self.kek.commit(opened.pending.clone());
        let perm = o.body.recipients.get(opened.entry).map(|r| r.perm);
        self.emit(ServerEvent::BodyOpened {
            session: o.session,
            re: MsgType::Offer,
            perm: perm.unwrap_or(Permission::Read),
        });
        self.emit(ServerEvent::KeyLearned(o.session));
        let passed: Vec<Principal> = o.via.iter().flat_map(|v| v.iter()).cloned().collect();
        let (body, forwarded_desc, new_key) = self.change_body(
            now,
            &o.body,
            o.session,
            MsgType::Offer,
            &opened.cek,
            &desc,
            caller_local,
            perm,
            Some(&passed),
            rng,
        );
        let expires_at = now.saturating_add(self.cfg.policy.session_secs.saturating_mul(1000));
        // KW-CRYPTO-040: the session key is the offer's content key as the
        // callee receives it — the one this server forwards.
        let session_key = new_key.clone().unwrap_or_else(|| opened.cek.clone());
        // Both directions from the offer on, so that a `bye` under the
        // offer's key ends the session even if no answer is ever read.
        let keys = SessionKeys::new(
            o.session,
            o.from.clone(),
            o.to.clone(),
            session_key.clone(),
            secs(now),
        );
        let mut certs = BTreeMap::new();
        certs.insert(o.from.clone(), caller_cert);
        let mut session = ServerSession {
            caller: o.from.clone(),
            callee: o.to.clone(),
            cek: Some(session_key),
            // The caller's key, for a `bye` it sends before it learns the
            // new one from the answer.
            offer_key: new_key.map(|_| opened.cek),
            descs: BTreeMap::new(),
            internal: BTreeMap::new(),
            keys: Some(keys),
            certs,
            pinholes: Vec::new(),
            caller_pinholes: Vec::new(),
            recording: None,
            next_cid: 1,
            deferred: Vec::new(),
            expires_at,
        };
        if caller_local && self.cfg.firewall.is_some() {
            // KW-FW-001, KW-FW-006: from any source, to the internal address.
            let publics = addrs(&forwarded_desc);
            for (i, internal) in addrs(&desc).into_iter().enumerate() {
                let public = publics.get(i).copied().filter(|p| *p != internal);
                let id = self.open_pinhole(o.session, internal, public, None, expires_at);
                session.pinholes.push(id);
                session.caller_pinholes.push(id);
            }
        }
        session.internal.insert(o.from.clone(), addrs(&desc));
        session.descs.insert((o.from.clone(), 0), forwarded_desc);
        self.sessions.insert(o.session, session);
        let forwarded = Message::Offer(Offer {
            via: hop.via,
            hops: hop.hops,
            body,
            ..o.clone()
        });
        self.forward(now, from, hop.addr, forwarded, o.from, Some(o.session))
    }

    /// The answer to an offer this server read: read it under the session
    /// key (or its own entry), rewrite a local callee's media, narrow and
    /// open pinholes (KW-FW-002), start recording (KW-REC-001); returns
    /// the answer to send on.
    pub(super) fn on_answer(&mut self, now: Millis, a: Answer, rng: &mut impl Entropy) -> Message {
        let Some(cek) = self.sessions.get(&a.session).and_then(|s| s.cek.clone()) else {
            return Message::Answer(a);
        };
        let (plaintext, perm, pending, answer_key) =
            match open(&a.body, &a.session, &self.cfg.identity, &mut self.kek) {
                Ok(opened) => {
                    let perm = a.body.recipients.get(opened.entry).map(|r| r.perm);
                    (opened.plaintext, perm, opened.pending, Some(opened.cek))
                }
                Err(CryptoError::NoEntry) => match open_with_key(&a.body, &a.session, &cek) {
                    Ok(p) => (p, None, None, None),
                    Err(e) => return self.unreadable(a, e),
                },
                Err(e) => return self.unreadable(a, e),
            };
        let body_key = answer_key.clone().unwrap_or_else(|| cek.clone());
        let Some(callee_cert) = self.sender_cert(now, a.cert.as_ref(), &a.from) else {
            return self.unreadable(
                a,
                CryptoError::Cert(crate::crypto::CertError::UnknownIssuer),
            );
        };
        // KW-SM-016: from the callee the offer named, who sealed it.
        let callee = self.sessions.get(&a.session).map(|s| s.callee.clone());
        if callee.as_ref() != Some(&a.from)
            || a.body.sender != a.from
            || callee_cert.tbs.subject != a.from
        {
            return self.unreadable(
                a,
                CryptoError::PermissionDenied("answer from another account"),
            );
        }
        if let Err(e) = self.check_body(
            now,
            &a.body,
            &a.session,
            &plaintext,
            &body_key,
            &callee_cert,
        ) {
            return self.unreadable(a, e);
        }
        let Ok(desc) = decode_plaintext::<SessionDesc>(&plaintext) else {
            return self.unreadable(a, CryptoError::DecryptFailed);
        };
        self.kek.commit(pending);
        // KW-CRYPTO-040: a server after this one replaced the offer's key;
        // the answer, sealed for this server too, carries the session's.
        if let Some(key) = answer_key.filter(|k| *k != cek) {
            if let Some(s) = self.sessions.get_mut(&a.session) {
                s.keys = Some(SessionKeys::new(
                    a.session,
                    s.caller.clone(),
                    s.callee.clone(),
                    key.clone(),
                    secs(now),
                ));
                s.offer_key = s.cek.replace(key);
            }
            self.emit(ServerEvent::KeyReplaced(a.session));
        }
        if let Some(perm) = perm {
            self.emit(ServerEvent::BodyOpened {
                session: a.session,
                re: MsgType::Answer,
                perm,
            });
        }
        let mut callee_local = self.is_local(&a.from);
        if callee_local && self.cfg.firewall.is_some() && !self.at_contact(now, &a.from, &desc) {
            // No rewrite and no pinhole to an address the callee does not
            // hold (KW-SM-018); the caller decides what to do with it.
            self.emit(ServerEvent::Rejected(MsgType::Answer, ErrorCode::FORBIDDEN));
            callee_local = false;
        }
        let (body, forwarded_desc, _) = self.change_body(
            now,
            &a.body,
            a.session,
            MsgType::Answer,
            &cek,
            &desc,
            callee_local,
            perm,
            None,
            rng,
        );
        self.pinholes_for_answer(now, a.session, &desc, &forwarded_desc, callee_local);
        if let Some(s) = self.sessions.get_mut(&a.session) {
            s.internal.insert(a.from.clone(), addrs(&desc));
            s.descs.insert((a.from.clone(), 0), forwarded_desc);
            s.certs.insert(a.from.clone(), callee_cert);
        }
        self.start_recording(now, a.session, rng);
        Message::Answer(Answer { body, ..a })
    }

    fn unreadable(&mut self, a: Answer, e: CryptoError) -> Message {
        // Not the destination: the answer goes on; the caller decides.
        self.emit(ServerEvent::Rejected(MsgType::Answer, ErrorCode::from(&e)));
        Message::Answer(a)
    }

    /// KW-FW-002: narrow the caller's pinholes to the callee's media
    /// address and open the way to a local callee from the caller's.
    fn pinholes_for_answer(
        &mut self,
        _now: Millis,
        session: SessionId,
        callee_desc: &SessionDesc,
        callee_forwarded: &SessionDesc,
        callee_local: bool,
    ) {
        if self.cfg.firewall.is_none() {
            return;
        }
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let expires_at = s.expires_at;
        let caller_pinholes = s.caller_pinholes.clone();
        // Streams pair by position; a side with fewer streams pairs its
        // last with the rest.
        let caller_addrs = s
            .latest_desc(&s.caller)
            .map(|(_, d)| addrs(d))
            .unwrap_or_default();
        let callee_addrs = addrs(callee_forwarded);
        let pair = |list: &[Addr], i: usize| list.get(i).or(list.last()).copied();
        for (i, pinhole) in caller_pinholes.into_iter().enumerate() {
            if let Some(src) = pair(&callee_addrs, i) {
                self.firewall(FirewallCommand::Narrow { pinhole, src });
            }
        }
        let mut opened = Vec::new();
        if callee_local {
            for (i, internal) in addrs(callee_desc).into_iter().enumerate() {
                let public = callee_addrs.get(i).copied().filter(|p| *p != internal);
                let src = pair(&caller_addrs, i);
                opened.push(self.open_pinhole(session, internal, public, src, expires_at));
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.pinholes.extend(opened);
        }
    }

    /// KW-REC-001, KW-REC-002: copy the session's pinholes to the recorder
    /// and give it the media keys, sealed for it.
    fn start_recording(&mut self, now: Millis, session: SessionId, rng: &mut impl Entropy) {
        let Some(recorder) = self.cfg.recorder.clone() else {
            return;
        };
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let selected = [&s.caller, &s.callee]
            .into_iter()
            .any(|p| self.is_local(p) && self.cfg.policy.record.selects(p));
        if !selected || s.pinholes.is_empty() || s.recording.is_some() {
            return;
        }
        let parties = vec![s.caller.clone(), s.callee.clone()];
        let pinholes = s.pinholes.clone();
        let keys: Vec<MediaKey> = s
            .descs
            .iter()
            .flat_map(|((party, n), d)| media_keys(party, *n, d))
            .collect();
        let id = RecordingId(rng.array());
        for pinhole in pinholes {
            self.firewall(FirewallCommand::Copy {
                pinhole,
                sink: Some(recorder.addr),
            });
        }
        let Some(sealed) = self.seal_keys(session, keys, rng) else {
            return;
        };
        let Some(parties) = List::new(parties) else {
            return;
        };
        let txn = TxnId(rng.array());
        let mut message = Message::RecordStart(RecordStart {
            txn,
            from: self.account().clone(),
            session,
            sig: unsigned(),
            recording: id,
            mode: recorder.mode,
            keys: sealed,
            parties,
            ext: Extensions::new(),
        });
        sign_message(&mut message, &self.cfg.identity.signing);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.recording = Some(id);
        }
        self.emit(ServerEvent::RecordingStarted(session, id));
        self.request(now, recorder.addr, txn, message, Pending::Recorder);
    }

    /// Media keys sealed for the recorder only.
    fn seal_keys(
        &mut self,
        session: SessionId,
        keys: Vec<MediaKey>,
        rng: &mut impl Entropy,
    ) -> Option<Sealed> {
        let recorder = self.cfg.recorder.clone()?;
        let cid = {
            let s = self.sessions.get_mut(&session)?;
            let cid = s.next_cid;
            s.next_cid = s.next_cid.saturating_add(1);
            cid
        };
        let plaintext = encode_plaintext(&MediaKeys {
            keys: List::new(keys)?,
            ext: Extensions::new(),
        });
        let spec = RecipientSpec {
            id: recorder.account,
            kx_key: recorder.kx_key,
            kind: RecipientKind::Destination,
            perm: Permission::Read,
            anonymous: false,
        };
        let ctx = SealContext {
            session: &session,
            cid,
        };
        seal(
            ctx,
            &self.cfg.identity,
            &[spec],
            &plaintext,
            None,
            &mut self.kek,
            rng,
        )
        .ok()
        .map(|(sealed, _)| sealed)
    }

    /// `ack`, `info`, `rekey`, `bye`: routed like any request; read and
    /// followed when this server holds the session's key (KW-KEY-006).
    pub(super) fn on_in_session(
        &mut self,
        now: Millis,
        from: Addr,
        m: Message,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let re = m.msg_type();
        let Some(route) = InSession::of(&m) else {
            return Err(ProtocolError::Unsolicited(re));
        };
        // Its forward's place is taken before it is read: a refused request
        // changes no key, replay window or session (KW-ERR-004), and what
        // reading it sends (a recorder's keys) cannot take that place.
        let hop = match self
            .next_hop(now, &route.to, route.via.as_ref(), route.hops)
            .and_then(|hop| self.can_forward(&route.txn).map(|()| hop))
        {
            Ok(hop) => hop,
            Err(code) => return self.reject(now, from, route.txn, re, code),
        };
        let forwarded = self.start_forward(
            now,
            from,
            hop.addr,
            with_route(m.clone(), hop.via, hop.hops),
            route.from,
            Some(route.session),
        )?;
        let mut bye_authentic = false;
        match &m {
            Message::Info(i) => {
                self.observe(
                    now,
                    i.session,
                    &i.from,
                    MsgType::Info,
                    i.epoch,
                    i.seq,
                    i.payload.as_slice(),
                    rng,
                );
            }
            Message::Rekey(r) => self.follow_rekey(now, r, rng),
            Message::Bye(b) => {
                bye_authentic = self.observe(
                    now,
                    b.session,
                    &b.from,
                    MsgType::Bye,
                    b.epoch,
                    b.seq,
                    b.payload.as_slice(),
                    rng,
                );
            }
            _ => {}
        }
        self.send(hop.addr, forwarded);
        if bye_authentic {
            // KW-FW-003, KW-REC-003: the cutoff signal, authenticated.
            self.end_session(now, route.session, SessionEnd::Bye, rng);
        }
        Ok(())
    }

    /// Decrypts an in-session message with the session key; learns new
    /// media keys from an `info` description. Returns whether it was
    /// authentic.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        now: Millis,
        session: SessionId,
        sender: &Principal,
        re: MsgType,
        epoch: u64,
        seq: u64,
        payload: &[u8],
        rng: &mut impl Entropy,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let caller = s.caller == *sender;
        if !caller && s.callee != *sender {
            return false;
        }
        // A caller's `bye` under the key it sealed the offer with, which a
        // server after it replaced (KW-CRYPTO-040): the hang-up of a call
        // the caller never saw answered.
        if let (MsgType::Bye, true, 0, Some(key)) = (re, caller, epoch, s.offer_key.clone()) {
            let mut original =
                DirectionKeys::new(session, s.caller.clone(), s.callee.clone(), key, secs(now));
            if original.open(re, epoch, seq, payload, secs(now)).is_ok() {
                self.emit(ServerEvent::Observed(session, re));
                return true;
            }
        }
        let Some(keys) = s.keys.as_mut() else {
            return false;
        };
        let direction = if caller {
            &mut keys.send
        } else {
            &mut keys.recv
        };
        let plaintext = match direction.open(re, epoch, seq, payload, secs(now)) {
            Ok(p) => p,
            // Only the next epoch: anything further cannot be a rekey in
            // flight, and junk must not fill the list (KW-SM-005).
            Err(CryptoError::StaleEpoch(_))
                if direction.current_epoch().checked_add(1) == Some(epoch) =>
            {
                // The rekey is still on its way: try again once followed.
                if s.deferred.len() < DEFERRED {
                    s.deferred
                        .push((sender.clone(), re, epoch, seq, payload.to_vec()));
                }
                return false;
            }
            Err(e) => {
                self.emit(ServerEvent::Rejected(re, ErrorCode::from(&e)));
                return false;
            }
        };
        self.emit(ServerEvent::Observed(session, re));
        if re != MsgType::Info {
            return true;
        }
        let Ok(update) = decode_plaintext::<SessionUpdate>(&plaintext) else {
            return true;
        };
        if let Some(desc) = update.desc {
            self.learn_desc(now, session, sender, desc, rng);
        }
        true
    }

    /// A party's new description: its media keys go to the recorder
    /// (KW-REC-002).
    fn learn_desc(
        &mut self,
        now: Millis,
        session: SessionId,
        sender: &Principal,
        desc: SessionDesc,
        rng: &mut impl Entropy,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let number = s
            .latest_desc(sender)
            .map_or(0, |(n, _)| n.saturating_add(1));
        let keys = media_keys(sender, number, &desc);
        s.descs.insert((sender.clone(), number), desc);
        let first_kept = number.saturating_sub(DESCS_PER_PARTY as u64 - 1);
        s.descs
            .retain(|(party, n), _| party != sender || *n >= first_kept);
        let Some(recording) = s.recording else { return };
        let Some(recorder) = self.cfg.recorder.clone() else {
            return;
        };
        let Some(sealed) = self.seal_keys(session, keys, rng) else {
            return;
        };
        let txn = TxnId(rng.array());
        let mut message = Message::RecordKey(RecordKey {
            txn,
            from: self.account().clone(),
            session,
            sig: unsigned(),
            epoch: number,
            recording,
            keys: sealed,
            ext: Extensions::new(),
        });
        sign_message(&mut message, &self.cfg.identity.signing);
        self.request(now, recorder.addr, txn, message, Pending::Recorder);
    }

    /// KW-KEY-006: follow a party's rekey, then retry what waited for it.
    fn follow_rekey(&mut self, now: Millis, r: &crate::wire::Rekey, rng: &mut impl Entropy) {
        let policy = self.cfg.keys;
        let new_key = match &r.body {
            Some(body) => {
                let Some(cert) = self
                    .sessions
                    .get(&r.session)
                    .and_then(|s| s.certs.get(&r.from))
                    .cloned()
                else {
                    return;
                };
                let opened = {
                    let trust = &self.trust;
                    // KW-SM-020: the certificate confirmed on the offer or
                    // answer, though a refresh may since have replaced it.
                    let validate =
                        bound_or(&cert, |cert: &Certificate, subject: &Principal, role| {
                            trust.check(
                                cert,
                                Expect {
                                    subject,
                                    role,
                                    now: secs(now),
                                },
                            )
                        });
                    crate::crypto::open_rekey_body(
                        body,
                        &r.session,
                        &r.from,
                        r.epoch,
                        &self.cfg.identity,
                        &cert,
                        &validate,
                    )
                };
                match opened {
                    Ok(key) => Some(key),
                    Err(e) => {
                        self.emit(ServerEvent::Rejected(MsgType::Rekey, ErrorCode::from(&e)));
                        return;
                    }
                }
            }
            None => None,
        };
        let Some(s) = self.sessions.get_mut(&r.session) else {
            return;
        };
        let caller = s.caller == r.from;
        if !caller && s.callee != r.from {
            return;
        }
        let Some(keys) = s.keys.as_mut() else { return };
        let direction = if caller {
            &mut keys.send
        } else {
            &mut keys.recv
        };
        let result = match (new_key, &r.wrapped) {
            (Some(key), _) => direction.accept_rekey_key(r.epoch, r.seq, key, secs(now), &policy),
            (None, Some(wrapped)) => direction.accept_rekey_wrapped(
                r.epoch,
                r.seq,
                wrapped.as_slice(),
                secs(now),
                &policy,
            ),
            (None, None) => Err(CryptoError::DecryptFailed),
        };
        match result {
            Ok(()) => {
                self.emit(ServerEvent::Rekeyed {
                    session: r.session,
                    from: r.from.clone(),
                    epoch: r.epoch,
                });
                let deferred = self
                    .sessions
                    .get_mut(&r.session)
                    .map(|s| core::mem::take(&mut s.deferred))
                    .unwrap_or_default();
                for (sender, re, epoch, seq, payload) in deferred {
                    let authentic =
                        self.observe(now, r.session, &sender, re, epoch, seq, &payload, rng);
                    if authentic && re == MsgType::Bye {
                        self.end_session(now, r.session, SessionEnd::Bye, rng);
                    }
                }
            }
            Err(e) => self.emit(ServerEvent::Rejected(MsgType::Rekey, ErrorCode::from(&e))),
        }
    }

    /// Ends a session here: stop the copy and the recording, close the
    /// pinholes (KW-FW-003, KW-FW-004, KW-REC-003), destroy the keys.
    pub(super) fn end_session(
        &mut self,
        now: Millis,
        session: SessionId,
        end: SessionEnd,
        rng: &mut impl Entropy,
    ) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        // Pinholes that end with the session's term are gone already:
        // there is no copy left to stop.
        if s.recording.is_some() && now < s.expires_at {
            for pinhole in &s.pinholes {
                self.firewall(FirewallCommand::Copy {
                    pinhole: *pinhole,
                    sink: None,
                });
            }
        }
        for pinhole in &s.pinholes {
            self.firewall(FirewallCommand::Close { pinhole: *pinhole });
        }
        if let (Some(recording), Some(recorder)) = (s.recording, self.cfg.recorder.clone()) {
            let txn = TxnId(rng.array());
            let mut message = Message::RecordStop(RecordStop {
                txn,
                from: self.account().clone(),
                session,
                sig: unsigned(),
                recording,
                ext: Extensions::new(),
            });
            sign_message(&mut message, &self.cfg.identity.signing);
            self.request(now, recorder.addr, txn, message, Pending::Recorder);
        }
        self.kek.forget_session(&session);
        // KW-SM-017: remembered until its term would have ended.
        if self.ended.len() >= super::ENDED {
            if let Some(oldest) = self.ended.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                self.ended.remove(&oldest);
            }
        }
        self.ended.insert(session, s.expires_at);
        self.emit(ServerEvent::SessionEnded(session, end));
    }
}

/// The media keys of a description.
fn media_keys(party: &Principal, number: u64, desc: &SessionDesc) -> Vec<MediaKey> {
    desc.streams
        .iter()
        .map(|s| MediaKey {
            sender: party.clone(),
            stream: s.id,
            epoch: number,
            key: SecretBytes32(s.key.0),
            ext: Extensions::new(),
        })
        .collect()
}

/// The routing fields of an in-session request.
struct InSession {
    txn: TxnId,
    from: Principal,
    to: Principal,
    session: SessionId,
    via: Option<crate::wire::Via>,
    hops: crate::wire::Hops,
}

impl InSession {
    fn of(m: &Message) -> Option<Self> {
        macro_rules! route {
            ($r:expr) => {
                Some(Self {
                    txn: $r.txn,
                    from: $r.from.clone(),
                    to: $r.to.clone(),
                    session: $r.session,
                    via: $r.via.clone(),
                    hops: $r.hops,
                })
            };
        }
        match m {
            Message::Ack(r) => route!(r),
            Message::Info(r) => route!(r),
            Message::Rekey(r) => route!(r),
            Message::Bye(r) => route!(r),
            _ => None,
        }
    }
}

/// The message with new `via` and `hops`.
fn with_route(m: Message, via: Option<crate::wire::Via>, hops: crate::wire::Hops) -> Message {
    match m {
        Message::Ack(r) => Message::Ack(crate::wire::Ack { via, hops, ..r }),
        Message::Info(r) => Message::Info(crate::wire::Info { via, hops, ..r }),
        Message::Rekey(r) => Message::Rekey(crate::wire::Rekey { via, hops, ..r }),
        Message::Bye(r) => Message::Bye(crate::wire::Bye { via, hops, ..r }),
        other => other,
    }
}
