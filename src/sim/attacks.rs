//! The adversary at work (`--adversary`, spec/state-machines.md §6):
//! what it captures, what it sends, and how the forged bodies of the
//! misbehaving server are followed to their verdict. Judging an injected
//! datagram is `World::judge_attack`; the kinds and their expected
//! refusals are in `adversary`.

use super::adversary::{Attack, Forged, Injected, RATE, code_name, outsider};
use super::checks::secs;
use super::net::Node;
use super::world::World;
use crate::core::{Addr, ProtocolError};
use crate::crypto::attest;
use crate::wire::{
    Ack, Attestation, Bye, CertNotify, ErrorCode, Info, MediaCopy, Message, MsgType, Offer,
    PinholeClose, PinholeNarrow, PinholeOpen, RecordKey, RecordStart, RecordStop, Register, Rekey,
    SessionId, Time, TxnId,
};

/// `message` under another transaction identifier.
fn with_txn(message: Message, txn: TxnId) -> Message {
    match message {
        Message::Register(m) => Message::Register(Register { txn, ..m }),
        Message::Offer(m) => Message::Offer(Offer { txn, ..m }),
        Message::Ack(m) => Message::Ack(Ack { txn, ..m }),
        Message::Info(m) => Message::Info(Info { txn, ..m }),
        Message::Rekey(m) => Message::Rekey(Rekey { txn, ..m }),
        Message::Bye(m) => Message::Bye(Bye { txn, ..m }),
        Message::PinholeOpen(m) => Message::PinholeOpen(PinholeOpen { txn, ..m }),
        Message::PinholeNarrow(m) => Message::PinholeNarrow(PinholeNarrow { txn, ..m }),
        Message::PinholeClose(m) => Message::PinholeClose(PinholeClose { txn, ..m }),
        Message::MediaCopy(m) => Message::MediaCopy(MediaCopy { txn, ..m }),
        Message::RecordStart(m) => Message::RecordStart(RecordStart { txn, ..m }),
        Message::RecordKey(m) => Message::RecordKey(RecordKey { txn, ..m }),
        Message::RecordStop(m) => Message::RecordStop(RecordStop { txn, ..m }),
        other => other,
    }
}

/// A response: taken only from where its request went (KW-FRAME-013).
fn is_response(message: &Message) -> bool {
    matches!(
        message,
        Message::Ok(_)
            | Message::Error(_)
            | Message::Answer(_)
            | Message::CertNotify(_)
            | Message::RegisterOk(_)
            | Message::Challenge(_)
    )
}

/// A signed command of a server to its firewall agent or recorder.
fn is_command(message: &Message) -> bool {
    matches!(
        message,
        Message::PinholeOpen(_)
            | Message::PinholeNarrow(_)
            | Message::PinholeClose(_)
            | Message::MediaCopy(_)
            | Message::RecordStart(_)
            | Message::RecordKey(_)
            | Message::RecordStop(_)
    )
}

impl World {
    /// Sends the adversary's datagram `message` to `to` from `from` at
    /// `at`, counted as an attack of `kind`.
    fn send_attack(
        &mut self,
        at: u64,
        to: Node,
        from: Addr,
        message: &Message,
        injected: Injected,
    ) {
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        let kind = injected.kind.name();
        let id = adversary.inject(injected);
        self.ledger.attack_injected(kind);
        self.net.inject(at, to, from, message.encode(), id);
    }

    /// A datagram a party handled (not one of the adversary's): it may be
    /// captured for a replay, and a forged body is followed.
    pub(super) fn delivered(
        &mut self,
        to: Node,
        from: Addr,
        bytes: &[u8],
        outcome: &Result<(), ProtocolError>,
    ) {
        if let (Node::Recorder(r), Ok(Message::RecordStart(start))) = (to, Message::decode(bytes)) {
            // The recorder of domain `r` (one per domain, in order).
            self.record_started.insert((r, start.session));
        }
        if self.adversary.is_none() {
            return;
        }
        let Ok(message) = Message::decode(bytes) else {
            return;
        };
        self.forged_on_its_way(to, &message, outcome);
        if outcome.is_ok() {
            self.capture(to, from, message);
        }
    }

