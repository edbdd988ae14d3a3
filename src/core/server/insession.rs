//! A trusted server's part in established sessions (F5): routing `ack`,
//! `info`, `rekey` and `bye`, reading them under the session key it holds
//! (KW-KEY-006), following rekeys, learning new media keys for the
//! recorder (KW-REC-002), and ending the session on an authentic `bye`
//! (KW-FW-003).

use super::session::{DESCS_PER_PARTY, Deferred, Setup};
use super::{Outcome, Server, ServerEvent, SessionEnd, SessionTimer};
use crate::core::bound::bound_or;
use crate::core::clock::Now;
use crate::core::error::ProtocolError;
use crate::core::transport::ReplyTo;
use crate::crypto::{CryptoError, DirectionKeys, Entropy, Expect};
use crate::wire::{
    Certificate, ErrorCode, Message, MsgType, Principal, SessionDesc, SessionId, SessionUpdate,
    TxnId, decode_plaintext,
};

/// Most in-session messages kept for a rekey not yet seen.
const DEFERRED: usize = 8;

impl Server {
    /// `ack`, `info`, `rekey`, `bye`: routed like any request; read and
    /// followed when this server holds the session's key (KW-KEY-006).
    pub(super) fn on_in_session(
        &mut self,
        now: Now,
        from: ReplyTo,
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
        // KW-CRYPTO-061: a request of a session this server follows is
        // carried on only when its sender signed it, with the key of the
        // certificate confirmed at set-up (KW-SM-020); what a server
        // holding the session key forges stops at the next that checks.
        let forged = self
            .sessions
            .get(&route.session)
            .and_then(|s| s.certs.get(&route.from))
            .and_then(|cert| crate::crypto::verify_message(&m, cert).err());
        if let Some(e) = forged {
            return self.reject(now, from, route.txn, re, ErrorCode::from(&e));
        }
        let forwarded = self.start_forward(
            now,
            from,
            &hop,
            with_route(m.clone(), hop.via.clone(), hop.hops),
            route.from.clone(),
            Some(route.session),
        )?;
        let mut bye_authentic = false;
        match &m {
            Message::Ack(a) => self.ack_passed(&a.session, &a.from),
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
        self.out.transmit(forwarded);
        if bye_authentic {
            // KW-FW-003, KW-REC-003: the cutoff signal, authenticated.
            self.end_session(now, route.session, SessionEnd::Bye, rng);
        }
        Ok(())
    }

    /// The caller's `ack` of the answer this server relayed passes: the
    /// session is set up (KW-SM-027).
    fn ack_passed(&mut self, session: &SessionId, from: &Principal) {
        let answered = self
            .sessions
            .get(session)
            .is_some_and(|s| &s.caller == from && matches!(s.setup, Setup::Answered { .. }));
        if !answered {
            return;
        }
        self.session_timers.remove(&(*session, SessionTimer::Ack));
        if let Some(s) = self.session_mut(session) {
            s.setup = Setup::Established;
        }
    }

    /// Decrypts an in-session message with the session key; learns new
    /// media keys from an `info` description. Returns whether it was
    /// authentic.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        now: Now,
        session: SessionId,
        sender: &Principal,
        re: MsgType,
        epoch: u64,
        seq: u64,
        payload: &[u8],
        rng: &mut impl Entropy,
    ) -> bool {
        let secs = now.mono_secs();
        let Some(s) = self.sessions.get(&session) else {
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
                DirectionKeys::new(session, s.caller.clone(), s.callee.clone(), key, secs);
            if original.open(re, epoch, seq, payload, secs).is_ok() {
                self.event(ServerEvent::Observed(session, re));
                return true;
            }
        }
        // Changed, and so written (KW-SM-025), only if it opens or waits.
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let Some(keys) = s.keys.as_mut() else {
            return false;
        };
        let direction = if caller {
            &mut keys.send
        } else {
            &mut keys.recv
        };
        let plaintext = match direction.open(re, epoch, seq, payload, secs) {
            Ok(p) => {
                self.dirty.insert(session);
                p
            }
            // Only the next epoch: anything further cannot be a rekey in
            // flight, and junk must not fill the list (KW-SM-005).
            Err(CryptoError::StaleEpoch(_))
                if direction.current_epoch().checked_add(1) == Some(epoch) =>
            {
                // The rekey is still on its way: try again once followed.
                if s.deferred.len() < DEFERRED {
                    s.deferred.push(Deferred {
                        sender: sender.clone(),
                        re,
                        epoch,
                        seq,
                        payload: payload.to_vec(),
                    });
                    self.dirty.insert(session);
                }
                return false;
            }
            Err(e) => {
                self.event(ServerEvent::Rejected(re, ErrorCode::from(&e)));
                return false;
            }
        };
        self.event(ServerEvent::Observed(session, re));
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
        now: Now,
        session: SessionId,
        sender: &Principal,
        desc: SessionDesc,
        rng: &mut impl Entropy,
    ) {
        let Some(s) = self.session_mut(&session) else {
            return;
        };
        let number = s
            .latest_desc(sender)
            .map_or(0, |(n, _)| n.saturating_add(1));
        s.descs.insert((sender.clone(), number), desc.clone());
        let first_kept = number.saturating_sub(DESCS_PER_PARTY as u64 - 1);
        s.descs
            .retain(|(party, n), _| party != sender || *n >= first_kept);
        let Some(recording) = s.recording else { return };
        self.record_key(now, session, recording, sender, number, &desc, rng);
    }

