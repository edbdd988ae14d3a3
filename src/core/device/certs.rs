//! Other accounts' certificates (F3): queries to the device's own server,
//! bounded in number (KW-SM-019), and the cache of confirmed certificates,
//! bounded in size and by each certificate's term (KW-QUERY-006). What
//! needs a certificate the device does not hold — a call to place, an
//! offer or answer received — is parked until it is confirmed and resumed
//! then, or fails with its query. Which certificate a sender's signature
//! is checked with: KW-SM-022.

use std::collections::BTreeSet;

use super::{Device, DeviceEvent, Outcome, PENDING, Pending};
use crate::core::error::ProtocolError;
use crate::core::{Now, ReplyTo};
use crate::crypto::{CertError, Entropy, Expect, check_attestation};
use crate::wire::{
    Answer, CertQuery, Certificate, ErrorCode, Extensions, Message, MsgType, Offer, Principal,
    Role, SessionId, TxnId, UpTo,
};

/// Received items that wait for certificates to be confirmed.
pub(super) enum Parked {
    Call(SessionId),
    Offer(ReplyTo, Box<Offer>),
    Answer(Box<Answer>),
}

/// Most certificates kept in the cache.
const CERT_CACHE: usize = 256;

impl Device {
    /// Holds `item` until the certificates of `missing` are confirmed, and
    /// asks for them — even one held, which is not the one needed
    /// (KW-SM-022). Parked first, so that a query refused at once fails
    /// the item with it.
    pub(super) fn park(
        &mut self,
        now: Now,
        missing: BTreeSet<Principal>,
        item: Parked,
        rng: &mut impl Entropy,
    ) {
        let targets: Vec<Principal> = missing.iter().cloned().collect();
        self.parked.push((missing, item));
        for target in &targets {
            self.fetch(now, target, rng);
        }
    }

    /// A certificate the application asks for, unless one is held.
    pub(super) fn query(&mut self, now: Now, target: &Principal, rng: &mut impl Entropy) {
        if self.valid_cert(target, now).is_none() {
            self.fetch(now, target, rng);
        }
    }

    /// Asks the device's server for `target`'s certificate, unless a query
    /// for it is outstanding.
    fn fetch(&mut self, now: Now, target: &Principal, rng: &mut impl Entropy) {
        if self.queries.contains_key(target) {
            return;
        }
        if self.queries.len() >= PENDING {
            // Bounded; what waits for it fails when it is not answered.
            self.failed(
                now,
                Pending::Query(target.clone()),
                ErrorCode::BUSY,
                None,
                rng,
            );
            return;
        }
        let txn = TxnId(rng.array());
        let message = Message::CertQuery(CertQuery {
            txn,
            from: self.cfg.account.clone(),
            hops: UpTo::new(self.cfg.policy.hops).unwrap_or_default(),
            via: None,
            target: target.clone(),
            ext: Extensions::new(),
        });
        self.queries.insert(target.clone(), txn);
        self.request(now, txn, message, Pending::Query(target.clone()));
    }

    pub(super) fn valid_cert(&self, account: &Principal, now: Now) -> Option<&Certificate> {
        // KW-QUERY-006: kept no longer than the certificate's term.
        self.certs.get(account).filter(|c| {
            c.tbs.not_after.0 >= now.wall_secs() && c.tbs.not_before.0 <= now.wall_secs()
        })
    }

    /// Keeps a confirmed certificate, within the cache's bound (KW-SM-019).
    pub(super) fn remember_cert(&mut self, account: Principal, cert: Certificate) {
        if !self.certs.contains_key(&account) && self.certs.len() >= CERT_CACHE {
            self.certs.pop_first();
        }
        self.certs.insert(account, cert);
    }

