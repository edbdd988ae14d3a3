//! Signatures of firewall and recording requests (KW-CRYPTO-060,
//! KW-FW-005) and of in-session requests (KW-CRYPTO-061, KW-KEY-008).

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::{
    CertProfile, CertificateAuthority, Secret32, SigningKeyPair, message_signature_input,
    sign_message, verify_message,
};
use crate::crypto::{Expect, TrustAnchor, TrustStore};
use crate::wire::{
    Certificate, Domain, Message, MsgType, Principal, Role, decode_plaintext, encode_plaintext,
    examples,
};

const NOW: u64 = 1_767_225_600;

/// The anchor the signer's certificate chains to, and the time of the checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MsgSigParams {
    domain: String,
    anchor: Hex,
    now: u64,
}

/// A signed request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MsgSigTest {
    #[serde(flatten)]
    meta: Meta,
    /// The signer's certificate (already validated by the receiver).
    certificate: Hex,
    /// The signer's seed, for valid tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_seed: Option<Hex>,
    message: Hex,
    /// `cbor(["keyway-v1 msg-sig", m])`, whenever the message decodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature_input: Option<Hex>,
}

const RECIPE: &str = "Confirm the certificate (KW-CERT-002) against the anchor at now, subject = the message's from, role server for pinhole-*, media-copy, record-start, record-key and record-stop, device for ack, info, rekey and bye, any role for record-list and record-fetch; decode message; m = its encoding without key 8 (and without keys 6 and 7 for ack, info, rekey, bye: KW-CRYPTO-061); signature_input = cbor([\"keyway-v1 msg-sig\", m]) (compare); \
sig.kid is the key identifier of the certificate's sig-key and sig.sig verifies over signature_input. With sig_seed (the certificate's key), signing reproduces the message.";

pub fn generate() -> String {
    let mut rng = entropy_for("msgsig/pki");
    let ca = CertificateAuthority::new(
        Domain("a.example".into()),
        SigningKeyPair::generate(&mut rng),
    );
    let key = SigningKeyPair::generate(&mut rng);
    let cert = ca.issue(&CertProfile {
        serial: 9,
        subject: Principal("sc@a.example".into()),
        role: Role::Server,
        sig_key: key.public(),
        kx_key: crate::crypto::KxKeyPair::generate(&mut rng).public(),
        not_before: NOW - 60,
        not_after: NOW + 3600,
    });
    let params = MsgSigParams {
        domain: "a.example".into(),
        anchor: Hex(ca.anchor().key.0.to_vec()),
        now: NOW,
    };
    let mut tests = Vec::new();
    let reqs = ["KW-CRYPTO-060", "KW-FW-005"];
    for t in [MsgType::PinholeOpen, MsgType::RecordStart] {
        let Some(mut m) = examples::all().into_iter().find(|m| m.msg_type() == t) else {
            continue;
        };
        if sign_message(&mut m, &key).is_none() {
            continue;
        }
        let tc = format!("msgsig/{}", t.name());
        tests.push(make(
            &params,
            &tc,
            "a request signed by its server",
            &reqs,
            &[],
            &cert,
            Some(&key),
            &m,
        ));
        let mut changed = m.clone();
        if let Message::PinholeOpen(p) = &mut changed {
            p.lifetime += 1;
        }
        if let Message::RecordStart(r) = &mut changed {
            r.mode = crate::wire::RecordingMode::CiphertextAndKeys;
        }
        tests.push(make(
            &params,
            &format!("{tc}-changed"),
            "a field changed after signing",
            &reqs,
            &["Forged"],
            &cert,
            None,
            &changed,
        ));
    }
    in_session(&params, &ca, &mut rng, &mut tests);
    // A fetch signed by a device (any role, KW-CRYPTO-060), and the same
    // fetch with its `time` moved after signing: `time` is inside the
    // signed part, so a captured request cannot be made fresh again
    // (KW-REC-006).
    let mut rng = entropy_for("msgsig/reader");
    let reader_key = SigningKeyPair::generate(&mut rng);
    let reader_cert = ca.issue(&CertProfile {
        serial: 10,
        subject: Principal("alice@a.example".into()),
        role: Role::Device,
        sig_key: reader_key.public(),
        kx_key: crate::crypto::KxKeyPair::generate(&mut rng).public(),
        not_before: NOW - 60,
        not_after: NOW + 3600,
    });
    let reqs = ["KW-CRYPTO-060", "KW-REC-005", "KW-REC-006"];
    if let Some(mut m) = examples::all()
        .into_iter()
        .find(|m| m.msg_type() == MsgType::RecordFetch)
        && sign_message(&mut m, &reader_key).is_some()
    {
        tests.push(make(
            &params,
            "msgsig/record-fetch",
            "a fetch signed by a device, its time inside the signed part",
            &reqs,
            &[],
            &reader_cert,
            Some(&reader_key),
            &m,
        ));
        let mut later = m.clone();
        if let Message::RecordFetch(f) = &mut later {
            f.time.0 += 60;
        }
        tests.push(make(
            &params,
            "msgsig/record-fetch-other-time",
            "a captured fetch given a later time after signing",
            &reqs,
            &["Forged"],
            &reader_cert,
            None,
            &later,
        ));
    }
    // The request re-encoded with a non-shortest integer and signed over
    // those bytes: a verifier that checks the signature over the bytes
    // received without the determinism check would accept it
    // (KW-CRYPTO-003); the decoder refuses it first (KW-WIRE-002).
    if let Some(m) = examples::all()
        .into_iter()
        .find(|m| m.msg_type() == MsgType::PinholeOpen)
    {
        let wide_m = widen_first_key(&m.encode_without_signature());
        let sig = crate::wire::Signature {
            kid: key.kid(),
            sig: key.sign(&crate::crypto::structure::structure(
                crate::crypto::structure::MSG_SIG,
                &[crate::crypto::structure::Part::Bytes(&wide_m)],
            )),
        };
        let mut signed = m.clone();
        if let Message::PinholeOpen(p) = &mut signed {
            p.sig = sig;
        }
        let t = MsgSigTest {
            meta: Meta::valid(
                "msgsig/re-encoded",
                "a pinhole-open with a non-shortest map key, signed over those bytes",
                &["KW-CRYPTO-003", "KW-CRYPTO-060", "KW-WIRE-002"],
                &["ReEncoded"],
            ),
            certificate: Hex(encode_plaintext(&cert)),
            sig_seed: None,
            message: Hex(widen_first_key(&signed.encode())),
            signature_input: None,
        };
        tests.push(complete(&params, &t).unwrap_or(t));
    }
    let notes = [
        ("Forged", "The message was changed after it was signed."),
        (
            "ReEncoded",
            "The message is a non-deterministic encoding, signed as sent; a verifier that skips the determinism check would accept it (KW-CRYPTO-003).",
        ),
    ];
    VectorFile::new("msgsig", "spec/crypto.md §7", RECIPE, &notes, params, tests).to_json()
}