    /// Whether device `i` has accepted what it was sent of `session` under
    /// `epoch`: one after its receiving epoch is held until its rekey
    /// (KW-SM-005), not accepted yet.
    fn taken_at(&self, i: usize, session: &SessionId, epoch: u64) -> bool {
        let current = self
            .adversary
            .as_ref()
            .and_then(|a| a.recv_epochs.get(&(i, *session)).copied())
            .unwrap_or(0);
        epoch <= current
    }

    /// A request its target accepted, replayed later under a fresh `txn`
    /// (a rekey also moved to the next epoch, in turn); or a signed
    /// command its target carried out, sent again from outside.
    fn capture(&mut self, to: Node, from: Addr, message: Message) {
        let eligible = match (&to, &message) {
            (Node::Device(_), Message::Rekey(_)) => true,
            (Node::Device(i), Message::Info(m)) => self.taken_at(*i, &m.session, m.epoch),
            (Node::Device(i), Message::Bye(m)) => self.taken_at(*i, &m.session, m.epoch),
            (Node::Device(_), Message::Ack(_)) => true,
            // Taken, not waiting for a certificate.
            (Node::Device(i), Message::Offer(o)) => self
                .devices
                .get(*i)
                .is_some_and(|d| d.0.call_state(&o.session).is_some()),
            (Node::Server(_), Message::Register(r)) => r.auth.is_some(),
            // A first hop to a server that follows the session (one that
            // does not forwards it unread, KW-SM-010).
            (Node::Server(s), Message::Offer(o)) => {
                o.via.is_none()
                    && self
                        .servers
                        .get(*s)
                        .is_some_and(|x| x.0.session_expiry(&o.session).is_some())
            }
            (Node::Agent(_) | Node::Recorder(_), m) => is_command(m),
            _ => false,
        };
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        let rekey = matches!(message, Message::Rekey(_));
        if !eligible || !(rekey || adversary.one_in(RATE)) {
            return;
        }
        let at = self.now + 200 + adversary.below(3_000);
        let fresh = adversary.fresh_txn();
        let re = message.msg_type();
        let (kind, replay, source, verbatim) = match message {
            Message::Rekey(r) => {
                let kind = match r.body.is_some() {
                    true => Attack::ReplayedRekeyBody,
                    false => Attack::ReplayedRekeyWrapped,
                };
                // As it was, or its key moved to the next epoch with a
                // sequence number not seen yet (KW-CRYPTO-042, KW-SM-016).
                let (epoch, seq) = match adversary.alternate() {
                    0 => (r.epoch, r.seq),
                    _ => (r.epoch.saturating_add(1), r.seq.saturating_add(1_000_000)),
                };
                let moved = Rekey {
                    txn: fresh,
                    epoch,
                    seq,
                    ..r
                };
                (kind, Message::Rekey(moved), from, false)
            }
            m if is_command(&m) => {
                let verbatim = adversary.alternate() == 0;
                let m = if verbatim { m } else { with_txn(m, fresh) };
                (Attack::UnauthorisedSource, m, outsider(), verbatim)
            }
            m => (Attack::ReplayedRequest, with_txn(m, fresh), from, false),
        };
        let injected = Injected {
            kind,
            re,
            may_change: false,
            verbatim,
        };
        self.send_attack(at, to, source, &replay, injected);
    }

