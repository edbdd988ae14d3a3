//! What the simulation counts and the invariants it checks as it runs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::core::{Millis, secs};
use crate::wire::{Domain, MsgType, Principal, SessionId, TxnId};

/// The summary of a run. Field order is the output order.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// Seed of the run.
    pub seed: u64,
    /// Domains with devices.
    pub domains: usize,
    /// Devices per domain.
    pub devices: usize,
    /// Loss probability.
    pub loss: f64,
    /// Registrations completed by devices.
    pub registrations: u64,
    /// Certificates issued by servers.
    pub certificates_issued: u64,
    /// Certificate queries sent by devices.
    pub cert_queries: u64,
    /// Calls placed.
    pub calls_attempted: u64,
    /// Calls the caller saw established.
    pub calls_established: u64,
    /// Established calls that both parties saw end after the hang-up.
    pub calls_completed: u64,
    /// Rekeys sent by devices.
    pub rekeys: u64,
    /// Sealed bodies made (offers, answers, rekeys, media keys).
    pub messages_sealed: u64,
    /// Sealed bodies opened by servers with their own entry.
    pub messages_opened_by_servers: u64,
    /// In-session messages servers decrypted with a session key.
    pub messages_followed_by_servers: u64,
    /// Pinholes opened.
    pub pinholes_opened: u64,
    /// Pinholes closed.
    pub pinholes_closed: u64,
    /// Media packets sent by devices.
    pub media_packets_sent: u64,
    /// Media packets decrypted by their destination.
    pub media_packets_received: u64,
    /// Media packets recorded.
    pub media_packets_recorded: u64,
    /// Changes injected by a read-only server (`--tamper`).
    pub tampers_injected: u64,
    /// Of those, detected by the destination.
    pub tampers_detected: u64,
    /// Datagrams a party refused (`ProtocolError`): mostly duplicates and
    /// late responses of lost or retransmitted exchanges.
    pub datagrams_refused: u64,
    /// Application commands a device refused (`ApiMisuse`): media, text or
    /// a hang-up for a call that failed or ended.
    pub commands_refused: u64,
    /// Datagrams sent, lost and duplicated by the network.
    pub datagrams_sent: u64,
    /// Datagrams lost.
    pub datagrams_lost: u64,
    /// Datagrams duplicated.
    pub datagrams_duplicated: u64,
    /// Virtual time simulated, in milliseconds.
    pub simulated_ms: u64,
    /// Invariants broken, in the order found; empty when all hold.
    pub invariant_violations: Vec<String>,
}

impl Report {
    /// `name: value` lines, in field order.
    pub fn to_text(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut out = String::new();
        if let Some(map) = value.as_object() {
            for (k, v) in map {
                match v {
                    serde_json::Value::Array(items) => {
                        out.push_str(&format!("{k}: {}\n", items.len()));
                        for item in items {
                            out.push_str(&format!("  - {}\n", item.as_str().unwrap_or_default()));
                        }
                    }
                    other => out.push_str(&format!("{k}: {other}\n")),
                }
            }
        }
        out
    }
}

/// A tamper waiting for its destination's verdict.
#[derive(Debug, Clone)]
struct Tamper {
    destination: Principal,
    detected: bool,
}

/// Counters and the state the invariants need.
#[derive(Debug, Default)]
pub struct Ledger {
    pub report: Report,
    /// Offer recipients as the caller sealed them, by session.
    recipients: BTreeMap<SessionId, BTreeSet<Principal>>,
    /// Sealed bodies and queries counted, by type and transaction.
    counted: BTreeSet<(MsgType, TxnId)>,
    /// Certificate ends by (issuer domain, serial).
    issued: BTreeMap<(String, u64), u64>,
    /// Revoked (issuer, serial).
    revoked: BTreeSet<(Domain, u64)>,
    /// Frames sent, by (session, sender, stream, description, seq).
    sent: BTreeMap<(SessionId, Principal, u64, u64, u64), Vec<u8>>,
    tampers: BTreeMap<SessionId, Tamper>,
}

