//! What the simulation counts and the invariants it checks as it runs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::core::Millis;
use crate::wire::{MsgType, Principal, SessionId, TxnId};

/// Whole seconds of the simulation's one clock (wall and monotonic
/// alike, `Now::at`).
pub(super) fn secs(ms: Millis) -> u64 {
    ms / 1000
}

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
    /// Registrations completed by devices (F1 and F2, refreshes included).
    pub registrations: u64,
    /// Of those, refreshes: a new certificate for a device that was
    /// registered, the previous one revoked (KW-REG-014, KW-SM-009).
    pub refreshes: u64,
    /// Of those, re-registrations with the certificate held (F2).
    pub registrations_with_certificate: u64,
    /// De-registrations completed by devices (KW-REG-015).
    pub deregistrations: u64,
    /// Registrations a server ended at their term, without a refresh
    /// (KW-REG-016): those of devices that were off line.
    pub registrations_expired: u64,
    /// Devices that went off line for longer than their term.
    pub outages: u64,
    /// Certificates issued by servers.
    pub certificates_issued: u64,
    /// Certificates revoked by their issuer (refresh, de-registration).
    pub certificates_revoked: u64,
    /// Issued certificates whose term ended during the run, unrevoked.
    pub certificates_expired: u64,
    /// Certificates a device accepted after their issuer had revoked them,
    /// its issuer having vouched for them before: the revocation happened
    /// while they were on their way, and a device learns of revocations
    /// only through its server. Not an invariant broken.
    pub revoked_certificates_accepted: u64,
    /// Offers and answers a device refused because the certificate they
    /// carried had expired on the way (reported as `TamperDetected` with
    /// `cert-expired`).
    pub expired_certificates_refused: u64,
    /// Certificate queries sent by devices.
    pub cert_queries: u64,
    /// Calls placed.
    pub calls_attempted: u64,
    /// Calls the caller saw established.
    pub calls_established: u64,
    /// Established calls that both parties saw end after the hang-up.
    pub calls_completed: u64,
    /// Calls a device still had at the end (a peer's `bye` never arrived;
    /// devices have no session term).
    pub calls_left_open: u64,
    /// Rekeys sent by devices (commanded, by time and by count).
    pub rekeys: u64,
    /// Of those, due by time (`rekey_after_secs`, KW-SM-006).
    pub rekeys_by_time: u64,
    /// Of those, due by message count (`rekey_after_messages`).
    pub rekeys_by_count: u64,
    /// Body-form rekeys signed after a refresh replaced the certificate the
    /// session was set up with (KW-SM-020).
    pub body_rekeys_after_refresh: u64,
    /// Offers a server re-keyed (claim 39, KW-SM-011), and servers that
    /// then took the new key from the answer (KW-CRYPTO-040): one
    /// `KeyReplaced` each.
    pub session_keys_replaced: u64,
    /// Sealed bodies made (offers, answers, rekeys, media keys).
    pub messages_sealed: u64,
    /// Sealed bodies opened by servers with their own entry.
    pub messages_opened_by_servers: u64,
    /// In-session messages servers decrypted with a session key.
    pub messages_followed_by_servers: u64,
    /// Sessions servers ended at their term (KW-SM-013), one per server
    /// that followed the session.
    pub sessions_expired: u64,
    /// Pinholes opened.
    pub pinholes_opened: u64,
    /// Pinholes closed (by their server, or at the end of their lifetime
    /// by the firewall).
    pub pinholes_closed: u64,
    /// Firewall requests refused because their session had ended and its
    /// pinhole was gone when they arrived (overtaken under loss).
    pub firewall_refusals_after_end: u64,
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
    /// Attacks the adversary injected (`--adversary`), by kind: each
    /// detected (refused with the error its kind expects, or reported as
    /// tampering), refused for another reason (counted by reason), or
    /// accepted — an invariant broken.
    pub attacks: BTreeMap<&'static str, AttackFigures>,
    /// Attacks injected, of every kind.
    pub attacks_injected: u64,
    /// Attacks neither detected nor refused: accepted, or without a
    /// verdict at the end of the run. Each is an invariant broken.
    pub attacks_unaccounted: u64,
    /// Sessions each domain's recorder holds keys of, all selected by its
    /// server's policy: recordings started by a delivered `record-start`.
    pub sessions_recorded: u64,
    /// Selected sessions established but not recorded: their server could
    /// not read the answer (its certificate expired or was revoked on the
    /// way), relayed it unread, and the caller took it with the
    /// certificate it held (KW-SM-022). Not an invariant broken: the
    /// protocol leaves the caller to decide.
    pub recordings_missed: u64,
    /// Answers refused with `permission-denied` by their caller because a
    /// server the callee named read-modify could not read them (the
    /// callee's certificate unknown to it, expired or revoked on the way)
    /// and relayed them unsigned: the edit KW-SEAL-011 requires is missing.
    /// Not tampering and not an invariant broken: the call fails.
    pub unread_answers_refused: u64,
    /// Datagrams a party refused (`ProtocolError`): mostly duplicates and
    /// late responses of lost or retransmitted exchanges.
    pub datagrams_refused: u64,
    /// Application commands a device refused (`ApiMisuse`). The script
    /// gives only commands the device's reported state allows, so this is
    /// 0 unless an invariant broke.
    pub commands_refused: u64,
    /// Scripted commands not given because the device's state did not
    /// allow them: media, text or a rekey for a call that failed or ended
    /// early under loss, a call from a device whose registration failed.
    pub commands_skipped: u64,
    /// Datagrams sent, lost and duplicated by the network.
    pub datagrams_sent: u64,
    /// Datagrams lost.
    pub datagrams_lost: u64,
    /// Datagrams duplicated.
    pub datagrams_duplicated: u64,
    /// Datagrams that arrived for a device that was off line.
    pub datagrams_unreachable: u64,
    /// Virtual time simulated, in milliseconds.
    pub simulated_ms: u64,
    /// Events the run processed (deliveries, timers, scripted actions); a
    /// run cut short at the limit breaks an invariant.
    pub events: u64,
    /// Invariants broken, in the order found; empty when all hold.
    pub invariant_violations: Vec<String>,
}