/// KW-CRYPTO-061: `ack`, `info`, `rekey` and `bye` signed by the device in
/// `from`; valid again after a server rewrote `hops` and `via`, forged
/// once anything else changed.
fn in_session(
    params: &MsgSigParams,
    ca: &CertificateAuthority,
    rng: &mut crate::crypto::SeededEntropy,
    tests: &mut Vec<MsgSigTest>,
) {
    let key = SigningKeyPair::generate(rng);
    let alice = Principal("alice@a.example".into());
    let cert = ca.issue(&CertProfile {
        serial: 10,
        subject: alice.clone(),
        role: Role::Device,
        sig_key: key.public(),
        kx_key: crate::crypto::KxKeyPair::generate(rng).public(),
        not_before: NOW - 60,
        not_after: NOW + 3600,
    });
    let reqs = ["KW-CRYPTO-061", "KW-KEY-008"];
    let kinds = [MsgType::Ack, MsgType::Info, MsgType::Rekey, MsgType::Bye];
    for m in examples::all() {
        let t = m.msg_type();
        if !kinds.contains(&t) {
            continue;
        }
        let mut m = match m {
            // Sent by alice, whose certificate this is.
            Message::Rekey(r) => Message::Rekey(crate::wire::Rekey {
                from: alice.clone(),
                to: r.from.clone(),
                ..r
            }),
            other => other,
        };
        if sign_message(&mut m, &key).is_none() {
            continue;
        }
        let tc = format!("msgsig/{}", t.name());
        let valid = |tc: &str, comment: &str, m: &Message, key: Option<&SigningKeyPair>| {
            make(params, tc, comment, &reqs, &[], &cert, key, m)
        };
        tests.push(valid(
            &tc,
            "an in-session request signed by its sender",
            &m,
            Some(&key),
        ));
        let hop = crate::wire::Hops::new(3).unwrap_or_default();
        let via = crate::wire::List::new(vec![
            Principal("sc@a.example".into()),
            Principal("hub@hub.example".into()),
        ]);
        let mut rerouted = m.clone();
        let mut changed = m.clone();
        match (&mut rerouted, &mut changed) {
            (Message::Ack(r), Message::Ack(c)) => {
                (r.hops, r.via) = (hop, via);
                c.session.0[0] ^= 1;
            }
            (Message::Info(r), Message::Info(c)) => {
                (r.hops, r.via) = (hop, via);
                c.seq += 1;
            }
            (Message::Rekey(r), Message::Rekey(c)) => {
                (r.hops, r.via) = (hop, via);
                c.epoch += 1;
            }
            (Message::Bye(r), Message::Bye(c)) => {
                (r.hops, r.via) = (hop, via);
                c.txn.0[0] ^= 1;
            }
            _ => continue,
        }
        tests.push(valid(
            &format!("{tc}-rerouted"),
            "hops and via rewritten by the servers on the way: still valid",
            &rerouted,
            None,
        ));
        tests.push(make(
            params,
            &format!("{tc}-changed"),
            "a signed field changed on the way (session, seq, epoch or txn)",
            &reqs,
            &["Forged"],
            &cert,
            None,
            &changed,
        ));
    }
}

