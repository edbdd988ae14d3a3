//! An established call (F5): text and new descriptions (`info`), whose
//! media keys recorders follow (F7); rekeys, wrapped under the current key
//! or sealed for the call's recipients (KW-CRYPTO-042, KW-SM-016,
//! KW-SM-020), commanded or due by time or count (KW-KEY-003); media
//! frames (KW-CRYPTO-043); hang-up. An accepted request spends its
//! sequence number (KW-KEY-005); one under an epoch whose rekey has not
//! arrived yet waits for it (KW-KEY-004).

use super::{Call, CallState, Device, DeviceEvent, Outcome, Pending};
use crate::core::bound::bound_or;
use crate::core::error::ProtocolError;
use crate::core::request::request_txn;
use crate::core::{Now, ReplyTo};
use crate::crypto::{
    CertError, CryptoError, Entropy, KeyPolicy, SealContext, Secret32, media_ad, open_media, seal,
    seal_media, unsigned,
};
use crate::wire::{
    Ack, Bye, ErrorCode, Extensions, Info, Message, MsgType, OkResponse, Principal, Rekey,
    SessionDesc, SessionId, SessionUpdate, Text, TxnId, UpTo, decode_plaintext, encode_plaintext,
};

/// Most requests a call holds for a rekey not yet seen.
const DEFERRED: usize = 8;

/// Peer descriptions kept per call.
const DESCS_KEPT: usize = 4;

impl Device {
    fn in_session_header(
        &self,
        session: &SessionId,
        rng: &mut impl Entropy,
    ) -> Option<(TxnId, Principal)> {
        let call = self.calls.get(session)?;
        Some((TxnId(rng.array()), call.peer.clone()))
    }

    pub(super) fn info(
        &mut self,
        now: Now,
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
            sig: unsigned(),
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

    pub(super) fn rekey(
        &mut self,
        now: Now,
        session: SessionId,
        body: bool,
        rng: &mut impl Entropy,
    ) {
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
                re: MsgType::Rekey,
                to: Some(&peer),
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
            let Ok((epoch, seq)) = keys.send.rekey_with_key(key, now.mono_secs()) else {
                return;
            };
            (epoch, seq, Some(sealed), None)
        } else {
            let Ok(r) = keys.send.rekey_wrapped(now.mono_secs(), rng) else {
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
            sig: unsigned(),
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

    pub(super) fn media(&mut self, session: SessionId, frame: &[u8]) {
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

    pub(super) fn hang_up(&mut self, now: Now, session: SessionId, rng: &mut impl Entropy) {
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
            sig: unsigned(),
            epoch: sealed.epoch,
            seq: sealed.seq,
            payload,
            ext: Extensions::new(),
        });
        self.request(now, txn, message, Pending::InSession(session, MsgType::Bye));
    }

    pub(super) fn on_ok(&mut self, ok: OkResponse) -> Outcome {
        let Some(Pending::InSession(..)) = self.client.context(&ok.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::Ok));
        };
        match self.client.complete(&ok.txn, self.cfg.server) {
            Some((_, Pending::InSession(session, MsgType::Bye))) => self.end_call(session),
            Some(_) => {}
            None => return Err(ProtocolError::Unsolicited(MsgType::Ok)),
        }
        Ok(())
    }

    fn call_from(&self, session: &SessionId, from: &Principal) -> bool {
        self.calls.get(session).is_some_and(|c| &c.peer == from)
    }

    fn ok(
        &mut self,
        now: Now,
        to: ReplyTo,
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

    pub(super) fn on_ack(&mut self, now: Now, from: ReplyTo, ack: Ack) -> Outcome {
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

    pub(super) fn on_info(&mut self, now: Now, from: ReplyTo, info: Info) -> Outcome {
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
                    now.mono_secs(),
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
                    keys.recv.record(seen, now.mono_secs());
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

    pub(super) fn on_rekey(&mut self, now: Now, from: ReplyTo, rekey: Rekey) -> Outcome {
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
                            &rekey.to,
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
                (Some(key), _) => keys.recv.accept_rekey_key(
                    rekey.epoch,
                    rekey.seq,
                    key,
                    now.mono_secs(),
                    &policy,
                ),
                (None, Some(wrapped)) => keys.recv.accept_rekey_wrapped(
                    rekey.epoch,
                    rekey.seq,
                    wrapped,
                    now.mono_secs(),
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

    pub(super) fn on_bye(&mut self, now: Now, from: ReplyTo, bye: Bye) -> Outcome {
        if !self.call_from(&bye.session, &bye.from) {
            // KW-SM-029: a `bye` for a call this device does not have is
            // refused, not acknowledged: a retransmission of one it took is
            // answered from the transaction cache (KW-FRAME-012), and any
            // other — a replay under a fresh `txn` — must not read as the
            // end of a call.
            return self.reject_request(
                now,
                from,
                bye.txn,
                MsgType::Bye,
                ErrorCode::UNKNOWN_SESSION,
            );
        }
        let opened = self
            .calls
            .get_mut(&bye.session)
            .and_then(|c| c.keys.as_mut())
            .map(|k| {
                k.recv.open(
                    MsgType::Bye,
                    bye.epoch,
                    bye.seq,
                    &bye.payload,
                    now.mono_secs(),
                )
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
    fn defer(&mut self, session: SessionId, from: ReplyTo, request: Message) {
        let Some(call) = self.calls.get_mut(&session) else {
            return;
        };
        if call.deferred.len() < DEFERRED {
            call.deferred.push((from, request));
        } else if let Some(txn) = request_txn(&request) {
            self.server.abandon(txn, from.peer);
        }
    }

    /// A media frame of a call: decrypted with the key of its sender's
    /// stream and description (KW-CRYPTO-043), or dropped.
    pub(super) fn on_media(&mut self, _now: Now, media: crate::wire::Media) -> Outcome {
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
        // KW-KEY-007: each packet once, per stream and description.
        let window = call
            .media_windows
            .get(&(media.stream, media.epoch))
            .copied()
            .unwrap_or_default();
        if let Err(e) = window.check(media.seq) {
            return dropped(ErrorCode::from(&e));
        }
        let ad = media_ad(
            &media.session,
            &media.from,
            media.stream,
            media.epoch,
            media.seq,
        );
        match open_media(&Secret32::new(stream.key.0), &ad, &media.payload) {
            Ok(frame) => {
                if let Some(call) = self.calls.get_mut(&media.session) {
                    // Windows of descriptions no longer kept are dropped
                    // with them (KW-SM-019).
                    let kept: Vec<u64> = call.peer_descs.keys().copied().collect();
                    call.media_windows
                        .retain(|(_, epoch), _| kept.contains(epoch));
                    call.media_windows
                        .entry((media.stream, media.epoch))
                        .or_default()
                        .record(media.seq);
                }
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

pub(super) fn keys_due(call: Option<&Call>, now: Now, policy: &KeyPolicy) -> bool {
    call.and_then(|c| c.keys.as_ref())
        .is_some_and(|k| k.send.needs_rekey(now.mono_secs(), policy))
}
