//! Carrying out what the state machines ask: datagrams over the simulated
//! network, media through the firewalls, store writes, firewall commands;
//! and watching their events for the counters and invariants.

use std::collections::BTreeSet;

use super::adversary::Attack;
use super::attacks::ForgedEvent;
use super::checks::CertRef;
use super::net::{Node, What};
use super::plan::{KEYS, T0, give_up};
use super::world::World;
use crate::core::{
    Addr, DeviceEvent, Driver, Firewall, FirewallEvent, Forgery, MemoryFirewall, Output, Party,
    RecorderEvent, ServerEvent, SessionEnd, Store, StoreError, StoreWrite, Transmit, carry,
};
use crate::crypto::Expect;
use crate::testkit::domain_of;
use crate::wire::{Certificate, Message, MsgType, Principal, RecipientKind, SessionId, Transport};

fn cert_ref(cert: &Certificate) -> CertRef<'_> {
    CertRef {
        issuer: cert.tbs.issuer.as_str(),
        serial: cert.tbs.serial,
        not_after: cert.tbs.not_after.0,
    }
}

impl World {
    /// Carries out everything `node` asked for through the one driver
    /// loop ([`carry`]), then re-arms its timer. A party whose store fails
    /// is restarted from it (KW-SM-024).
    pub(super) fn drain(&mut self, node: Node) {
        let failed = match node {
            Node::Device(i) => {
                let outputs: Vec<Output<DeviceEvent>> = match self.devices.get_mut(i) {
                    Some((d, ..)) => core::iter::from_fn(|| d.poll_output()).collect(),
                    None => Vec::new(),
                };
                carry(outputs, &mut SimDriver { world: self, node }).is_err()
            }
            Node::Server(i) => {
                let outputs: Vec<Output<ServerEvent>> = match self.servers.get_mut(i) {
                    Some((s, ..)) => core::iter::from_fn(|| s.poll_output()).collect(),
                    None => Vec::new(),
                };
                carry(outputs, &mut SimDriver { world: self, node }).is_err()
            }
            Node::Recorder(i) => {
                let outputs: Vec<Output<RecorderEvent>> = match self.recorders.get_mut(i) {
                    Some((r, ..)) => core::iter::from_fn(|| r.poll_output()).collect(),
                    None => Vec::new(),
                };
                carry(outputs, &mut SimDriver { world: self, node }).is_err()
            }
            Node::Agent(i) => {
                let outputs: Vec<Output<FirewallEvent>> = match self.agents.get_mut(i) {
                    Some((a, ..)) => core::iter::from_fn(|| a.poll_output()).collect(),
                    None => Vec::new(),
                };
                carry(outputs, &mut SimDriver { world: self, node }).is_err()
            }
        };
        if failed {
            let now = self.now;
            self.ledger
                .violation(now, format!("{node:?}: its store failed a commit"));
        }
        let next = match node {
            Node::Device(i) => self.devices.get(i).and_then(|d| d.0.poll_timeout()),
            Node::Server(i) => self.servers.get(i).and_then(|s| s.0.poll_timeout()),
            Node::Recorder(i) => self.recorders.get(i).and_then(|r| r.0.poll_timeout()),
            Node::Agent(i) => self.agents.get(i).and_then(|a| a.0.poll_timeout()),
        };
        if let Some(at) = next {
            // Never in the past: a machine asks for a timeout it has not
            // reached yet, or for one now.
            let at = at.max(self.now + 1);
            if self.timers.get(&node) != Some(&at) {
                self.timers.insert(node, at);
                self.net.at(at, What::Timer(node));
            }
        }
    }

    fn signal(&mut self, from: Addr, to: Addr, message: &Message) {
        if let Some(node) = self.by_addr.get(&to).copied() {
            if let Node::Device(i) = node {
                self.note_carried(i, message);
            }
            self.tap(from, node, message);
            let now = self.now;
            self.net.datagram(now, node, from, message.encode());
        }
    }

    /// Remembers the certificate an offer or answer on its way to a device
    /// carries: what the device accepts if it takes the call up.
    fn note_carried(&mut self, device: usize, message: &Message) {
        let (session, cert) = match message {
            Message::Offer(o) => (o.session, o.cert.as_ref()),
            Message::Answer(a) => (a.session, a.cert.as_ref()),
            _ => return,
        };
        if let Some(cert) = cert {
            self.carried.insert((device, session), cert.clone());
        }
    }