/// What became of the attacks of one kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AttackFigures {
    /// Injected.
    pub injected: u64,
    /// Refused by their target with the error the attack's kind expects
    /// (or reported as tampering), by error code name.
    pub detected: u64,
    /// Refused for another reason.
    pub refused: u64,
    /// Accepted by their target: a weakness, and an invariant broken.
    pub accepted: u64,
    /// The codes they were detected with, and how often.
    pub detected_codes: BTreeMap<String, u64>,
    /// Why those refused for another reason were, and how often.
    pub refused_reasons: BTreeMap<String, u64>,
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
                    serde_json::Value::Object(entries) => {
                        out.push_str(&format!("{k}: {}\n", entries.len()));
                        for (name, entry) in entries {
                            out.push_str(&format!("  {name}: {entry}\n"));
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
    /// Whether `--tamper` made it (counted in `tampers_*`), rather than a
    /// forgery of the adversary (counted in `attacks`).
    counted: bool,
}

/// What the simulator knows of a certificate, from its issuer's outputs.
#[derive(Debug, Clone)]
struct CertRecord {
    not_after: u64,
    /// Whether a registration has used it: the first is its issue's (F1).
    registered: bool,
    revoked_at: Option<Millis>,
    /// When its issuer last handed it out: in a `register-ok`, a
    /// `cert-notify`, or an offer it read and forwarded.
    vouched_at: Option<Millis>,
}

/// A certificate as a message carries it.
pub struct CertRef<'a> {
    pub issuer: &'a str,
    pub serial: u64,
    pub not_after: u64,
}

/// Why a rekey was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyCause {
    Commanded,
    Time,
    Count,
}

/// Counters and the state the invariants need.
#[derive(Debug, Default)]
pub struct Ledger {
    pub report: Report,
    /// Who each session's offer made a recipient, as the caller sent it
    /// and its policy explains its anonymous entries.
    entitled: BTreeMap<SessionId, BTreeSet<Principal>>,
    /// Sealed bodies and queries counted, by type and transaction.
    counted: BTreeSet<(MsgType, TxnId)>,
    /// Certificates issued, by (issuer domain, serial).
    certs: BTreeMap<(String, u64), CertRecord>,
    /// Each account's current registration at its server: issuer, serial
    /// of its certificate, end.
    current: BTreeMap<Principal, (String, u64, u64)>,
    /// Responses and forwarded offers whose certificate was checked, by
    /// sender and transaction: a retransmission repeats what was true when
    /// they were first sent.
    vouches: BTreeSet<(Principal, MsgType, TxnId)>,
    /// Rekeys classified, by transaction.
    rekeys: BTreeSet<TxnId>,
    /// When each device's sending direction of each call started its
    /// epoch (seconds, as the keys count it).
    epoch_start: BTreeMap<(Principal, SessionId), u64>,
    /// The serial of each device's certificate when it set up each call.
    setup_serial: BTreeMap<(Principal, SessionId), u64>,
    /// Violations already reported, by what they concern: one line each.
    reported: BTreeSet<String>,
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