    pub(super) fn on_cert_notify(
        &mut self,
        now: Now,
        notify: crate::wire::CertNotify,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let Some(Pending::Query(_)) = self.client.context(&notify.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::CertNotify));
        };
        let Some((_, Pending::Query(target))) = self.client.complete(&notify.txn, self.cfg.server)
        else {
            return Err(ProtocolError::Unsolicited(MsgType::CertNotify));
        };
        self.queries.remove(&target);
        let cert = notify.cert;
        // KW-QUERY-007, KW-CERT-005: every notified certificate comes with
        // its server's fresh attestation, one of the device's own domain
        // too: its anchor shows that the domain issued it, not that it
        // has not been revoked since (KW-CERT-006), which only the server
        // knows. A response is authenticated by its txn and source alone
        // (transport.md §2); the attestation is what an attacker on the
        // path cannot make.
        let attested = match &notify.attestation {
            Some(att) => check_attestation(
                &self.trust,
                att,
                &cert,
                &target,
                &self.cfg.account,
                now.wall_secs(),
            ),
            None => Err(crate::crypto::CryptoError::Cert(CertError::UnknownIssuer)),
        };
        let checked = attested.and_then(|()| {
            if target.domain() != self.cfg.account.domain() {
                return Ok(());
            }
            self.trust
                .check(
                    &cert,
                    Expect {
                        subject: &target,
                        role: None,
                        now: now.wall_secs(),
                    },
                )
                .map_err(crate::crypto::CryptoError::Cert)
        });
        match checked {
            Ok(()) => {
                self.emit(DeviceEvent::CertificateAccepted {
                    account: target.clone(),
                    issuer: cert.tbs.issuer.as_str().into(),
                    serial: cert.tbs.serial,
                    not_after: cert.tbs.not_after.0,
                });
                self.remember_cert(target.clone(), cert);
                self.resume(now, &target, rng);
                Ok(())
            }
            Err(e) => {
                let code = ErrorCode::from(&e);
                self.failed(now, Pending::Query(target), code, None, rng);
                Err(ProtocolError::BadResponse {
                    re: MsgType::CertNotify,
                    code,
                })
            }
        }
    }

    /// Continues what waited for `account`'s certificate.
    fn resume(&mut self, now: Now, account: &Principal, rng: &mut impl Entropy) {
        for (needs, _) in &mut self.parked {
            needs.remove(account);
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .parked
            .drain(..)
            .partition(|(needs, _)| needs.is_empty());
        self.parked = waiting;
        for (_, item) in ready {
            // A parked item's refusal is its own, told by its events and
            // `error` response, not the refusal of the input that freed it.
            let _ = match item {
                Parked::Call(session) => {
                    self.continue_call(now, session, rng);
                    Ok(())
                }
                Parked::Offer(from, offer) => self.on_offer(now, from, *offer, true, rng),
                Parked::Answer(answer) => self.on_answer_ready(now, *answer, rng),
            };
        }
    }

    /// Confirms certificates a body names against the cache (attested) or
    /// the device's own anchor.
    pub(super) fn validator(
        &self,
        now: Now,
    ) -> impl Fn(&Certificate, &Principal, Option<Role>) -> Result<(), CertError> + '_ {
        move |cert, subject, role| {
            let cached = self.certs.get(subject).is_some_and(|c| c == cert);
            if cached {
                let t = now.wall_secs();
                if t < cert.tbs.not_before.0 {
                    return Err(CertError::NotYetValid);
                }
                if t > cert.tbs.not_after.0 {
                    return Err(CertError::Expired);
                }
                if role.is_some_and(|r| r != cert.tbs.role) {
                    return Err(CertError::RoleMismatch);
                }
                return Ok(());
            }
            self.trust.check(
                cert,
                Expect {
                    subject,
                    role,
                    now: now.wall_secs(),
                },
            )
        }
    }

    /// The certificate a message's sender is checked with (KW-SM-022): one
    /// of the device's own domain as the message carries it (its anchor
    /// confirms it); otherwise the one the device holds, confirmed by its
    /// server, provided it has the keys of the one the message carries — a
    /// refresh replaces a certificate, not its keys. `None`: the device
    /// must fetch the account's certificate first.
    pub(super) fn sender_cert(
        &self,
        account: &Principal,
        carried: Option<&Certificate>,
        now: Now,
    ) -> Option<Certificate> {
        let held = self.valid_cert(account, now);
        match (carried, held) {
            (Some(c), _) if account.domain() == self.cfg.account.domain() => Some(c.clone()),
            (Some(c), Some(h)) if same_keys(c, h) => Some(h.clone()),
            (None, Some(h)) => Some(h.clone()),
            _ => None,
        }
    }

    /// Accounts whose certificates a body's check needs and the device does
    /// not hold: the sender (with the certificate its message carries) and
    /// every editor.
    pub(super) fn missing_for(
        &self,
        now: Now,
        body: &crate::wire::Sealed,
        carried: Option<&Certificate>,
    ) -> BTreeSet<Principal> {
        let mut missing = BTreeSet::new();
        if body.sender.domain() != self.cfg.account.domain()
            && self.sender_cert(&body.sender, carried, now).is_none()
        {
            missing.insert(body.sender.clone());
        }
        missing.extend(
            body.edits
                .iter()
                .flat_map(|e| e.iter())
                .map(|e| &e.editor)
                .filter(|p| {
                    p.domain() != self.cfg.account.domain() && self.valid_cert(p, now).is_none()
                })
                .cloned(),
        );
        missing
    }
}