    /// The source address a packet leaves its domain with: the public
    /// address the firewall maps the sender to, if any.
    fn translated(&self, from: Addr) -> Addr {
        let Some(d) = domain_of(&from) else {
            return from;
        };
        let Some(fw) = self.firewall(d) else {
            return from;
        };
        fw.pinholes()
            .into_iter()
            .find(|p| p.dst == from && p.expires_at > self.now && p.public.is_some())
            .and_then(|p| p.public)
            .unwrap_or(from)
    }

    /// A media packet crosses the destination domain's firewall: delivered
    /// if a pinhole passes it, copied to recorders (KW-FW-001..006,
    /// KW-REC-001).
    fn media(&mut self, from: Addr, to: Addr, message: &Message) {
        let seen_from = self.translated(from);
        let Some(d) = domain_of(&to) else { return };
        let now = self.now;
        let agent = self.domains.get(d).map(|d| d.agent);
        let Some((agent, ..)) = agent.and_then(|a| self.agents.get_mut(a)) else {
            return;
        };
        let fw = agent.firewall_mut();
        let filtered = fw.filter(now, Transport::Udp, seen_from, to);
        let bytes = message.encode();
        for copy in filtered.copies {
            if let Some(node) = self.by_addr.get(&copy).copied() {
                self.net.datagram(now, node, seen_from, bytes.clone());
            }
        }
        if let Some(node) = filtered.deliver.and_then(|a| self.by_addr.get(&a).copied()) {
            self.net.datagram(now, node, seen_from, bytes);
        }
    }

    /// The firewall of domain `d`.
    pub(super) fn firewall(&self, d: usize) -> Option<&MemoryFirewall> {
        let agent = self.domains.get(d)?.agent;
        self.agents.get(agent).map(|a| a.0.firewall())
    }

    fn device_transmit(&mut self, i: usize, transmit: Transmit) {
        let Some((device, ..)) = self.devices.get(i) else {
            return;
        };
        let me = device.account().clone();
        let Transmit {
            source,
            destination: to,
            message,
            ..
        } = transmit;
        self.count_sent(&message);
        self.device_sent(i, &me, &message);
        if let Message::Error(e) = &message {
            if let Some(txn) = e.txn {
                self.forged_answered(txn, e.code);
            }
        }
        if let Message::Media(m) = &message {
            if let Some(frame) = self.pending_frame.clone() {
                self.ledger
                    .frame_sent((m.session, m.from.clone(), m.stream, m.epoch, m.seq), frame);
            }
            self.media(source, to, &message);
        } else {
            self.signal(source, to, &message);
        }
    }

    /// What a device's own requests and answers show: the certificate it
    /// set a call up with (KW-SM-020), and each rekey's cause (KW-SM-006).
    fn device_sent(&mut self, i: usize, me: &Principal, message: &Message) {
        let now = self.now;
        match message {
            Message::Offer(o) if o.via.is_none() => {
                if let Some(cert) = &o.cert {
                    self.ledger.set_up_with(me, o.session, cert.tbs.serial);
                }
            }
            Message::Answer(a) => {
                if let Some(cert) = &a.cert {
                    self.ledger.set_up_with(me, a.session, cert.tbs.serial);
                }
            }
            Message::Rekey(r) if r.via.is_none() => {
                let serial = self
                    .devices
                    .get(i)
                    .and_then(|d| d.0.certificate())
                    .map(|c| c.tbs.serial);
                let replaced =
                    serial.is_some_and(|s| self.ledger.replaced_since_setup(me, r.session, s));
                let commanded = self.commanded_rekey;
                let fresh = self
                    .ledger
                    .rekey_sent(now, me, r.session, r.txn, r.seq, commanded, &KEYS);
                if fresh && r.body.is_some() && replaced {
                    self.ledger.report.body_rekeys_after_refresh += 1;
                }
            }
            _ => {}
        }
    }