    /// A violation reported once for `key`, however often it is seen.
    pub fn violation_once(&mut self, now: Millis, key: String, what: String) {
        if self.reported.insert(key) {
            self.violation(now, what);
        }
    }

    fn figures(&mut self, kind: &'static str) -> &mut AttackFigures {
        self.report.attacks.entry(kind).or_default()
    }

    /// An attack of `kind` was injected.
    pub fn attack_injected(&mut self, kind: &'static str) {
        self.figures(kind).injected += 1;
        self.report.attacks_injected += 1;
    }

    /// Its target refused it with the error its kind expects.
    pub fn attack_detected(&mut self, kind: &'static str, code: String) {
        let f = self.figures(kind);
        f.detected += 1;
        *f.detected_codes.entry(code).or_default() += 1;
    }

    /// Its target refused it for another reason, or it could not reach it.
    pub fn attack_refused(&mut self, kind: &'static str, reason: String) {
        let f = self.figures(kind);
        f.refused += 1;
        *f.refused_reasons.entry(reason).or_default() += 1;
    }

    /// Invariant: no attack is accepted.
    pub fn attack_accepted(&mut self, now: Millis, kind: &'static str, what: String) {
        self.figures(kind).accepted += 1;
        self.violation(now, format!("attack {kind} accepted: {what}"));
    }

    /// Invariant: every attack injected is detected or refused for a
    /// stated reason (`injected = detected + refused`).
    pub fn attacks_accounted(&mut self, now: Millis) {
        let mut found = Vec::new();
        let mut unaccounted = 0;
        for (kind, f) in &self.report.attacks {
            let missing = f.injected.saturating_sub(f.detected + f.refused);
            if missing > 0 {
                unaccounted += missing;
                found.push(format!(
                    "{missing} of {} attacks {kind} neither detected nor refused ({} accepted)",
                    f.injected, f.accepted
                ));
            }
        }
        self.report.attacks_unaccounted = unaccounted;
        for v in found {
            self.violation(now, v);
        }
    }

    /// Counts a sealed body or query once, however often it is resent.
    pub fn count_once(&mut self, re: MsgType, txn: TxnId) -> bool {
        self.counted.insert((re, txn))
    }

    pub fn offer_sealed(&mut self, session: SessionId, recipients: BTreeSet<Principal>) {
        self.entitled.entry(session).or_insert(recipients);
    }

    /// Invariant: no server without a decryption entry ever holds a
    /// session's key (KW-SM-010, KW-SEAL-008). `server` holds the key of
    /// `session` by its own account (`Server::holds_key`); whether it may
    /// comes from the offer the caller sent, not from the server.
    pub fn key_held(&mut self, now: Millis, server: &Principal, session: SessionId) {
        let entitled = self
            .entitled
            .get(&session)
            .is_some_and(|r| r.contains(server));
        if !entitled {
            self.violation_once(
                now,
                format!("key {server} {}", crate::cbor::hex(&session.0)),
                format!(
                    "{server} holds the key of session {} without an entry in its offer",
                    crate::cbor::hex(&session.0)
                ),
            );
        }
    }

    pub fn issued(&mut self, issuer: &str, serial: u64, not_after: u64) {
        self.certs.insert(
            (issuer.to_string(), serial),
            CertRecord {
                not_after,
                registered: false,
                revoked_at: None,
                vouched_at: None,
            },
        );
    }

    /// Invariant: an issued certificate's term is its registration's
    /// (KW-REG-008); a registration with a held certificate (F2) ends with
    /// the certificate (KW-REG-009).
    pub fn registered(
        &mut self,
        now: Millis,
        issuer: &str,
        account: &Principal,
        serial: u64,
        not_after: u64,
    ) {
        self.current
            .insert(account.clone(), (issuer.to_string(), serial, not_after));
        let Some(rec) = self.certs.get_mut(&(issuer.to_string(), serial)) else {
            return self.violation(
                now,
                format!("{account}: registered with unknown certificate {serial}"),
            );
        };
        let first = !rec.registered;
        rec.registered = true;
        let end = rec.not_after;
        if end != not_after {
            let form = if first { "" } else { " (F2)" };
            self.violation(
                now,
                format!(
                    "{account}: certificate {serial} ends {end}, registration{form} {not_after}"
                ),
            );
        }
    }

