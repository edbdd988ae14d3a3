//! Certificates, certificate authorities, trust anchors and attestations
//! (KW-CERT-001 to KW-CERT-006, KW-CRYPTO-011, KW-CRYPTO-012).

use std::collections::BTreeSet;

use super::error::{CertError, CryptoError};
use super::keys::{KeyUse, SigningKeyPair, key_id, verify};
use super::structure::{ATTEST, CERT, Part, structure};
use crate::wire::{
    Attestation, CertTbs, Certificate, Domain, Extensions, KeyId, Principal, PublicKey, Role,
    Suite, Time, WireValue,
};

/// The input of a certificate signature: `cbor(["keyway-v1 cert", tbs])`.
pub fn cert_signature_input(tbs_bytes: &[u8]) -> Vec<u8> {
    structure(CERT, &[Part::Bytes(tbs_bytes)])
}

/// A domain's certificate authority: its domain and signing key.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    domain: Domain,
    key: SigningKeyPair,
}

/// What a certificate says about its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProfile {
    /// Serial number, unique per issuer.
    pub serial: u64,
    /// The account certified.
    pub subject: Principal,
    /// What it is.
    pub role: Role,
    /// Its Ed25519 key.
    pub sig_key: PublicKey,
    /// Its X25519 key.
    pub kx_key: PublicKey,
    /// First second of validity.
    pub not_before: u64,
    /// Last second of validity.
    pub not_after: u64,
}

impl CertificateAuthority {
    /// The authority of `domain` with signing key `key`.
    pub fn new(domain: Domain, key: SigningKeyPair) -> Self {
        Self { domain, key }
    }

    /// Its domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The anchor devices and peer servers trust it by.
    pub fn anchor(&self) -> TrustAnchor {
        TrustAnchor {
            domain: self.domain.clone(),
            key: self.key.public(),
        }
    }

    /// Issues a certificate (KW-CERT-001, KW-CRYPTO-011).
    pub fn issue(&self, profile: &CertProfile) -> Certificate {
        let tbs = CertTbs {
            suite: Suite::KeywayV1,
            serial: profile.serial,
            issuer: self.domain.clone(),
            issuer_kid: self.key.kid(),
            subject: profile.subject.clone(),
            role: profile.role,
            sig_key: profile.sig_key,
            kx_key: profile.kx_key,
            not_before: Time(profile.not_before),
            not_after: Time(profile.not_after),
            ext: Extensions::new(),
        };
        let mut tbs_bytes = Vec::new();
        tbs.encode(&mut tbs_bytes);
        let sig = self.key.sign(&cert_signature_input(&tbs_bytes));
        Certificate { tbs, sig }
    }
}

/// A trusted certificate-authority key of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The domain.
    pub domain: Domain,
    /// Its authority's Ed25519 public key.
    pub key: PublicKey,
}

impl TrustAnchor {
    /// The key identifier certificates name it by.
    pub fn kid(&self) -> KeyId {
        key_id(&self.key, KeyUse::Signing)
    }
}

/// The anchors a party trusts, and the serials it knows to be revoked.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor>,
    /// Ordered, so that a check costs the same with a million revocations
    /// as with none.
    revoked: BTreeSet<(Domain, u64)>,
}

/// What a certificate must be for its use.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The account it must certify.
    pub subject: &'a Principal,
    /// The role it must have, if one is required.
    pub role: Option<Role>,
    /// The time of the check.
    pub now: u64,
}

impl TrustStore {
    /// A store trusting `anchors`.
    pub fn new(anchors: Vec<TrustAnchor>) -> Self {
        Self {
            anchors,
            revoked: BTreeSet::new(),
        }
    }

    /// Trusts one more anchor.
    pub fn add(&mut self, anchor: TrustAnchor) {
        self.anchors.push(anchor);
    }

    /// Records a revoked certificate (KW-CERT-006).
    pub fn revoke(&mut self, issuer: Domain, serial: u64) {
        self.revoked.insert((issuer, serial));
    }

    /// Forgets a revocation that no longer matters: the certificate has
    /// expired, and is refused as expired from then on.
    pub fn forget_revocation(&mut self, issuer: &Domain, serial: u64) {
        self.revoked.remove(&(issuer.clone(), serial));
    }

    fn anchor(&self, domain: &Domain, kid: &KeyId) -> Option<&TrustAnchor> {
        self.anchors
            .iter()
            .find(|a| &a.domain == domain && &a.kid() == kid)
    }

    /// Confirms a certificate's validity in the order of KW-CERT-002:
    /// issuer trusted, signature, subject, role, term (inclusive at both
    /// ends, KW-CERT-003), revocation.
    pub fn check(&self, cert: &Certificate, expect: Expect<'_>) -> Result<(), CertError> {
        let tbs = &cert.tbs;
        let anchor = self
            .anchor(&tbs.issuer, &tbs.issuer_kid)
            .ok_or(CertError::UnknownIssuer)?;
        verify(
            &anchor.key,
            &cert_signature_input(&cert.tbs_bytes()),
            &cert.sig,
        )
        .map_err(|_| CertError::BadSignature)?;
        self.check_use(cert, expect)
    }

