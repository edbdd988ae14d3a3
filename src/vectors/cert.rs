//! Certificates and attestations (KW-CERT-001 to KW-CERT-006,
//! KW-CRYPTO-011, KW-CRYPTO-012).

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::{
    CertProfile, CertificateAuthority, Expect, Secret32, SigningKeyPair, TrustAnchor, TrustStore,
    attest, cert_signature_input, check_attestation,
};
use crate::wire::{Certificate, Domain, Principal, Role, decode_plaintext, encode_plaintext};

/// The authorities the tests trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Anchors {
    anchors: Vec<AnchorJson>,
}

/// A trust anchor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnchorJson {
    domain: String,
    public: Hex,
    /// The authority's private seed, so issuance can be recomputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private: Option<Hex>,
}

/// One certificate checked at one time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertTest {
    #[serde(flatten)]
    meta: Meta,
    /// The encoded certificate `[tbs, sig]`.
    certificate: Hex,
    /// The signed input, `cbor(["keyway-v1 cert", tbs])`, whenever the
    /// certificate decodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_input: Option<Hex>,
    subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<u64>,
    now: u64,
    /// Serials revoked by the issuer.
    revoked: Vec<u64>,
}

const CERT_RECIPE: &str = "Decode certificate strictly (deterministic CBOR, also inside tbs); then, in order: \
(domain, issuer-kid) names a trusted anchor (issuer-kid = kid of the anchor key); Ed25519-verify sig over cbor([\"keyway-v1 cert\", tbs]) strictly; \
subject equals the expected subject and lies in the issuer's domain; role equals the expected role if given; not-before <= now <= not-after; serial not revoked. \
Valid tests pass all checks; for issued certificates signature_input is the signed input and the certificate is reproducible from the anchor's private seed.";

const NOTES: &[(&str, &str)] = &[
    (
        "Boundary",
        "Exactly at not-before or not-after: validity is inclusive at both ends (KW-CERT-003).",
    ),
    (
        "ReEncoded",
        "The tbs carries a non-deterministic encoding of the same data; a verifier that re-encodes before checking the signature would accept it (KW-CRYPTO-003).",
    ),
    ("Forged", "The signature does not match the tbs."),
    ("Untrusted", "No trusted anchor for the issuer."),
    (
        "Misused",
        "A valid certificate used for another account or role.",
    ),
];

fn domain(d: &str) -> Domain {
    Domain(d.into())
}

fn account(a: &str) -> Principal {
    Principal(a.into())
}

struct Fixture {
    ca: CertificateAuthority,
    ca_seed: Secret32,
    other: CertificateAuthority,
}

fn fixture() -> Fixture {
    let mut rng = entropy_for("cert/authority");
    let key = SigningKeyPair::generate(&mut rng);
    let ca_seed = key.seed();
    let ca = CertificateAuthority::new(domain("a.example"), key);
    let other = CertificateAuthority::new(
        domain("a.example"),
        SigningKeyPair::generate(&mut entropy_for("cert/impostor")),
    );
    Fixture { ca, ca_seed, other }
}

const NOT_BEFORE: u64 = 1_767_225_600;
const NOT_AFTER: u64 = NOT_BEFORE + 3600;

fn profile(subject: &str, serial: u64) -> CertProfile {
    let mut rng = entropy_for(&format!("cert/subject/{subject}"));
    CertProfile {
        serial,
        subject: account(subject),
        role: Role::Device,
        sig_key: SigningKeyPair::generate(&mut rng).public(),
        kx_key: crate::crypto::KxKeyPair::generate(&mut rng).public(),
        not_before: NOT_BEFORE,
        not_after: NOT_AFTER,
    }
}

fn cert_bytes(cert: &Certificate) -> Vec<u8> {
    encode_plaintext(cert)
}

fn anchors(f: &Fixture) -> Anchors {
    Anchors {
        anchors: vec![AnchorJson {
            domain: f.ca.domain().as_str().into(),
            public: Hex(f.ca.anchor().key.0.to_vec()),
            private: Some(Hex(f.ca_seed.expose().to_vec())),
        }],
    }
}

