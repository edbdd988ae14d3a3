//! Registration hardened (issue 9, item 4), each check at the level of
//! the party that must refuse, each asserting the refusal's code and that
//! nothing changed: a device answers only its own server's challenge
//! (KW-REG-019), its proof is masked so that no one can test guesses of
//! its secret offline (KW-REG-020), and it refuses a verifier weaker than
//! the one it registered with, or than its floor (KW-REG-021); a
//! registration with a held certificate ends with it (KW-REG-009,
//! KW-SM-009) and proves its key (KW-REG-022).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use keyway::core::{
    Addr, DeviceCommand, DeviceEvent, DevicePolicy, ProtocolError, ServerPolicy, StoreWrite,
};
use keyway::crypto::primitives::{hmac_sha256, sha256};
use keyway::crypto::register::Verifier;
use keyway::crypto::register::{
    auth_mask, auth_message, cert_pop, client_key, masked_proof, proof, sign_challenge,
};
use keyway::crypto::{
    CertProfile, CertificateAuthority, KxKeyPair, Secret32, SeededEntropy, SigningKeyPair,
};
use keyway::testkit::{Lab, LabOptions, Step, principal};
use keyway::wire::{
    AuthResponse, Certificate, Challenge, Domain, ErrorCode, Extensions, Message, MsgType, Nonce,
    PublicKey, Register, RegisterOk, Role, TxnId,
};

fn one_domain() -> Lab {
    Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 3,
        hub: false,
        ..LabOptions::default()
    })
}

/// `account` asks to register (F1 unless `with_cert`), the server answers,
/// and its challenge is taken off the network: the device waits for it.
fn challenged(lab: &mut Lab, account: &str, command: DeviceCommand) -> Challenge {
    let device = lab.devices[lab.dev(account)].contact;
    lab.command(account, command);
    let (from, to, bytes) = lab.queue.pop_front().unwrap();
    assert_eq!(to, lab.servers[0].addr);
    lab.inject(to, from, &bytes);
    lab.take_challenge(device)
}

/// Whether `account` sent a `register` with `auth` since `mark`.
fn answered(lab: &Lab, mark: usize, account: &str) -> bool {
    lab.trace[mark..].iter().any(|s| {
        matches!(s, Step::Sent { from, message: Message::Register(r), .. }
            if from == account && r.auth.is_some())
    })
}