    /// The checks of KW-CERT-002 after the issuer's: what an attestation
    /// leaves to the device (KW-CERT-005).
    pub fn check_use(&self, cert: &Certificate, expect: Expect<'_>) -> Result<(), CertError> {
        let tbs = &cert.tbs;
        if &tbs.subject != expect.subject || tbs.subject.domain() != tbs.issuer.as_str() {
            return Err(CertError::SubjectMismatch);
        }
        if expect.role.is_some_and(|role| role != tbs.role) {
            return Err(CertError::RoleMismatch);
        }
        if expect.now < tbs.not_before.0 {
            return Err(CertError::NotYetValid);
        }
        if expect.now > tbs.not_after.0 {
            return Err(CertError::Expired);
        }
        if self.revoked.contains(&(tbs.issuer.clone(), tbs.serial)) {
            return Err(CertError::Revoked);
        }
        Ok(())
    }
}

/// The input of an attestation signature (KW-CRYPTO-012).
pub fn attestation_signature_input(
    attester: &Principal,
    at: u64,
    to: &Principal,
    cert: &Certificate,
) -> Vec<u8> {
    let mut cert_bytes = Vec::new();
    cert.encode(&mut cert_bytes);
    structure(
        ATTEST,
        &[
            Part::Text(attester.as_str()),
            Part::Uint(at),
            Part::Text(to.as_str()),
            Part::Bytes(&cert_bytes),
        ],
    )
}

/// A server's attestation, for `to`, of a certificate it has confirmed.
pub fn attest(
    attester: &Principal,
    key: &SigningKeyPair,
    attester_cert: &Certificate,
    cert: &Certificate,
    to: &Principal,
    at: u64,
) -> Attestation {
    Attestation {
        attester: attester.clone(),
        kid: key.kid(),
        at: Time(at),
        sig: key.sign(&attestation_signature_input(attester, at, to, cert)),
        cert: attester_cert.clone(),
        ext: Extensions::new(),
    }
}

/// How far an attestation's time may be from the device's clock.
pub const ATTESTATION_SKEW_SECS: u64 = 300;

/// Checks an attestation received by `to` for `cert`, the certificate of
/// `target` (KW-CERT-005, KW-CRYPTO-012): the attester is a server of
/// `to`'s own domain with a valid certificate, its signature verifies, its
/// time is near `now`; then `cert` passes every check but the issuer's.
pub fn check_attestation(
    trust: &TrustStore,
    attestation: &Attestation,
    cert: &Certificate,
    target: &Principal,
    to: &Principal,
    now: u64,
) -> Result<(), CryptoError> {
    if attestation.attester.domain() != to.domain() {
        return Err(CryptoError::Cert(CertError::UnknownIssuer));
    }
    if attestation.at.0.abs_diff(now) > ATTESTATION_SKEW_SECS {
        return Err(CryptoError::StaleAttestation);
    }
    trust.check(
        &attestation.cert,
        Expect {
            subject: &attestation.attester,
            role: Some(Role::Server),
            now,
        },
    )?;
    let key = &attestation.cert.tbs.sig_key;
    if key_id(key, KeyUse::Signing) != attestation.kid {
        return Err(CryptoError::KeyIdMismatch);
    }
    let input = attestation_signature_input(&attestation.attester, attestation.at.0, to, cert);
    verify(key, &input, &attestation.sig)?;
    trust.check_use(
        cert,
        Expect {
            subject: target,
            role: None,
            now,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Identity, SeededEntropy};

    fn account(s: &str) -> Principal {
        Principal::new(s).unwrap()
    }

    fn setup() -> (CertificateAuthority, Identity, Certificate) {
        let mut rng = SeededEntropy::from_label("cert tests");
        let ca = CertificateAuthority::new(
            Domain::new("a.example").unwrap(),
            SigningKeyPair::generate(&mut rng),
        );
        let alice = Identity::generate(account("alice@a.example"), &mut rng);
        let cert = ca.issue(&CertProfile {
            serial: 1,
            subject: alice.account.clone(),
            role: Role::Device,
            sig_key: alice.signing.public(),
            kx_key: alice.kx.public(),
            not_before: 1000,
            not_after: 2000,
        });
        (ca, alice, cert)
    }

    #[test]
    fn kw_cert_002_checks_in_order_and_kw_cert_003_bounds_are_inclusive() {
        let (ca, alice, cert) = setup();
        let store = TrustStore::new(vec![ca.anchor()]);
        let at = |now| Expect {
            subject: &alice.account,
            role: Some(Role::Device),
            now,
        };
        store.check(&cert, at(1000)).unwrap();
        store.check(&cert, at(2000)).unwrap();
        assert_eq!(store.check(&cert, at(999)), Err(CertError::NotYetValid));
        assert_eq!(store.check(&cert, at(2001)), Err(CertError::Expired));
        let bob = account("bob@a.example");
        let wrong = Expect {
            subject: &bob,
            ..at(1500)
        };
        assert_eq!(store.check(&cert, wrong), Err(CertError::SubjectMismatch));
        let server = Expect {
            role: Some(Role::Server),
            ..at(1500)
        };
        assert_eq!(store.check(&cert, server), Err(CertError::RoleMismatch));
        assert_eq!(
            TrustStore::default().check(&cert, at(1500)),
            Err(CertError::UnknownIssuer)
        );
        let mut forged = cert.clone();
        forged.tbs.not_after = Time(9999);
        assert_eq!(store.check(&forged, at(1500)), Err(CertError::BadSignature));
        let mut revoked = store.clone();
        revoked.revoke(ca.domain().clone(), 1);
        assert_eq!(revoked.check(&cert, at(1500)), Err(CertError::Revoked));
        // KW-SM-019: a revocation is forgotten once its certificate has
        // ended (the server's prune); only that one.
        revoked.revoke(ca.domain().clone(), 2);
        revoked.forget_revocation(ca.domain(), 1);
        revoked.check(&cert, at(1500)).unwrap();
        assert_eq!(revoked.revoked.len(), 1);
    }
}