    /// A registration ended at its server: de-registered, or its term
    /// over (KW-REG-016).
    pub fn unregistered(&mut self, now: Millis, account: &Principal) {
        if let Some((.., end)) = self.current.remove(account) {
            if end < secs(now) {
                self.report.registrations_expired += 1;
            }
        }
    }

    pub fn revoked(&mut self, now: Millis, issuer: &str, serial: u64) {
        match self.certs.get_mut(&(issuer.to_string(), serial)) {
            Some(rec) if rec.revoked_at.is_none() => {
                rec.revoked_at = Some(now);
                self.report.certificates_revoked += 1;
            }
            Some(_) => {}
            None => self.violation(
                now,
                format!("revoked unknown certificate {issuer}/{serial}"),
            ),
        }
    }

    /// Whether the issuer of `serial` had revoked it by `now`.
    pub fn revoked_by(&self, issuer: &str, serial: u64, now: Millis) -> bool {
        self.certs
            .get(&(issuer.to_string(), serial))
            .and_then(|c| c.revoked_at)
            .is_some_and(|at| at <= now)
    }

    /// Whether a certificate is known to have been issued.
    pub fn is_issued(&self, issuer: &str, serial: u64) -> bool {
        self.certs.contains_key(&(issuer.to_string(), serial))
    }

    /// Invariant: an issuer never hands out (serves, KW-CERT-006; confirms
    /// in an offer it read, KW-CERT-002) a certificate it has revoked or
    /// that has expired; what it serves for an account is the certificate
    /// of its current registration. `txn` makes a retransmission repeat the
    /// first sending's verdict.
    pub fn vouched(
        &mut self,
        now: Millis,
        by: &Principal,
        re: MsgType,
        txn: TxnId,
        subject: Option<&Principal>,
        cert: CertRef<'_>,
    ) {
        if !self.vouches.insert((by.clone(), re, txn)) {
            return;
        }
        let CertRef {
            issuer,
            serial,
            not_after,
        } = cert;
        let Some(rec) = self.certs.get_mut(&(issuer.to_string(), serial)) else {
            return self.violation(
                now,
                format!("{by} sent certificate {issuer}/{serial} in a {re:?}, never issued"),
            );
        };
        rec.vouched_at = Some(now);
        let (end, revoked) = (rec.not_after, rec.revoked_at);
        if end != not_after || not_after < secs(now) {
            self.violation(
                now,
                format!("{by} sent expired certificate {issuer}/{serial} in a {re:?}"),
            );
        }
        if revoked.is_some_and(|r| r <= now) {
            self.violation(
                now,
                format!("{by} sent revoked certificate {issuer}/{serial} in a {re:?}"),
            );
        }
        if let Some(subject) = subject {
            let current = self.current.get(subject).map(|(i, s, _)| (i.as_str(), *s));
            if current != Some((issuer, serial)) {
                self.violation(
                    now,
                    format!("{by} served {subject}'s certificate {serial}, not its registration's"),
                );
            }
        }
    }

    /// Invariant: no device accepts an expired certificate (KW-CERT-002,
    /// KW-CERT-003) or one its issuer never issued, nor one revoked before
    /// its issuer last vouched for it — from a `cert-notify`, or carried in
    /// the offer or answer of a call it takes up. One revoked after that is
    /// counted: the device could not have known.
    pub fn accepted(&mut self, now: Millis, by: &Principal, what: &str, cert: CertRef<'_>) {
        let CertRef {
            issuer,
            serial,
            not_after,
        } = cert;
        let Some(rec) = self.certs.get(&(issuer.to_string(), serial)).cloned() else {
            return self.violation(
                now,
                format!("{by} accepted certificate {issuer}/{serial} ({what}), never issued"),
            );
        };
        if rec.not_after != not_after || not_after < secs(now) {
            self.violation(
                now,
                format!("{by} accepted expired certificate {issuer}/{serial} ({what})"),
            );
        }
        match (rec.revoked_at, rec.vouched_at) {
            (Some(revoked), _) if revoked > now => {}
            (Some(revoked), Some(vouched)) if vouched < revoked => {
                self.report.revoked_certificates_accepted += 1;
            }
            (Some(_), _) => self.violation(
                now,
                format!("{by} accepted revoked certificate {issuer}/{serial} ({what})"),
            ),
            (None, _) => {}
        }
    }

