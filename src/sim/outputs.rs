//! Carrying out what the state machines ask: datagrams over the simulated
//! network, media through the firewalls, store writes, firewall commands;
//! and watching their events for the counters and invariants.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::checks::CertRef;
use super::net::{Node, What};
use super::plan::{KEYS, T0};
use super::world::World;
use crate::core::{
    Addr, DeviceEvent, Firewall, FirewallCommand, Output, RecorderEvent, ServerEvent, SessionEnd,
    Store, StoreWrite,
};
use crate::wire::{Certificate, Message, MsgType, Principal, RecipientKind, SessionId, Transport};

fn cert_ref(cert: &Certificate) -> CertRef<'_> {
    CertRef {
        issuer: cert.tbs.issuer.as_str(),
        serial: cert.tbs.serial,
        not_after: cert.tbs.not_after.0,
    }
}

impl World {
    /// Carries out everything `node` asked for, then re-arms its timer.
    pub(super) fn drain(&mut self, node: Node) {
        match node {
            Node::Device(i) => {
                let mut outputs = Vec::new();
                if let Some((d, ..)) = self.devices.get_mut(i) {
                    while let Some(o) = d.poll_output() {
                        outputs.push(o);
                    }
                }
                for o in outputs {
                    self.device_output(i, o);
                }
            }
            Node::Server(i) => {
                let mut outputs = Vec::new();
                if let Some((s, ..)) = self.servers.get_mut(i) {
                    while let Some(o) = s.poll_output() {
                        outputs.push(o);
                    }
                }
                for o in outputs {
                    self.server_output(i, o);
                }
            }
            Node::Recorder(i) => {
                let mut outputs = Vec::new();
                if let Some((r, _)) = self.recorders.get_mut(i) {
                    while let Some(o) = r.poll_output() {
                        outputs.push(o);
                    }
                }
                for o in outputs {
                    self.recorder_output(i, o);
                }
            }
        }
        let next = match node {
            Node::Device(i) => self.devices.get(i).and_then(|d| d.0.poll_timeout()),
            Node::Server(i) => self.servers.get(i).and_then(|s| s.0.poll_timeout()),
            Node::Recorder(i) => self.recorders.get(i).and_then(|r| r.0.poll_timeout()),
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

    fn domain_of(&self, addr: &Addr) -> Option<usize> {
        let IpAddr::V4(v4) = addr.ip() else {
            return None;
        };
        let [a, b, c, _] = v4.octets();
        let n = usize::from(b);
        let internal = a == 10;
        let public = a == 198 && b == 51 && c == 100;
        let n = if public {
            usize::from(v4.octets()[3])
        } else {
            n
        };
        (internal || public).then(|| n.checked_sub(1)).flatten()
    }

    /// The source address a packet leaves its domain with: the public
    /// address the firewall maps the sender to, if any.
    fn translated(&self, from: Addr) -> Addr {
        let Some(d) = self.domain_of(&from) else {
            return from;
        };
        let Some(fw) = self.domains.get(d).and_then(|d| d.firewall.as_ref()) else {
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
        let Some(d) = self.domain_of(&to) else { return };
        let now = self.now;
        let Some(fw) = self.domains.get_mut(d).and_then(|d| d.firewall.as_mut()) else {
            return;
        };
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

    fn device_output(&mut self, i: usize, o: Output<DeviceEvent>) {
        let Some((device, _, contact, media)) = self.devices.get(i) else {
            return;
        };
        let me = device.account().clone();
        let (contact, media) = (*contact, *media);
        match o {
            Output::Transmit { to, message } => {
                self.count_sent(&message);
                self.device_sent(i, &me, &message);
                if let Message::Media(m) = &message {
                    if let Some(frame) = self.pending_frame.clone() {
                        self.ledger.frame_sent(
                            (m.session, m.from.clone(), m.stream, m.epoch, m.seq),
                            frame,
                        );
                    }
                    self.media(media, to, &message);
                } else {
                    self.signal(contact, to, &message);
                }
            }
            Output::Event(e) => self.device_event(i, &me, e),
            Output::Store(_) | Output::Firewall(_) => {}
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
                account,
                issuer,
                serial,
                not_after,
            } => {
                self.cached.insert((i, account), not_after);
                self.ledger.accepted(
                    now,
                    me,
                    "cert-notify",
                    CertRef {
                        issuer: &issuer,
                        serial,
                        not_after,
                    },
                )
            }
            DeviceEvent::IncomingCall(session, caller) => {
                self.ledger.content_accepted(now, me, session);
                self.accept_carried(i, me, session, "offer");
                // The callee keeps the caller's certificate (KW-ERR-004).
                if let Some(cert) = self.carried.get(&(i, session)) {
                    let end = cert.tbs.not_after.0;
                    self.cached.insert((i, caller), end);
                }
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
                    let callee = call.callee;
                    self.ledger.report.calls_established += 1;
                    // Verified with the callee's certificate the caller
                    // holds, if still valid; else with the one carried.
                    let peer = self.devices.get(callee).map(|d| d.0.account().clone());
                    let held = peer
                        .and_then(|p| self.cached.get(&(i, p)))
                        .is_some_and(|end| *end >= crate::core::secs(now));
                    if !held {
                        self.accept_carried(i, me, session, "answer");
                    }
                    self.ledger.epoch_started(now, me, session);
                    self.schedule_caller(c);
                } else if call.callee == i && !call.callee_established {
                    call.callee_established = true;
                    self.schedule_callee(c);
                }
            }
            DeviceEvent::TamperDetected(session, code) => {
                let carried = self.carried.get(&(i, session)).map(cert_ref);
                self.ledger.tamper_reported(now, me, session, code, carried);
                self.ledger.tamper_detected(me, session);
            }
            DeviceEvent::Rekeyed { sending: true, .. } => self.ledger.report.rekeys += 1,
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

    /// The certificate of the offer or answer a device just took up.
    fn accept_carried(&mut self, i: usize, me: &Principal, session: SessionId, what: &str) {
        let now = self.now;
        if let Some(cert) = self.carried.get(&(i, session)) {
            self.ledger.accepted(now, me, what, cert_ref(cert));
        }
    }

    fn server_output(&mut self, i: usize, o: Output<ServerEvent>) {
        let Some((server, _, addr, _, domain)) = self.servers.get(i) else {
            return;
        };
        let me = server.account().clone();
        let (addr, domain) = (*addr, *domain);
        let now = self.now;
        match o {
            Output::Transmit { to, message } => {
                self.count_sent(&message);
                self.server_sent(i, &me, &message);
                self.signal(addr, to, &message);
            }
            Output::Store(write) => {
                if let StoreWrite::Revoke { issuer, serial, .. } = &write {
                    self.ledger.revoked(now, issuer.as_str(), *serial);
                }
                if let Some((.., store, _)) = self.servers.get_mut(i) {
                    let _ = store.apply(&write);
                }
            }
            Output::Firewall(command) => {
                let Some(fw) = domain
                    .and_then(|d| self.domains.get_mut(d))
                    .and_then(|d| d.firewall.as_mut())
                else {
                    return;
                };
                let closing = match &command {
                    FirewallCommand::Close { pinhole } => {
                        fw.pinholes().iter().any(|p| p.pinhole == *pinhole)
                    }
                    _ => false,
                };
                match fw.apply(now, &command) {
                    Ok(()) => match command {
                        FirewallCommand::Open { .. } => self.ledger.report.pinholes_opened += 1,
                        FirewallCommand::Close { .. } if closing => {
                            self.ledger.report.pinholes_closed += 1
                        }
                        _ => {}
                    },
                    Err(e) => self
                        .ledger
                        .violation(now, format!("{me}: firewall refused {command:?}: {e}")),
                }
            }
            Output::Event(e) => self.server_event(i, &me, e),
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
                    let re = MsgType::Offer;
                    self.ledger
                        .vouched(now, me, re, o.txn, None, cert_ref(cert));
                }
            }
            _ => {}
        }
    }

    fn server_event(&mut self, i: usize, me: &Principal, e: ServerEvent) {
        let now = self.now;
        let domain = me.domain().to_string();
        match e {
            ServerEvent::CertificateIssued {
                serial, not_after, ..
            } => {
                self.ledger.report.certificates_issued += 1;
                self.ledger.issued(&domain, serial, not_after);
            }
            ServerEvent::Unregistered { account, .. } => self.ledger.unregistered(now, &account),
            ServerEvent::SessionEnded(_, SessionEnd::Expired) => {
                self.ledger.report.sessions_expired += 1
            }
            ServerEvent::Registered {
                account,
                serial,
                not_after,
            } => self
                .ledger
                .registered(now, &domain, &account, serial, not_after),
            ServerEvent::BodyOpened { .. } => self.ledger.report.messages_opened_by_servers += 1,
            // The event only says when to look: what counts is whether the
            // server holds the key, against what the offer entitled.
            ServerEvent::KeyLearned(session)
                if self.servers.get(i).is_some_and(|s| s.0.holds_key(&session)) =>
            {
                self.ledger.key_held(now, me, session);
            }
            ServerEvent::KeyReplaced(_) => self.ledger.report.session_keys_replaced += 1,
            ServerEvent::Observed(..) => self.ledger.report.messages_followed_by_servers += 1,
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
                    self.ledger.tampered(session, account);
                }
            }
            _ => {}
        }
    }

