//! The protocol's weaknesses closed, each at the level of the party that
//! must refuse, each asserting the refusal's code and that nothing
//! changed: accounts are not enumerable (KW-SM-028), a contact is where
//! its register came from (KW-REG-017), a revoked certificate of a
//! server's domain is not carried on (KW-CERT-006), the servers an offer
//! must make recipients are policy (KW-POLICY-002), media packets are
//! accepted once (KW-KEY-007), an unsigned `error` ends no more than
//! its transaction (KW-FRAME-014), and no one can keep an account from
//! registering by asking for challenges (KW-REG-018).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use keyway::core::{
    Addr, DeviceCommand, DeviceEvent, DevicePolicy, ProtocolError, ServerPolicy, SessionEnd,
};
use keyway::testkit::{Lab, LabOptions, Step, principal};
use keyway::wire::{
    CertQuery, Contact, ErrorCode, ErrorResponse, Extensions, Message, MsgType, Register,
    Transport, TxnId, UpTo,
};

fn one_domain() -> Lab {
    Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 3,
        hub: false,
        ..LabOptions::default()
    })
}

/// The error code a server sent last since `mark`.
fn last_error(lab: &Lab, mark: usize) -> Option<ErrorCode> {
    lab.trace[mark..].iter().rev().find_map(|s| match s {
        Step::Sent {
            message: Message::Error(e),
            ..
        } => Some(e.code),
        _ => None,
    })
}

/// KW-SM-028, KW-QUERY-005: a query for an account the domain does not
/// have is answered exactly as one for an account without a registration
/// (`cert-not-found`), and so is a request routed to one
/// (`not-registered`); no `error` carries a reason.
#[test]
fn kw_sm_028_answers_do_not_tell_which_accounts_exist() {
    let mut lab = one_domain();
    // u1 and u2 registered; u3 exists but is not; u9 does not exist.
    for who in ["u1@a.example", "u2@a.example"] {
        lab.command(who, DeviceCommand::Register);
    }
    lab.settle();
    let server = lab.servers[0].addr;
    let from = lab.devices[0].contact;
    let session = lab.call("u1@a.example", "u2@a.example");
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(sender, _, m)| match m {
            Message::Offer(o) if sender == "u1@a.example" && o.session == session => Some(o),
            _ => None,
        })
        .unwrap();
    let mut answers = Vec::new();
    for (n, target) in ["u3@a.example", "u9@a.example"].into_iter().enumerate() {
        let query = Message::CertQuery(CertQuery {
            txn: TxnId([0x30 + n as u8; 8]),
            from: principal("u1@a.example"),
            hops: UpTo::new(8).unwrap(),
            via: None,
            target: principal(target),
            ext: Extensions::new(),
        });
        let mark = lab.trace.len();
        lab.inject(server, from, &query.encode());
        answers.push(last_error(&lab, mark));
        // An offer routed to it.
        let mut routed = offer.clone();
        routed.to = principal(target);
        routed.txn = TxnId([0x40 + n as u8; 8]);
        routed.session = keyway::wire::SessionId([0x40 + n as u8; 16]);
        let mark = lab.trace.len();
        lab.inject(server, from, &Message::Offer(routed).encode());
        answers.push(last_error(&lab, mark));
    }
    assert_eq!(
        answers,
        vec![
            Some(ErrorCode::CERT_NOT_FOUND),
            Some(ErrorCode::NOT_REGISTERED),
            Some(ErrorCode::CERT_NOT_FOUND),
            Some(ErrorCode::NOT_REGISTERED),
        ]
    );
    assert!(lab.trace.iter().all(|s| !matches!(
        s,
        Step::Sent {
            message: Message::Error(ErrorResponse {
                reason: Some(_),
                ..
            }),
            ..
        }
    )));
}