/// Whether two certificates certify the same key pairs.
pub(super) fn same_keys(a: &Certificate, b: &Certificate) -> bool {
    a.tbs.subject == b.tbs.subject && a.tbs.sig_key == b.tbs.sig_key && a.tbs.kx_key == b.tbs.kx_key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::device::{DeviceConfig, DevicePolicy};
    use crate::core::{Addr, RetransmitPolicy};
    use crate::crypto::{
        CertProfile, CertificateAuthority, Identity, KeyPolicy, SeededEntropy, SigningKeyPair,
    };
    use crate::wire::{Contact, Domain, Role, Transport};

    fn device() -> (Device, CertificateAuthority, Identity) {
        let mut rng = SeededEntropy::from_label("cert cache");
        let ca = CertificateAuthority::new(
            Domain::new("a.example").unwrap(),
            SigningKeyPair::generate(&mut rng),
        );
        let me = Principal::new("me@a.example").unwrap();
        let addr = Addr::new(std::net::IpAddr::from([10, 0, 0, 1]), 5060);
        let device = Device::new(DeviceConfig {
            account: me.clone(),
            secret: b"secret".to_vec(),
            server: addr,
            server_account: Principal::new("sc@a.example").unwrap(),
            contact: Contact {
                transport: Transport::Udp,
                addr,
            },
            media: addr,
            expires: 3600,
            anchor: ca.anchor(),
            policy: DevicePolicy::default(),
            retransmit: RetransmitPolicy::default(),
            keys: KeyPolicy::default(),
            identity: None,
        });
        (device, ca, Identity::generate(me, &mut rng))
    }

    fn cert(
        ca: &CertificateAuthority,
        id: &Identity,
        not_before: u64,
        not_after: u64,
    ) -> Certificate {
        ca.issue(&CertProfile {
            serial: 1,
            subject: id.account.clone(),
            role: Role::Device,
            sig_key: id.signing.public(),
            kx_key: id.kx.public(),
            not_before,
            not_after,
        })
    }

    /// KW-SM-019: the certificates a device keeps are bounded; a new
    /// account beyond the bound pushes one out, a kept account's new
    /// certificate pushes out nothing.
    #[test]
    fn kw_sm_019_the_certificates_kept_are_bounded() {
        let (mut device, ca, id) = device();
        let cert = cert(&ca, &id, 0, 10);
        let account = |i: usize| Principal::new(&format!("u{i}@a.example")).unwrap();
        for i in 0..CERT_CACHE {
            device.remember_cert(account(i), cert.clone());
        }
        assert_eq!(device.certs.len(), CERT_CACHE);
        device.remember_cert(account(0), cert.clone());
        assert_eq!(device.certs.len(), CERT_CACHE);
        assert!(device.certs.contains_key(&account(0)));
        device.remember_cert(account(CERT_CACHE), cert);
        assert_eq!(device.certs.len(), CERT_CACHE);
        assert!(device.certs.contains_key(&account(CERT_CACHE)));
    }

    /// KW-CERT-002, KW-CERT-003: a kept certificate stands for its subject
    /// within its term only, both ends included, and for its role.
    #[test]
    fn kw_cert_003_a_kept_certificate_holds_within_its_term() {
        let (mut device, ca, id) = device();
        let cert = cert(&ca, &id, 5, 10);
        device.remember_cert(id.account.clone(), cert.clone());
        let at = |secs: u64| Now::at(secs * 1000);
        let check =
            |device: &Device, secs, role| device.validator(at(secs))(&cert, &id.account, role);
        assert_eq!(check(&device, 4, None), Err(CertError::NotYetValid));
        assert_eq!(check(&device, 5, None), Ok(()));
        assert_eq!(check(&device, 10, Some(Role::Device)), Ok(()));
        assert_eq!(check(&device, 11, None), Err(CertError::Expired));
        assert_eq!(check(&device, 12, None), Err(CertError::Expired));
        assert_eq!(
            check(&device, 7, Some(Role::Server)),
            Err(CertError::RoleMismatch)
        );
    }
}