/// KW-REG-019, KW-CRYPTO-025: a challenge the device's server did not
/// sign — changed on the way, signed by another key, or carrying a
/// certificate that is not its server's (another server, another role, an
/// issuer it does not trust, one expired) — is dropped with the check's
/// code: no answer, no event but the report, the registration attempt
/// still outstanding, and the server's own challenge then answered.
#[test]
fn kw_reg_019_a_device_answers_only_its_servers_challenge() {
    let mut lab = one_domain();
    let server = lab.servers[0].addr;
    let device = lab.devices[0].contact;
    let now = lab.clock().wall_secs();
    let ca = lab.servers[0].config.ca.clone();
    let mut rng = SeededEntropy::from_label("forged challenges");
    let genuine = challenged(&mut lab, "u1@a.example", DeviceCommand::Register);

    // A certificate of `ca` for `subject` with `role`, ending at
    // `not_after`, and its key.
    let mut issued = |ca: &CertificateAuthority, subject: &str, role: Role, not_after: u64| {
        let key = SigningKeyPair::generate(&mut rng);
        let cert = ca.issue(&CertProfile {
            serial: 90_000,
            subject: principal(subject),
            role,
            sig_key: key.public(),
            kx_key: KxKeyPair::generate(&mut rng).public(),
            not_before: now - 3600,
            not_after,
        });
        (key, cert)
    };
    let stranger = CertificateAuthority::new(
        Domain::new("a.example").unwrap(),
        SigningKeyPair::generate(&mut SeededEntropy::from_label("stranger ca")),
    );
    let resigned = |key: &SigningKeyPair, cert| {
        let mut c = Challenge {
            cert,
            ..genuine.clone()
        };
        sign_challenge(&mut c, key);
        c
    };
    let (other_server, other_server_cert) = issued(&ca, "sc2@a.example", Role::Server, now + 3600);
    let (as_device, as_device_cert) = issued(&ca, "sc@a.example", Role::Device, now + 3600);
    let (untrusted, untrusted_cert) = issued(&stranger, "sc@a.example", Role::Server, now + 3600);
    let (expired, expired_cert) = issued(&ca, "sc@a.example", Role::Server, now - 1);
    let mallory = SigningKeyPair::generate(&mut SeededEntropy::from_label("mallory"));
    let cases: Vec<(&str, Challenge, ErrorCode)> = vec![
        (
            "salt substituted",
            Challenge {
                salt: Nonce([0x5a; 16]),
                ..genuine.clone()
            },
            ErrorCode::SIGNATURE_INVALID,
        ),
        (
            "iterations lowered",
            Challenge {
                iterations: genuine.iterations + 1,
                ..genuine.clone()
            },
            ErrorCode::SIGNATURE_INVALID,
        ),
        (
            "kx-challenge substituted",
            Challenge {
                kx_challenge: KxKeyPair::generate(&mut SeededEntropy::from_label("e")).public(),
                ..genuine.clone()
            },
            ErrorCode::SIGNATURE_INVALID,
        ),
        (
            "signed by another key",
            resigned(&mallory, genuine.cert.clone()),
            ErrorCode::SIGNATURE_INVALID,
        ),
        (
            "another server's certificate",
            resigned(&other_server, other_server_cert),
            ErrorCode::CERT_SUBJECT_MISMATCH,
        ),
        (
            "role device",
            resigned(&as_device, as_device_cert),
            ErrorCode::CERT_INVALID,
        ),
        (
            "untrusted issuer",
            resigned(&untrusted, untrusted_cert),
            ErrorCode::CERT_INVALID,
        ),
        (
            "expired certificate",
            resigned(&expired, expired_cert),
            ErrorCode::CERT_EXPIRED,
        ),
    ];
    for (what, forged, code) in cases {
        let writes = lab.servers[0].store.writes;
        let mark = lab.trace.len();
        lab.inject(device, server, &Message::Challenge(forged).encode());
        assert_eq!(
            lab.refusals(mark, "u1@a.example"),
            [ProtocolError::Dropped {
                re: MsgType::Challenge,
                code
            }],
            "{what}"
        );
        assert!(!answered(&lab, mark, "u1@a.example"), "{what}: answered");
        assert!(lab.queue.is_empty(), "{what}: something was sent");
        assert_eq!(lab.servers[0].store.writes, writes, "{what}");
        let d = lab.device("u1@a.example");
        assert_eq!(
            (d.registered_until(), d.certificate()),
            (None, None),
            "{what}"
        );
        assert!(
            !lab.device_events("u1@a.example")
                .iter()
                .any(|e| matches!(e, DeviceEvent::RegistrationFailed(_))),
            "{what}: the attempt ended"
        );
    }
    // The attempt is still outstanding: the server's challenge is answered.
    let mark = lab.trace.len();
    lab.inject(device, server, &Message::Challenge(genuine).encode());
    lab.settle();
    assert!(answered(&lab, mark, "u1@a.example"));
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
}

/// A point of order 8 on Curve25519: its X25519 with any key is all zeros.
const ORDER_8: [u8; 32] = [
    0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
    0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
];

/// The `register` with `auth` that `account` has in flight, taken off the
/// network.
fn take_answer(lab: &mut Lab, account: &str) -> Register {
    let contact = lab.devices[lab.dev(account)].contact;
    let at = lab
        .queue
        .iter()
        .position(|(src, _, bytes)| {
            *src == contact
                && matches!(Message::decode(bytes), Ok(Message::Register(r)) if r.auth.is_some())
        })
        .expect("an answer is queued");
    let (_, _, bytes) = lab.queue.remove(at).unwrap();
    match Message::decode(&bytes).unwrap() {
        Message::Register(r) => r,
        _ => unreachable!(),
    }
}