/// KW-REG-017: a `register` whose contact is not at the address it came
/// from is refused with `forbidden` before any challenge, and registers
/// nothing.
#[test]
fn kw_reg_017_a_contact_is_where_its_register_came_from() {
    let mut lab = one_domain();
    let server = lab.servers[0].addr;
    let device = lab.devices[0].contact;
    let elsewhere: Addr = "203.0.113.7:5060".parse().unwrap();
    let register = Message::Register(Register {
        txn: TxnId([0x17; 8]),
        from: principal("u1@a.example"),
        contact: Contact {
            transport: Transport::Udp,
            addr: elsewhere,
        },
        expires: 3600,
        csr: None,
        cert: None,
        auth: None,
        ext: Extensions::new(),
    });
    let mark = lab.trace.len();
    lab.inject(server, device, &register.encode());
    assert_eq!(
        lab.refusals(mark, "sc@a.example"),
        [ProtocolError::Refused {
            re: MsgType::Register,
            code: ErrorCode::FORBIDDEN
        }]
    );
    assert!(!lab.trace[mark..].iter().any(|s| matches!(
        s,
        Step::Sent {
            message: Message::Challenge(_),
            ..
        }
    )));
    // From its contact, the same register is challenged.
    let mark = lab.trace.len();
    lab.inject(server, elsewhere, &register.encode());
    assert!(lab.trace[mark..].iter().any(|s| matches!(
        s,
        Step::Sent {
            message: Message::Challenge(_),
            ..
        }
    )));
}

/// KW-CERT-006: a server that revoked a certificate of its domain does not
/// carry an offer that presents it, even one it cannot read (the caller
/// gave it no entry), nor an answer that presents it.
#[test]
fn kw_cert_006_a_revoked_certificate_is_not_carried_on() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 3,
        hub: false,
        device_policy: DevicePolicy {
            own_server: None,
            ..DevicePolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == "u1@a.example" && o.session == session => Some(o),
            _ => None,
        })
        .unwrap();
    // A refresh revokes the certificate the offer carried.
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let mut replayed = offer.clone();
    replayed.txn = TxnId([0x66; 8]);
    replayed.session = keyway::wire::SessionId([0x66; 16]);
    let server = lab.servers[0].addr;
    let from = lab.devices[0].contact;
    let mark = lab.trace.len();
    lab.inject(server, from, &Message::Offer(replayed).encode());
    lab.settle();
    assert_eq!(last_error(&lab, mark), Some(ErrorCode::CERT_REVOKED));
    assert!(
        !lab.trace[mark..]
            .iter()
            .any(|s| matches!(s, Step::Sent { from, message: Message::Offer(_), .. } if from == "sc@a.example"))
    );
}

/// KW-POLICY-002: a server requires the servers its policy names as
/// recipients of a local caller's offer — itself by any entry it opens,
/// anonymous ones included, another by an explicit entry — and refuses
/// one without them with `recipient-missing`, forwarding nothing.
#[test]
fn kw_policy_002_required_recipients_are_policy() {
    for (device_policy, required, refused) in [
        // No entry for the server, which requires itself.
        (
            DevicePolicy {
                own_server: None,
                ..DevicePolicy::default()
            },
            vec!["sc@a.example"],
            true,
        ),
        // An anonymous entry is found by trial.
        (
            DevicePolicy {
                anonymous_servers: true,
                ..DevicePolicy::default()
            },
            vec!["sc@a.example"],
            false,
        ),
        // Another server, which the caller does not make a recipient.
        (DevicePolicy::default(), vec!["sc@b.example"], true),
        (DevicePolicy::default(), vec![], false),
    ] {
        let required: BTreeSet<_> = required.into_iter().map(principal).collect();
        let mut lab = Lab::new(LabOptions {
            domains: vec!["a.example"],
            hub: false,
            device_policy,
            server_policy: ServerPolicy {
                required_recipients: required.clone(),
                ..ServerPolicy::default()
            },
            ..LabOptions::default()
        });
        lab.register_all();
        let mark = lab.trace.len();
        lab.command(
            "u1@a.example",
            DeviceCommand::Call(principal("u2@a.example")),
        );
        lab.settle();
        let missing = lab
            .refusals(mark, "sc@a.example")
            .contains(&ProtocolError::Refused {
                re: MsgType::Offer,
                code: ErrorCode::RECIPIENT_MISSING,
            });
        assert_eq!(missing, refused, "{required:?}");
        let forwarded = lab.trace[mark..]
            .iter()
            .any(|s| matches!(s, Step::Sent { from, message: Message::Offer(_), .. } if from == "sc@a.example"));
        assert_eq!(forwarded, !refused);
    }
}

/// KW-KEY-007: a media packet replayed to a device is dropped with
/// `replay`, and delivered once.
#[test]
fn kw_key_007_media_packets_are_accepted_once() {
    let mut lab = one_domain();
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    lab.command(
        "u1@a.example",
        DeviceCommand::Media(session, b"once".to_vec()),
    );
    lab.settle();
    let media = lab
        .sent()
        .into_iter()
        .find_map(|(_, to, m)| matches!(m, Message::Media(_)).then_some((to, m)))
        .unwrap();
    let callee = lab.devices[1].media;
    let mark = lab.trace.len();
    lab.inject(callee, media.0, &media.1.encode());
    assert_eq!(
        lab.refusals(mark, "u2@a.example"),
        [ProtocolError::Dropped {
            re: MsgType::Media,
            code: ErrorCode::REPLAY
        }]
    );
    let received = lab
        .device_events("u2@a.example")
        .iter()
        .filter(|e| matches!(e, DeviceEvent::MediaReceived { .. }))
        .count();
    assert_eq!(received, 1);
}