    /// Certificates whose term ended by `end`, unrevoked.
    pub fn count_expired(&mut self, end: Millis) {
        self.report.certificates_expired = self
            .certs
            .values()
            .filter(|c| c.not_after < secs(end) && c.revoked_at.is_none())
            .count() as u64;
    }

    /// A device's sending direction of a call starts an epoch now (the
    /// session key of epoch 0, or a rekey of its own).
    pub fn epoch_started(&mut self, now: Millis, device: &Principal, session: SessionId) {
        self.epoch_start
            .insert((device.clone(), session), secs(now));
    }

    pub fn set_up_with(&mut self, device: &Principal, session: SessionId, serial: u64) {
        self.setup_serial
            .entry((device.clone(), session))
            .or_insert(serial);
    }

    /// Whether `serial` is not the certificate `device` set `session` up
    /// with.
    pub fn replaced_since_setup(
        &self,
        device: &Principal,
        session: SessionId,
        serial: u64,
    ) -> bool {
        self.setup_serial
            .get(&(device.clone(), session))
            .is_some_and(|s| *s != serial)
    }

    /// Classifies a rekey the first time it is sent (then returns true).
    /// Invariant: a device
    /// rekeys on its own only when due (KW-SM-006): `seq` — the messages
    /// it sent in the epoch before the rekey — reached the count, or the
    /// epoch reached its age.
    #[allow(clippy::too_many_arguments)]
    pub fn rekey_sent(
        &mut self,
        now: Millis,
        device: &Principal,
        session: SessionId,
        txn: TxnId,
        seq: u64,
        commanded: bool,
        policy: &crate::crypto::KeyPolicy,
    ) -> bool {
        if !self.rekeys.insert(txn) {
            return false;
        }
        let started = self.epoch_start.get(&(device.clone(), session)).copied();
        self.epoch_started(now, device, session);
        let cause = if commanded {
            RekeyCause::Commanded
        } else if seq >= policy.rekey_after_messages {
            RekeyCause::Count
        } else if started.is_some_and(|t| secs(now).saturating_sub(t) >= policy.rekey_after_secs) {
            RekeyCause::Time
        } else {
            self.violation(
                now,
                format!("{device} rekeyed an epoch that was due neither by time nor by count"),
            );
            return true;
        };
        match cause {
            RekeyCause::Time => self.report.rekeys_by_time += 1,
            RekeyCause::Count => self.report.rekeys_by_count += 1,
            RekeyCause::Commanded => {}
        }
        true
    }

    /// Invariant: a device reports tampering (KW-SEAL-009) only with a
    /// body a server changed without the right to.
    /// `carried` is the certificate of the offer or answer refused: one
    /// that had expired is rightly refused (KW-CERT-002), if reported as
    /// tampering; it is counted. `relayed_unread`: a server relayed the
    /// session's answer without reading it, so without the edit its
    /// read-modify entry requires (KW-SEAL-011); refused, and counted.
    pub fn tamper_reported(
        &mut self,
        now: Millis,
        by: &Principal,
        session: SessionId,
        code: crate::wire::ErrorCode,
        carried: Option<CertRef<'_>>,
        relayed_unread: bool,
    ) {
        let expired = carried.is_some_and(|c| c.not_after < secs(now));
        if code == crate::wire::ErrorCode::CERT_EXPIRED && expired {
            self.report.expired_certificates_refused += 1;
        } else if code == crate::wire::ErrorCode::PERMISSION_DENIED && relayed_unread {
            self.report.unread_answers_refused += 1;
        } else if !self.tampers.contains_key(&session) {
            self.violation(
                now,
                format!(
                    "{by} reported tampering ({code:?}) with session {}, which no server changed",
                    crate::cbor::hex(&session.0)
                ),
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

    /// A body of `session` changed by a server without the right to:
    /// `counted` for `--tamper`, not for the adversary's forgeries (which
    /// its own figures count).
    pub fn tampered(&mut self, session: SessionId, destination: Principal, counted: bool) {
        if counted {
            self.report.tampers_injected += 1;
        }
        self.tampers.entry(session).or_insert(Tamper {
            destination,
            detected: false,
            counted,
        });
    }

    pub fn tamper_detected(&mut self, by: &Principal, session: SessionId) {
        if let Some(t) = self.tampers.get_mut(&session) {
            if &t.destination == by && !t.detected {
                t.detected = true;
                if t.counted {
                    self.report.tampers_detected += 1;
                }
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
