//! A trusted server's part in setting sessions up: reading the offer and
//! the answer it holds an entry for (F4), rewriting local media addresses
//! with a signed edit, the pinholes they need (F6) — the offer forwarded
//! and the answer relayed only once the firewall has them (KW-SM-026) —
//! and the end of a session.

use std::collections::{BTreeMap, BTreeSet};

use super::firewall::FwOp;
use super::relay::Hop;
use super::{Outcome, Server, ServerEvent, SessionEnd, SessionTimer};
use crate::core::clock::Now;
use crate::core::request::error_response;
use crate::core::store::{EndedSession, StoreWrite};
use crate::core::transport::ReplyTo;
use crate::core::{Addr, Millis};
use crate::crypto::{
    CryptoError, Entropy, Expect, KeyCache, Rekeying, SealContext, Secret32, SessionKeys,
    content_digest, edit, edit_signature_input, open, open_with_key, permission_map,
    reencrypt_without_edit, verify_sealed_with,
};
use crate::wire::{
    Answer, Certificate, Edit, ErrorCode, Extensions, List, Message, MsgType, Offer, Permission,
    Principal, RecordingId, Sealed, SessionDesc, SessionId, TxnId, decode_plaintext,
    encode_plaintext,
};

/// A pinhole as the server wants it (KW-FW-001, KW-FW-002): what it asks
/// its firewall for, and asks again after a restart (KW-FW-008).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pinhole {
    /// Where it passes packets (the internal address).
    pub dst: Addr,
    /// The public address mapped to `dst` (KW-FW-006).
    pub public: Option<Addr>,
    /// The only source it passes, once narrowed.
    pub src: Option<Addr>,
    /// Whether it passes media to the caller (narrowed on the answer).
    pub to_caller: bool,
    /// Whether it is copied to the recorder (KW-REC-001).
    pub copy: bool,
    /// The end of its lifetime, in wall seconds (KW-FW-004, KW-FW-007).
    pub until: u64,
}

/// An in-session message of an epoch not yet followed (KW-SM-005).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deferred {
    pub sender: Principal,
    pub re: MsgType,
    pub epoch: u64,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Where the setting up of a session stands at this server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Setup {
    /// The offer waits for the firewall's `ok`s before it is forwarded
    /// (KW-SM-026).
    Opening {
        offer: Box<Offer>,
        hop: Hop,
        prev: ReplyTo,
        waiting: BTreeSet<TxnId>,
    },
    /// The offer is forwarded; its answer is awaited.
    Offered {
        offer: Box<Offer>,
        hop: Hop,
        prev: ReplyTo,
    },
    /// The answer waits for the firewall's `ok`s before it is relayed
    /// (KW-SM-026).
    Answering {
        answer: Box<Answer>,
        prev: ReplyTo,
        waiting: BTreeSet<TxnId>,
    },
    /// The answer is relayed; the `ack` is awaited (KW-SM-027). The answer
    /// is kept to answer a retransmitted offer with, after a restart too.
    Answered { answer: Box<Answer>, prev: ReplyTo },
    /// The `ack` passed.
    Established,
}

/// What a server keeps of a session it follows.
pub(crate) struct ServerSession {
    pub(super) caller: Principal,
    pub(super) callee: Principal,
    /// The session key: held only after unwrapping it from this server's
    /// own entry (KW-KEY-001).
    pub(super) cek: Option<Secret32>,
    /// The offer's key as the caller sealed it, when this server replaced
    /// it (KW-SM-011): a caller's `bye` before the answer is under it.
    pub(super) offer_key: Option<Secret32>,
    /// Descriptions as forwarded (what the peer sees), by party and number.
    pub(super) descs: BTreeMap<(Principal, u64), SessionDesc>,
    /// Media addresses before this server rewrote them, by party.
    pub(super) internal: BTreeMap<Principal, Vec<Addr>>,
    /// Internal addresses whose public mapping the session uses
    /// (KW-SM-012).
    pub(super) mapped: Vec<Addr>,
    /// Both directions: `send` is caller → callee.
    pub(super) keys: Option<SessionKeys>,
    /// The pinholes it wants, by this server's identifier.
    pub(super) pinholes: BTreeMap<u64, Pinhole>,
    pub(super) recording: Option<RecordingId>,
    pub(super) next_cid: u64,
    pub(super) deferred: Vec<Deferred>,
    /// The parties' certificates, as confirmed on the offer and answer:
    /// what their body-form rekeys are checked with (KW-SM-020).
    pub(super) certs: BTreeMap<Principal, Certificate>,
    /// The end of its term, on the monotonic clock (KW-SM-013).
    pub(super) expires_at: Millis,
    pub(super) setup: Setup,
}