fn trust(params: &Anchors) -> Result<TrustStore, String> {
    let mut store = TrustStore::default();
    for a in &params.anchors {
        store.add(TrustAnchor {
            domain: Domain::new(&a.domain).map_err(|e| e.to_string())?,
            key: crate::wire::PublicKey(a.public.array()?),
        });
    }
    Ok(store)
}

fn check(params: &Anchors, t: &CertTest) -> Result<(), Failure> {
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let cert: Certificate = decode_plaintext(&t.certificate.0)?;
    let mut store = trust(params).map_err(bad)?;
    for serial in &t.revoked {
        store.revoke(cert.tbs.issuer.clone(), *serial);
    }
    let role = t
        .role
        .map(|r| Role::from_code(r).ok_or_else(|| bad(format!("role {r}"))))
        .transpose()?;
    let subject = Principal::new(&t.subject).map_err(|e| bad(e.to_string()))?;
    store
        .check(
            &cert,
            Expect {
                subject: &subject,
                role,
                now: t.now,
            },
        )
        .map_err(|e| Failure::from(crate::crypto::CryptoError::Cert(e)))
}

/// What one certificate test checks.
struct Check<'a> {
    certificate: Vec<u8>,
    subject: &'a str,
    role: Option<Role>,
    now: u64,
    revoked: Vec<u64>,
}

fn test(params: &Anchors, meta: Meta, c: Check<'_>) -> CertTest {
    let t = CertTest {
        meta,
        signature_input: None,
        certificate: Hex(c.certificate),
        subject: c.subject.into(),
        role: c.role.map(Role::code),
        now: c.now,
        revoked: c.revoked,
    };
    complete(params, &t).unwrap_or(t)
}