/// KW-REG-020, KW-CRYPTO-021: the proof a device sends is masked by the
/// exchange of its fresh `epk` with the challenge's key: even the right
/// secret is not confirmed by what an eavesdropper sees. The server
/// refuses, with `auth-failed` and nothing written or spent, an answer
/// whose proof is not masked so (made by someone who knows the secret but
/// not the mask), whose `epk` was replaced, or whose `epk` has small order
/// (KW-CRYPTO-005); the device's own answer then registers it.
#[test]
fn kw_reg_020_the_proof_is_masked_against_offline_guessing() {
    let mut lab = one_domain();
    let server = lab.servers[0].addr;
    let device = lab.devices[0].contact;
    let account = principal("u1@a.example");
    let secret = lab.secrets[&account].clone();
    let stored_key = lab.servers[0].config.accounts[&account].stored_key;
    let challenge = challenged(&mut lab, "u1@a.example", DeviceCommand::Register);
    lab.inject(
        device,
        server,
        &Message::Challenge(challenge.clone()).encode(),
    );
    let answer = take_answer(&mut lab, "u1@a.example");
    let auth = answer.auth.clone().unwrap();
    let message = auth_message(&challenge.nonce, &answer);

    // An eavesdropper's offline test of a guess, here the right one: the
    // unmasked construction would confirm it; the masked proof does not.
    let guess = client_key(&secret, &challenge.salt, challenge.iterations).unwrap();
    assert_eq!(sha256(guess.expose()), stored_key);
    let unmasked_key: Vec<u8> = auth
        .proof
        .0
        .iter()
        .zip(hmac_sha256(&stored_key, &message))
        .map(|(p, h)| p ^ h)
        .collect();
    assert_ne!(
        sha256(&unmasked_key),
        stored_key,
        "the proof confirms a guess"
    );

    let with = |edit: &dyn Fn(&mut keyway::wire::AuthResponse)| {
        let mut r = answer.clone();
        edit(r.auth.as_mut().unwrap());
        r
    };
    // Someone who knows the secret, but answers without the mask, or with
    // a mask he can compute himself from a key of small order.
    let unmasked = with(&|a| a.proof = proof(&guess, &message, &Secret32::new([0; 32])));
    let zero_mask = auth_mask(
        &Secret32::new([0; 32]),
        &challenge.nonce,
        &account,
        &PublicKey(ORDER_8),
        &challenge.kx_challenge,
    );
    let low_order = with(&|a| {
        a.epk = PublicKey(ORDER_8);
        a.proof = proof(&guess, &message, &zero_mask);
    });
    let mallory = KxKeyPair::generate(&mut SeededEntropy::from_label("mallory epk"));
    let substituted = with(&|a| a.epk = mallory.public());
    // The masked answer of one who holds the secret is, of course, good:
    // the cases differ from it only in the mask.
    assert!(
        masked_proof(
            &guess,
            &message,
            &mallory,
            &challenge.kx_challenge,
            &challenge.nonce,
            &account
        )
        .is_ok()
    );
    for (port, (what, forged)) in [
        ("unmasked", unmasked),
        ("epk of small order", low_order),
        ("epk substituted", substituted),
    ]
    .into_iter()
    .enumerate()
    {
        // From the device's host (KW-REG-017), each from another port: the
        // server's transaction cache would answer a repeated (txn, source)
        // without checking it again.
        let elsewhere = Addr::new(device.ip(), device.port() + 1 + port as u16);
        let writes = lab.servers[0].store.writes;
        let mark = lab.trace.len();
        lab.inject(server, elsewhere, &Message::Register(forged).encode());
        assert_eq!(
            lab.refusals(mark, "sc@a.example"),
            [ProtocolError::Refused {
                re: MsgType::Register,
                code: ErrorCode::AUTH_FAILED
            }],
            "{what}"
        );
        assert_eq!(lab.servers[0].store.writes, writes, "{what}: written");
        assert!(lab.server(0).registration(&account).is_none(), "{what}");
        lab.queue.clear();
    }
    // Nothing was spent: the device's own answer registers it.
    lab.inject(server, device, &Message::Register(answer).encode());
    lab.settle();
    assert!(lab.server(0).registration(&account).is_some());
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
}

/// Gives the server of domain 0 a new verifier for `account` (as when its
/// operator re-provisions it, or an attacker who took the server over
/// weakens it) and restarts it with it.
fn reprovision(lab: &mut Lab, account: &str, salt: Nonce, iterations: u64) {
    let account = principal(account);
    let verifier = Verifier::with_salt(&lab.secrets[&account], salt, iterations).unwrap();
    lab.servers[0].config.accounts.insert(account, verifier);
    lab.restart_server(0);
}

