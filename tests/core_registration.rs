//! Registration hardened (issue 9, item 4), each check at the level of
//! the party that must refuse, each asserting the refusal's code and that
//! nothing changed: a device answers only its own server's challenge
//! (KW-REG-019).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use keyway::core::{Addr, DeviceCommand, DeviceEvent, ProtocolError};
use keyway::crypto::register::sign_challenge;
use keyway::crypto::{CertProfile, CertificateAuthority, KxKeyPair, SeededEntropy, SigningKeyPair};
use keyway::testkit::{Lab, LabOptions, Step, principal};
use keyway::wire::{Challenge, Domain, ErrorCode, Message, MsgType, Nonce, Role};

fn one_domain() -> Lab {
    Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 3,
        hub: false,
        ..LabOptions::default()
    })
}

/// The challenge waiting in the lab's queue for `to`, taken out of it.
fn take_challenge(lab: &mut Lab, to: Addr) -> Challenge {
    let at = lab
        .queue
        .iter()
        .position(|(_, dst, bytes)| {
            *dst == to && matches!(Message::decode(bytes), Ok(Message::Challenge(_)))
        })
        .expect("a challenge is queued");
    let (_, _, bytes) = lab.queue.remove(at).unwrap();
    match Message::decode(&bytes).unwrap() {
        Message::Challenge(c) => c,
        _ => unreachable!(),
    }
}

/// `account` asks to register (F1 unless `with_cert`), the server answers,
/// and its challenge is taken off the network: the device waits for it.
fn challenged(lab: &mut Lab, account: &str, command: DeviceCommand) -> Challenge {
    let device = lab.devices[lab.dev(account)].contact;
    lab.command(account, command);
    let (from, to, bytes) = lab.queue.pop_front().unwrap();
    assert_eq!(to, lab.servers[0].addr);
    lab.inject(to, from, &bytes);
    take_challenge(lab, device)
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