pub fn generate() -> String {
    let f = fixture();
    let params = anchors(&f);
    let alice = f.ca.issue(&profile("alice@a.example", 1));
    let good = cert_bytes(&alice);
    let a = "alice@a.example";
    let c2: &[&str] = &["KW-CERT-002"];
    let c3: &[&str] = &["KW-CERT-002", "KW-CERT-003"];
    let mid = NOT_BEFORE + 1800;
    let at = |now: u64| Check {
        certificate: good.clone(),
        subject: a,
        role: None,
        now,
        revoked: vec![],
    };
    let mut tests = vec![
        test(
            &params,
            Meta::valid(
                "cert/valid",
                "a device certificate inside its term",
                &["KW-CERT-001", "KW-CERT-002", "KW-CRYPTO-011"],
                &[],
            ),
            Check {
                role: Some(Role::Device),
                ..at(mid)
            },
        ),
        test(
            &params,
            Meta::valid(
                "cert/at-not-before",
                "exactly at not-before",
                c3,
                &["Boundary"],
            ),
            at(NOT_BEFORE),
        ),
        test(
            &params,
            Meta::valid(
                "cert/at-not-after",
                "exactly at not-after",
                c3,
                &["Boundary"],
            ),
            at(NOT_AFTER),
        ),
        test(
            &params,
            Meta::valid(
                "cert/not-yet-valid",
                "one second before not-before",
                c3,
                &["Boundary"],
            ),
            at(NOT_BEFORE - 1),
        ),
        test(
            &params,
            Meta::valid(
                "cert/expired",
                "one second after not-after",
                c3,
                &["Boundary"],
            ),
            at(NOT_AFTER + 1),
        ),
        test(
            &params,
            Meta::valid(
                "cert/revoked",
                "revoked by its issuer",
                &["KW-CERT-006"],
                &[],
            ),
            Check {
                revoked: vec![1],
                ..at(mid)
            },
        ),
        test(
            &params,
            Meta::valid(
                "cert/wrong-subject",
                "used for another account",
                c2,
                &["Misused"],
            ),
            Check {
                subject: "bob@a.example",
                ..at(mid)
            },
        ),
        test(
            &params,
            Meta::valid(
                "cert/wrong-role",
                "a device certificate used as a server's",
                c2,
                &["Misused"],
            ),
            Check {
                role: Some(Role::Server),
                ..at(mid)
            },
        ),
    ];
    let with = |certificate: Vec<u8>, subject: &'static str| Check {
        certificate,
        subject,
        role: None,
        now: mid,
        revoked: vec![],
    };
    // Forgeries.
    let mut flipped = alice.clone();
    if let Some(b) = flipped.sig.0.get_mut(5) {
        *b ^= 1;
    }
    tests.push(test(
        &params,
        Meta::valid(
            "cert/bad-signature",
            "a flipped signature bit",
            c2,
            &["Forged"],
        ),
        with(cert_bytes(&flipped), a),
    ));
    let mut extended = alice.clone();
    extended.tbs.not_after = crate::wire::Time(NOT_AFTER + 86_400);
    tests.push(test(
        &params,
        Meta::valid(
            "cert/tampered-term",
            "not-after extended after signing",
            c2,
            &["Forged"],
        ),
        with(cert_bytes(&extended), a),
    ));
    let impostor = f.other.issue(&profile("alice@a.example", 1));
    tests.push(test(
        &params,
        Meta::valid(
            "cert/unknown-issuer",
            "issued by a key no anchor holds",
            c2,
            &["Untrusted"],
        ),
        with(cert_bytes(&impostor), a),
    ));
    let foreign = f.ca.issue(&profile("bob@b.example", 2));
    tests.push(test(
        &params,
        Meta::valid(
            "cert/foreign-subject",
            "a.example certifying an account of b.example",
            c2,
            &["Misused"],
        ),
        with(cert_bytes(&foreign), "bob@b.example"),
    ));
    // The tbs re-encoded with a non-shortest integer, signed as sent: a
    // verifier that skips the determinism check would accept it.
    let tbs = alice.tbs_bytes();
    let mut wide = Vec::new();
    if let Some(at) = tbs.windows(2).position(|w| w == [0x01, 0x01]) {
        wide.extend_from_slice(tbs.get(..=at).unwrap_or_default());
        wide.extend_from_slice(&[0x18, 0x01]);
        wide.extend_from_slice(tbs.get(at + 2..).unwrap_or_default());
    }
    let mut rng = entropy_for("cert/authority");
    let ca_key = SigningKeyPair::generate(&mut rng);
    let sig = ca_key.sign(&cert_signature_input(&wide));
    let mut reencoded = Vec::new();
    crate::cbor::write_array_header(&mut reencoded, 2);
    crate::cbor::write_bytes(&mut reencoded, &wide);
    crate::cbor::write_bytes(&mut reencoded, &sig.0);
    tests.push(test(
        &params,
        Meta::valid(
            "cert/re-encoded-tbs",
            "tbs with a non-shortest integer, signed over those bytes",
            &["KW-CRYPTO-003", "KW-CBOR-010"],
            &["ReEncoded"],
        ),
        with(reencoded, a),
    ));
    VectorFile::new(
        "cert",
        "spec/crypto.md §2, spec/flows.md (certificates)",
        CERT_RECIPE,
        NOTES,
        params,
        tests,
    )
    .to_json()
}

/// Every anchor's private seed, where given, is its public key's.
fn check_anchors(params: &Anchors) -> Result<(), String> {
    for a in &params.anchors {
        if let Some(private) = &a.private {
            let key = SigningKeyPair::from_seed(&Secret32::new(private.array()?));
            same(
                "anchor public key of its seed",
                &a.public.0,
                &key.public().0,
            )?;
        }
    }
    Ok(())
}