    /// What the adversary does with a datagram on its way to `node` from
    /// `from`, before the network takes it: a copy from outside of a
    /// response; a `cert-notify` of another domain's certificate without
    /// its attestation, or with a forged one; an offer presenting the
    /// caller's revoked or expired certificate. Each copy arrives before
    /// the original (which takes 5 ms at least).
    pub(super) fn tap(&mut self, from: Addr, node: Node, message: &Message) {
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        let at = self.now + 1;
        if is_response(message)
            && matches!(node, Node::Device(_) | Node::Server(_))
            && adversary.one_in(2 * RATE)
        {
            let injected = Injected {
                kind: Attack::UnauthorisedSource,
                re: message.msg_type(),
                may_change: false,
                verbatim: false,
            };
            self.send_attack(at, node, outsider(), message, injected);
        }
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        match message {
            Message::CertNotify(n) if matches!(node, Node::Device(_)) && adversary.one_in(RATE) => {
                // A certificate of the device's own domain, which its
                // anchor confirms: half the time an expired or revoked one
                // of the same account in its place (KW-CERT-002,
                // KW-QUERY-007); its attestation is attacked as any other.
                if n.target.domain() == n.to.domain() && adversary.below(2) == 0 {
                    return self.expired_notify(from, node, n);
                }
                let Some(att) = n.attestation.clone() else {
                    return;
                };
                let (kind, attestation) = match adversary.alternate() {
                    0 => (Attack::StrippedAttestation, None),
                    _ => {
                        let stranger = adversary.stranger.clone();
                        let forged = match (adversary.below(2), stranger) {
                            // Made by a server of another domain.
                            (0, Some(s)) => {
                                attest(&s.account, &s.key, &s.cert, &n.cert, &n.to, att.at.0)
                            }
                            // Another time than the one signed.
                            _ => Attestation {
                                at: Time(att.at.0.saturating_sub(1)),
                                ..att
                            },
                        };
                        (Attack::ForgedAttestation, Some(forged))
                    }
                };
                let forged = Message::CertNotify(CertNotify {
                    attestation,
                    ..n.clone()
                });
                // A response that fails its checks fails its query.
                let injected = Injected {
                    kind,
                    re: MsgType::CertNotify,
                    may_change: true,
                    verbatim: false,
                };
                self.send_attack(at, node, from, &forged, injected);
            }
            // An offer's first sending (its server does not follow the
            // session yet): a retransmission would be refused as one.
            Message::Offer(o)
                if o.via.is_none()
                    && matches!(node, Node::Server(s) if self.servers.get(s).is_some_and(|x| x.0.session_expiry(&o.session).is_none()))
                    && adversary.one_in(RATE) =>
            {
                let Some(current) = o.cert.as_ref() else {
                    return;
                };
                let held = adversary.certs.get(&o.from).cloned().unwrap_or_default();
                let now_s = secs(self.now);
                let mut revoked = None;
                let mut expired = None;
                for cert in held.iter().filter(|c| c.tbs.serial != current.tbs.serial) {
                    let issuer = cert.tbs.issuer.as_str();
                    if cert.tbs.not_after.0 < now_s {
                        expired = Some(cert.clone());
                    } else if self.ledger.revoked_by(issuer, cert.tbs.serial, self.now) {
                        revoked = Some(cert.clone());
                    }
                }
                let Some(adversary) = self.adversary.as_mut() else {
                    return;
                };
                let choice = match (adversary.alternate(), revoked, expired) {
                    (0, Some(c), _) | (_, Some(c), None) => (Attack::RevokedCertificate, c),
                    (_, _, Some(c)) => (Attack::ExpiredCertificate, c),
                    _ => return,
                };
                let (kind, cert) = choice;
                let txn = adversary.fresh_txn();
                let forged = Message::Offer(Offer {
                    txn,
                    cert: Some(cert),
                    ..o.clone()
                });
                let injected = Injected {
                    kind,
                    re: MsgType::Offer,
                    may_change: false,
                    verbatim: false,
                };
                self.send_attack(at, node, from, &forged, injected);
            }
            _ => {}
        }
    }

