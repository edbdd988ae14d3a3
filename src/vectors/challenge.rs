//! The device's check of a challenge (KW-REG-019, KW-CRYPTO-025): the
//! server's certificate against the device's anchor, with role server and
//! the subject the device's configuration names, then the server's
//! signature over the challenge; then the verifier it names: iterations in
//! bounds, not below the device's floor, and the salt and iteration count
//! the device pinned (KW-CRYPTO-020, KW-REG-021).

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::register::{
    ITERATIONS, challenge_signature_input, check_challenge, check_challenge_verifier,
    sign_challenge,
};
use crate::crypto::{
    CertProfile, CertificateAuthority, Entropy, KxKeyPair, Secret32, SigningKeyPair, TrustAnchor,
    TrustStore,
};
use crate::wire::{
    Certificate, Challenge, Domain, Extensions, Message, Nonce, Principal, PublicKey, Role, TxnId,
};

const NOW: u64 = 1_767_225_600;

/// The device's anchor, the server its configuration names, and the time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeParams {
    domain: String,
    anchor: Hex,
    server: String,
    now: u64,
}

/// A challenge as the device receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeTest {
    #[serde(flatten)]
    meta: Meta,
    /// The encoded challenge.
    challenge: Hex,
    /// The device's floor of iterations, when above 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_iterations: Option<u64>,
    /// The salt the device pinned at its last registration, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pinned_salt: Option<Hex>,
    /// The iteration count it pinned with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pinned_iterations: Option<u64>,
    /// The signer's Ed25519 seed, for valid tests: signing reproduces
    /// `challenge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_seed: Option<Hex>,
    /// `cbor(["keyway-v1 challenge", m])`, whenever the challenge decodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_input: Option<Hex>,
}

const RECIPE: &str = "Decode challenge (type 2, strictly). Confirm its cert (KW-CERT-002) against the anchor of domain at now, subject = server, role server (its 3xx code); \
sig.kid must be the key identifier of the certificate's sig-key, and sig.sig must verify over signature_input = cbor([\"keyway-v1 challenge\", m]) with m the challenge encoded without key 8 (else signature-invalid). \
Then iterations must lie in 4096..=1000000 (else schema), be at least min_iterations when given (else auth-failed), and, when pinned_salt and pinned_iterations are given, salt must equal pinned_salt and iterations be at least pinned_iterations (else auth-failed). \
With sig_seed (the certificate's key), signing reproduces the challenge.";

const NOTES: &[(&str, &str)] = &[
    (
        "Boundary",
        "At the edge of the certificate's term, which includes its last second (KW-CERT-003).",
    ),
    (
        "Forged",
        "The challenge was changed after the server signed it: a salt, iteration count or X25519 key of an attacker's choosing.",
    ),
    (
        "WrongSigner",
        "Signed by a key other than the certificate's.",
    ),
    (
        "Pinned",
        "A challenge from the device's server that names another salt or fewer iterations than the device pinned, or fewer than its floor (KW-REG-021).",
    ),
    (
        "Bounds",
        "An iteration count outside 4096..=1000000 (KW-CRYPTO-020).",
    ),
    (
        "WrongCertificate",
        "The certificate is not a valid server certificate of the device's server.",
    ),
];

/// The certificate authority, the server's key and certificate, and an
/// attacker's key.
struct Pki {
    ca: CertificateAuthority,
    server: SigningKeyPair,
    cert: Certificate,
    mallory: SigningKeyPair,
    other_ca: CertificateAuthority,
}

fn pki() -> Pki {
    let mut rng = entropy_for("challenge/pki");
    let ca = CertificateAuthority::new(
        Domain("a.example".into()),
        SigningKeyPair::generate(&mut rng),
    );
    let server = SigningKeyPair::generate(&mut rng);
    let cert = ca.issue(&CertProfile {
        serial: 7,
        subject: Principal("sc@a.example".into()),
        role: Role::Server,
        sig_key: server.public(),
        kx_key: KxKeyPair::generate(&mut rng).public(),
        not_before: NOW - 60,
        not_after: NOW + 86_400,
    });
    let mallory = SigningKeyPair::generate(&mut rng);
    let other_ca = CertificateAuthority::new(
        Domain("a.example".into()),
        SigningKeyPair::generate(&mut rng),
    );
    Pki {
        ca,
        server,
        cert,
        mallory,
        other_ca,
    }
}

/// An unsigned challenge for alice, carrying `cert`.
fn challenge(rng: &mut impl Entropy, cert: &Certificate) -> Challenge {
    Challenge {
        txn: TxnId(rng.array()),
        to: Principal("alice@a.example".into()),
        sig: crate::crypto::unsigned(),
        expires: 30,
        cert: cert.clone(),
        nonce: Nonce(rng.array()),
        salt: Nonce(rng.array()),
        iterations: 4096,
        kx_challenge: KxKeyPair::generate(rng).public(),
        ext: Extensions::new(),
    }
}