/// The test recomputed from its inputs (`certificate`, `subject`, `role`,
/// `now`, `revoked`): the verdict, and the signed input whenever the
/// certificate decodes. A valid certificate whose issuer's anchor gives its
/// seed must be reproducible from it (Ed25519 is deterministic).
fn complete(params: &Anchors, t: &CertTest) -> Result<CertTest, String> {
    check_anchors(params)?;
    let (meta, accepted) = t.meta.judged(check(params, t))?;
    let cert: Option<Certificate> = decode_plaintext(&t.certificate.0).ok();
    if let (Some(()), Some(cert)) = (accepted, &cert) {
        let seed = params
            .anchors
            .iter()
            .find(|a| a.domain == cert.tbs.issuer.as_str())
            .and_then(|a| a.private.as_ref());
        if let Some(seed) = seed {
            let ca = CertificateAuthority::new(
                cert.tbs.issuer.clone(),
                SigningKeyPair::from_seed(&Secret32::new(seed.array()?)),
            );
            let tbs = &cert.tbs;
            let again = ca.issue(&CertProfile {
                serial: tbs.serial,
                subject: tbs.subject.clone(),
                role: tbs.role,
                sig_key: tbs.sig_key,
                kx_key: tbs.kx_key,
                not_before: tbs.not_before.0,
                not_after: tbs.not_after.0,
            });
            same(
                "certificate reissued",
                &t.certificate.0,
                &cert_bytes(&again),
            )?;
        }
    }
    Ok(CertTest {
        meta,
        signature_input: cert.map(|c| Hex(cert_signature_input(&c.tbs_bytes()))),
        ..t.clone()
    })
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "cert", |t: &CertTest| &t.meta, complete)
}

/// One attestation checked by a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestTest {
    #[serde(flatten)]
    meta: Meta,
    /// The attested certificate.
    certificate: Hex,
    /// The encoded attestation.
    attestation: Hex,
    /// Its signed input.
    signature_input: Hex,
    /// The device it is for.
    to: String,
    /// The account the device asked for.
    target: String,
    now: u64,
}

const ATTEST_NOTES: &[(&str, &str)] = &[
    (
        "Skew",
        "The attestation's time at or beyond 300 seconds from the device's clock (KW-CRYPTO-012).",
    ),
    (
        "Boundary",
        "The attested certificate just outside its term (KW-CERT-003).",
    ),
    ("Forged", "The attestation was changed after it was signed."),
    (
        "Misused",
        "A valid attestation presented to another device, in another domain, or for another account.",
    ),
];

const ATTEST_RECIPE: &str = "Decode attestation; its attester is in the domain of `to`; |at - now| <= 300; its cert is valid for the attester with role server at now (see cert vectors); \
kid is the key identifier of that certificate's sig-key; sig verifies over signature_input = cbor([\"keyway-v1 attest\", attester, at, to, certificate]); \
then the attested certificate passes KW-CERT-002 except the issuer checks: subject = target in its issuer's domain, term at now, not revoked.";