/// What a device's registration is: its end and its certificate.
fn registration(lab: &Lab, account: &str) -> (Option<u64>, Option<keyway::wire::Certificate>) {
    let d = lab.device(account);
    (d.registered_until(), d.certificate().cloned())
}

/// The device's refusal of its own server's challenge: `auth-failed`, the
/// attempt over, nothing sent, nothing written, the registration it holds
/// kept.
#[track_caller]
fn assert_refused_challenge(lab: &mut Lab, account: &str, what: &str) {
    let before = registration(lab, account);
    let writes = lab.servers[0].store.writes;
    let device = lab.devices[lab.dev(account)].contact;
    let challenge = challenged(lab, account, DeviceCommand::Register);
    let mark = lab.trace.len();
    lab.inject(
        device,
        lab.servers[0].addr,
        &Message::Challenge(challenge).encode(),
    );
    assert_eq!(
        lab.refusals(mark, account),
        [ProtocolError::BadResponse {
            re: MsgType::Challenge,
            code: ErrorCode::AUTH_FAILED
        }],
        "{what}"
    );
    assert!(!answered(lab, mark, account), "{what}: answered");
    assert!(lab.queue.is_empty(), "{what}: something was sent");
    assert_eq!(lab.servers[0].store.writes, writes, "{what}: written");
    assert_eq!(
        registration(lab, account),
        before,
        "{what}: registration changed"
    );
    assert!(
        lab.device_events(account)
            .last()
            .is_some_and(|e| *e == DeviceEvent::RegistrationFailed(ErrorCode::AUTH_FAILED)),
        "{what}"
    );
}

/// KW-REG-021: a device pins the salt and iteration count its
/// registration passed with, and refuses, with `auth-failed`, a challenge
/// of its own server — signed, so no one else could have changed it —
/// that names another salt or fewer iterations: it answers nothing, and
/// keeps the registration it holds. More iterations under the same salt
/// are taken, and pinned.
#[test]
fn kw_reg_021_a_device_refuses_a_weaker_verifier_than_it_registered_with() {
    let mut lab = one_domain();
    let account = principal("u1@a.example");
    let salt = lab.servers[0].config.accounts[&account].salt;
    reprovision(&mut lab, "u1@a.example", salt, 5000);
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    assert!(registration(&lab, "u1@a.example").0.is_some());

    reprovision(&mut lab, "u1@a.example", salt, 4096);
    assert_refused_challenge(&mut lab, "u1@a.example", "fewer iterations");
    reprovision(&mut lab, "u1@a.example", Nonce([0x5a; 16]), 5000);
    assert_refused_challenge(&mut lab, "u1@a.example", "another salt");

    // More iterations under the pinned salt: answered, and pinned.
    reprovision(&mut lab, "u1@a.example", salt, 6000);
    lab.advance(2_000);
    lab.queue.clear();
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    assert!(lab.refusals(mark, "u1@a.example").is_empty());
    assert!(
        lab.device_events("u1@a.example")
            .last()
            .is_some_and(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
    reprovision(&mut lab, "u1@a.example", salt, 5000);
    assert_refused_challenge(&mut lab, "u1@a.example", "fewer than the new pin");
}

/// KW-REG-021: a device refuses, with `auth-failed`, a challenge naming
/// fewer iterations than its policy's floor, even on its first
/// registration; at the floor it registers.
#[test]
fn kw_reg_021_a_device_refuses_fewer_iterations_than_its_floor() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 1,
        hub: false,
        device_policy: DevicePolicy {
            min_iterations: 5000,
            ..DevicePolicy::default()
        },
        ..LabOptions::default()
    });
    assert_refused_challenge(&mut lab, "u1@a.example", "below the floor");
    assert_eq!(registration(&lab, "u1@a.example"), (None, None));
    let salt = lab.servers[0].config.accounts[&principal("u1@a.example")].salt;
    reprovision(&mut lab, "u1@a.example", salt, 5000);
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    assert!(registration(&lab, "u1@a.example").0.is_some());
}