    /// KW-KEY-006: follow a party's rekey, then retry what waited for it.
    fn follow_rekey(&mut self, now: Now, r: &crate::wire::Rekey, rng: &mut impl Entropy) {
        let policy = self.cfg.keys;
        let secs = now.mono_secs();
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
                                    now: now.wall_secs(),
                                },
                            )
                        });
                    crate::crypto::open_rekey_body(
                        body,
                        &r.session,
                        &r.from,
                        &r.to,
                        r.epoch,
                        &self.cfg.identity,
                        &cert,
                        &validate,
                    )
                };
                match opened {
                    Ok(key) => Some(key),
                    Err(e) => {
                        self.event(ServerEvent::Rejected(MsgType::Rekey, ErrorCode::from(&e)));
                        return;
                    }
                }
            }
            None => None,
        };
        let Some(s) = self.sessions.get(&r.session) else {
            return;
        };
        let caller = s.caller == r.from;
        if !caller && s.callee != r.from {
            return;
        }
        let Some(s) = self.sessions.get_mut(&r.session) else {
            return;
        };
        let Some(keys) = s.keys.as_mut() else { return };
        let direction = if caller {
            &mut keys.send
        } else {
            &mut keys.recv
        };
        let result = match (new_key, &r.wrapped) {
            (Some(key), _) => direction.accept_rekey_key(r.epoch, r.seq, key, secs, &policy),
            (None, Some(wrapped)) => {
                direction.accept_rekey_wrapped(r.epoch, r.seq, wrapped.as_slice(), secs, &policy)
            }
            (None, None) => Err(CryptoError::DecryptFailed),
        };
        match result {
            Ok(()) => {
                self.dirty.insert(r.session);
                self.event(ServerEvent::Rekeyed {
                    session: r.session,
                    from: r.from.clone(),
                    epoch: r.epoch,
                });
                let deferred = self
                    .session_mut(&r.session)
                    .map(|s| core::mem::take(&mut s.deferred))
                    .unwrap_or_default();
                for d in deferred {
                    let authentic = self.observe(
                        now, r.session, &d.sender, d.re, d.epoch, d.seq, &d.payload, rng,
                    );
                    if authentic && d.re == MsgType::Bye {
                        self.end_session(now, r.session, SessionEnd::Bye, rng);
                    }
                }
            }
            Err(e) => self.event(ServerEvent::Rejected(MsgType::Rekey, ErrorCode::from(&e))),
        }
    }
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