/// `bytes` (a map whose first key is a small integer) with that key
/// written in two bytes: the same value, not deterministically encoded.
fn widen_first_key(bytes: &[u8]) -> Vec<u8> {
    match bytes {
        [head, key @ 0..=0x17, rest @ ..] => {
            let mut out = vec![*head, 0x18, *key];
            out.extend_from_slice(rest);
            out
        }
        _ => bytes.to_vec(),
    }
}

#[allow(clippy::too_many_arguments)]
fn make(
    params: &MsgSigParams,
    tc: &str,
    comment: &str,
    reqs: &[&str],
    flags: &[&str],
    cert: &Certificate,
    key: Option<&SigningKeyPair>,
    m: &Message,
) -> MsgSigTest {
    let t = MsgSigTest {
        meta: Meta::valid(tc, comment, reqs, flags),
        certificate: Hex(encode_plaintext(cert)),
        sig_seed: key.map(|k| Hex(k.seed().expose().to_vec())),
        message: Hex(m.encode()),
        signature_input: None,
    };
    complete(params, &t).unwrap_or(t)
}

/// The role a receiver confirms the signer's certificate with
/// (KW-CRYPTO-060, KW-CRYPTO-061): any role for a reader's requests.
fn signer_role(t: MsgType) -> Option<Role> {
    match t {
        MsgType::RecordList | MsgType::RecordFetch => None,
        MsgType::Ack | MsgType::Info | MsgType::Rekey | MsgType::Bye => Some(Role::Device),
        _ => Some(Role::Server),
    }
}

fn run(params: &MsgSigParams, t: &MsgSigTest) -> Result<(), Failure> {
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let message = Message::decode(&t.message.0)?;
    let cert: Certificate = decode_plaintext(&t.certificate.0)?;
    let trust = TrustStore::new(vec![TrustAnchor {
        domain: Domain::new(&params.domain).map_err(|e| bad(e.to_string()))?,
        key: crate::wire::PublicKey(params.anchor.array().map_err(bad)?),
    }]);
    let from = match &message {
        Message::PinholeOpen(m) => &m.from,
        Message::PinholeNarrow(m) => &m.from,
        Message::PinholeClose(m) => &m.from,
        Message::MediaCopy(m) => &m.from,
        Message::RecordStart(m) => &m.from,
        Message::RecordKey(m) => &m.from,
        Message::RecordStop(m) => &m.from,
        Message::RecordList(m) => &m.from,
        Message::RecordFetch(m) => &m.from,
        Message::Ack(m) => &m.from,
        Message::Info(m) => &m.from,
        Message::Rekey(m) => &m.from,
        Message::Bye(m) => &m.from,
        _ => return Err(bad("not a signed request".into())),
    };
    trust
        .check(
            &cert,
            Expect {
                subject: from,
                role: signer_role(message.msg_type()),
                now: params.now,
            },
        )
        .map_err(|e| Failure::from(crate::crypto::CryptoError::Cert(e)))?;
    verify_message(&message, &cert)?;
    Ok(())
}

/// The test recomputed from its inputs (`certificate`, `message`, and
/// `sig_seed` where given, which must be the certificate's key and
/// reproduce the message): the signed input and the receiver's verdict.
fn complete(params: &MsgSigParams, t: &MsgSigTest) -> Result<MsgSigTest, String> {
    let (meta, _) = t.meta.judged(run(params, t))?;
    let message = Message::decode(&t.message.0).ok();
    let signature_input = match &message {
        Some(m) => Some(Hex(
            message_signature_input(m).ok_or("not a signed request")?
        )),
        None => None,
    };
    if let Some(seed) = &t.sig_seed {
        let key = SigningKeyPair::from_seed(&Secret32::new(seed.array()?));
        let cert: Certificate = decode_plaintext(&t.certificate.0).map_err(|e| e.to_string())?;
        same("sig-key of sig_seed", &cert.tbs.sig_key.0, &key.public().0)?;
        let mut again = message.ok_or("sig_seed for a message that does not decode")?;
        sign_message(&mut again, &key).ok_or("not signable")?;
        same("message", &t.message.0, &again.encode())?;
    }
    Ok(MsgSigTest {
        meta,
        signature_input,
        ..t.clone()
    })
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "msgsig", |t: &MsgSigTest| &t.meta, complete)
}