/// Descriptions kept per party: the media keys of older ones are no longer
/// needed once the recorder has them.
pub(super) const DESCS_PER_PARTY: usize = 4;

impl ServerSession {
    pub(super) fn latest_desc(&self, party: &Principal) -> Option<(u64, &SessionDesc)> {
        self.descs
            .range((party.clone(), 0)..=(party.clone(), u64::MAX))
            .next_back()
            .map(|((_, n), d)| (*n, d))
    }

    /// The firewall requests it waits for, if any.
    pub(super) fn waiting_mut(&mut self) -> Option<&mut BTreeSet<TxnId>> {
        match &mut self.setup {
            Setup::Opening { waiting, .. } | Setup::Answering { waiting, .. } => Some(waiting),
            _ => None,
        }
    }
}

/// The media addresses of a description.
pub(super) fn addrs(desc: &SessionDesc) -> Vec<Addr> {
    desc.streams.iter().map(|s| s.addr).collect()
}

impl Server {
    /// Checks the certificates a body names with this server's anchors.
    pub(super) fn check_body(
        &self,
        now: Now,
        body: &Sealed,
        ctx: SealContext<'_>,
        plaintext: &[u8],
        cek: &Secret32,
        sender_cert: &Certificate,
    ) -> Result<(), CryptoError> {
        let trust = &self.trust;
        verify_sealed_with(
            body,
            ctx,
            plaintext,
            cek,
            sender_cert,
            &|cert, subject, role| {
                trust.check(
                    cert,
                    Expect {
                        subject,
                        role,
                        now: now.wall_secs(),
                    },
                )
            },
        )
    }

    /// The sender's certificate: carried in the message, or the local
    /// registration's.
    fn sender_cert(
        &self,
        now: Now,
        carried: Option<&Certificate>,
        sender: &Principal,
    ) -> Option<Certificate> {
        carried.cloned().or_else(|| {
            self.current_registration(sender, now)
                .map(|g| g.cert.clone())
        })
    }

    /// Whether every media address of a local party's description is at
    /// the address it registered: a server opens pinholes only to its own
    /// parties (KW-SM-018).
    fn at_contact(&self, now: Now, party: &Principal, desc: &SessionDesc) -> bool {
        self.current_registration(party, now).is_some_and(|g| {
            desc.streams
                .iter()
                .all(|s| s.addr.ip() == g.contact.addr.ip())
        })
    }