impl Ledger {
    pub fn violation(&mut self, now: Millis, what: String) {
        // Bounded: the first hundred tell the story.
        if self.report.invariant_violations.len() < 100 {
            self.report
                .invariant_violations
                .push(format!("t={now}ms: {what}"));
        }
    }

    /// Counts a sealed body or query once, however often it is resent.
    pub fn count_once(&mut self, re: MsgType, txn: TxnId) -> bool {
        self.counted.insert((re, txn))
    }

    pub fn offer_sealed(&mut self, session: SessionId, recipients: BTreeSet<Principal>) {
        self.recipients.entry(session).or_insert(recipients);
    }

    /// Invariant: no server without a decryption entry ever holds a
    /// session's key.
    pub fn key_learned(&mut self, now: Millis, server: &Principal, session: SessionId) {
        let entitled = self
            .recipients
            .get(&session)
            .is_some_and(|r| r.contains(server));
        if !entitled {
            self.violation(
                now,
                format!("{server} holds the key of a session it has no entry in"),
            );
        }
    }

    pub fn issued(&mut self, issuer: &str, serial: u64, not_after: u64) {
        self.issued.insert((issuer.to_string(), serial), not_after);
    }

    /// Invariant: every certificate's term equals its registration's.
    pub fn registered(
        &mut self,
        now: Millis,
        issuer: &str,
        account: &Principal,
        serial: u64,
        not_after: u64,
    ) {
        match self.issued.get(&(issuer.to_string(), serial)) {
            Some(end) if *end == not_after => {}
            Some(end) => self.violation(
                now,
                format!("{account}: certificate {serial} ends {end}, registration {not_after}"),
            ),
            None => self.violation(
                now,
                format!("{account}: registered with unknown certificate {serial}"),
            ),
        }
    }

    pub fn revoked(&mut self, issuer: Domain, serial: u64) {
        self.revoked.insert((issuer, serial));
    }

    /// Invariant: no expired or revoked certificate is accepted.
    pub fn certificate_accepted(
        &mut self,
        now: Millis,
        by: &Principal,
        issuer: &str,
        serial: u64,
        not_after: u64,
    ) {
        if not_after < secs(now) {
            self.violation(
                now,
                format!("{by} accepted expired certificate {issuer}/{serial}"),
            );
        }
        if self
            .revoked
            .iter()
            .any(|(d, s)| d.as_str() == issuer && *s == serial)
        {
            self.violation(
                now,
                format!("{by} accepted revoked certificate {issuer}/{serial}"),
            );
        }
    }

    pub fn frame_sent(&mut self, key: (SessionId, Principal, u64, u64, u64), frame: Vec<u8>) {
        self.report.media_packets_sent += 1;
        self.sent.insert(key, frame);
    }

    /// Invariant: every recorded media packet decrypts to what was sent.
    pub fn frame_recorded(
        &mut self,
        now: Millis,
        key: (SessionId, Principal, u64, u64, u64),
        frame: &[u8],
    ) {
        self.report.media_packets_recorded += 1;
        match self.sent.get(&key) {
            Some(sent) if sent.as_slice() == frame => {}
            Some(_) => self.violation(
                now,
                format!(
                    "recorded frame of {} seq {} differs from the one sent",
                    key.1, key.4
                ),
            ),
            None => self.violation(now, format!("recorded a frame of {} nobody sent", key.1)),
        }
    }

    pub fn tampered(&mut self, session: SessionId, destination: Principal) {
        self.report.tampers_injected += 1;
        self.tampers.entry(session).or_insert(Tamper {
            destination,
            detected: false,
        });
    }

    pub fn tamper_detected(&mut self, by: &Principal, session: SessionId) {
        if let Some(t) = self.tampers.get_mut(&session) {
            if &t.destination == by && !t.detected {
                t.detected = true;
                self.report.tampers_detected += 1;
            }
        }
    }

    /// Invariant: a read-only server's change is always detected: the
    /// destination never accepts content a tamper touched.
    pub fn content_accepted(&mut self, now: Millis, by: &Principal, session: SessionId) {
        if let Some(t) = self.tampers.get(&session) {
            if &t.destination == by && !t.detected {
                self.violation(
                    now,
                    format!("{by} accepted a body changed by a read-only server"),
                );
            }
        }
    }
}