/// KW-FRAME-014: an unsigned `error` is taken only from the address a
/// request went to, with its `txn`, and ends no more than that request:
/// one from elsewhere is refused, and an `error` answering an `info`
/// leaves the call and its keys as they were unless it says the peer no
/// longer has the call (KW-SM-023).
#[test]
fn kw_frame_014_an_unsigned_error_ends_no_more_than_its_request() {
    let mut lab = one_domain();
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Info(_))));
    lab.command("u1@a.example", DeviceCommand::Info(session, "hi".into()));
    lab.settle();
    lab.drop_if = None;
    let txn = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(_, _, m)| match m {
            Message::Info(i) => Some(i.txn),
            _ => None,
        })
        .unwrap();
    let error = |code| {
        Message::Error(ErrorResponse {
            txn: Some(txn),
            re: Some(MsgType::Info),
            code,
            reason: None,
            offset: None,
            min_expires: None,
            retry_after: None,
            ext: Extensions::new(),
        })
        .encode()
    };
    let device = lab.devices[0].contact;
    let stranger: Addr = "203.0.113.9:5060".parse().unwrap();
    let mark = lab.trace.len();
    lab.inject(device, stranger, &error(ErrorCode::UNKNOWN_SESSION));
    assert_eq!(
        lab.refusals(mark, "u1@a.example"),
        [ProtocolError::Unsolicited(MsgType::Error)]
    );
    // From the server, a code that does not say the call is gone fails
    // the info only.
    let server = lab.servers[0].addr;
    lab.inject(device, server, &error(ErrorCode::BUSY));
    assert_eq!(
        lab.device("u1@a.example").call_state(&session),
        Some(keyway::core::CallState::Established)
    );
    assert!(!lab.session_ended(0, session, SessionEnd::Bye));
}