    /// Rewrites a local party's description to public addresses, if this
    /// server may and is configured to (KW-SEAL-007); the mappings made
    /// are durable (KW-SM-012).
    fn rewrite(&mut self, desc: &SessionDesc, perm: Option<Permission>) -> Option<SessionDesc> {
        if perm != Some(Permission::ReadModify) || !self.cfg.policy.rewrite_media {
            return None;
        }
        self.cfg.firewall?;
        let mut out = desc.clone();
        let mut writes = Vec::new();
        for stream in out.streams.0.iter_mut() {
            let mapped = self.ports.map(stream.addr, &mut writes);
            let Some(public) = mapped else {
                for write in writes {
                    self.store(write);
                }
                return None;
            };
            stream.addr = public;
        }
        for write in writes {
            self.store(write);
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
        now: Now,
        body: &Sealed,
        session: SessionId,
        (re, to): (MsgType, &Principal),
        cek: &Secret32,
        desc: &SessionDesc,
        local: bool,
        perm: Option<Permission>,
        passed: Option<&[Principal]>,
        rng: &mut impl Entropy,
    ) -> (Sealed, SessionDesc, Option<Secret32>) {
        let ctx = SealContext::of(body, &session, re, Some(to));
        if let Some(forged) = self.forge(body, session, re, to, cek, desc, perm) {
            return forged;
        }
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
                    ctx,
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
                    self.event(ServerEvent::Edited(session, re));
                    self.event(ServerEvent::KeyReplaced(session));
                    return (edited, changed, Some(key));
                }
            }
            if rewritten.is_some() {
                let edited = edit(
                    body,
                    ctx,
                    &self.cfg.identity,
                    &self.cfg.cert,
                    cek,
                    &plaintext,
                    Rekeying::KeepKey,
                    &mut self.kek,
                    rng,
                );
                if let Ok((edited, _)) = edited {
                    self.event(ServerEvent::Edited(session, re));
                    return (edited, changed, None);
                }
            }
        }
        if perm == Some(Permission::ReadModify) {
            // KW-SEAL-011: a server that may change a body signs what it
            // passes on even unchanged, so that no one downstream can put
            // back the version before it.
            let passed_on = edit(
                body,
                ctx,
                &self.cfg.identity,
                &self.cfg.cert,
                cek,
                &encode_plaintext(desc),
                Rekeying::KeepKey,
                &mut self.kek,
                rng,
            );
            if let Ok((signed, _)) = passed_on {
                return (signed, desc.clone(), None);
            }
        }
        if self.faults.tamper_read_only && perm != Some(Permission::ReadModify) {
            let changed = Self::tampered(desc);
            if let Ok(tampered) =
                reencrypt_without_edit(body, &session, cek, &encode_plaintext(&changed))
            {
                self.event(ServerEvent::Tampered(session, re));
                return (tampered, changed, None);
            }
        }
        (body.clone(), desc.clone(), None)
    }

    /// The injected forgeries of edits (`Faults`), made with the public
    /// crypto API — the content re-encrypted under the same key, an edit
    /// signed with this server's own key over the digests of
    /// KW-CRYPTO-031 — so that each edit is well-formed and genuinely
    /// signed: only the destination's checks (KW-CRYPTO-036 step 3) can
    /// tell. Only a server named by an explicit entry forges (an edit
    /// names its editor's entry).
    #[allow(clippy::too_many_arguments)]
    fn forge(
        &mut self,
        body: &Sealed,
        session: SessionId,
        re: MsgType,
        to: &Principal,
        cek: &Secret32,
        desc: &SessionDesc,
        perm: Option<Permission>,
    ) -> Option<(Sealed, SessionDesc, Option<Secret32>)> {
        let me = &self.cfg.identity;
        let named = body
            .recipients
            .iter()
            .any(|r| r.id.as_ref() == Some(&me.account));
        if !named {
            return None;
        }
        let sign = |body: &Sealed, desc: &SessionDesc| -> Option<Sealed> {
            let plaintext = encode_plaintext(desc);
            let mut out = reencrypt_without_edit(body, &session, cek, &plaintext).ok()?;
            let ctx = SealContext::of(body, &session, re, Some(to));
            let prev = body
                .edits
                .iter()
                .flat_map(|e| e.iter())
                .last()
                .map_or(body.hash, |e| e.next);
            let next = content_digest(ctx, cek, &plaintext);
            let map = permission_map(&out.recipients);
            let sig = me.signing.sign(&edit_signature_input(
                ctx,
                &me.account,
                &prev,
                &next,
                None,
                &map,
            ));
            let mut edits = out.edits.take().map(List::into_vec).unwrap_or_default();
            edits.push(Edit {
                editor: me.account.clone(),
                kid: me.signing.kid(),
                prev,
                next,
                sig,
                epk: None,
                cert: self.cfg.cert.clone(),
                ext: Extensions::new(),
            });
            out.edits = Some(List::new(edits)?);
            Some(out)
        };
        let (edited, changed, kind) =
            if self.faults.forge_edit && perm != Some(Permission::ReadModify) {
                let changed = Self::tampered(desc);
                (sign(body, &changed)?, changed, super::Forgery::Edit)
            } else if self.faults.reorder_edits {
                // A change and its undoing, each edit genuinely signed, in the
                // wrong order: the first one's `prev` is not `hash`.
                let once = sign(body, &Self::tampered(desc))?;
                let mut twice = sign(&once, desc)?;
                let mut edits = twice.edits.take()?.into_vec();
                let n = edits.len();
                edits.swap(n.checked_sub(2)?, n.checked_sub(1)?);
                twice.edits = Some(List::new(edits)?);
                (twice, desc.clone(), super::Forgery::Reordered)
            } else {
                return None;
            };
        self.event(ServerEvent::Forged(session, re, kind));
        Some((edited, changed, None))
    }

    /// A new pinhole of `session` as the server wants it; its identifier.
    fn add_pinhole(&mut self, session: &SessionId, pinhole: Pinhole) -> u64 {
        let id = self.next_pinhole;
        self.next_pinhole = self.next_pinhole.saturating_add(1);
        // Durable, so that a restart never hands out an identifier again:
        // the firewall refuses to reopen a closed one (KW-FW-008) after
        // the server has forgotten the session it belonged to.
        self.store(StoreWrite::NextPinhole(self.next_pinhole));
        if let Some(s) = self.session_mut(session) {
            s.pinholes.insert(id, pinhole);
        }
        id
    }

    /// The end of a session's pinholes' lifetime: its term, in wall
    /// seconds (KW-FW-004).
    fn pinhole_until(now: Now, expires_at: Millis) -> u64 {
        now.wall_at_mono(expires_at) / 1000
    }

    /// F4 at a server: route, read if trusted, rewrite a local caller's
    /// media, open its pinholes from any source (KW-FW-001), and forward
    /// once they are open (KW-SM-026).
    pub(super) fn on_offer(
        &mut self,
        now: Now,
        from: ReplyTo,
        o: Offer,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let reject =
            |this: &mut Self, code: ErrorCode| this.reject(now, from, o.txn, MsgType::Offer, code);
        // A retransmission of an offer this server answered, after a
        // restart lost its transaction cache (KW-SM-025): the same answer.
        if let Some(answer) = self.answered_offer(&o, from) {
            self.respond(now, from, o.txn, answer);
            return Ok(());
        }
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
        // KW-CERT-006: a certificate of this domain that this server has
        // revoked (or that has expired) is not carried on, whether or not
        // the server may read the offer.
        if let Some(code) = self.own_certificate_refused(now, o.cert.as_ref(), &o.from) {
            return reject(self, code);
        }
        // KW-SEAL-003: our entry, explicit or by trial.
        let opened = match open(&o.body, &o.session, &self.cfg.identity, &mut self.kek) {
            Ok(opened) => Some(opened),
            Err(CryptoError::NoEntry) => None,
            Err(e) => return reject(self, ErrorCode::from(&e)),
        };
        // KW-POLICY-002: the servers every offer of a local caller must
        // make recipients.
        if caller_local && !self.required_recipients_present(&o.body, opened.is_some()) {
            return reject(self, ErrorCode::RECIPIENT_MISSING);
        }
        let Some(opened) = opened else {
            // KW-SEAL-008: forwarded byte for byte.
            let forwarded = Message::Offer(Offer {
                via: hop.via.clone(),
                hops: hop.hops,
                ..o.clone()
            });
            return self.forward(now, from, &hop, forwarded, o.from.clone(), None);
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
            SealContext::of(&o.body, &o.session, MsgType::Offer, Some(&o.to)),
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
        self.event(ServerEvent::BodyOpened {
            session: o.session,
            re: MsgType::Offer,
            perm: perm.unwrap_or(Permission::Read),
        });
        self.event(ServerEvent::KeyLearned(o.session));
        let passed: Vec<Principal> = o.via.iter().flat_map(|v| v.iter()).cloned().collect();
        let (body, forwarded_desc, new_key) = self.change_body(
            now,
            &o.body,
            o.session,
            (MsgType::Offer, &o.to),
            &opened.cek,
            &desc,
            caller_local,
            perm,
            Some(&passed),
            rng,
        );
        let expires_at = now
            .mono
            .saturating_add(self.cfg.policy.session_secs.saturating_mul(1000));
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
            now.mono_secs(),
        );
        let mut certs = BTreeMap::new();
        certs.insert(o.from.clone(), caller_cert);
        let forwarded = Offer {
            via: hop.via.clone(),
            hops: hop.hops,
            body,
            ..o.clone()
        };
        let rewritten: Vec<Addr> = addrs(&desc)
            .into_iter()
            .filter(|a| self.ports.get(a).is_some())
            .collect();
        for internal in &rewritten {
            self.ports.acquire(*internal);
        }
        let mut internal = BTreeMap::new();
        internal.insert(o.from.clone(), addrs(&desc));
        let mut descs = BTreeMap::new();
        descs.insert((o.from.clone(), 0), forwarded_desc.clone());
        self.sessions.insert(
            o.session,
            ServerSession {
                caller: o.from.clone(),
                callee: o.to.clone(),
                cek: Some(session_key),
                // The caller's key, for a `bye` it sends before it learns
                // the new one from the answer.
                offer_key: new_key.map(|_| opened.cek),
                descs,
                internal,
                mapped: if caller_local { rewritten } else { Vec::new() },
                keys: Some(keys),
                certs,
                pinholes: BTreeMap::new(),
                recording: None,
                next_cid: 1,
                deferred: Vec::new(),
                expires_at,
                setup: Setup::Offered {
                    offer: Box::new(forwarded.clone()),
                    hop: hop.clone(),
                    prev: from,
                },
            },
        );
        self.dirty.insert(o.session);
        self.session_timers
            .set((o.session, SessionTimer::Term), expires_at);
        let mut waiting = BTreeSet::new();
        if caller_local && self.cfg.firewall.is_some() {
            // KW-FW-001, KW-FW-006: from any source, to the internal address.
            let until = Self::pinhole_until(now, expires_at);
            let publics = addrs(&forwarded_desc);
            for (i, dst) in addrs(&desc).into_iter().enumerate() {
                let pinhole = Pinhole {
                    dst,
                    public: publics.get(i).copied().filter(|p| *p != dst),
                    src: None,
                    to_caller: true,
                    copy: false,
                    until,
                };
                let id = self.add_pinhole(&o.session, pinhole.clone());
                match self.firewall_request(now, o.session, id, FwOp::Open(pinhole), rng) {
                    Some(txn) => {
                        waiting.insert(txn);
                    }
                    None => {
                        // Not even asked: the offer cannot be carried out.
                        self.end_session(now, o.session, SessionEnd::Failed, rng);
                        return reject(self, ErrorCode::FIREWALL_FAILURE);
                    }
                }
            }
        }
        if waiting.is_empty() {
            return self.forward_offer(now, o.session);
        }
        if let Some(s) = self.session_mut(&o.session) {
            s.setup = Setup::Opening {
                offer: Box::new(forwarded),
                hop,
                prev: from,
                waiting,
            };
        }
        Ok(())
    }

    /// Why a certificate a message carries for `subject` is refused, if
    /// this server issued it and it is not valid now: revoked by this
    /// server (KW-CERT-006), expired, or of another subject.
    pub(super) fn own_certificate_refused(
        &self,
        now: Now,
        cert: Option<&Certificate>,
        subject: &Principal,
    ) -> Option<ErrorCode> {
        let cert = cert.filter(|c| c.tbs.issuer.as_str() == self.cfg.ca.domain().as_str())?;
        let expect = Expect {
            subject,
            role: None,
            now: now.wall_secs(),
        };
        self.trust
            .check(cert, expect)
            .err()
            .map(|e| ErrorCode::from(&CryptoError::Cert(e)))
    }

    /// Whether a body makes every server the policy requires a recipient:
    /// this server by an entry it opened (explicit or anonymous), any
    /// other by an explicit entry (KW-POLICY-002).
    fn required_recipients_present(&self, body: &Sealed, opened_own: bool) -> bool {
        self.cfg.policy.required_recipients.iter().all(|server| {
            if server == self.account() {
                opened_own
            } else {
                body.recipients
                    .iter()
                    .any(|r| r.id.as_ref() == Some(server))
            }
        })
    }

    /// The answer this server relayed to `o`, if `o` is a retransmission
    /// of the offer it came for.
    fn answered_offer(&self, o: &Offer, from: ReplyTo) -> Option<Message> {
        let s = self.sessions.get(&o.session)?;
        match &s.setup {
            Setup::Answered { answer, prev } if answer.txn == o.txn && prev.peer == from.peer => {
                Some(Message::Answer((**answer).clone()))
            }
            _ => None,
        }
    }

    /// Forwards the offer of a session whose pinholes are open.
    pub(super) fn forward_offer(&mut self, now: Now, session: SessionId) -> Outcome {
        let Some((offer, hop, prev)) = self.sessions.get(&session).and_then(|s| match &s.setup {
            Setup::Opening {
                offer, hop, prev, ..
            }
            | Setup::Offered { offer, hop, prev } => Some(((**offer).clone(), hop.clone(), *prev)),
            _ => None,
        }) else {
            return Ok(());
        };
        let caller = offer.from.clone();
        if let Some(s) = self.session_mut(&session) {
            s.setup = Setup::Offered {
                offer: Box::new(offer.clone()),
                hop: hop.clone(),
                prev,
            };
        }
        self.forward(
            now,
            prev,
            &hop,
            Message::Offer(offer),
            caller,
            Some(session),
        )
    }

    /// The answer to an offer this server read: read it under the session
    /// key (or its own entry), rewrite a local callee's media, narrow and
    /// open pinholes (KW-FW-002), and relay it once they are (KW-SM-026),
    /// starting the recording (KW-REC-001).
    pub(super) fn on_answer(&mut self, now: Now, prev: ReplyTo, a: Answer, rng: &mut impl Entropy) {
        let Some(cek) = self.sessions.get(&a.session).and_then(|s| s.cek.clone()) else {
            let txn = a.txn;
            self.respond(now, prev, txn, Message::Answer(a));
            return;
        };
        let session = a.session;
        let read = self.read_answer(now, a, &cek, rng);
        let (answer, waiting) = match read {
            Ok(read) => read,
            Err(answer) => {
                // Not the destination: the answer goes on; the caller
                // decides.
                self.relay_answer(now, prev, *answer);
                return;
            }
        };
        if waiting.is_empty() {
            self.relay_answer(now, prev, answer);
            self.start_recording(now, session, rng);
            return;
        }
        if let Some(s) = self.session_mut(&session) {
            s.setup = Setup::Answering {
                answer: Box::new(answer),
                prev,
                waiting,
            };
        }
    }

    /// Reads an answer; the answer to relay and the firewall requests it
    /// waits for, or, when it cannot be read, the answer to relay as it is.
    #[allow(clippy::result_large_err)]
    fn read_answer(
        &mut self,
        now: Now,
        a: Answer,
        cek: &Secret32,
        rng: &mut impl Entropy,
    ) -> Result<(Answer, BTreeSet<TxnId>), Box<Answer>> {
        let (plaintext, perm, pending, answer_key) =
            match open(&a.body, &a.session, &self.cfg.identity, &mut self.kek) {
                Ok(opened) => {
                    let perm = a.body.recipients.get(opened.entry).map(|r| r.perm);
                    (opened.plaintext, perm, opened.pending, Some(opened.cek))
                }
                Err(CryptoError::NoEntry) => match open_with_key(&a.body, &a.session, cek) {
                    Ok(p) => (p, None, None, None),
                    Err(e) => return Err(self.unreadable(a, e)),
                },
                Err(e) => return Err(self.unreadable(a, e)),
            };
        let body_key = answer_key.clone().unwrap_or_else(|| cek.clone());
        let Some(callee_cert) = self.sender_cert(now, a.cert.as_ref(), &a.from) else {
            return Err(self.unreadable(
                a,
                CryptoError::Cert(crate::crypto::CertError::UnknownIssuer),
            ));
        };
        // KW-SM-016: from the callee the offer named, who sealed it.
        let callee = self.sessions.get(&a.session).map(|s| s.callee.clone());
        if callee.as_ref() != Some(&a.from)
            || a.body.sender != a.from
            || callee_cert.tbs.subject != a.from
        {
            return Err(self.unreadable(
                a,
                CryptoError::PermissionDenied("answer from another account"),
            ));
        }
        if let Err(e) = self.check_body(
            now,
            &a.body,
            SealContext::of(&a.body, &a.session, MsgType::Answer, Some(&a.to)),
            &plaintext,
            &body_key,
            &callee_cert,
        ) {
            return Err(self.unreadable(a, e));
        }
        let Ok(desc) = decode_plaintext::<SessionDesc>(&plaintext) else {
            return Err(self.unreadable(a, CryptoError::DecryptFailed));
        };
        self.kek.commit(pending);
        // KW-CRYPTO-040: a server after this one replaced the offer's key;
        // the answer, sealed for this server too, carries the session's.
        if let Some(key) = answer_key.filter(|k| k != cek) {
            if let Some(s) = self.session_mut(&a.session) {
                s.keys = Some(SessionKeys::new(
                    a.session,
                    s.caller.clone(),
                    s.callee.clone(),
                    key.clone(),
                    now.mono_secs(),
                ));
                s.offer_key = s.cek.replace(key);
            }
            self.event(ServerEvent::KeyReplaced(a.session));
        }
        if let Some(perm) = perm {
            self.event(ServerEvent::BodyOpened {
                session: a.session,
                re: MsgType::Answer,
                perm,
            });
        }
        let mut callee_local = self.is_local(&a.from);
        if callee_local && self.cfg.firewall.is_some() && !self.at_contact(now, &a.from, &desc) {
            // No rewrite and no pinhole to an address the callee does not
            // hold (KW-SM-018); the caller decides what to do with it.
            self.event(ServerEvent::Rejected(MsgType::Answer, ErrorCode::FORBIDDEN));
            callee_local = false;
        }
        // Under the key the answer is sealed with: a server after this
        // one may have replaced the offer's (KW-CRYPTO-040).
        let (body, forwarded_desc, _) = self.change_body(
            now,
            &a.body,
            a.session,
            (MsgType::Answer, &a.to),
            &body_key,
            &desc,
            callee_local,
            perm,
            None,
            rng,
        );
        if callee_local {
            let rewritten: Vec<Addr> = addrs(&desc)
                .into_iter()
                .filter(|addr| self.ports.get(addr).is_some())
                .collect();
            for internal in &rewritten {
                self.ports.acquire(*internal);
            }
            if let Some(s) = self.session_mut(&a.session) {
                s.mapped.extend(rewritten);
            }
        }
        let waiting =
            self.pinholes_for_answer(now, a.session, &desc, &forwarded_desc, callee_local, rng);
        if let Some(s) = self.session_mut(&a.session) {
            s.internal.insert(a.from.clone(), addrs(&desc));
            s.descs.insert((a.from.clone(), 0), forwarded_desc);
            s.certs.insert(a.from.clone(), callee_cert);
        }
        Ok((Answer { body, ..a }, waiting))
    }

    fn unreadable(&mut self, a: Answer, e: CryptoError) -> Box<Answer> {
        self.event(ServerEvent::Rejected(MsgType::Answer, ErrorCode::from(&e)));
        Box::new(a)
    }

    /// An answer to an offer this server did not read, on which the callee
    /// gave it read-modify permission by name: checked as the answer of a
    /// followed session would be, and signed unchanged (KW-SEAL-011), so
    /// that the caller finds the edit it requires. Relayed as it is when it
    /// does not pass: the caller decides.
    pub(super) fn sign_unfollowed(
        &mut self,
        now: Now,
        a: Answer,
        rng: &mut impl Entropy,
    ) -> Answer {
        let me = self.account().clone();
        let named = a.body.recipients.iter().any(|r| {
            r.id.as_ref() == Some(&me)
                && r.kind == crate::wire::RecipientKind::Server
                && r.perm == Permission::ReadModify
        });
        if !named {
            return a;
        }
        let Ok(opened) = open(
            &a.body,
            &a.session,
            &self.cfg.identity,
            &mut KeyCache::new(1),
        ) else {
            return a;
        };
        let Some(callee_cert) = self.sender_cert(now, a.cert.as_ref(), &a.from) else {
            return a;
        };
        if a.body.sender != a.from || callee_cert.tbs.subject != a.from {
            return a;
        }
        let ctx = SealContext::of(&a.body, &a.session, MsgType::Answer, Some(&a.to));
        let signed = self
            .check_body(
                now,
                &a.body,
                ctx,
                &opened.plaintext,
                &opened.cek,
                &callee_cert,
            )
            .and_then(|()| {
                edit(
                    &a.body,
                    ctx,
                    &self.cfg.identity,
                    &self.cfg.cert,
                    &opened.cek,
                    &opened.plaintext,
                    Rekeying::KeepKey,
                    &mut KeyCache::new(1),
                    rng,
                )
            });
        match signed {
            Ok((body, _)) => Answer { body, ..a },
            Err(_) => a,
        }
    }

    /// Relays an answer to the hop the offer came from; while the session
    /// is followed, its `ack` is awaited (KW-SM-027).
    pub(super) fn relay_answer(&mut self, now: Now, prev: ReplyTo, answer: Answer) {
        let session = answer.session;
        let txn = answer.txn;
        let give_up = self.cfg.retransmit.give_up;
        if let Some(s) = self.session_mut(&session) {
            s.setup = Setup::Answered {
                answer: Box::new(answer.clone()),
                prev,
            };
            self.session_timers.set(
                (session, SessionTimer::Ack),
                now.mono.saturating_add(give_up.saturating_mul(2)),
            );
        }
        self.respond(now, prev, txn, Message::Answer(answer));
    }

    /// KW-FW-002: narrow the caller's pinholes to the callee's media
    /// address and open the way to a local callee from the caller's; the
    /// requests sent, which the answer waits for.
    fn pinholes_for_answer(
        &mut self,
        now: Now,
        session: SessionId,
        callee_desc: &SessionDesc,
        callee_forwarded: &SessionDesc,
        callee_local: bool,
        rng: &mut impl Entropy,
    ) -> BTreeSet<TxnId> {
        let mut waiting = BTreeSet::new();
        if self.cfg.firewall.is_none() {
            return waiting;
        }
        let Some(s) = self.sessions.get(&session) else {
            return waiting;
        };
        let until = Self::pinhole_until(now, s.expires_at);
        let caller_pinholes: Vec<u64> = s
            .pinholes
            .iter()
            .filter(|(_, p)| p.to_caller)
            .map(|(id, _)| *id)
            .collect();
        // Streams pair by position; a side with fewer streams pairs its
        // last with the rest.
        let caller_addrs = s
            .latest_desc(&s.caller)
            .map(|(_, d)| addrs(d))
            .unwrap_or_default();
        let callee_addrs = addrs(callee_forwarded);
        let pair = |list: &[Addr], i: usize| list.get(i).or(list.last()).copied();
        let mut requests = Vec::new();
        for (i, pinhole) in caller_pinholes.into_iter().enumerate() {
            if let Some(src) = pair(&callee_addrs, i) {
                if let Some(p) = self
                    .session_mut(&session)
                    .and_then(|s| s.pinholes.get_mut(&pinhole))
                {
                    p.src = Some(src);
                }
                requests.push((pinhole, FwOp::Narrow(src)));
            }
        }
        if callee_local {
            for (i, dst) in addrs(callee_desc).into_iter().enumerate() {
                let pinhole = Pinhole {
                    dst,
                    public: callee_addrs.get(i).copied().filter(|p| *p != dst),
                    src: pair(&caller_addrs, i),
                    to_caller: false,
                    copy: false,
                    until,
                };
                let id = self.add_pinhole(&session, pinhole.clone());
                requests.push((id, FwOp::Open(pinhole)));
            }
        }
        for (pinhole, op) in requests {
            // One not even sent is answered at once as refused.
            let txn = self.firewall_request(now, session, pinhole, op, rng);
            match txn {
                Some(txn) => {
                    waiting.insert(txn);
                }
                None => self.event(ServerEvent::FirewallFailed {
                    session,
                    re: MsgType::PinholeOpen,
                    code: ErrorCode::BUSY,
                }),
            }
        }
        waiting
    }

    /// The firewall answered a request of `session` (or it timed out):
    /// what waited for it goes on, or fails (KW-SM-026).
    pub(super) fn firewall_answered(
        &mut self,
        now: Now,
        session: SessionId,
        re: MsgType,
        txn: TxnId,
        outcome: Result<(), ErrorCode>,
        rng: &mut impl Entropy,
    ) {
        let awaited = self.sessions.get(&session).is_some_and(|s| match &s.setup {
            Setup::Opening { waiting, .. } | Setup::Answering { waiting, .. } => {
                waiting.contains(&txn)
            }
            _ => false,
        });
        if let Err(code) = outcome {
            self.event(ServerEvent::FirewallFailed { session, re, code });
            if awaited {
                self.fail_setup(now, session, rng);
            }
            return;
        }
        if !awaited {
            return;
        }
        let ready = self
            .session_mut(&session)
            .and_then(|s| s.waiting_mut())
            .is_some_and(|waiting| {
                waiting.remove(&txn);
                waiting.is_empty()
            });
        if ready {
            self.setup_ready(now, session, rng);
        }
    }

    /// Every pinhole the offer or answer waited for is open.
    pub(super) fn setup_ready(&mut self, now: Now, session: SessionId, rng: &mut impl Entropy) {
        let answering = self.sessions.get(&session).and_then(|s| match &s.setup {
            Setup::Answering { answer, prev, .. } => Some(((**answer).clone(), *prev)),
            _ => None,
        });
        match answering {
            Some((answer, prev)) => {
                self.relay_answer(now, prev, answer);
                self.start_recording(now, session, rng);
            }
            None => {
                // The forward's own refusal is answered to the hop before.
                let _ = self.forward_offer(now, session);
            }
        }
    }

    /// The firewall could not open what the offer or answer needs: the
    /// offer fails with `firewall-failure`, and the session ends
    /// (KW-SM-026).
    fn fail_setup(&mut self, now: Now, session: SessionId, rng: &mut impl Entropy) {
        let failed = self.sessions.get(&session).and_then(|s| match &s.setup {
            Setup::Opening { offer, prev, .. } => Some((offer.txn, *prev)),
            Setup::Answering { answer, prev, .. } => Some((answer.txn, *prev)),
            _ => None,
        });
        let Some((txn, prev)) = failed else {
            return;
        };
        self.end_session(now, session, SessionEnd::Failed, rng);
        let code = ErrorCode::FIREWALL_FAILURE;
        self.event(ServerEvent::Rejected(MsgType::Offer, code));
        self.respond(now, prev, txn, error_response(txn, MsgType::Offer, code));
    }

    /// Ends a session here: stop the copy and the recording, close the
    /// pinholes (KW-FW-003, KW-FW-004, KW-REC-003), destroy the keys, and
    /// remember that it ended (KW-SM-017), durably (KW-SM-025).
    pub(super) fn end_session(
        &mut self,
        now: Now,
        session: SessionId,
        end: SessionEnd,
        rng: &mut impl Entropy,
    ) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.dirty.remove(&session);
        self.session_timers.remove(&(session, SessionTimer::Term));
        self.session_timers.remove(&(session, SessionTimer::Ack));
        // The hop before, if it still waits, gets no answer of this
        // session: its own transaction decides.
        match &s.setup {
            Setup::Opening { offer, prev, .. } => self.server.abandon(offer.txn, prev.peer),
            Setup::Answering { answer, prev, .. } => self.server.abandon(answer.txn, prev.peer),
            _ => {}
        }
        for internal in &s.mapped {
            self.ports.release(*internal);
        }
        // Pinholes that end with the session's term are gone already:
        // there is no copy left to stop, and the close is for the record.
        let live = now.mono < s.expires_at;
        for (id, pinhole) in &s.pinholes {
            if pinhole.copy && live {
                if let Some(recorder) = self.cfg.recorder.as_ref().map(|r| r.addr) {
                    let op = FwOp::Copy {
                        sink: recorder,
                        on: false,
                    };
                    self.firewall_request(now, session, *id, op, rng);
                }
            }
            self.firewall_request(now, session, *id, FwOp::Close, rng);
        }
        if let Some(recording) = s.recording {
            self.record_stop(now, session, recording, rng);
        }
        self.kek.forget_session(&session);
        let ended = EndedSession {
            until: now.wall_at_mono(s.expires_at),
            pinholes: s.pinholes.keys().copied().collect(),
            recording: s.recording,
        };
        self.store(StoreWrite::EndSession {
            session,
            ended: ended.clone(),
        });
        self.remember_ended(session, ended, s.expires_at);
        self.event(ServerEvent::SessionEnded(session, end));
    }
}