/// `request` answered to `challenge` as a device knowing `secret` does,
/// under `txn`, with a `cert-pop` by `signer` when given.
fn answer_as(
    request: &Register,
    challenge: &Challenge,
    secret: &[u8],
    signer: Option<&SigningKeyPair>,
    txn: u8,
) -> Register {
    let key = client_key(secret, &challenge.salt, challenge.iterations).unwrap();
    let answer = Register {
        txn: TxnId([txn; 8]),
        auth: None,
        ..request.clone()
    };
    let message = auth_message(&challenge.nonce, &answer);
    let ephemeral = KxKeyPair::generate(&mut SeededEntropy::from_label("answer"));
    let proof = masked_proof(
        &key,
        &message,
        &ephemeral,
        &challenge.kx_challenge,
        &challenge.nonce,
        &request.from,
    )
    .unwrap();
    Register {
        auth: Some(AuthResponse {
            nonce: challenge.nonce,
            proof,
            kx_proof: None,
            epk: ephemeral.public(),
            cert_pop: signer.map(|k| cert_pop(k, &message)),
            ext: Extensions::new(),
        }),
        ..answer
    }
}

/// The message waiting in the lab's queue for `to` that `pick` takes,
/// taken out of it.
fn take<T>(lab: &mut Lab, to: Addr, pick: impl Fn(Message) -> Option<T>) -> T {
    let at = lab
        .queue
        .iter()
        .position(|(_, dst, bytes)| {
            *dst == to && Message::decode(bytes).ok().and_then(&pick).is_some()
        })
        .expect("the message is queued");
    let (_, _, bytes) = lab.queue.remove(at).unwrap();
    pick(Message::decode(&bytes).unwrap()).unwrap()
}

/// Registers `account` with its certificate (F2), for `expires`, as the
/// device itself would, from its contact; returns the server's answer,
/// taken off the network.
fn register_with_certificate(lab: &mut Lab, account: &str, expires: u64, txn: u8) -> Message {
    let i = lab.dev(account);
    let device = lab.devices[i].contact;
    let server = lab.servers[0].addr;
    let cert = lab.device(account).certificate().cloned().unwrap();
    let request = Register {
        txn: TxnId([txn; 8]),
        from: principal(account),
        contact: keyway::wire::Contact {
            transport: keyway::wire::Transport::Udp,
            addr: device,
        },
        expires,
        csr: None,
        cert: Some(cert),
        auth: None,
        ext: Extensions::new(),
    };
    lab.inject(server, device, &Message::Register(request.clone()).encode());
    let challenge = lab.take_challenge(device);
    let secret = lab.secrets[&principal(account)].clone();
    let key = lab.devices[i].identity.signing.clone();
    let answer = answer_as(
        &request,
        &challenge,
        &secret,
        Some(&key),
        txn.wrapping_add(1),
    );
    lab.inject(server, device, &Message::Register(answer).encode());
    take(lab, device, |m| match m {
        m @ (Message::RegisterOk(_) | Message::Error(_)) => Some(m),
        _ => None,
    })
}

fn cert_of(lab: &Lab, account: &str) -> Certificate {
    lab.device(account).certificate().cloned().unwrap()
}

/// KW-REG-009, KW-REG-008: a registration with the certificate held (F2)
/// ends exactly when the certificate does, however short a term it asks
/// for: the server stores and answers the certificate's `not-after`, so
/// the certificate never outlives its registration.
#[test]
fn kw_reg_009_an_f2_registration_ends_with_its_certificate() {
    let mut lab = one_domain();
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let cert = cert_of(&lab, "u1@a.example");
    lab.advance(10_000);
    let now = lab.clock().wall_secs();
    let remaining = cert.tbs.not_after.0 - now;
    for (n, asked) in [60, 600, remaining, 86_400].into_iter().enumerate() {
        let txn = 0x10 + 2 * n as u8;
        let Message::RegisterOk(ok) =
            register_with_certificate(&mut lab, "u1@a.example", asked, txn)
        else {
            panic!("asked {asked}: refused");
        };
        assert_eq!(
            (ok.not_after.0, ok.expires),
            (cert.tbs.not_after.0, remaining),
            "asked {asked}"
        );
        let stored = lab
            .server(0)
            .registration(&principal("u1@a.example"))
            .unwrap();
        assert_eq!(
            (stored.not_after, &stored.cert),
            (cert.tbs.not_after.0, &cert)
        );
    }
}