    fn recorder_output(&mut self, i: usize, o: Output<RecorderEvent>) {
        let Some((_, addr)) = self.recorders.get(i) else {
            return;
        };
        let addr = *addr;
        let now = self.now;
        match o {
            Output::Transmit { to, message } => self.signal(addr, to, &message),
            Output::Event(RecorderEvent::Recorded {
                session,
                from,
                stream,
                epoch,
                seq,
                frame,
                ..
            }) => self
                .ledger
                .frame_recorded(now, (session, from, stream, epoch, seq), &frame),
            Output::Event(_) | Output::Store(_) | Output::Firewall(_) => {}
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
    /// server follows, ends no later than that session's term, is gone
    /// once its own end has passed (the server closes it; the simulator
    /// never lets the firewall reclaim it), and passes media to a party of
    /// the call that is of the firewall's domain (KW-SM-018).
    fn check_pinholes(&mut self) {
        let now = self.now;
        let mut found = Vec::new();
        for (d, dom) in self.domains.iter().enumerate() {
            let Some(fw) = dom.firewall.as_ref() else {
                continue;
            };
            let Some((server, ..)) = self.servers.get(dom.server) else {
                continue;
            };
            for p in fw.pinholes() {
                let key = |what: &str| format!("pinhole {d} {} {what}", p.pinhole);
                match server.session_expiry(&p.session) {
                    None => found.push((
                        key("ended"),
                        format!(
                            "{}: pinhole {} open after its session ended",
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
                                .is_some_and(|x| x.3 == p.dst && self.domain_of(&x.3) == Some(d))
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

    /// Invariant, at the end of the run, once every session's term and
    /// every retransmission are over: no firewall holds a pinhole and no
    /// server follows a session (KW-SM-013, KW-FW-004).
    pub(super) fn check_quiescent(&mut self) {
        let now = self.now;
        let mut found = Vec::new();
        for dom in &self.domains {
            if let Some(fw) = dom.firewall.as_ref().filter(|fw| !fw.is_empty()) {
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