    /// The servers an offer from `caller` made recipients: those with an
    /// explicit entry, and those its policy seals anonymous entries for
    /// (KW-POLICY-001) — as many as it has anonymous entries, or the offer
    /// is not what the policy makes.
    fn offer_recipients(&mut self, o: &crate::wire::Offer) -> BTreeSet<Principal> {
        let mut recipients: BTreeSet<Principal> = o
            .body
            .recipients
            .iter()
            .filter_map(|r| r.id.clone())
            .collect();
        let anonymous = o
            .body
            .recipients
            .iter()
            .filter(|r| r.id.is_none() && r.kind == RecipientKind::Server)
            .count();
        let caller = self.device_index.get(&o.from).copied();
        let policy = caller.and_then(|c| self.policies.get(c));
        let mut trusted = Vec::new();
        if let Some(policy) = policy.filter(|p| p.anonymous_servers) {
            let server_of = |domain: &str| {
                Principal::new(&format!("{}@{domain}", policy.server_local_part)).ok()
            };
            if policy.own_server.is_some() {
                trusted.extend(server_of(o.from.domain()));
            }
            let peer = policy
                .peer_servers
                .get(o.to.domain())
                .copied()
                .unwrap_or(policy.peer_server);
            if o.to.domain() != o.from.domain() && peer.is_some() {
                trusted.extend(server_of(o.to.domain()));
            }
        }
        if trusted.len() != anonymous {
            let now = self.now;
            self.ledger.violation(
                now,
                format!(
                    "{}'s offer has {anonymous} anonymous server entries, its policy {}",
                    o.from,
                    trusted.len()
                ),
            );
        }
        recipients.extend(trusted);
        recipients
    }

    /// Counts sealed bodies and queries once each, whoever resends them;
    /// forwarded copies (with `via`) are not new.
    fn count_sent(&mut self, message: &Message) {
        let (re, txn, original) = match message {
            Message::CertQuery(q) => (MsgType::CertQuery, q.txn, q.via.is_none()),
            Message::Offer(o) => (MsgType::Offer, o.txn, o.via.is_none()),
            Message::Answer(a) => (MsgType::Answer, a.txn, true),
            Message::Rekey(r) => (MsgType::Rekey, r.txn, r.via.is_none() && r.body.is_some()),
            Message::RecordStart(r) => (MsgType::RecordStart, r.txn, true),
            Message::RecordKey(r) => (MsgType::RecordKey, r.txn, true),
            _ => return,
        };
        if !original || !self.ledger.count_once(re, txn) {
            return;
        }
        match message {
            Message::CertQuery(_) => self.ledger.report.cert_queries += 1,
            Message::Offer(o) => {
                self.ledger.report.messages_sealed += 1;
                let recipients = self.offer_recipients(o);
                self.ledger.offer_sealed(o.session, recipients);
            }
            _ => self.ledger.report.messages_sealed += 1,
        }
    }

    fn device_event(&mut self, i: usize, me: &Principal, e: DeviceEvent) {
        let now = self.now;
        match e {
            DeviceEvent::Registered { issued, .. } => {
                self.ledger.report.registrations += 1;
                let refresh = !self.holding.insert(i) && issued;
                if !issued {
                    self.ledger.report.registrations_with_certificate += 1;
                }
                if refresh {
                    self.ledger.report.refreshes += 1;
                    self.after_refresh(i);
                }
            }
            DeviceEvent::Deregistered => {
                self.ledger.report.deregistrations += 1;
                self.holding.remove(&i);
            }
            DeviceEvent::RegistrationExpired => {
                self.holding.remove(&i);
            }
            // A failed refresh leaves the registration (KW-SM-021).
            DeviceEvent::RegistrationFailed(_)
                if self
                    .devices
                    .get(i)
                    .is_none_or(|d| d.0.registered_until().is_none()) =>
            {
                self.holding.remove(&i);
            }
            DeviceEvent::CertificateAccepted {
                account: _,
                issuer,
                serial,
                not_after,
            } => self.ledger.accepted(
                now,
                me,
                "cert-notify",
                CertRef {
                    issuer: &issuer,
                    serial,
                    not_after,
                },
            ),
            DeviceEvent::IncomingCall(session, _) => {
                self.ledger.content_accepted(now, me, session);
                self.forged_event(i, session, ForgedEvent::Accepted);
                // The certificate the callee checked the offer with, as it
                // keeps it for the call (KW-SM-020): the one the offer
                // carried, or one it held.
                self.accept_peer(i, me, session, "offer");
                // The callee's keys start with its answer, now.
                self.ledger.epoch_started(now, me, session);
            }
            DeviceEvent::CallEstablished(session, _) => {
                self.ledger.content_accepted(now, me, session);
                let Some(&c) = self.call_of.get(&session) else {
                    return;
                };
                let Some(call) = self.calls.get_mut(c) else {
                    return;
                };
                if call.caller == i && !call.established {
                    call.established = true;
                    self.ledger.report.calls_established += 1;
                    self.forged_event(i, session, ForgedEvent::Accepted);
                    self.accept_peer(i, me, session, "answer");
                    self.ledger.epoch_started(now, me, session);
                    self.schedule_caller(c);
                } else if call.callee == i && !call.callee_established {
                    call.callee_established = true;
                    self.schedule_callee(c);
                }
            }
            DeviceEvent::TamperDetected(session, code) => {
                let carried = self.carried.get(&(i, session)).map(cert_ref);
                let unread = self.unread_answers.iter().any(|(_, s)| *s == session);
                self.ledger
                    .tamper_reported(now, me, session, code, carried, unread);
                self.ledger.tamper_detected(me, session);
                self.forged_event(i, session, ForgedEvent::Tamper(code));
            }
            DeviceEvent::CallFailed(session, code) => {
                self.forged_event(i, session, ForgedEvent::Failed(code));
            }
            DeviceEvent::Rekeyed {
                session,
                sending,
                epoch,
            } => {
                if sending {
                    self.ledger.report.rekeys += 1;
                } else if let Some(adversary) = self.adversary.as_mut() {
                    adversary.recv_epochs.insert((i, session), epoch);
                }
            }
            DeviceEvent::MediaReceived { .. } => self.ledger.report.media_packets_received += 1,
            DeviceEvent::CallEnded(session) => {
                let Some(&c) = self.call_of.get(&session) else {
                    return;
                };
                let Some(call) = self.calls.get_mut(c) else {
                    return;
                };
                if call.caller == i {
                    call.caller_ended = true;
                }
                if call.callee == i {
                    call.callee_ended = true;
                }
            }
            _ => {}
        }
    }