pub fn generate_attest() -> String {
    let f = fixture();
    let params = anchors(&f);
    let mut rng = entropy_for("attest/server");
    let server_key = SigningKeyPair::generate(&mut rng);
    let sc = account("sc@a.example");
    let server_cert = f.ca.issue(&CertProfile {
        serial: 7,
        subject: sc.clone(),
        role: Role::Server,
        sig_key: server_key.public(),
        kx_key: crate::crypto::KxKeyPair::generate(&mut rng).public(),
        not_before: NOT_BEFORE,
        // Outlives the attested certificate, so that its expiry is what fails.
        not_after: NOT_AFTER + 86_400,
    });
    let bob_cert = CertificateAuthority::new(
        domain("b.example"),
        SigningKeyPair::generate(&mut entropy_for("attest/ca-b")),
    )
    .issue(&profile("bob@b.example", 3));
    let alice = account("alice@a.example");
    let at = NOT_BEFORE + 60;
    let good = attest(&sc, &server_key, &server_cert, &bob_cert, &alice, at);
    struct Case<'a> {
        tc: &'a str,
        comment: &'a str,
        flags: &'a [&'a str],
        att: &'a crate::wire::Attestation,
        to: &'a str,
        target: &'a str,
        now: u64,
    }
    let make = |c: Case<'_>| {
        let reqs = ["KW-CERT-005", "KW-CRYPTO-012"];
        let t = AttestTest {
            meta: Meta::valid(c.tc, c.comment, &reqs, c.flags),
            certificate: Hex(cert_bytes(&bob_cert)),
            attestation: Hex(encode_plaintext(c.att)),
            signature_input: Hex::default(),
            to: c.to.into(),
            target: c.target.into(),
            now: c.now,
        };
        complete_attest(&params, &t).unwrap_or(t)
    };
    let mut tampered = good.clone();
    tampered.at = crate::wire::Time(at + 1);
    let late = attest(
        &sc,
        &server_key,
        &server_cert,
        &bob_cert,
        &alice,
        NOT_AFTER + 1,
    );
    let base = Case {
        tc: "attest/valid",
        comment: "the device's own server vouches for a certificate of another domain",
        flags: &[],
        att: &good,
        to: "alice@a.example",
        target: "bob@b.example",
        now: at,
    };
    let tests = vec![
        make(Case { ..base }),
        make(Case {
            tc: "attest/other-device",
            comment: "an attestation made for another device",
            flags: &["Misused"],
            to: "carol@a.example",
            ..base
        }),
        make(Case {
            tc: "attest/other-domain",
            comment: "presented to a device of another domain",
            flags: &["Misused"],
            to: "dave@c.example",
            ..base
        }),
        make(Case {
            tc: "attest/tampered",
            comment: "the time changed after signing",
            flags: &["Forged"],
            att: &tampered,
            ..base
        }),
        make(Case {
            tc: "attest/other-target",
            comment: "bob's certificate presented as the answer for carol",
            flags: &["Misused"],
            target: "carol@b.example",
            ..base
        }),
        make(Case {
            tc: "attest/stale",
            comment: "an attestation 301 seconds old",
            flags: &["Skew"],
            now: at + 301,
            ..base
        }),
        make(Case {
            tc: "attest/at-skew-limit",
            comment: "an attestation exactly 300 seconds old",
            flags: &["Skew"],
            now: at + 300,
            ..base
        }),
        make(Case {
            tc: "attest/expired-certificate",
            comment: "a fresh attestation of a certificate past its term",
            flags: &["Boundary"],
            att: &late,
            now: NOT_AFTER + 1,
            ..base
        }),
    ];
    VectorFile::new(
        "attest",
        "spec/crypto.md §2",
        ATTEST_RECIPE,
        ATTEST_NOTES,
        params,
        tests,
    )
    .to_json()
}

fn run_attest(params: &Anchors, t: &AttestTest) -> Result<(), Failure> {
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let cert: Certificate = decode_plaintext(&t.certificate.0)?;
    let att: crate::wire::Attestation = decode_plaintext(&t.attestation.0)?;
    let to = Principal::new(&t.to).map_err(|e| bad(e.to_string()))?;
    let store = trust(params).map_err(bad)?;
    let target = Principal::new(&t.target).map_err(|e| bad(e.to_string()))?;
    check_attestation(&store, &att, &cert, &target, &to, t.now)?;
    Ok(())
}

/// The test recomputed from its inputs (`certificate`, `attestation`, `to`,
/// `target`, `now`): the signed input and the device's verdict.
fn complete_attest(params: &Anchors, t: &AttestTest) -> Result<AttestTest, String> {
    check_anchors(params)?;
    let (meta, _) = t.meta.judged(run_attest(params, t))?;
    let att: crate::wire::Attestation =
        decode_plaintext(&t.attestation.0).map_err(|e| e.to_string())?;
    let cert: Certificate = decode_plaintext(&t.certificate.0).map_err(|e| e.to_string())?;
    let to = Principal::new(&t.to).map_err(|e| e.to_string())?;
    Ok(AttestTest {
        meta,
        signature_input: Hex(crate::crypto::attestation_signature_input(
            &att.attester,
            att.at.0,
            &to,
            &cert,
        )),
        ..t.clone()
    })
}

pub fn verify_attest_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "attest", |t: &AttestTest| &t.meta, complete_attest)
}