/// The profile a certificate was issued with.
fn profile_of(cert: &Certificate) -> CertProfile {
    let tbs = &cert.tbs;
    CertProfile {
        serial: tbs.serial,
        subject: tbs.subject.clone(),
        role: tbs.role,
        sig_key: tbs.sig_key,
        kx_key: tbs.kx_key,
        not_before: tbs.not_before.0,
        not_after: tbs.not_after.0,
    }
}

pub fn generate() -> String {
    let p = pki();
    let params = ChallengeParams {
        domain: "a.example".into(),
        anchor: Hex(p.ca.anchor().key.0.to_vec()),
        server: "sc@a.example".into(),
        now: NOW,
    };
    let reqs = ["KW-CRYPTO-025", "KW-REG-019"];
    let make =
        |tc: &str, comment: &str, flags: &[&str], c: &Challenge, seed: Option<&SigningKeyPair>| {
            let t = ChallengeTest {
                meta: Meta::valid(tc, comment, &reqs, flags),
                challenge: Hex(Message::Challenge(c.clone()).encode()),
                min_iterations: None,
                pinned_salt: None,
                pinned_iterations: None,
                sig_seed: seed.map(|k| Hex(k.seed().expose().to_vec())),
                signature_input: None,
            };
            complete(&params, &t).unwrap_or(t)
        };
    let mut signed = challenge(&mut entropy_for("challenge/valid"), &p.cert);
    signed.iterations = 10_000;
    sign_challenge(&mut signed, &p.server);
    let mut tests = vec![make(
        "challenge/valid",
        "the server's challenge, signed with the key of its certificate",
        &[],
        &signed,
        Some(&p.server),
    )];
    let forged: [(&str, &str, Challenge); 3] = [
        (
            "challenge/salt-substituted",
            "the salt replaced on the way, so that the device's answer is made under a salt the attacker chose",
            Challenge {
                salt: Nonce(entropy_for("challenge/salt-substituted").array()),
                ..signed.clone()
            },
        ),
        (
            "challenge/iterations-lowered",
            "the iteration count lowered on the way (10000 to 4096), to make guesses cheaper",
            Challenge {
                iterations: 4096,
                ..signed.clone()
            },
        ),
        (
            "challenge/kx-challenge-substituted",
            "the challenge's X25519 key replaced by one whose private key the attacker holds, to remove the mask of the proof",
            Challenge {
                kx_challenge: KxKeyPair::generate(&mut entropy_for(
                    "challenge/kx-challenge-substituted",
                ))
                .public(),
                ..signed.clone()
            },
        ),
    ];
    for (tc, comment, c) in forged {
        tests.push(make(tc, comment, &["Forged"], &c, None));
    }
    // An attacker's own signature, over the server's certificate.
    let mut mallory_signed = signed.clone();
    sign_challenge(&mut mallory_signed, &p.mallory);
    tests.push(make(
        "challenge/signed-by-other-key",
        "the server's certificate, but signed (and kid set) by an attacker's key",
        &["WrongSigner"],
        &mallory_signed,
        None,
    ));
    // The attacker's signature under the server's kid.
    let mut kid_kept = mallory_signed.clone();
    kid_kept.sig.kid = signed.sig.kid;
    tests.push(make(
        "challenge/signature-by-other-key-under-server-kid",
        "an attacker's signature presented under the server key's identifier",
        &["WrongSigner"],
        &kid_kept,
        None,
    ));
    // Certificates that are not the device's server's, each signing its
    // challenge with its own key.
    let wrong: [(&str, &str, &CertificateAuthority, &str, Role, u64); 4] = [
        (
            "challenge/other-server",
            "a valid server certificate of the domain, for another server than the one the device is configured with",
            &p.ca,
            "sc2@a.example",
            Role::Server,
            NOW + 86_400,
        ),
        (
            "challenge/device-role",
            "a certificate of the server's account with role device",
            &p.ca,
            "sc@a.example",
            Role::Device,
            NOW + 86_400,
        ),
        (
            "challenge/untrusted-issuer",
            "a server certificate issued by a key the device does not hold as its anchor",
            &p.other_ca,
            "sc@a.example",
            Role::Server,
            NOW + 86_400,
        ),
        (
            "challenge/expired-certificate",
            "the server's certificate ended a second before now",
            &p.ca,
            "sc@a.example",
            Role::Server,
            NOW - 1,
        ),
    ];
    // The server's certificate in its last second (KW-CERT-003): still
    // valid; a second later it is not.
    let last = p.ca.issue(&CertProfile {
        serial: 9,
        not_after: NOW,
        ..profile_of(&p.cert)
    });
    let mut at_edge = challenge(&mut entropy_for("challenge/certificate-last-second"), &last);
    sign_challenge(&mut at_edge, &p.server);
    tests.push(make(
        "challenge/certificate-last-second",
        "the server's certificate at its not-after, which it includes",
        &["Boundary"],
        &at_edge,
        Some(&p.server),
    ));
    for (tc, comment, ca, subject, role, not_after) in wrong {
        let mut rng = entropy_for(tc);
        let key = SigningKeyPair::generate(&mut rng);
        let cert = ca.issue(&CertProfile {
            serial: 8,
            subject: Principal(subject.into()),
            role,
            sig_key: key.public(),
            kx_key: KxKeyPair::generate(&mut rng).public(),
            not_before: NOW - 3600,
            not_after,
        });
        let mut c = challenge(&mut rng, &cert);
        sign_challenge(&mut c, &key);
        tests.push(make(tc, comment, &["WrongCertificate"], &c, None));
    }
    // The verifier the challenge names, against the device's floor and
    // pins (KW-REG-021): each challenge is its server's.
    let pinned = |tc: &str,
                  comment: &str,
                  flags: &[&str],
                  iterations: u64,
                  floor: Option<u64>,
                  pin: Option<(Nonce, u64)>| {
        let mut c = Challenge {
            iterations,
            ..signed.clone()
        };
        sign_challenge(&mut c, &p.server);
        let t = ChallengeTest {
            meta: Meta::valid(tc, comment, &["KW-REG-021", "KW-CRYPTO-020"], flags),
            challenge: Hex(Message::Challenge(c).encode()),
            min_iterations: floor,
            pinned_salt: pin.map(|(s, _)| Hex(s.0.to_vec())),
            pinned_iterations: pin.map(|(_, n)| n),
            sig_seed: Some(Hex(p.server.seed().expose().to_vec())),
            signature_input: None,
        };
        complete(&params, &t).unwrap_or(t)
    };
    let salt = signed.salt;
    let other_salt = Nonce(entropy_for("challenge/other-salt").array());
    tests.extend([
        pinned(
            "challenge/pinned",
            "the salt and iteration count the device registered with last",
            &[],
            10_000,
            None,
            Some((salt, 10_000)),
        ),
        pinned(
            "challenge/more-iterations",
            "the pinned salt with more iterations than pinned",
            &[],
            20_000,
            None,
            Some((salt, 10_000)),
        ),
        pinned(
            "challenge/other-salt",
            "another salt than the one the device pinned",
            &["Pinned"],
            10_000,
            None,
            Some((other_salt, 10_000)),
        ),
        pinned(
            "challenge/fewer-iterations",
            "fewer iterations than the device pinned",
            &["Pinned"],
            4096,
            None,
            Some((salt, 10_000)),
        ),
        pinned(
            "challenge/below-floor",
            "fewer iterations than the device's floor, without a pin",
            &["Pinned"],
            10_000,
            Some(20_000),
            None,
        ),
        pinned(
            "challenge/too-many-iterations",
            "an iteration count above the protocol's bound",
            &["Bounds"],
            *ITERATIONS.end() + 1,
            None,
            None,
        ),
    ]);
    VectorFile::new(
        "challenge",
        "spec/crypto.md §3",
        RECIPE,
        NOTES,
        params,
        tests,
    )
    .to_json()
}