    /// Invariant (KW-CERT-002, KW-CERT-003, KW-CERT-006): the certificate
    /// a device confirmed for the peer of a call it takes up — what it
    /// checks the peer's signatures with for the whole call (KW-SM-020),
    /// read from the device rather than guessed from what was sent — was
    /// issued, had not expired, and had not been revoked before its
    /// issuer last handed it out.
    fn accept_peer(&mut self, i: usize, me: &Principal, session: SessionId, what: &str) {
        let now = self.now;
        let cert = self
            .devices
            .get(i)
            .and_then(|d| d.0.peer_certificate(&session))
            .cloned();
        match cert {
            Some(cert) => self.ledger.accepted(now, me, what, cert_ref(&cert)),
            None => self.ledger.violation(
                now,
                format!("{me} took up a call ({what}) without a certificate of its peer"),
            ),
        }
    }

    fn server_transmit(&mut self, i: usize, transmit: Transmit) {
        let Some((server, ..)) = self.servers.get(i) else {
            return;
        };
        if let Message::PinholeOpen(p) = &transmit.message {
            self.pinhole_sessions.insert((i, p.pinhole), p.session);
        }
        let me = server.account().clone();
        self.count_sent(&transmit.message);
        self.server_sent(i, &me, &transmit.message);
        self.forged_sent(i, &transmit.message);
        let unread =
            matches!(transmit.message, Message::Answer(_)) && self.unread_answer.take() == Some(i);
        match &transmit.message {
            Message::RegisterOk(ok) => {
                if let (Some(adversary), Some(cert)) = (self.adversary.as_mut(), ok.cert.as_ref()) {
                    adversary.issued(cert);
                }
            }
            // An answer the server could not read (it said why just
            // before) is relayed unread and unrecorded: the caller decides.
            Message::Answer(a) => {
                if unread {
                    self.unread_answers.insert((i, a.session));
                }
                self.answers_relayed.insert((i, a.session));
            }
            Message::RecordStart(r) => self.record_start_sent(i, r.session),
            _ => {}
        }
        self.signal(transmit.source, transmit.destination, &transmit.message);
    }