/// The challenge waiting in the lab's queue for `to`, taken out of it.
fn take_challenge(lab: &mut Lab, to: Addr) -> keyway::wire::Challenge {
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

/// A `register` for `account` at `addr` echoing `nonce` with a proof
/// that cannot pass: what someone who intercepted a challenge can send.
fn forged_answer(account: &str, addr: Addr, nonce: keyway::wire::Nonce, txn: u8) -> Vec<u8> {
    Message::Register(Register {
        txn: TxnId([txn; 8]),
        from: principal(account),
        contact: Contact {
            transport: Transport::Udp,
            addr,
        },
        expires: 3600,
        csr: None,
        cert: None,
        auth: Some(keyway::wire::AuthResponse {
            nonce,
            proof: keyway::wire::Mac32([0x55; 32]),
            kx_proof: None,
            epk: keyway::wire::PublicKey([0x42; 32]),
            cert_pop: None,
            ext: Extensions::new(),
        }),
        ext: Extensions::new(),
    })
    .encode()
}

/// A `register` without `auth`: a request for a challenge.
fn challenge_request(account: &str, addr: Addr, txn: u32) -> Vec<u8> {
    let mut id = [0u8; 8];
    id[..4].copy_from_slice(&txn.to_be_bytes());
    Message::Register(Register {
        txn: TxnId(id),
        from: principal(account),
        contact: Contact {
            transport: Transport::Udp,
            addr,
        },
        expires: 3600,
        csr: None,
        cert: None,
        auth: None,
        ext: Extensions::new(),
    })
    .encode()
}

/// KW-REG-018, KW-SM-007, KW-SM-019, KW-ERR-004: between a device's
/// challenge and its answer, an attacker asks for thousands of challenges
/// for the same account and for others, and answers the intercepted
/// challenge with a forged proof; nothing is written, and the device's
/// answer still registers it. (With a bounded table of outstanding
/// nonces the first would evict the device's, and with a nonce spent by
/// any answer the second would.)
#[test]
fn kw_reg_018_asking_for_challenges_cannot_block_registration() {
    let mut lab = one_domain();
    let server = lab.servers[0].addr;
    let device = lab.devices[0].contact;
    let attacker: Addr = "203.0.113.9:5060".parse().unwrap();
    lab.command("u1@a.example", DeviceCommand::Register);
    let (from, to, bytes) = lab.queue.pop_front().unwrap();
    assert_eq!(to, server);
    lab.inject(to, from, &bytes);
    let challenge = take_challenge(&mut lab, device);
    let writes = lab.servers[0].store.writes;

    for n in 0..5000u32 {
        lab.inject(
            server,
            attacker,
            &challenge_request("u1@a.example", attacker, n),
        );
        let other = format!("x{}@a.example", n % 500);
        lab.inject(
            server,
            attacker,
            &challenge_request(&other, attacker, n + 5000),
        );
    }
    let mark = lab.trace.len();
    lab.inject(
        server,
        attacker,
        &forged_answer("u1@a.example", attacker, challenge.nonce, 0x31),
    );
    assert_eq!(last_error(&lab, mark), Some(ErrorCode::AUTH_FAILED));
    assert_eq!(lab.servers[0].store.writes, writes, "nothing written");
    lab.queue.clear();

    // The device's challenge arrives only now, and its answer passes.
    let mark = lab.trace.len();
    lab.inject(device, server, &Message::Challenge(challenge).encode());
    lab.settle();
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
    assert_eq!(last_error(&lab, mark), None);
}

/// KW-REG-005, KW-REG-018, KW-CRYPTO-024, KW-SM-025: a nonce is accepted only for the
/// account it was issued to, only as issued, only within its lifetime,
/// and once; the one a restarted server issued before its crash is
/// accepted, and the one spent before it is still refused.
#[test]
fn kw_reg_018_nonces_are_bound_checked_spent_and_survive_restarts() {
    let mut lab = one_domain();
    let server = lab.servers[0].addr;
    let device = lab.devices[0].contact;
    let attacker: Addr = "203.0.113.9:5060".parse().unwrap();

    // Issued before a restart, answered after it.
    lab.command("u1@a.example", DeviceCommand::Register);
    let (from, to, bytes) = lab.queue.pop_front().unwrap();
    lab.inject(to, from, &bytes);
    let challenge = take_challenge(&mut lab, device);
    lab.restart_server(0);
    lab.inject(
        device,
        server,
        &Message::Challenge(challenge.clone()).encode(),
    );
    lab.settle();
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
    // The device's answer, replayed under a new txn: spent, before and
    // after another restart.
    let answer = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| match m {
            Message::Register(r) if r.auth.is_some() => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(answer.auth.as_ref().unwrap().nonce, challenge.nonce);
    for restart in [false, true] {
        if restart {
            lab.restart_server(0);
        }
        let writes = lab.servers[0].store.writes;
        let mark = lab.trace.len();
        let replay = Register {
            txn: TxnId([0x40 + u8::from(restart); 8]),
            ..answer.clone()
        };
        lab.inject(server, device, &Message::Register(replay).encode());
        assert_eq!(last_error(&lab, mark), Some(ErrorCode::STALE_NONCE));
        assert_eq!(lab.servers[0].store.writes, writes);
    }

    // u2's nonce: not u1's, not with a bit changed, not once expired.
    let u2 = lab.devices[1].contact;
    lab.settle();
    lab.command("u2@a.example", DeviceCommand::Register);
    let (from, to, bytes) = lab.queue.pop_front().unwrap();
    lab.inject(to, from, &bytes);
    let held = take_challenge(&mut lab, u2);
    let mut flipped = held.nonce;
    flipped.0[3] ^= 1;
    let cases = [
        ("u1@a.example", held.nonce, ErrorCode::STALE_NONCE),
        ("u2@a.example", flipped, ErrorCode::STALE_NONCE),
        ("u2@a.example", held.nonce, ErrorCode::AUTH_FAILED),
    ];
    for (i, (account, nonce, code)) in cases.into_iter().enumerate() {
        let mark = lab.trace.len();
        let txn = 0x50 + u8::try_from(i).unwrap();
        lab.inject(
            server,
            attacker,
            &forged_answer(account, attacker, nonce, txn),
        );
        assert_eq!(last_error(&lab, mark), Some(code), "{account} {i}");
    }
    lab.advance(held.expires * 1000);
    let mark = lab.trace.len();
    lab.inject(
        server,
        attacker,
        &forged_answer("u2@a.example", attacker, held.nonce, 0x60),
    );
    assert_eq!(last_error(&lab, mark), Some(ErrorCode::STALE_NONCE));
}
