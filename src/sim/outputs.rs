//! Carrying out what the state machines ask: datagrams over the simulated
//! network, media through the firewalls, store writes, firewall commands;
//! and watching their events for the counters and invariants.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::net::{Node, What};
use super::world::World;
use crate::core::{
    Addr, DeviceEvent, Firewall, FirewallCommand, Output, RecorderEvent, ServerEvent, Store,
    StoreWrite,
};
use crate::wire::{Message, MsgType, Principal, Transport};

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
            let now = self.now;
            self.net.datagram(now, node, from, message.encode());
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
                let mut recipients: BTreeSet<Principal> = o
                    .body
                    .recipients
                    .iter()
                    .filter_map(|r| r.id.clone())
                    .collect();
                recipients.insert(o.to.clone());
                self.ledger.offer_sealed(o.session, recipients);
            }
            _ => self.ledger.report.messages_sealed += 1,
        }
    }

    fn device_event(&mut self, i: usize, me: &Principal, e: DeviceEvent) {
        let now = self.now;
        match e {
            DeviceEvent::Registered { .. } => self.ledger.report.registrations += 1,
            DeviceEvent::CertificateAccepted {
                issuer,
                serial,
                not_after,
                ..
            } => self
                .ledger
                .certificate_accepted(now, me, &issuer, serial, not_after),
            DeviceEvent::IncomingCall(session, _) => self.ledger.content_accepted(now, me, session),
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
                    self.schedule_call(c);
                }
            }
            DeviceEvent::TamperDetected(session, _) => self.ledger.tamper_detected(me, session),
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
                self.signal(addr, to, &message);
            }
            Output::Store(write) => {
                if let StoreWrite::Revoke { issuer, serial, .. } = &write {
                    self.ledger.revoked(issuer.clone(), *serial);
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
            Output::Event(e) => self.server_event(&me, e),
        }
    }

    fn server_event(&mut self, me: &Principal, e: ServerEvent) {
        let now = self.now;
        let domain = me.domain().to_string();
        match e {
            ServerEvent::CertificateIssued {
                serial, not_after, ..
            } => {
                self.ledger.report.certificates_issued += 1;
                self.ledger.issued(&domain, serial, not_after);
            }
            ServerEvent::Registered {
                account,
                serial,
                not_after,
            } => self
                .ledger
                .registered(now, &domain, &account, serial, not_after),
            ServerEvent::BodyOpened { .. } => self.ledger.report.messages_opened_by_servers += 1,
            ServerEvent::KeyLearned(session) => self.ledger.key_learned(now, me, session),
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

    /// Invariant: no pinhole outlives its session. Every live pinhole
    /// belongs to a session its server still follows, and ends no later.
    pub(super) fn check_pinholes(&mut self) {
        let now = self.now;
        let mut found = Vec::new();
        for dom in &mut self.domains {
            let Some(fw) = dom.firewall.as_mut() else {
                continue;
            };
            fw.expire(now);
            let Some((server, ..)) = self.servers.get(dom.server) else {
                continue;
            };
            for p in fw.pinholes() {
                match server.session_expiry(&p.session) {
                    None => found.push(format!(
                        "pinhole {} open after its session ended",
                        p.pinhole
                    )),
                    Some(end) if p.expires_at > end => {
                        found.push(format!("pinhole {} outlives its session", p.pinhole))
                    }
                    Some(_) => {}
                }
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
        self.ledger.report.datagrams_sent = self.net.sent;
        self.ledger.report.datagrams_lost = self.net.lost;
        self.ledger.report.datagrams_duplicated = self.net.duplicated;
        self.ledger.report.simulated_ms = self.end.saturating_sub(super::world::T0);
    }
}
