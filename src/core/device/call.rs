//! Call set-up (F4): the offer, sealed for the callee and the servers the
//! device's policy trusts (KW-POLICY-001); the answer, which reuses the
//! offer's key (KW-CRYPTO-040) and is sealed for the servers that already
//! follow the session too (KW-KEY-006); the checks each side makes of the
//! other's sealed body (KW-SEAL-009, KW-SM-016); and the ends of calls that
//! fail or are abandoned. An ended session is not started again
//! (KW-SM-017).

use std::collections::{BTreeMap, BTreeSet};

use super::certs::Parked;
use super::{Call, CallState, Device, DeviceEvent, Outcome, PENDING, Pending};
use crate::core::error::ProtocolError;
use crate::core::{Now, ReplyTo};
use crate::crypto::{
    Entropy, RecipientSpec, SealContext, SessionKeys, every_editor_signed, open, seal, unsigned,
    verify_sealed_with,
};
use crate::wire::{
    Ack, Answer, Bye, Certificate, ErrorCode, Extensions, List, MediaKind, Message, MsgType, Nonce,
    Offer, Permission, Principal, RecipientKind, SecretBytes32, SessionDesc, SessionId, Stream,
    Text, TxnId, UpTo, decode_plaintext, encode_plaintext,
};

/// Ended sessions remembered (KW-SM-017).
const ENDED: usize = 1024;

impl Device {
    fn server_of(&self, account: &Principal) -> Option<Principal> {
        Principal::new(&format!(
            "{}@{}",
            self.cfg.policy.server_local_part,
            account.domain()
        ))
        .ok()
    }

    pub(super) fn call(&mut self, now: Now, to: Principal, rng: &mut impl Entropy) {
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
                media_windows: BTreeMap::new(),
            },
        );
        self.continue_call(now, session, rng);
    }

    pub(super) fn new_desc(&self, rng: &mut impl Entropy) -> SessionDesc {
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

    pub(super) fn continue_call(&mut self, now: Now, session: SessionId, rng: &mut impl Entropy) {
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
        now: Now,
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

    fn send_offer(
        &mut self,
        now: Now,
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
            re: MsgType::Offer,
            to: Some(&peer),
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
    pub(super) fn abandon_call(
        &mut self,
        now: Now,
        session: SessionId,
        code: Option<ErrorCode>,
        rng: &mut impl Entropy,
    ) {
        let me = self.cfg.account.clone();
        let hops = UpTo::new(self.cfg.policy.hops).unwrap_or_default();
        let bye = self.calls.get(&session).and_then(|call| {
            let cek = call.cek.clone()?;
            let mut keys =
                SessionKeys::new(session, me.clone(), call.peer.clone(), cek, now.mono_secs());
            let sealed = keys.send.seal(MsgType::Bye, &[]).ok()?;
            Some(Bye {
                txn: TxnId(rng.array()),
                from: me,
                to: call.peer.clone(),
                session,
                hops,
                via: None,
                sig: unsigned(),
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

    pub(super) fn fail_call(&mut self, session: SessionId, code: ErrorCode) {
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

    pub(super) fn end_call(&mut self, session: SessionId) {
        if self.calls.remove(&session).is_some() {
            self.remember_ended(session);
            self.kek.forget_session(&session);
            self.emit(DeviceEvent::CallEnded(session));
        }
    }

    /// An offer; `resumed` once it waited for certificates, which are not
    /// fetched twice.
    pub(super) fn on_offer(
        &mut self,
        now: Now,
        from: ReplyTo,
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
                SealContext::of(&offer.body, &offer.session, MsgType::Offer, Some(&offer.to)),
                &opened.plaintext,
                &opened.cek,
                &caller_cert,
                &validate,
            )
            .and_then(|()| every_editor_signed(&offer.body))
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
            re: MsgType::Answer,
            to: Some(&offer.from),
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
            now.mono_secs(),
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
                ack_deadline: Some(now.mono.saturating_add(self.cfg.retransmit.give_up)),
                media_windows: BTreeMap::new(),
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

    pub(super) fn on_answer(
        &mut self,
        now: Now,
        answer: Answer,
        rng: &mut impl Entropy,
    ) -> Outcome {
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
    pub(super) fn on_answer_ready(
        &mut self,
        now: Now,
        answer: Answer,
        rng: &mut impl Entropy,
    ) -> Outcome {
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
                SealContext::of(&answer.body, &session, MsgType::Answer, Some(&answer.to)),
                &opened.plaintext,
                &opened.cek,
                &peer_cert,
                &validate,
            )
            .and_then(|()| every_editor_signed(&answer.body))
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
            now.mono_secs(),
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
            sig: unsigned(),
            ext: Extensions::new(),
        });
        self.request(now, txn, ack, Pending::InSession(session, MsgType::Ack));
        Ok(())
    }
}