/// KW-REG-009: a certificate with less left than the server's minimum
/// term is refused with `cert-expired`, nothing written; the device then
/// asks for a new certificate (F1) and registers with it.
#[test]
fn kw_reg_009_a_certificate_too_short_to_register_with_is_reissued() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 1,
        hub: false,
        server_policy: ServerPolicy {
            min_expires: 60,
            max_expires: 100,
            ..ServerPolicy::default()
        },
        ..LabOptions::default()
    });
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let old = cert_of(&lab, "u1@a.example");
    assert_eq!(old.tbs.not_after.0 - old.tbs.not_before.0, 100);
    // 50 s left, below the minimum of 60; the refresh (at 80 s) not due.
    lab.advance(50_000);
    let writes = lab.servers[0].store.writes;
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::RegisterWithCertificate);
    lab.settle();
    assert_eq!(
        lab.refusals(mark, "sc@a.example"),
        [ProtocolError::Refused {
            re: MsgType::Register,
            code: ErrorCode::CERT_EXPIRED
        }]
    );
    // Nothing was written before the device asked for a new certificate.
    let reissue = lab
        .find(mark, |s| {
            matches!(s, Step::Sent { from, message: Message::Register(r), .. }
                if from == "u1@a.example" && r.csr.is_some())
        })
        .expect("the device asks for a new certificate");
    assert!(
        !lab.trace[mark..reissue]
            .iter()
            .any(|s| matches!(s, Step::Stored { .. }))
    );
    assert!(lab.servers[0].store.writes > writes);
    let new = cert_of(&lab, "u1@a.example");
    assert_ne!(new.tbs.serial, old.tbs.serial);
    assert_eq!(
        lab.device("u1@a.example").registered_until(),
        Some(new.tbs.not_after.0)
    );
    assert!(lab.trace[mark..].iter().all(|s| !matches!(
        s,
        Step::Stored { write: StoreWrite::PutRegistration(r), .. } if r.cert == old
    )));
}

/// KW-SM-009: a device takes an F2 `register-ok` only when it ends with
/// its certificate; one that ends sooner (or later) is refused with
/// `cert-invalid`, and the device keeps the registration it held.
#[test]
fn kw_sm_009_a_device_takes_an_f2_registration_only_to_its_certificates_end() {
    let mut lab = one_domain();
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let cert = cert_of(&lab, "u1@a.example");
    let held = lab.device("u1@a.example").registered_until();
    lab.advance(10_000);
    let device = lab.devices[0].contact;
    let server = lab.servers[0].addr;
    for shift in [-100i64, 100] {
        lab.command("u1@a.example", DeviceCommand::RegisterWithCertificate);
        // Deliver everything up to the register-ok, which the test changes.
        let ok: RegisterOk = loop {
            let (from, to, bytes) = lab.queue.pop_front().expect("a register-ok");
            match Message::decode(&bytes).unwrap() {
                Message::RegisterOk(ok) if to == device => break ok,
                _ => lab.inject(to, from, &bytes),
            }
        };
        let changed = RegisterOk {
            not_after: keyway::wire::Time(ok.not_after.0.saturating_add_signed(shift)),
            ..ok
        };
        let mark = lab.trace.len();
        lab.inject(device, server, &Message::RegisterOk(changed).encode());
        assert_eq!(
            lab.refusals(mark, "u1@a.example"),
            [ProtocolError::BadResponse {
                re: MsgType::RegisterOk,
                code: ErrorCode::CERT_INVALID
            }],
            "{shift}"
        );
        let d = lab.device("u1@a.example");
        assert_eq!((d.registered_until(), d.certificate()), (held, Some(&cert)));
    }
}