fn run(params: &ChallengeParams, t: &ChallengeTest) -> Result<(), Failure> {
    let bad = |e: String| Failure::vector(e);
    let Message::Challenge(c) = Message::decode(&t.challenge.0)? else {
        return Err(bad("not a challenge".into()));
    };
    let trust = TrustStore::new(vec![TrustAnchor {
        domain: Domain::new(&params.domain).map_err(|e| bad(e.to_string()))?,
        key: PublicKey(params.anchor.array().map_err(bad)?),
    }]);
    let server = Principal::new(&params.server).map_err(|e| bad(e.to_string()))?;
    check_challenge(&trust, &server, params.now, &c)?;
    let pin = match (&t.pinned_salt, t.pinned_iterations) {
        (Some(salt), Some(n)) => Some((Nonce(salt.array().map_err(bad)?), n)),
        (None, None) => None,
        _ => return Err(bad("pinned_salt and pinned_iterations go together".into())),
    };
    let floor = t.min_iterations.unwrap_or(*ITERATIONS.start());
    check_challenge_verifier(&c, floor, pin.as_ref())?;
    Ok(())
}

/// The test recomputed from its inputs (`challenge`, and `sig_seed` where
/// given, which must be the certificate's key and reproduce the
/// challenge): the signed input and the device's verdict.
fn complete(params: &ChallengeParams, t: &ChallengeTest) -> Result<ChallengeTest, String> {
    let (meta, _) = t.meta.judged(run(params, t))?;
    let challenge = match Message::decode(&t.challenge.0) {
        Ok(Message::Challenge(c)) => Some(c),
        _ => None,
    };
    if let Some(seed) = &t.sig_seed {
        let key = SigningKeyPair::from_seed(&Secret32::new(seed.array()?));
        let mut again = challenge
            .clone()
            .ok_or("sig_seed for a challenge that does not decode")?;
        same(
            "sig-key of sig_seed",
            &again.cert.tbs.sig_key.0,
            &key.public().0,
        )?;
        sign_challenge(&mut again, &key);
        same(
            "challenge",
            &t.challenge.0,
            &Message::Challenge(again).encode(),
        )?;
    }
    Ok(ChallengeTest {
        meta,
        signature_input: challenge.map(|c| Hex(challenge_signature_input(&c))),
        ..t.clone()
    })
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "challenge", |t: &ChallengeTest| &t.meta, complete)
}