    /// A `cert-notify` of an account of the device's own domain with an
    /// expired certificate of that account in place of the current one,
    /// failing that a revoked one.
    fn expired_notify(&mut self, from: Addr, node: Node, n: &CertNotify) {
        let now_s = secs(self.now);
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        let held = adversary.certs.get(&n.target).cloned().unwrap_or_default();
        let mut earlier = held
            .into_iter()
            .rev()
            .filter(|c| c.tbs.serial != n.cert.tbs.serial);
        let expired = earlier.clone().find(|c| c.tbs.not_after.0 < now_s);
        // Its anchor confirms a revoked certificate of the device's own
        // domain; the server's attestation, made for the current one, is
        // what it fails (KW-QUERY-007).
        let revoked = earlier.find(|c| {
            self.ledger
                .revoked_by(c.tbs.issuer.as_str(), c.tbs.serial, self.now)
        });
        let (kind, cert) = match (expired, revoked) {
            (Some(c), _) => (Attack::ExpiredCertificate, c),
            (None, Some(c)) => (Attack::RevokedOwnCertificate, c),
            (None, None) => return,
        };
        let forged = Message::CertNotify(CertNotify { cert, ..n.clone() });
        // A response that fails its checks fails its query.
        let injected = Injected {
            kind,
            re: MsgType::CertNotify,
            may_change: true,
            verbatim: false,
        };
        self.send_attack(self.now + 1, node, from, &forged, injected);
    }

    /// A server forged the edits of a body of `session` it read (`Faults`).
    pub(super) fn forged(&mut self, session: SessionId, re: MsgType, kind: Attack) {
        let call = self.call_of.get(&session).and_then(|c| self.calls.get(*c));
        let destination = call.map(|c| match re {
            MsgType::Offer => c.callee,
            _ => c.caller,
        });
        let account = destination.and_then(|d| self.devices.get(d).map(|x| x.0.account().clone()));
        self.ledger.attack_injected(kind.name());
        let (Some(destination), Some(account)) = (destination, account) else {
            return self
                .ledger
                .attack_refused(kind.name(), "a session of no call of the script".into());
        };
        // The destination reports it as tampering (KW-SEAL-009).
        self.ledger.tampered(session, account, false);
        if let Some(adversary) = self.adversary.as_mut() {
            adversary.forged.insert(
                session,
                Forged {
                    kind,
                    destination,
                    body: None,
                    delivered: None,
                    resolved: false,
                },
            );
        }
    }

    /// The forging server sends a body it forged.
    pub(super) fn forged_sent(&mut self, server: usize, message: &Message) {
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        if adversary.forger != Some(server) {
            return;
        }
        let (session, body) = match message {
            Message::Offer(o) => (o.session, &o.body),
            Message::Answer(a) => (a.session, &a.body),
            _ => return,
        };
        if let Some(f) = adversary.forged.get_mut(&session) {
            if f.body.is_none() {
                f.body = Some(body.clone());
            }
        }
    }

    /// A forged body reached a party: a server on the way that refuses it
    /// gives the verdict, or its destination by what it returns (or, if
    /// it holds the body for a certificate, by its events and answer).
    fn forged_on_its_way(
        &mut self,
        to: Node,
        message: &Message,
        outcome: &Result<(), ProtocolError>,
    ) {
        let (session, body, txn) = match message {
            Message::Offer(o) => (o.session, &o.body, o.txn),
            Message::Answer(a) => (a.session, &a.body, a.txn),
            _ => return,
        };
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        let Some(f) = adversary.forged.get_mut(&session) else {
            return;
        };
        if f.resolved || f.body.as_ref() != Some(body) {
            return;
        }
        let at_destination = to == Node::Device(f.destination);
        if at_destination {
            f.delivered = Some(txn);
        }
        let code = match outcome {
            Err(e) if at_destination || matches!(to, Node::Server(_)) => e.code(),
            _ => return,
        };
        let where_ = if at_destination { "" } else { " by a server" };
        self.resolve_forged(session, code, where_);
    }