/// KW-REG-022, KW-CRYPTO-026: a `register` that keeps a certificate proves
/// its signing key. Someone who has learned the account's secret, but not
/// the device's key, tries to move the device's registration to his own
/// address with its certificate (F2) or with a refresh: without a
/// `cert-pop`, with one of his own key, or with the device's `cert-pop`
/// of an earlier exchange. Each is refused with `signature-invalid`,
/// nothing written, the registration where the device put it; the
/// device's own F2 then passes.
#[test]
fn kw_reg_022_a_registration_that_keeps_a_certificate_proves_its_key() {
    let mut lab = one_domain();
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let account = principal("u1@a.example");
    let cert = cert_of(&lab, "u1@a.example");
    let secret = lab.secrets[&account].clone();
    let server = lab.servers[0].addr;
    let device = lab.devices[0].contact;
    let held = lab.server(0).registration(&account).unwrap().clone();
    // The device's own F2, captured: its cert-pop is for its register.
    lab.command("u1@a.example", DeviceCommand::RegisterWithCertificate);
    lab.settle();
    let captured = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(_, _, m)| match m {
            Message::Register(r) if r.auth.is_some() && r.cert.is_some() => Some(r),
            _ => None,
        })
        .unwrap();
    let held_pop = captured.auth.as_ref().unwrap().cert_pop.unwrap();

    let attacker: Addr = "203.0.113.9:5060".parse().unwrap();
    let mallory = SigningKeyPair::generate(&mut SeededEntropy::from_label("mallory"));
    let request = |txn: u8, cert: Option<Certificate>| Register {
        txn: TxnId([txn; 8]),
        from: account.clone(),
        contact: keyway::wire::Contact {
            transport: keyway::wire::Transport::Udp,
            addr: attacker,
        },
        expires: 3600,
        csr: None,
        cert,
        auth: None,
        ext: Extensions::new(),
    };
    enum Pop<'a> {
        None,
        By(&'a SigningKeyPair),
        Replayed,
    }
    let cases = [
        ("F2 without cert-pop", Some(cert.clone()), Pop::None),
        (
            "F2, cert-pop of another key",
            Some(cert.clone()),
            Pop::By(&mallory),
        ),
        (
            "F2, the device's cert-pop replayed",
            Some(cert.clone()),
            Pop::Replayed,
        ),
        ("refresh without cert-pop", None, Pop::None),
        ("refresh, cert-pop of another key", None, Pop::By(&mallory)),
    ];
    for (n, (what, cert, pop)) in cases.into_iter().enumerate() {
        let txn = 0x40 + 2 * n as u8;
        let request = request(txn, cert);
        lab.inject(
            server,
            attacker,
            &Message::Register(request.clone()).encode(),
        );
        let challenge = lab.take_challenge(attacker);
        let signer = match pop {
            Pop::By(key) => Some(key),
            Pop::None | Pop::Replayed => None,
        };
        let mut answer = answer_as(&request, &challenge, &secret, signer, txn + 1);
        if let Pop::Replayed = pop {
            answer.auth.as_mut().unwrap().cert_pop = Some(held_pop);
        }
        let writes = lab.servers[0].store.writes;
        let mark = lab.trace.len();
        lab.inject(server, attacker, &Message::Register(answer).encode());
        assert_eq!(
            lab.refusals(mark, "sc@a.example"),
            [ProtocolError::Refused {
                re: MsgType::Register,
                code: ErrorCode::SIGNATURE_INVALID
            }],
            "{what}"
        );
        assert_eq!(lab.servers[0].store.writes, writes, "{what}: written");
        let now = lab.server(0).registration(&account).unwrap();
        assert_eq!(now.contact, held.contact, "{what}: moved");
        assert_eq!(now.cert, held.cert, "{what}");
        lab.queue.clear();
    }
    // With the device's key, the same F2 passes.
    let Message::RegisterOk(ok) = register_with_certificate(&mut lab, "u1@a.example", 3600, 0x60)
    else {
        panic!("the device's F2 was refused");
    };
    assert_eq!(ok.contact.addr, device);
}

/// The `register`s `account` sent since `mark`, in order.
fn registers_sent(lab: &Lab, mark: usize, account: &str) -> Vec<Register> {
    lab.trace[mark..]
        .iter()
        .filter_map(|s| match s {
            Step::Sent {
                from,
                message: Message::Register(r),
                ..
            } if from == account => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// KW-SM-025: a device whose answer to a challenge comes back
/// `stale-nonce` — the server no longer holds the nonce (it expired on the
/// way, or a restart lost it) — starts over once, with a request without
/// proof under a new `txn`, and registers.
#[test]
fn kw_sm_025_a_device_starts_over_when_its_nonce_is_stale() {
    let mut lab = one_domain();
    let mark = lab.trace.len();
    let challenge = challenged(&mut lab, "u1@a.example", DeviceCommand::Register);
    let (device, server) = (lab.devices[0].contact, lab.servers[0].addr);
    let lifetime = challenge.expires;
    lab.inject(device, server, &Message::Challenge(challenge).encode());
    // The answer is held on the way until its nonce has expired (its
    // retransmissions lost), within the 32 s the device waits for it.
    let (_, _, answer) = lab.queue.pop_front().unwrap();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Register(_))));
    lab.advance(lifetime * 1000 + 1_000);
    lab.drop_if = None;
    lab.inject(server, device, &answer);
    lab.settle();
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
    let sent = registers_sent(&lab, mark, "u1@a.example");
    let again = sent
        .iter()
        .position(|r| r.auth.is_none() && r.txn != sent[0].txn)
        .expect("a request started over");
    assert!(sent[..again].iter().any(|r| r.auth.is_some()));
    assert!(sent[..again].iter().all(|r| r.txn != sent[again].txn));
}