    /// A server's group of writes, committed to its store.
    fn server_commit(&mut self, i: usize, group: &[StoreWrite]) -> Result<(), StoreError> {
        let now = self.now;
        let Some((.., store, _)) = self.servers.get_mut(i) else {
            return Ok(());
        };
        store.commit(group)?;
        let domain = self
            .servers
            .get(i)
            .map(|s| s.0.account().domain().to_string());
        for write in group {
            match write {
                StoreWrite::Revoke { issuer, serial, .. } => {
                    self.ledger.revoked(now, issuer.as_str(), *serial);
                }
                // A registration ended (de-registered, or its term over).
                StoreWrite::DeleteRegistration(account) => self.ledger.unregistered(now, account),
                // What the server holds, not what it says: a certificate
                // is issued when a registration first stores it, and it
                // must verify under its issuer's anchor (KW-CERT-001).
                StoreWrite::PutRegistration(reg) => {
                    let cert = &reg.cert;
                    let issuer = cert.tbs.issuer.as_str().to_string();
                    if domain.as_deref() != Some(issuer.as_str()) {
                        self.ledger.violation(
                            now,
                            format!("{issuer} certificate stored by another domain's server"),
                        );
                    }
                    if !self.ledger.is_issued(&issuer, cert.tbs.serial) {
                        let expect = Expect {
                            subject: &reg.account,
                            role: None,
                            now: cert.tbs.not_before.0,
                        };
                        if let Err(e) = self.anchors.check(cert, expect) {
                            self.ledger.violation(
                                now,
                                format!(
                                    "{}: stored certificate {issuer}/{} does not verify: {e}",
                                    reg.account, cert.tbs.serial
                                ),
                            );
                        }
                        self.ledger.report.certificates_issued += 1;
                        self.ledger
                            .issued(&issuer, cert.tbs.serial, cert.tbs.not_after.0);
                    }
                    self.ledger.registered(
                        now,
                        &issuer,
                        &reg.account,
                        cert.tbs.serial,
                        reg.not_after,
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// What a firewall agent did: pinholes opened and closed are counted;
    /// a refusal is an invariant broken (every request a server sends its
    /// firewall in a run is one it may make).
    fn agent_event(&mut self, i: usize, event: FirewallEvent) {
        let now = self.now;
        match event {
            FirewallEvent::Opened { .. } => self.ledger.report.pinholes_opened += 1,
            FirewallEvent::Closed { .. } | FirewallEvent::Expired { .. } => {
                self.ledger.report.pinholes_closed += 1
            }
            // A request overtaken by its session's end, under loss (a
            // copy behind the close of its pinhole), is refused rightly.
            // The adversary's copy of a request, judged as an attack.
            FirewallEvent::Refused { .. } if self.answering_attack => {}
            FirewallEvent::Refused { re, code, pinhole } => {
                let server = self.domains.iter().find(|d| d.agent == i).map(|d| d.server);
                let session = pinhole.and_then(|(_, id)| {
                    server.and_then(|s| self.pinhole_sessions.get(&(s, id)).copied())
                });
                let live = match (server, session) {
                    (Some(s), Some(session)) => self
                        .servers
                        .get(s)
                        .is_some_and(|x| x.0.session_expiry(&session).is_some()),
                    _ => true,
                };
                if live {
                    self.ledger
                        .violation(now, format!("firewall {i} refused {re:?}: {code:?}"));
                } else {
                    self.ledger.report.firewall_refusals_after_end += 1;
                }
            }
            FirewallEvent::Applied { .. } => {}
        }
    }

    /// Certificates a server hands out of its own domain: to their subject
    /// (`register-ok`), to a query (`cert-notify`), in an offer it read and
    /// so checked (KW-CERT-002) before forwarding.
    fn server_sent(&mut self, i: usize, me: &Principal, message: &Message) {
        let now = self.now;
        let own = |cert: &Certificate| cert.tbs.issuer.as_str() == me.domain();
        match message {
            Message::RegisterOk(ok) => {
                if let Some(cert) = ok.cert.as_ref().filter(|c| own(c)) {
                    let re = MsgType::RegisterOk;
                    self.ledger
                        .vouched(now, me, re, ok.txn, None, cert_ref(cert));
                }
            }
            Message::CertNotify(n) if own(&n.cert) => {
                // A device's certificate is its registration's; a server's
                // own is configured.
                let subject =
                    Some(n.cert.tbs.subject.clone()).filter(|s| self.device_index.contains_key(s));
                let re = MsgType::CertNotify;
                self.ledger
                    .vouched(now, me, re, n.txn, subject.as_ref(), cert_ref(&n.cert));
            }
            Message::Offer(o) => {
                let read = self
                    .servers
                    .get(i)
                    .is_some_and(|s| s.0.holds_key(&o.session));
                if let Some(cert) = o.cert.as_ref().filter(|c| own(c) && read) {
                    // Vouched for when the server read it: it may hold the
                    // offer a while, until its firewall is ready
                    // (KW-SM-026), and a refresh may revoke the certificate
                    // meanwhile, on its way as any other.
                    let at = self.read_at.get(&(i, o.session)).copied().unwrap_or(now);
                    let re = MsgType::Offer;
                    self.ledger.vouched(at, me, re, o.txn, None, cert_ref(cert));
                }
            }
            _ => {}
        }
    }

    fn server_event(&mut self, i: usize, me: &Principal, e: ServerEvent) {
        let now = self.now;
        match e {
            ServerEvent::SessionEnded(session, end) => {
                self.ended_at.insert((i, session), now);
                if end == SessionEnd::Expired {
                    self.ledger.report.sessions_expired += 1;
                }
            }
            ServerEvent::BodyOpened { .. } => self.ledger.report.messages_opened_by_servers += 1,
            // The event only says when to look: what counts is whether the
            // server holds the key, against what the offer entitled.
            ServerEvent::KeyLearned(session)
                if self.servers.get(i).is_some_and(|s| s.0.holds_key(&session)) =>
            {
                self.read_at.insert((i, session), now);
                self.ledger.key_held(now, me, session);
            }
            // The server relays next an answer it could not read (an
            // attack's copy is refused, not relayed).
            ServerEvent::Rejected(MsgType::Answer, _) if !self.answering_attack => {
                self.unread_answer = Some(i)
            }
            ServerEvent::KeyReplaced(_) => self.ledger.report.session_keys_replaced += 1,
            ServerEvent::Observed(..) => self.ledger.report.messages_followed_by_servers += 1,
            ServerEvent::Forged(session, re, forgery) => {
                let kind = match forgery {
                    Forgery::Edit => Attack::ForgedEdit,
                    Forgery::Reordered => Attack::ReorderedEdits,
                };
                self.forged(session, re, kind);
            }
            ServerEvent::Tampered(session, re) => {
                let Some(call) = self.call_of.get(&session).and_then(|c| self.calls.get(*c)) else {
                    return;
                };
                let destination = if re == MsgType::Offer {
                    call.callee
                } else {
                    call.caller
                };
                if let Some((d, ..)) = self.devices.get(destination) {
                    let account = d.account().clone();
                    self.ledger.tampered(session, account, true);
                }
            }
            _ => {}
        }
    }

    fn recorder_event(&mut self, event: RecorderEvent) {
        let now = self.now;
        if let RecorderEvent::Recorded {
            session,
            from,
            stream,
            epoch,
            seq,
            frame,
            ..
        } = event
        {
            self.ledger
                .frame_recorded(now, (session, from, stream, epoch, seq), &frame);
        }
    }

    /// The invariants checked on every party's state, once a virtual
    /// second and at the end.
    pub(super) fn check_state(&mut self) {
        self.check_pinholes();
        self.check_keys();
    }

    /// Invariant: no pinhole outlives its session (KW-FW-004, KW-SM-013).
    /// Every pinhole a firewall holds belongs to a session its domain's
    /// server follows — or followed until less than a give-up ago, its
    /// close on its way (retransmitted under loss) — ends no later than
    /// that session's term, is gone once its own end has passed, and
    /// passes media to a party of the call that is of the firewall's
    /// domain (KW-SM-018).
    fn check_pinholes(&mut self) {
        let now = self.now;
        let mut found = Vec::new();
        for (d, dom) in self.domains.iter().enumerate() {
            let Some(fw) = self.firewall(d) else {
                continue;
            };
            let Some((server, ..)) = self.servers.get(dom.server) else {
                continue;
            };
            for p in fw.pinholes() {
                let key = |what: &str| format!("pinhole {d} {} {what}", p.pinhole);
                let closing = self
                    .ended_at
                    .get(&(dom.server, p.session))
                    .is_some_and(|at| now < at.saturating_add(give_up()));
                match server.session_expiry(&p.session) {
                    None if closing => {}
                    None => found.push((
                        key("ended"),
                        format!(
                            "{}: pinhole {} open a give-up after its session ended",
                            dom.name.as_str(),
                            p.pinhole
                        ),
                    )),
                    Some(end) if p.expires_at > end => found.push((
                        key("outlives"),
                        format!(
                            "{}: pinhole {} outlives its session",
                            dom.name.as_str(),
                            p.pinhole
                        ),
                    )),
                    Some(_) => {}
                }
                // The server's timer runs at the term; one millisecond of
                // slack for a timer armed at the instant it was asked for.
                if p.expires_at.saturating_add(1) < now {
                    found.push((
                        key("held"),
                        format!(
                            "{}: pinhole {} still held after its end",
                            dom.name.as_str(),
                            p.pinhole
                        ),
                    ));
                }
                let party = self
                    .call_of
                    .get(&p.session)
                    .and_then(|c| self.calls.get(*c))
                    .is_some_and(|c| {
                        [c.caller, c.callee].into_iter().any(|i| {
                            self.devices
                                .get(i)
                                .is_some_and(|x| x.3 == p.dst && domain_of(&x.3) == Some(d))
                        })
                    });
                if !party {
                    found.push((
                        key("dst"),
                        format!(
                            "{}: pinhole {} passes media to {}, no party of its call here",
                            dom.name.as_str(),
                            p.pinhole,
                            p.dst
                        ),
                    ));
                }
            }
        }
        for (key, v) in found {
            self.ledger.violation_once(now, key, v);
        }
    }

    /// Invariant: no server without a decryption entry holds a session's
    /// key (KW-SM-010): whatever a server reports, every session it
    /// follows whose key it holds had an entry for it in the offer the
    /// caller sent (`Ledger::key_held`).
    fn check_keys(&mut self) {
        let now = self.now;
        let mut held = Vec::new();
        for (server, ..) in &self.servers {
            for session in server.session_ids() {
                if server.holds_key(&session) {
                    held.push((server.account().clone(), session));
                }
            }
        }
        for (server, session) in held {
            self.ledger.key_held(now, &server, session);
        }
    }

    /// Whether domain `d`'s policy selects `session`: one of its parties
    /// is of the domain and selected (KW-REC-001).
    fn selected(&self, d: usize, session: &SessionId) -> bool {
        let (Some(policy), Some(domain)) = (self.record_policies.get(d), self.domains.get(d))
        else {
            return false;
        };
        let Some(call) = self.call_of.get(session).and_then(|c| self.calls.get(*c)) else {
            return false;
        };
        [call.caller, call.callee].into_iter().any(|p| {
            self.devices.get(p).is_some_and(|x| {
                let account = x.0.account();
                account.domain() == domain.name.as_str() && policy.selects(account)
            })
        })
    }

    /// Invariant: a server asks its recorder to record only sessions its
    /// policy selects (KW-REC-001).
    fn record_start_sent(&mut self, server: usize, session: SessionId) {
        let Some(d) = self.servers.get(server).and_then(|s| s.4) else {
            return;
        };
        if !self.selected(d, &session) {
            let now = self.now;
            let name = self.domains.get(d).map(|x| x.name.as_str().to_string());
            self.ledger.violation_once(
                now,
                format!("record {d} {}", crate::cbor::hex(&session.0)),
                format!(
                    "{name:?}: record-start for session {}, which its policy does not select",
                    crate::cbor::hex(&session.0)
                ),
            );
        }
        self.records_sent.insert((d, session));
    }

    /// Invariant, at the end of the run: each recorder holds keys of the
    /// sessions its domain's policy selects only — and of all of them: of
    /// every session whose `record-start` reached it; and its server sent
    /// one for every selected session whose answer it read and relayed
    /// with pinholes open (KW-REC-001, KW-SM-014). (An answer a server
    /// cannot read — its certificate expired or was revoked on the way —
    /// is relayed unread and the session goes unrecorded there, though
    /// the caller may take it with the certificate it holds, KW-SM-022.)
    pub(super) fn check_recordings(&mut self) {
        let now = self.now;
        let mut found = Vec::new();
        for (d, (recorder, ..)) in self.recorders.iter().enumerate() {
            let name = self
                .domains
                .get(d)
                .map_or_else(String::new, |x| x.name.as_str().to_string());
            for rec in recorder.recordings() {
                let session = crate::cbor::hex(&rec.session.0);
                if !self.selected(d, &rec.session) {
                    found.push(format!(
                        "{name}: its recorder holds keys of session {session}, not selected"
                    ));
                }
                if rec.key_count() == 0 {
                    found.push(format!(
                        "{name}: its recorder holds no key of session {session}"
                    ));
                }
            }
            let held = self
                .record_started
                .iter()
                .filter(|(r, _)| *r == d)
                .filter(|(_, s)| recorder.recording_of(s).is_none_or(|x| x.key_count() == 0))
                .count();
            if held > 0 {
                found.push(format!(
                    "{name}: its recorder holds no keys of {held} sessions whose record-start reached it"
                ));
            }
        }
        let mut missed = 0;
        for (i, session) in &self.answers_relayed {
            let Some(d) = self.servers.get(*i).and_then(|s| s.4) else {
                continue;
            };
            let pinholes = self
                .pinhole_sessions
                .iter()
                .any(|((s, _), x)| s == i && x == session);
            // A genuine answer: its caller took it.
            let taken = self
                .call_of
                .get(session)
                .and_then(|c| self.calls.get(*c))
                .is_some_and(|c| c.established);
            let unread = self.unread_answers.contains(&(*i, *session));
            let missing = pinholes
                && taken
                && self.selected(d, session)
                && !self.records_sent.contains(&(d, *session));
            if missing && unread {
                missed += 1;
            } else if missing {
                found.push(format!(
                    "server of domain {d} relayed the answer of selected session {} with pinholes, and sent no record-start",
                    crate::cbor::hex(&session.0)
                ));
            }
        }
        self.ledger.report.recordings_missed = missed;
        self.ledger.report.sessions_recorded = self
            .recorders
            .iter()
            .map(|r| r.0.recordings().count() as u64)
            .sum();
        for v in found {
            self.ledger.violation(now, v);
        }
    }

    /// Invariant, at the end of the run, once every session's term and
    /// every retransmission are over: no firewall holds a pinhole and no
    /// server follows a session (KW-SM-013, KW-FW-004).
    pub(super) fn check_quiescent(&mut self) {
        let now = self.now;
        let mut found = Vec::new();
        for (d, dom) in self.domains.iter().enumerate() {
            if let Some(fw) = self.firewall(d).filter(|fw| !fw.is_empty()) {
                found.push(format!(
                    "{}: {} pinholes left at the end",
                    dom.name.as_str(),
                    fw.len()
                ));
            }
        }
        for (server, ..) in &self.servers {
            let left = server.session_ids().len();
            if left > 0 {
                found.push(format!(
                    "{}: follows {left} sessions at the end",
                    server.account()
                ));
            }
        }
        for v in found {
            self.ledger.violation(now, v);
        }
    }

    /// End-of-run tallies.
    pub(super) fn finish(&mut self) {
        self.ledger.report.calls_completed = self
            .calls
            .iter()
            .filter(|c| c.established && c.hung_up && c.caller_ended && c.callee_ended)
            .count() as u64;
        self.ledger.report.calls_left_open = self
            .devices
            .iter()
            .map(|d| d.0.sessions().len() as u64)
            .sum();
        self.ledger.count_expired(self.end);
        self.ledger.report.datagrams_sent = self.net.sent;
        self.ledger.report.datagrams_lost = self.net.lost;
        self.ledger.report.datagrams_duplicated = self.net.duplicated;
        self.ledger.report.simulated_ms = self.end.saturating_sub(T0);
    }
}

/// How the simulator carries out one party's outputs.
struct SimDriver<'w> {
    world: &'w mut World,
    node: Node,
}

impl Driver<DeviceEvent> for SimDriver<'_> {
    fn transmit(&mut self, transmit: Transmit) {
        if let Node::Device(i) = self.node {
            self.world.device_transmit(i, transmit);
        }
    }
    fn commit(&mut self, _: &[StoreWrite]) -> Result<(), StoreError> {
        Ok(())
    }
    fn event(&mut self, event: DeviceEvent) {
        if let Node::Device(i) = self.node {
            let me = self.world.devices.get(i).map(|d| d.0.account().clone());
            if let Some(me) = me {
                self.world.device_event(i, &me, event);
            }
        }
    }
}

impl Driver<ServerEvent> for SimDriver<'_> {
    fn transmit(&mut self, transmit: Transmit) {
        if let Node::Server(i) = self.node {
            self.world.server_transmit(i, transmit);
        }
    }
    fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError> {
        match self.node {
            Node::Server(i) => self.world.server_commit(i, group),
            _ => Ok(()),
        }
    }
    fn event(&mut self, event: ServerEvent) {
        if let Node::Server(i) = self.node {
            let me = self.world.servers.get(i).map(|s| s.0.account().clone());
            if let Some(me) = me {
                self.world.server_event(i, &me, event);
            }
        }
    }
}

impl Driver<RecorderEvent> for SimDriver<'_> {
    fn transmit(&mut self, t: Transmit) {
        self.world.signal(t.source, t.destination, &t.message);
    }
    fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError> {
        match self.node {
            Node::Recorder(i) => match self.world.recorders.get_mut(i) {
                Some((_, _, store, _)) => store.commit(group),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
    fn event(&mut self, event: RecorderEvent) {
        self.world.recorder_event(event);
    }
}

impl Driver<FirewallEvent> for SimDriver<'_> {
    fn transmit(&mut self, t: Transmit) {
        self.world.signal(t.source, t.destination, &t.message);
    }
    fn commit(&mut self, _: &[StoreWrite]) -> Result<(), StoreError> {
        Ok(())
    }
    fn event(&mut self, event: FirewallEvent) {
        if let Node::Agent(i) = self.node {
            self.world.agent_event(i, event);
        }
    }
}