    /// The verdict on a forged body of `session`: refused with `code`.
    pub(super) fn resolve_forged(&mut self, session: SessionId, code: ErrorCode, where_: &str) {
        let Some(f) = self
            .adversary
            .as_mut()
            .and_then(|a| a.forged.get_mut(&session))
            .filter(|f| !f.resolved)
        else {
            return;
        };
        f.resolved = true;
        let kind = f.kind;
        let name = code_name(code);
        if kind.expected(MsgType::Offer).contains(&code) {
            self.ledger
                .attack_detected(kind.name(), format!("{name}{where_}"));
        } else {
            self.ledger
                .attack_refused(kind.name(), format!("refused{where_}: {name}"));
        }
    }

    /// What a device's events tell of a forged body meant for it.
    pub(super) fn forged_event(&mut self, i: usize, session: SessionId, verdict: ForgedEvent) {
        let Some(f) = self
            .adversary
            .as_mut()
            .and_then(|a| a.forged.get_mut(&session))
            .filter(|f| !f.resolved && f.destination == i)
        else {
            return;
        };
        let kind = f.kind.name();
        match verdict {
            ForgedEvent::Tamper(code) => self.resolve_forged(session, code, ""),
            ForgedEvent::Accepted => {
                f.resolved = true;
                let now = self.now;
                self.ledger.attack_accepted(
                    now,
                    kind,
                    format!("device {i} took a forged body of its call"),
                );
            }
            // The call failed before its destination checked the body: it
            // never arrived, or it was held for a certificate whose query
            // failed (KW-SM-022); either way it was not taken.
            ForgedEvent::Failed(code) => {
                f.resolved = true;
                let when = match f.delivered {
                    None => "before it arrived",
                    Some(_) => "while the body waited for a certificate",
                };
                let reason = format!("the call failed {when}: {}", code_name(code));
                self.ledger.attack_refused(kind, reason);
            }
        }
    }

    /// A device answered the message that brought a forged body with an
    /// `error`: its verdict.
    pub(super) fn forged_answered(&mut self, txn: TxnId, code: ErrorCode) {
        let session = self.adversary.as_ref().and_then(|a| {
            a.forged
                .iter()
                .find(|(_, f)| !f.resolved && f.delivered == Some(txn))
                .map(|(s, _)| *s)
        });
        if let Some(session) = session {
            self.resolve_forged(session, code, "");
        }
    }

    /// At the end of the run: what never reached its target is refused
    /// for that reason; everything else must have a verdict.
    pub(super) fn close_attacks(&mut self) {
        let Some(adversary) = self.adversary.as_mut() else {
            return;
        };
        let late: Vec<Attack> = adversary.injected.values().map(|a| a.kind).collect();
        adversary.injected.clear();
        let mut open = Vec::new();
        for f in adversary.forged.values_mut().filter(|f| !f.resolved) {
            let reason = match (&f.body, f.delivered) {
                (None, _) => "the forging server forwarded nothing (the call failed there)",
                (Some(_), None) => "never reached its destination (lost, or the call was over)",
                (Some(_), Some(_)) => continue,
            };
            f.resolved = true;
            open.push((f.kind, reason));
        }
        for kind in late {
            self.ledger
                .attack_refused(kind.name(), "the run ended before it arrived".into());
        }
        for (kind, reason) in open {
            self.ledger.attack_refused(kind.name(), reason.into());
        }
        let now = self.now;
        self.ledger.attacks_accounted(now);
    }
}

/// What a device's events tell of a forged body meant for it.
pub(super) enum ForgedEvent {
    /// Reported as tampering (KW-SEAL-009).
    Tamper(ErrorCode),
    /// Taken: the call came in or was established with it.
    Accepted,
    /// The call failed.
    Failed(ErrorCode),
}