/// State table, registering: `interval-too-brief` → retry with
/// `min-expires`. A device that asks for less than its server's minimum
/// registers for the minimum.
#[test]
fn a_device_asking_below_the_minimum_registers_for_the_minimum() {
    let mut plan = LabOptions {
        domains: vec!["a.example"],
        devices: 1,
        hub: false,
        ..LabOptions::default()
    }
    .plan();
    plan.device_expires = 30;
    let mut lab = Lab::from_plan(&plan);
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let terms: Vec<u64> = registers_sent(&lab, mark, "u1@a.example")
        .iter()
        .map(|r| r.expires)
        .collect();
    assert_eq!(terms.first(), Some(&30));
    assert_eq!(terms.last(), Some(&60));
    let start = lab.clock().wall_secs();
    let until = lab.device("u1@a.example").registered_until().unwrap();
    assert!(
        (start + 55..=start + 60).contains(&until),
        "{until} from {start}"
    );

    // With its certificate (F2) alike: the retry keeps the certificate,
    // and asks for no new one.
    let serial = cert_of(&lab, "u1@a.example").tbs.serial;
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::RegisterWithCertificate);
    lab.settle();
    let sent = registers_sent(&lab, mark, "u1@a.example");
    assert!(sent.iter().all(|r| r.csr.is_none() && r.cert.is_some()));
    assert_eq!(sent.last().map(|r| r.expires), Some(60));
    assert_eq!(cert_of(&lab, "u1@a.example").tbs.serial, serial);
}

/// An `interval-too-brief` whose `min-expires` is not above the term asked
/// for (a server that refuses what it says it takes) ends the attempt:
/// no retry of the same term, which would go on for ever.
#[test]
fn a_minimum_not_above_the_term_asked_for_ends_the_attempt() {
    let mut lab = one_domain();
    lab.command("u1@a.example", DeviceCommand::Register);
    let (_, server, bytes) = lab.queue.pop_front().unwrap();
    let Ok(Message::Register(asked)) = Message::decode(&bytes) else {
        panic!("a register")
    };
    let error = Message::Error(keyway::wire::ErrorResponse {
        txn: Some(asked.txn),
        re: Some(MsgType::Register),
        code: ErrorCode::INTERVAL_TOO_BRIEF,
        reason: None,
        offset: None,
        min_expires: Some(asked.expires),
        retry_after: None,
        ext: Extensions::new(),
    });
    let device = lab.devices[0].contact;
    lab.inject(device, server, &error.encode());
    assert!(lab.queue.is_empty(), "no register sent again");
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::RegistrationFailed(
                ErrorCode::INTERVAL_TOO_BRIEF
            ))
    );
}

/// A server restarted with a longer minimum between its challenge and the
/// device's answer refuses the answer with `interval-too-brief`; the
/// device's retry with the minimum is a new request without the proof
/// (which answered the challenge for the shorter term), and registers.
#[test]
fn a_retry_with_the_minimum_carries_no_old_proof() {
    let mut lab = one_domain();
    let mark = lab.trace.len();
    let challenge = challenged(&mut lab, "u1@a.example", DeviceCommand::Register);
    lab.servers[0].config.policy.min_expires = 7200;
    lab.servers[0].config.policy.max_expires = 7200;
    lab.restart_server(0);
    let (device, server) = (lab.devices[0].contact, lab.servers[0].addr);
    lab.inject(device, server, &Message::Challenge(challenge).encode());
    lab.settle();
    let sent = registers_sent(&lab, mark, "u1@a.example");
    let retry = sent
        .iter()
        .find(|r| r.expires == 7200)
        .expect("a retry with the minimum");
    assert!(retry.auth.is_none());
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
}
