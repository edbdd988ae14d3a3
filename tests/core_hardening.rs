//! The protocol's weaknesses closed, each at the level of the party that
//! must refuse, each asserting the refusal's code and that nothing
//! changed: accounts are not enumerable (KW-SM-028), a contact is where
//! its register came from (KW-REG-017), a revoked certificate of a
//! server's domain is not carried on (KW-CERT-006), the servers an offer
//! must make recipients are policy (KW-POLICY-002), media packets are
//! accepted once (KW-KEY-007), an unsigned `error` ends no more than
//! its transaction (KW-FRAME-014), no one can keep an account from
//! registering by asking for challenges (KW-REG-018), and a device takes
//! a notified certificate only with its server's attestation
//! (KW-QUERY-007).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use keyway::core::{
    Addr, DeviceCommand, DeviceEvent, DevicePolicy, Firewall, ProtocolError, ServerPolicy,
    SessionEnd, Store,
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
        let anonymous = device_policy.anonymous_servers;
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
        // The policy hides the servers' entries, never the destination's.
        let sent = lab.trace[mark..]
            .iter()
            .find_map(|s| match s {
                Step::Sent {
                    from,
                    message: Message::Offer(o),
                    ..
                } if from == "u1@a.example" => Some(o.body.clone()),
                _ => None,
            })
            .unwrap();
        for r in sent.recipients.iter() {
            let hidden = r.kind == keyway::wire::RecipientKind::Server && anonymous;
            assert_eq!(r.id.is_none(), hidden, "{r:?}");
        }
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
    let challenge = lab.take_challenge(device);
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
    let challenge = lab.take_challenge(device);
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
    let held = lab.take_challenge(u2);
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

/// An in-session request from `from` to `to` under `keys`, signed by
/// `signer` (KW-CRYPTO-061).
fn in_session(
    kind: MsgType,
    keys: &mut keyway::crypto::DirectionKeys,
    session: keyway::wire::SessionId,
    txn: u8,
    signer: &keyway::crypto::SigningKeyPair,
) -> Message {
    in_session_between(
        kind,
        keys,
        session,
        txn,
        signer,
        ("u1@a.example", "u1@b.example"),
    )
}

/// [`in_session`] from and to the accounts named.
fn in_session_between(
    kind: MsgType,
    keys: &mut keyway::crypto::DirectionKeys,
    session: keyway::wire::SessionId,
    txn: u8,
    signer: &keyway::crypto::SigningKeyPair,
    (from, to): (&str, &str),
) -> Message {
    let (txn, from, to, hops) = (
        TxnId([txn; 8]),
        principal(from),
        principal(to),
        keyway::wire::Hops::new(8).unwrap(),
    );
    let mut message = match kind {
        MsgType::Info => {
            let update = keyway::wire::SessionUpdate {
                text: keyway::wire::Text::new("from u1@a".to_string()),
                desc: None,
                ext: Extensions::new(),
            };
            let sealed = keys
                .seal(MsgType::Info, &keyway::wire::encode_plaintext(&update))
                .unwrap();
            Message::Info(keyway::wire::Info {
                txn,
                from,
                to,
                session,
                hops,
                via: None,
                sig: keyway::crypto::unsigned(),
                epoch: sealed.epoch,
                seq: sealed.seq,
                payload: keyway::wire::Bytes::new(sealed.payload).unwrap(),
                ext: Extensions::new(),
            })
        }
        MsgType::Bye => {
            let sealed = keys.seal(MsgType::Bye, &[]).unwrap();
            Message::Bye(keyway::wire::Bye {
                txn,
                from,
                to,
                session,
                hops,
                via: None,
                sig: keyway::crypto::unsigned(),
                epoch: sealed.epoch,
                seq: sealed.seq,
                payload: keyway::wire::Bytes::new(sealed.payload).unwrap(),
                ext: Extensions::new(),
            })
        }
        _ => {
            let r = keys
                .rekey_wrapped_with(keyway::crypto::Secret32::new([0x66; 32]), 0)
                .unwrap();
            Message::Rekey(keyway::wire::Rekey {
                txn,
                from,
                to,
                session,
                hops,
                via: None,
                sig: keyway::crypto::unsigned(),
                body: None,
                epoch: r.epoch,
                seq: r.seq,
                payload: None,
                wrapped: keyway::wire::Bytes::new(r.wrapped.to_vec()),
                ext: Extensions::new(),
            })
        }
    };
    keyway::crypto::sign_message(&mut message, signer).unwrap();
    message
}

/// The key of `session`, opened by `callee` from the offer a server
/// forwarded to it, as every trusted server on the path holds it.
fn session_key(
    lab: &Lab,
    session: keyway::wire::SessionId,
    callee: &str,
) -> keyway::crypto::Secret32 {
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| match m {
            Message::Offer(o) if o.via.is_some() && o.session == session => Some(o),
            _ => None,
        })
        .unwrap();
    keyway::crypto::open(
        &offer.body,
        &session,
        &lab.devices[lab.dev(callee)].identity,
        &mut keyway::crypto::KeyCache::new(4),
    )
    .unwrap()
    .cek
}

/// KW-KEY-008, KW-CRYPTO-061, KW-ERR-004: a server holds the session key
/// and can make `info`, `bye` and wrapped `rekey` payloads that decrypt;
/// signed with its own key they are refused with `signature-invalid` by
/// the callee and by the next server, which neither acts on them nor
/// carries them on, and nothing changes: a genuine `info` with the same
/// sequence number is taken afterwards. A genuine request replayed under
/// a fresh `txn`, or with its signature bytes changed, is refused too.
#[test]
fn kw_key_008_servers_read_in_session_traffic_but_cannot_forge_it() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    let callee = lab.dev("u1@b.example");
    let callee_addr = lab.devices[callee].contact;
    let sc_b = lab.servers[1].addr;
    let hub = lab.servers[2].addr;
    // The session key of the caller's direction, as every server on the
    // path holds it (KW-KEY-006).
    let key = session_key(&lab, session, "u1@b.example");
    let keys = || {
        keyway::crypto::DirectionKeys::new(
            session,
            principal("u1@a.example"),
            principal("u1@b.example"),
            key.clone(),
            0,
        )
    };
    let server_key = lab.servers[0].config.identity.signing.clone();
    let caller_key = lab.devices[lab.dev("u1@a.example")]
        .identity
        .signing
        .clone();
    let signature_invalid = |re| ProtocolError::Refused {
        re,
        code: ErrorCode::SIGNATURE_INVALID,
    };
    let pinholes = lab.firewall(1).pinholes().len();
    for (i, kind) in [MsgType::Info, MsgType::Rekey, MsgType::Bye]
        .into_iter()
        .enumerate()
    {
        let forged = in_session(kind, &mut keys(), session, 0x80 + i as u8, &server_key);
        let writes = lab.servers[1].store.writes;
        let mark = lab.trace.len();
        lab.inject(sc_b, hub, &forged.encode());
        assert_eq!(
            lab.refusals(mark, "sc@b.example"),
            [signature_invalid(kind)]
        );
        assert_eq!(lab.servers[1].store.writes, writes, "{kind:?}");
        assert!(lab.queue.iter().all(|(_, to, _)| *to != callee_addr));
        let mark = lab.trace.len();
        lab.inject(callee_addr, sc_b, &forged.encode());
        assert_eq!(
            lab.refusals(mark, "u1@b.example"),
            [signature_invalid(kind)]
        );
        lab.settle();
    }
    assert!(lab.server(1).session_ids().contains(&session));
    assert_eq!(lab.firewall(1).pinholes().len(), pinholes);
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(keyway::core::CallState::Established)
    );
    assert!(!lab.device_events("u1@b.example").iter().any(|e| matches!(
        e,
        DeviceEvent::InfoReceived(..) | DeviceEvent::Rekeyed { .. }
    )));

    // The genuine info, sequence number 0 as the forged one had.
    let genuine = in_session(MsgType::Info, &mut keys(), session, 0x90, &caller_key);
    let Message::Info(info) = &genuine else {
        unreachable!()
    };
    // Replayed under a fresh txn, or with its signature changed.
    let fresh_txn = Message::Info(keyway::wire::Info {
        txn: TxnId([0x91; 8]),
        ..info.clone()
    });
    let mut bad_sig = info.clone();
    bad_sig.sig.sig.0[5] ^= 1;
    // From elsewhere: the refusal is remembered for its txn and source
    // (KW-FRAME-012), and the genuine one comes from sc@b.
    let elsewhere: Addr = "203.0.113.9:5060".parse().unwrap();
    for refused in [fresh_txn, Message::Info(bad_sig)] {
        let mark = lab.trace.len();
        lab.inject(callee_addr, elsewhere, &refused.encode());
        assert_eq!(
            lab.refusals(mark, "u1@b.example"),
            [signature_invalid(MsgType::Info)]
        );
    }
    let mark = lab.trace.len();
    lab.inject(callee_addr, sc_b, &genuine.encode());
    assert_eq!(lab.refusals(mark, "u1@b.example"), []);
    assert!(
        lab.device_events("u1@b.example")
            .contains(&DeviceEvent::InfoReceived(session, "from u1@a".into()))
    );
}

/// KW-SM-019, KW-CERT-006: a revocation is kept, in memory and in the
/// store, only until the certificate it revokes ends (from then on the
/// certificate is refused as expired): what a server keeps of revocations
/// is bounded by the certificates of one term.
#[test]
fn kw_sm_019_revocations_end_with_their_certificates() {
    let mut lab = one_domain();
    for who in ["u1@a.example", "u2@a.example"] {
        lab.command(who, DeviceCommand::Register);
    }
    lab.settle();
    let cert = lab.device("u2@a.example").certificate().unwrap().clone();
    let key = (cert.tbs.issuer.clone(), cert.tbs.serial);
    lab.command("u2@a.example", DeviceCommand::Deregister);
    lab.settle();
    assert!(lab.server(0).revoked().any(|k| *k == key));
    let stored = lab.servers[0].store.load().unwrap();
    assert!(stored.revoked.contains_key(&key));

    let ends_in = cert.tbs.not_after.0 * 1000 - lab.clock().wall;
    lab.advance(ends_in + 1000);
    assert!(!lab.server(0).revoked().any(|k| *k == key));
    let stored = lab.servers[0].store.load().unwrap();
    assert!(!stored.revoked.contains_key(&key));
    // u1's refreshes revoked its earlier certificates meanwhile; only
    // those still within their term are kept.
    let now = lab.clock().wall_secs();
    assert!(stored.revoked.values().all(|until| *until >= now));
    assert_eq!(lab.server(0).revoked().count(), stored.revoked.len());
}

/// A one-domain lab in which u1 has called u2 and the server's forward of
/// the offer was lost: the offer as u1 sent it, and as the server
/// forwarded it.
fn offer_held_back() -> (Lab, keyway::wire::Offer, keyway::wire::Offer) {
    let mut lab = one_domain();
    for who in ["u1@a.example", "u2@a.example"] {
        lab.command(who, DeviceCommand::Register);
    }
    lab.settle();
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::Offer(o) if o.via.is_some()),
    ));
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u2@a.example")),
    );
    lab.settle();
    lab.drop_if = None;
    let offers: Vec<keyway::wire::Offer> = lab
        .sent()
        .into_iter()
        .filter_map(|(_, _, m)| match m {
            Message::Offer(o) => Some(o),
            _ => None,
        })
        .collect();
    let original = offers.iter().find(|o| o.via.is_none()).unwrap().clone();
    let signed = offers.iter().find(|o| o.via.is_some()).unwrap().clone();
    (lab, original, signed)
}

/// KW-SEAL-011: the offer as the caller sealed it, before its server (named
/// read-modify) signed it, put back on the path after that server — the
/// callee refuses it with `permission-denied`, reports tampering, and
/// takes no call; the offer as the server signed it is taken.
#[test]
fn kw_seal_011_the_callee_refuses_an_offer_its_editor_did_not_sign() {
    let (mut lab, original, _) = offer_held_back();
    let (server, callee) = (lab.servers[0].addr, lab.devices[1].contact);
    assert!(original.body.edits.is_none());
    let session = original.session;
    let mark = lab.trace.len();
    lab.inject(callee, server, &Message::Offer(original).encode());
    lab.settle();
    // Refused once the callee has fetched its server's certificate.
    let refused = lab.find(mark, |s| {
        matches!(s, Step::Sent { message: Message::Error(e), .. }
            if e.code == ErrorCode::PERMISSION_DENIED && e.re == Some(MsgType::Offer))
    });
    assert!(refused.is_some());
    assert!(lab.device_events("u2@a.example").iter().any(|e| matches!(
        e,
        DeviceEvent::TamperDetected(s, ErrorCode::PERMISSION_DENIED) if *s == session
    )));
    assert_eq!(lab.device("u2@a.example").call_state(&session), None);

    let (mut lab, _, signed) = offer_held_back();
    assert!(signed.body.edits.is_some());
    lab.inject(callee, server, &Message::Offer(signed).encode());
    lab.settle();
    assert!(
        lab.device_events("u2@a.example")
            .contains(&DeviceEvent::IncomingCall(
                session,
                principal("u1@a.example")
            ))
    );
}

/// A call from u1@a to u1@b whose offer gives the callee's server no
/// entry (so it does not follow the session), the callee naming its own
/// server with `own_server`: the lab after it, the session, and the answer
/// as sc@b relayed it.
fn unfollowed_answer(
    own_server: Option<keyway::wire::Permission>,
) -> (Lab, keyway::wire::SessionId, keyway::wire::Answer) {
    let mut lab = Lab::new(LabOptions {
        device_policy: DevicePolicy {
            own_server,
            peer_server: None,
            ..DevicePolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    assert!(!lab.server(1).session_ids().contains(&session));
    let answer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Answer(a) if from == "sc@b.example" => Some(a),
            _ => None,
        })
        .unwrap();
    (lab, session, answer)
}

/// KW-SEAL-011: a callee's server that the offer did not name (the caller
/// gave the peer's server no entry) does not follow the session, but the
/// callee names it read-modify in its answer: it checks and signs the
/// answer it relays, so the caller finds the edit it requires and the
/// call is set up.
#[test]
fn kw_seal_011_a_server_signs_an_answer_of_a_session_it_does_not_follow() {
    let (lab, session, answer) = unfollowed_answer(DevicePolicy::default().own_server);
    let editors: Vec<String> = answer
        .body
        .edits
        .iter()
        .flat_map(|e| e.iter())
        .map(|e| e.editor.to_string())
        .collect();
    assert_eq!(editors, ["sc@b.example"]);
    assert_eq!(
        lab.device("u1@a.example").call_state(&session),
        Some(keyway::core::CallState::Established)
    );
}

/// KW-SEAL-011: a server that does not follow the session signs an answer
/// only where the callee named it — by its account, as a server, with
/// read-modify. Named read-only, it relays the answer as it is, and the
/// call is set up.
#[test]
fn kw_seal_011_a_server_named_read_only_does_not_sign_the_answer() {
    let (lab, session, answer) = unfollowed_answer(Some(keyway::wire::Permission::Read));
    let named = answer.body.recipients.iter().any(|r| {
        r.id.as_ref().map(|p| p.as_str()) == Some("sc@b.example")
            && r.perm == keyway::wire::Permission::Read
    });
    assert!(named);
    assert!(answer.body.edits.is_none());
    assert_eq!(
        lab.device("u1@a.example").call_state(&session),
        Some(keyway::core::CallState::Established)
    );
}

/// KW-SEAL-011: a server named read-modify that has nothing to change
/// (the callee's server, on an offer from another domain) signs the offer
/// unchanged (`next` = `prev`), and the callee takes it.
#[test]
fn kw_seal_011_a_server_signs_what_it_does_not_change() {
    let mut lab = Lab::new(LabOptions {
        device_policy: DevicePolicy {
            peer_server: Some(keyway::wire::Permission::ReadModify),
            ..DevicePolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == "sc@b.example" => Some(o),
            _ => None,
        })
        .unwrap();
    let edits: Vec<keyway::wire::Edit> = offer
        .body
        .edits
        .iter()
        .flat_map(|e| e.iter())
        .cloned()
        .collect();
    let editors: Vec<String> = edits.iter().map(|e| e.editor.to_string()).collect();
    assert_eq!(editors, ["sc@a.example", "sc@b.example"]);
    let passed = edits.last().unwrap();
    assert_eq!(passed.prev, passed.next, "unchanged");
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(keyway::core::CallState::Established)
    );
}

/// KW-QUERY-007, KW-CERT-006: a device takes a certificate of its own
/// domain from a `cert-notify` only with its server's attestation, which
/// is what shows it has not been revoked: a notify spoofed from the
/// server's address with the query's `txn` — the revoked certificate
/// bare (`cert-invalid`), or under the attestation the server made for
/// the current one (`signature-invalid`) — is refused, and the device
/// takes no certificate from it.
#[test]
fn kw_query_007_a_notified_certificate_needs_its_servers_attestation() {
    let mut lab = one_domain();
    lab.register_all();
    let revoked = lab.device("u2@a.example").certificate().unwrap().clone();
    // A refresh revokes it.
    lab.command("u2@a.example", DeviceCommand::Register);
    lab.settle();
    let current = lab.device("u2@a.example").certificate().unwrap().clone();
    assert_ne!(current.tbs.serial, revoked.tbs.serial);

    let server = lab.servers[0].addr;
    let contact = lab.devices[lab.dev("u1@a.example")].contact;
    for spoof_attestation in [false, true] {
        // The server's own answer is lost on its way: the spoof takes its
        // place.
        lab.drop_if = Some(Box::new(|m| matches!(m, Message::CertNotify(_))));
        let mark = lab.trace.len();
        lab.command(
            "u1@a.example",
            DeviceCommand::QueryCertificate(principal("u2@a.example")),
        );
        lab.settle();
        lab.drop_if = None;
        let genuine = lab.trace[mark..]
            .iter()
            .find_map(|s| match s {
                Step::Sent {
                    message: Message::CertNotify(n),
                    ..
                } => Some(n.clone()),
                _ => None,
            })
            .unwrap();
        // The server attests a certificate of its own domain for its
        // device.
        assert_eq!(genuine.cert, current);
        assert!(genuine.attestation.is_some());
        let (attestation, code) = match spoof_attestation {
            false => (None, ErrorCode::CERT_INVALID),
            true => (genuine.attestation.clone(), ErrorCode::SIGNATURE_INVALID),
        };
        let spoofed = Message::CertNotify(keyway::wire::CertNotify {
            cert: revoked.clone(),
            attestation,
            ..genuine.clone()
        });
        let mark = lab.trace.len();
        lab.inject(contact, server, &spoofed.encode());
        assert_eq!(
            lab.refusals(mark, "u1@a.example"),
            vec![ProtocolError::BadResponse {
                re: MsgType::CertNotify,
                code
            }]
        );
        lab.settle();
        assert!(!lab.trace[mark..].iter().any(|s| matches!(
            s,
            Step::Device {
                event: DeviceEvent::CertificateAccepted { .. },
                ..
            }
        )));
    }
}

/// KW-SM-017 at the callee: an offer of a session that has ended — the
/// first of two, so that remembering only the last would not do — is
/// refused with `bad-state` when replayed under a fresh `txn`, and starts
/// no call.
#[test]
fn kw_sm_017_a_device_does_not_take_an_offer_of_an_ended_call_again() {
    let mut lab = one_domain();
    lab.register_all();
    let mut offers = Vec::new();
    for _ in 0..2 {
        let mark = lab.trace.len();
        let session = lab.call("u1@a.example", "u2@a.example");
        offers.push(
            lab.trace[mark..]
                .iter()
                .find_map(|s| match s {
                    Step::Sent {
                        from,
                        message: Message::Offer(o),
                        ..
                    } if from == "sc@a.example" => Some(o.clone()),
                    _ => None,
                })
                .unwrap(),
        );
        lab.command("u1@a.example", DeviceCommand::HangUp(session));
        lab.settle();
        assert!(lab.device("u2@a.example").sessions().is_empty());
    }
    let server = lab.servers[0].addr;
    let callee = lab.devices[lab.dev("u2@a.example")].contact;
    let mut replayed = offers[0].clone();
    replayed.txn = TxnId([0x77; 8]);
    let mark = lab.trace.len();
    lab.inject(callee, server, &Message::Offer(replayed).encode());
    assert_eq!(
        lab.refusals(mark, "u2@a.example"),
        vec![ProtocolError::Refused {
            re: MsgType::Offer,
            code: ErrorCode::BAD_STATE
        }]
    );
    lab.settle();
    assert!(lab.device("u2@a.example").sessions().is_empty());
    assert!(!lab.trace[mark..].iter().any(|s| matches!(
        s,
        Step::Device {
            event: DeviceEvent::IncomingCall(..),
            ..
        }
    )));
}

/// The answer the server relayed to its caller since `mark`.
fn relayed_answer(lab: &Lab, mark: usize) -> keyway::wire::Answer {
    lab.trace[mark..]
        .iter()
        .find_map(|s| match s {
            Step::Sent {
                from,
                message: Message::Answer(a),
                ..
            } if from == "sc@a.example" => Some(a.clone()),
            _ => None,
        })
        .unwrap()
}

/// u1 calls u2 and the server's relay of the answer is lost (the first
/// answer on the wire is u2's to the server, the second the server's to
/// u1): the answer as the server sent it, for the test to deliver in its
/// place.
fn call_with_answer_lost(lab: &mut Lab) -> keyway::wire::Answer {
    let mut answers = 0;
    lab.drop_if = Some(Box::new(move |m| {
        answers += usize::from(matches!(m, Message::Answer(_)));
        answers == 2
    }));
    let mark = lab.trace.len();
    lab.call("u1@a.example", "u2@a.example");
    lab.drop_if = None;
    relayed_answer(lab, mark)
}

/// Whether u1 reported its call established since `mark`.
fn established_since(lab: &Lab, mark: usize) -> bool {
    lab.find(mark, |s| {
        matches!(
            s,
            Step::Device {
                event: DeviceEvent::CallEstablished(..),
                ..
            }
        )
    })
    .is_some()
}

/// KW-SM-016 at the caller: an answer is its callee's own — from the
/// callee, and sealed by it. One that names the callee in `from` but
/// carries a body another account sealed is refused with
/// `permission-denied`, and the call is not established.
#[test]
fn kw_sm_016_a_caller_takes_only_its_callees_own_answer() {
    let mut lab = one_domain();
    lab.register_all();
    // u3's answer to an earlier call.
    let mark = lab.trace.len();
    lab.call("u1@a.example", "u3@a.example");
    let other_body = relayed_answer(&lab, mark).body;
    assert_eq!(other_body.sender.as_str(), "u3@a.example");

    let answer = call_with_answer_lost(&mut lab);
    let forged = keyway::wire::Answer {
        body: other_body,
        ..answer
    };
    let server = lab.servers[0].addr;
    let caller = lab.devices[lab.dev("u1@a.example")].contact;
    let mark = lab.trace.len();
    lab.inject(caller, server, &Message::Answer(forged).encode());
    assert_eq!(
        lab.refusals(mark, "u1@a.example"),
        vec![ProtocolError::BadResponse {
            re: MsgType::Answer,
            code: ErrorCode::PERMISSION_DENIED
        }]
    );
    assert!(!established_since(&lab, mark));
}

/// KW-QUERY-006: a device keeps a notified certificate no longer than its
/// `not-after`: asked for the account again after that, it queries its
/// server rather than use the one it kept.
#[test]
fn kw_query_006_a_kept_certificate_ends_with_its_term() {
    let mut lab = one_domain();
    lab.register_all();
    let query = |lab: &mut Lab| {
        let mark = lab.trace.len();
        lab.command(
            "u1@a.example",
            DeviceCommand::QueryCertificate(principal("u2@a.example")),
        );
        let asked = lab.trace[mark..].iter().any(|s| {
            matches!(s, Step::Sent { from, message: Message::CertQuery(_), .. } if from == "u1@a.example")
        });
        lab.settle();
        asked
    };
    assert!(query(&mut lab));
    assert!(!query(&mut lab), "kept");
    let kept = lab.device("u2@a.example").certificate().unwrap().clone();
    let ends_in = kept.tbs.not_after.0 * 1000 - lab.clock().wall;
    lab.advance(ends_in + 1000);
    assert!(query(&mut lab), "kept past its term");
}

/// KW-SM-022: an answer that carries no certificate is checked with the
/// callee's certificate the caller holds — the one it sealed the offer
/// for, confirmed by its server — and the call is established.
#[test]
fn kw_sm_022_an_answer_without_a_certificate_is_checked_with_the_one_held() {
    let mut lab = one_domain();
    lab.register_all();
    let answer = call_with_answer_lost(&mut lab);
    assert!(answer.cert.is_some());
    let bare = keyway::wire::Answer {
        cert: None,
        ..answer
    };
    let server = lab.servers[0].addr;
    let caller = lab.devices[lab.dev("u1@a.example")].contact;
    let mark = lab.trace.len();
    lab.inject(caller, server, &Message::Answer(bare).encode());
    assert_eq!(lab.refusals(mark, "u1@a.example"), vec![]);
    assert!(established_since(&lab, mark));
}

/// KW-REG-016, KW-SM-009 at the device: a registration whose refreshes
/// all fail ends at its term — the device drops its certificate and says
/// so — and not a second before.
#[test]
fn kw_reg_016_a_device_whose_refreshes_fail_lapses_at_its_term() {
    let mut lab = one_domain();
    lab.register_all();
    let not_after = lab.device("u1@a.example").registered_until().unwrap();
    // Every register from now on is lost.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Register(_))));
    let until_end = not_after * 1000 - lab.clock().wall;
    lab.advance(until_end);
    assert_eq!(
        lab.device("u1@a.example").registered_until(),
        Some(not_after)
    );
    assert!(lab.device("u1@a.example").certificate().is_some());
    let mark = lab.trace.len();
    lab.advance(1000);
    assert_eq!(lab.device("u1@a.example").registered_until(), None);
    assert!(lab.device("u1@a.example").certificate().is_none());
    assert!(lab.trace[mark..].iter().any(|s| matches!(
        s,
        Step::Device { device, event: DeviceEvent::RegistrationExpired } if device == "u1@a.example"
    )));
}

/// KW-REG-012: a device takes from `register-ok` only a certificate of its
/// own keys, both of them. One its domain really issued, for its account,
/// with its X25519 key but another signing key — or its signing key and
/// another X25519 key — is refused with `cert-invalid`, and the device is
/// not registered.
#[test]
fn kw_reg_012_a_device_takes_only_a_certificate_of_its_own_keys() {
    use keyway::crypto::{CertProfile, Identity, SeededEntropy};
    for swap_signing in [true, false] {
        let mut lab = one_domain();
        // The server's register-ok is lost; the test answers in its place.
        lab.drop_if = Some(Box::new(|m| matches!(m, Message::RegisterOk(_))));
        let mark = lab.trace.len();
        lab.command("u1@a.example", DeviceCommand::Register);
        lab.settle();
        lab.drop_if = None;
        let ok = lab.trace[mark..]
            .iter()
            .find_map(|s| match s {
                Step::Sent {
                    message: Message::RegisterOk(ok),
                    ..
                } => Some(ok.clone()),
                _ => None,
            })
            .unwrap();
        let issued = ok.cert.clone().unwrap();
        let other = Identity::generate(
            principal("u1@a.example"),
            &mut SeededEntropy::from_label("other keys"),
        );
        let (sig_key, kx_key) = match swap_signing {
            true => (other.signing.public(), issued.tbs.kx_key),
            false => (issued.tbs.sig_key, other.kx.public()),
        };
        let cert = lab.servers[0].config.ca.issue(&CertProfile {
            serial: issued.tbs.serial + 100,
            subject: issued.tbs.subject.clone(),
            role: issued.tbs.role,
            sig_key,
            kx_key,
            not_before: issued.tbs.not_before.0,
            not_after: issued.tbs.not_after.0,
        });
        let forged = keyway::wire::RegisterOk {
            cert: Some(cert),
            ..ok
        };
        let server = lab.servers[0].addr;
        let device = lab.devices[lab.dev("u1@a.example")].contact;
        let mark = lab.trace.len();
        lab.inject(device, server, &Message::RegisterOk(forged).encode());
        assert_eq!(
            lab.refusals(mark, "u1@a.example"),
            vec![ProtocolError::BadResponse {
                re: MsgType::RegisterOk,
                code: ErrorCode::CERT_INVALID
            }]
        );
        assert!(lab.device("u1@a.example").certificate().is_none());
        assert_eq!(lab.device("u1@a.example").registered_until(), None);
    }
}

/// KW-REG-016, KW-CERT-003: a registration's end is timed on the
/// monotonic clock but judged by the wall clock, both ends of its term
/// included. When the wall clock was stepped back a second, the server
/// keeps the registration and the device its certificate at the
/// deadline — the wall clock says the term's last second — and both end
/// a second later, when the wall clock has passed the term.
#[test]
fn kw_reg_016_a_stepped_back_wall_clock_ends_a_registration_when_it_passes_the_term() {
    let mut lab = one_domain();
    lab.register_all();
    let who = principal("u1@a.example");
    let not_after = lab.server(0).registration(&who).unwrap().not_after;
    assert_eq!(
        lab.device("u1@a.example").registered_until(),
        Some(not_after)
    );
    // Every refresh is lost.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Register(_))));
    // The deadlines are at the wall time just past the term.
    let until_deadline = (not_after + 1) * 1000 - lab.clock().wall;
    lab.advance(until_deadline - 1);
    lab.step_wall(-1000);
    lab.advance(1);
    assert_eq!(lab.clock().wall_secs(), not_after);
    assert!(lab.server(0).registration(&who).is_some());
    assert_eq!(
        lab.device("u1@a.example").registered_until(),
        Some(not_after)
    );
    lab.advance(1000);
    assert!(lab.server(0).registration(&who).is_none());
    assert_eq!(lab.device("u1@a.example").registered_until(), None);
}

/// KW-CERT-006, KW-CERT-003: a certificate is valid through the last
/// second of its term; a device that deregisters in that second has it
/// revoked (the server reports the serial and keeps the revocation), not
/// left valid for the rest of the second.
#[test]
fn kw_cert_006_a_certificate_deregistered_in_its_last_second_is_revoked() {
    let mut lab = one_domain();
    lab.register_all();
    let who = principal("u1@a.example");
    let registration = lab.server(0).registration(&who).unwrap();
    let (not_after, serial) = (registration.not_after, registration.cert.tbs.serial);
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Register(_))));
    lab.advance(not_after * 1000 - lab.clock().wall);
    lab.drop_if = None;
    assert_eq!(lab.clock().wall_secs(), not_after);
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::Deregister);
    lab.settle();
    assert_eq!(lab.clock().wall_secs(), not_after);
    assert!(lab.trace[mark..].iter().any(|s| matches!(
        s,
        Step::Server { event: keyway::core::ServerEvent::Unregistered { account, revoked: Some(s) }, .. }
            if *account == who && *s == serial
    )));
    assert!(lab.server(0).revoked().any(|(_, s)| *s == serial));
    // Restarted in that second, the server still holds the revocation.
    lab.restart_server(0);
    assert_eq!(lab.clock().wall_secs(), not_after);
    assert!(lab.server(0).revoked().any(|(_, s)| *s == serial));
}

/// KW-CERT-006: an answer that presents a certificate its domain's
/// server has revoked — the callee's answer, lost, then repeated after a
/// refresh replaced the certificate it carries — is not carried on, even
/// by a server that cannot read the session: the caller gets
/// `cert-revoked`, and no answer.
#[test]
fn kw_cert_006_an_answer_with_a_revoked_certificate_is_not_carried_on() {
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
    // The callee's answers are lost until its certificate is replaced.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Answer(_))));
    let mark = lab.trace.len();
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u2@a.example")),
    );
    lab.settle();
    let answered_with = lab.trace[mark..]
        .iter()
        .find_map(|s| match s {
            Step::Sent {
                from,
                message: Message::Answer(a),
                ..
            } if from == "u2@a.example" => a.cert.clone(),
            _ => None,
        })
        .unwrap();
    lab.command("u2@a.example", DeviceCommand::Register);
    lab.settle();
    assert_ne!(
        lab.device("u2@a.example").certificate(),
        Some(&answered_with)
    );
    lab.drop_if = None;
    let mark = lab.trace.len();
    lab.advance(5_000);
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Sent { from, message: Message::Answer(a), .. }
                if from == "u2@a.example" && a.cert.as_ref() == Some(&answered_with)
        ))
        .is_some(),
        "the old answer is repeated"
    );
    assert!(
        lab.refusals(mark, "sc@a.example")
            .contains(&ProtocolError::BadResponse {
                re: MsgType::Answer,
                code: ErrorCode::CERT_REVOKED
            })
    );
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Sent { from, message: Message::Answer(_), .. } if from == "sc@a.example"
        ))
        .is_none()
    );
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Sent { from, message: Message::Error(e), .. }
                if from == "sc@a.example" && e.code == ErrorCode::CERT_REVOKED
        ))
        .is_some()
    );
}

/// KW-SM-026: a server reads an answer only as the answer of the session
/// its offer was for. A callee that answers one offer with its answer of
/// another session the server follows (another call it is in) sets
/// nothing of that other session up again: no firewall change.
#[test]
fn kw_sm_026_an_answer_is_read_only_for_its_offers_session() {
    let mut lab = one_domain();
    lab.register_all();
    let other = lab.call("u3@a.example", "u2@a.example");
    let other_answer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Answer(a) if from == "u2@a.example" && a.session == other => Some(a),
            _ => None,
        })
        .unwrap();
    // The callee's answer to the second call is lost.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Answer(_))));
    let mark = lab.trace.len();
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u2@a.example")),
    );
    lab.settle();
    let offer_txn = lab.trace[mark..]
        .iter()
        .find_map(|s| match s {
            Step::Sent {
                from,
                message: Message::Offer(o),
                ..
            } if from == "sc@a.example" => Some(o.txn),
            _ => None,
        })
        .unwrap();
    lab.drop_if = Some(Box::new(|_| true));
    let forged = keyway::wire::Answer {
        txn: offer_txn,
        ..other_answer
    };
    let (server, callee) = (lab.servers[0].addr, lab.devices[1].contact);
    let mark = lab.trace.len();
    lab.inject(server, callee, &Message::Answer(forged).encode());
    // Relayed unread, for the caller to refuse; no pinhole touched.
    assert!(!lab.trace[mark..].iter().any(|s| matches!(
        s,
        Step::Sent {
            from,
            message: Message::PinholeOpen(_)
                | Message::PinholeNarrow(_)
                | Message::PinholeClose(_)
                | Message::MediaCopy(_),
            ..
        } if from == "sc@a.example"
    )));
    assert!(lab.server(0).session_ids().contains(&other));
}

/// KW-QUERY-004, KW-CERT-005: a server attests for its device only the
/// certificate of the account the device asked for. Another domain's
/// server that answers a query for one account with the genuine
/// certificate of another is refused with `cert-subject-mismatch`, and
/// the device takes no certificate.
#[test]
fn kw_query_004_a_server_attests_only_the_certificate_asked_for() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example", "b.example"],
        devices: 2,
        hub: false,
        ..LabOptions::default()
    });
    lab.register_all();
    let other = lab.device("u2@b.example").certificate().cloned().unwrap();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::CertNotify(_))));
    let mark = lab.trace.len();
    lab.command(
        "u1@a.example",
        DeviceCommand::QueryCertificate(principal("u1@b.example")),
    );
    lab.settle();
    let txn = lab.trace[mark..]
        .iter()
        .find_map(|s| match s {
            Step::Sent {
                from,
                message: Message::CertQuery(q),
                ..
            } if from == "sc@a.example" => Some(q.txn),
            _ => None,
        })
        .unwrap();
    lab.drop_if = None;
    let notify = Message::CertNotify(keyway::wire::CertNotify {
        txn,
        to: principal("u1@a.example"),
        cert: other.clone(),
        target: principal("u2@b.example"),
        attestation: None,
        ext: Extensions::default(),
    });
    let (a, b) = (lab.servers[0].addr, lab.servers[1].addr);
    let mark = lab.trace.len();
    lab.inject(a, b, &notify.encode());
    lab.settle();
    assert!(
        lab.refusals(mark, "sc@a.example")
            .contains(&ProtocolError::BadResponse {
                re: MsgType::CertNotify,
                code: ErrorCode::CERT_SUBJECT_MISMATCH
            })
    );
    assert!(
        !lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::CertificateAccepted { .. }))
    );
}

/// KW-CRYPTO-036, KW-SEAL-006 at the server: a server that reads an offer
/// checks its body's signature before it acts on it — an offer whose body
/// signature is broken is refused there with `signature-invalid`, and
/// nothing is forwarded or set up, rather than left for the callee.
#[test]
fn kw_crypto_036_a_server_refuses_an_offer_whose_body_signature_fails() {
    let mut lab = one_domain();
    lab.register_all();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Offer(_))));
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u2@a.example")),
    );
    lab.settle();
    let mut offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == "u1@a.example" => Some(o),
            _ => None,
        })
        .unwrap();
    offer.body.sig.0[7] ^= 1;
    lab.drop_if = None;
    let (server, caller) = (lab.servers[0].addr, lab.devices[0].contact);
    let mark = lab.trace.len();
    lab.inject(server, caller, &Message::Offer(offer.clone()).encode());
    assert_eq!(
        lab.refusals(mark, "sc@a.example"),
        [ProtocolError::Refused {
            re: MsgType::Offer,
            code: ErrorCode::SIGNATURE_INVALID
        }]
    );
    assert!(!lab.server(0).session_ids().contains(&offer.session));
    assert!(!lab.trace[mark..].iter().any(|s| matches!(
        s,
        Step::Sent { from, message: Message::Offer(_) | Message::PinholeOpen(_), .. }
            if from == "sc@a.example"
    )));
}

/// KW-SEAL-006, KW-SEAL-007: a server the caller made a read-only
/// recipient does not rewrite the caller's media addresses, even when its
/// policy rewrites them for the calls it may modify: it maps no public
/// port, edits nothing, and the callee gets the caller's body as sealed.
/// The same server with read-modify does rewrite (KW-SM-012).
#[test]
fn kw_seal_007_a_read_only_server_rewrites_no_address() {
    for (perm, rewrites) in [
        (keyway::wire::Permission::Read, false),
        (keyway::wire::Permission::ReadModify, true),
    ] {
        let mut lab = Lab::new(LabOptions {
            domains: vec!["a.example"],
            devices: 3,
            hub: false,
            device_policy: DevicePolicy {
                own_server: Some(perm),
                ..DevicePolicy::default()
            },
            ..LabOptions::default()
        });
        lab.register_all();
        let mark = lab.trace.len();
        let session = lab.call("u1@a.example", "u2@a.example");
        let mapped = lab.trace[mark..].iter().any(|s| {
            matches!(
                s,
                Step::Stored {
                    write: keyway::core::StoreWrite::PutMapping { .. },
                    ..
                }
            )
        });
        assert_eq!(mapped, rewrites, "{perm:?}");
        let bodies: Vec<_> = lab.trace[mark..]
            .iter()
            .filter_map(|s| match s {
                Step::Sent {
                    message: Message::Offer(o),
                    ..
                } if o.session == session => Some(o.body.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(bodies.len(), 2, "{perm:?}");
        assert_eq!(bodies[0] == bodies[1], !rewrites, "{perm:?}");
    }
}

/// KW-SM-019: a device keeps at most 64 certificate queries outstanding; a
/// 65th for another account is refused as the application's misuse, while
/// one for an account already asked about is taken (it joins that query).
#[test]
fn kw_sm_019_a_device_keeps_at_most_64_queries_outstanding() {
    let mut lab = one_domain();
    lab.register_all();
    let query = |n: usize| DeviceCommand::QueryCertificate(principal(&format!("q{n}@a.example")));
    for n in 0..64 {
        assert_eq!(lab.try_command("u1@a.example", query(n)), Ok(()));
    }
    assert_eq!(
        lab.try_command("u1@a.example", query(64)),
        Err(keyway::core::ApiMisuse::TooManyQueries)
    );
    assert_eq!(lab.try_command("u1@a.example", query(3)), Ok(()));
}

/// KW-SM-017: a server remembers the sessions that ended, not only the
/// last: the offer of the first of two ended calls, sent again once the
/// transaction cache forgot it, is refused with `bad-state` and opens no
/// pinhole.
#[test]
fn kw_sm_017_a_server_refuses_the_offer_of_any_ended_session() {
    let mut lab = one_domain();
    lab.register_all();
    let mut offers = Vec::new();
    for _ in 0..2 {
        let session = lab.call("u1@a.example", "u2@a.example");
        offers.push(
            lab.sent()
                .into_iter()
                .find_map(|(from, _, m)| match m {
                    Message::Offer(o) if from == "u1@a.example" && o.session == session => Some(o),
                    _ => None,
                })
                .unwrap(),
        );
        lab.command("u1@a.example", DeviceCommand::HangUp(session));
        lab.settle();
    }
    lab.advance(65_000);
    let (server, caller) = (lab.servers[0].addr, lab.devices[0].contact);
    let mark = lab.trace.len();
    lab.inject(server, caller, &Message::Offer(offers[0].clone()).encode());
    assert_eq!(last_error(&lab, mark), Some(ErrorCode::BAD_STATE));
    assert!(lab.firewall(0).is_empty());
    // And after a restart, from what it stored (KW-SM-025).
    lab.restart_server(0);
    lab.settle();
    lab.advance(65_000);
    let mark = lab.trace.len();
    lab.inject(server, caller, &Message::Offer(offers[1].clone()).encode());
    assert_eq!(last_error(&lab, mark), Some(ErrorCode::BAD_STATE));
    assert!(lab.firewall(0).is_empty());
}

/// KW-CRYPTO-061, KW-SM-020: an `ack` made for the caller by a server on
/// the path is refused by the callee with `signature-invalid`, and the call
/// stays answered; the caller's own `ack` then sets it up.
#[test]
fn kw_crypto_061_a_callee_takes_only_its_callers_own_ack() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Ack(_))));
    let session = lab.call("u1@a.example", "u1@b.example");
    lab.drop_if = None;
    let callee_addr = lab.devices[lab.dev("u1@b.example")].contact;
    let sc_b = lab.servers[1].addr;
    let ack = |txn: u8, signer: &keyway::crypto::SigningKeyPair| {
        let mut ack = Message::Ack(keyway::wire::Ack {
            txn: TxnId([txn; 8]),
            from: principal("u1@a.example"),
            to: principal("u1@b.example"),
            session,
            hops: keyway::wire::Hops::new(8).unwrap(),
            via: None,
            sig: keyway::crypto::unsigned(),
            ext: Extensions::new(),
        });
        keyway::crypto::sign_message(&mut ack, signer).unwrap();
        ack.encode()
    };
    let server_key = lab.servers[0].config.identity.signing.clone();
    let mark = lab.trace.len();
    lab.inject(callee_addr, sc_b, &ack(0xa1, &server_key));
    assert_eq!(
        lab.refusals(mark, "u1@b.example"),
        [ProtocolError::Refused {
            re: MsgType::Ack,
            code: ErrorCode::SIGNATURE_INVALID
        }]
    );
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(keyway::core::CallState::Answered)
    );
    let caller_key = lab.devices[lab.dev("u1@a.example")]
        .identity
        .signing
        .clone();
    lab.inject(callee_addr, sc_b, &ack(0xa2, &caller_key));
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(keyway::core::CallState::Established)
    );
}

/// KW-SM-025, KW-SM-017: what a server stores of a session is kept while
/// it matters: a live session's record ends with the session's term, and
/// an ended session outlives a pruning of the store (the spent nonces of
/// registration expiring) while its term lasts.
#[test]
fn kw_sm_025_the_store_keeps_a_session_while_its_term_lasts() {
    let mut lab = one_domain();
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    let stored = lab.servers[0].store.load().unwrap();
    let term = lab.server(0).session_expiry(&session).unwrap();
    assert_eq!(stored.sessions.get(&session).map(|r| r.until()), Some(term));
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    let spent = stored.spent.len();
    assert!(spent > 0);
    lab.advance(40_000);
    let stored = lab.servers[0].store.load().unwrap();
    assert!(stored.spent.len() < spent, "a pruning happened");
    assert!(stored.ended.contains_key(&session));
}

/// KW-SM-025, KW-KEY-004: a restarted server keeps an old epoch's grace by
/// the wall clock, which is what survives a restart (its monotonic clock
/// starts again). Both parties rekey, which retires epoch 0 of each
/// direction at the server 30 s on; 5 s later the wall clock is stepped
/// 20 s ahead and the server restarted. A payload of epoch 0 is then still
/// within its grace (5 s of 30, plus the 20 stepped), and one 10 s later is
/// past it, in either direction.
#[test]
fn kw_sm_025_a_restarted_server_keeps_an_epochs_grace_by_the_wall_clock() {
    let (caller, callee) = ("u1@a.example", "u1@b.example");
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call(caller, callee);
    let key = session_key(&lab, session, callee);
    for who in [caller, callee] {
        lab.command(who, DeviceCommand::Rekey(session, false));
        lab.settle();
    }
    lab.advance(5_000);
    lab.step_wall(20_000);
    lab.restart_server(0);
    lab.settle();
    let server = lab.servers[0].addr;
    let mut txn = 0xe0;
    let mut observe = |lab: &mut Lab, from: &str, to: &str, seq: u64| {
        let d = lab.dev(from);
        let mut keys = keyway::crypto::DirectionKeys::new(
            session,
            principal(from),
            principal(to),
            key.clone(),
            0,
        );
        // Past the sequence numbers the party used under epoch 0.
        for _ in 0..seq {
            keys.seal(MsgType::Info, b"").unwrap();
        }
        txn += 1;
        let signer = lab.devices[d].identity.signing.clone();
        let info = in_session_between(MsgType::Info, &mut keys, session, txn, &signer, (from, to));
        let source = if from == caller {
            lab.devices[d].contact
        } else {
            lab.servers[2].addr
        };
        let events = lab.server_events("sc@a.example").len();
        lab.inject(server, source, &info.encode());
        lab.settle();
        lab.server_events("sc@a.example").split_off(events)
    };
    let observed = keyway::core::ServerEvent::Observed(session, MsgType::Info);
    let stale = keyway::core::ServerEvent::Rejected(MsgType::Info, ErrorCode::STALE_EPOCH);
    for (from, to) in [(caller, callee), (callee, caller)] {
        let within = observe(&mut lab, from, to, 4);
        assert!(within.contains(&observed), "{from}: {within:?}");
    }
    lab.advance(10_000);
    for (from, to) in [(caller, callee), (callee, caller)] {
        let past = observe(&mut lab, from, to, 5);
        assert!(past.contains(&stale), "{from}: {past:?}");
    }
}

/// KW-FRAME-012, KW-SM-025: a server restarted less than 64 s after it
/// answered a `register` answers that request's retransmission as before,
/// with its `register-ok`; from 64 s on the request is a new one, whose
/// nonce is spent (`stale-nonce`).
#[test]
fn kw_frame_012_a_restarted_server_answers_a_recent_register_again() {
    for (after, answered_again) in [(63, true), (64, false)] {
        let mut lab = one_domain();
        lab.register_all();
        let who = principal("u1@a.example");
        let answer = lab
            .sent()
            .into_iter()
            .find_map(|(_, _, m)| match m {
                Message::Register(r) if r.auth.is_some() && r.from == who => Some(r),
                _ => None,
            })
            .unwrap();
        let registration = lab.server(0).registration(&who).unwrap();
        let registered_at = registration.not_after - registration.granted;
        lab.advance((registered_at + after) * 1000 - lab.clock().wall);
        lab.restart_server(0);
        let (server, device) = (lab.servers[0].addr, lab.devices[0].contact);
        let mark = lab.trace.len();
        lab.inject(server, device, &Message::Register(answer).encode());
        let ok_again = lab.trace[mark..].iter().any(|s| {
            matches!(
                s,
                Step::Sent {
                    message: Message::RegisterOk(_),
                    ..
                }
            )
        });
        assert_eq!(ok_again, answered_again, "{after} s after");
        if !answered_again {
            assert_eq!(last_error(&lab, mark), Some(ErrorCode::STALE_NONCE));
        }
    }
}

/// KW-SM-016 at a server: an answer is read only as the callee's own —
/// from the callee the offer named, sealed by it, with its certificate.
/// One that names the callee but carries a body u3 sealed for the session
/// is not read (`permission-denied`), nor is one that names u3, with u3's
/// certificate and body: each is relayed unread, for the caller to refuse.
#[test]
fn kw_sm_016_a_server_reads_only_the_callees_own_answer() {
    for case in 0..2 {
        let mut lab = one_domain();
        lab.register_all();
        // u2's answer to the next call is lost on its way to the server.
        lab.drop_if = Some(Box::new(|m| matches!(m, Message::Answer(_))));
        let mark = lab.trace.len();
        lab.command(
            "u1@a.example",
            DeviceCommand::Call(principal("u2@a.example")),
        );
        lab.settle();
        lab.drop_if = None;
        let answer = lab.trace[mark..]
            .iter()
            .find_map(|s| match s {
                Step::Sent {
                    from,
                    message: Message::Answer(a),
                    ..
                } if from == "u2@a.example" => Some(a.clone()),
                _ => None,
            })
            .unwrap();
        let server = lab.servers[0].addr;
        let u2 = lab.devices[lab.dev("u2@a.example")].contact;
        // u2's description, sealed for the server by u3 for this session: a
        // body that opens and whose signature is u3's.
        let server_id = lab.servers[0].config.identity.clone();
        let mut cache = keyway::crypto::KeyCache::new(4);
        let plaintext = keyway::crypto::open(&answer.body, &answer.session, &server_id, &mut cache)
            .unwrap()
            .plaintext;
        let spec = keyway::crypto::RecipientSpec {
            id: server_id.account.clone(),
            kx_key: server_id.kx.public(),
            kind: keyway::wire::RecipientKind::Server,
            perm: keyway::wire::Permission::Read,
            anonymous: false,
        };
        let ctx = keyway::crypto::SealContext {
            session: &answer.session,
            cid: 1,
            re: MsgType::Answer,
            to: Some(&answer.to),
        };
        let u3_identity = lab.devices[lab.dev("u3@a.example")].identity.clone();
        let u3_body = keyway::crypto::seal(
            ctx,
            &u3_identity,
            &[spec],
            &plaintext,
            None,
            &mut cache,
            &mut keyway::crypto::SeededEntropy::from_label("u3 forges"),
        )
        .unwrap()
        .0;
        let other_sealed = keyway::wire::Answer {
            body: u3_body.clone(),
            ..answer.clone()
        };
        let other_sent = keyway::wire::Answer {
            from: principal("u3@a.example"),
            body: u3_body,
            cert: lab.device("u3@a.example").certificate().cloned(),
            ..answer
        };
        // Each on the way the answer comes, from u2's address.
        let forged = if case == 0 { other_sealed } else { other_sent };
        let from = u2;
        {
            let events = lab.server_events("sc@a.example").len();
            lab.inject(server, from, &Message::Answer(forged).encode());
            let after = lab.server_events("sc@a.example");
            assert!(
                after[events..].contains(&keyway::core::ServerEvent::Rejected(
                    MsgType::Answer,
                    ErrorCode::PERMISSION_DENIED
                )),
                "{from}: {:?}",
                &after[events..]
            );
        }
    }
}

/// KW-SM-019: a server keeps at most its bound of requests outstanding; a
/// request it would forward beyond it is refused with `busy`, and one
/// whose `txn` is already outstanding there with `bad-state`.
#[test]
fn kw_sm_019_a_server_keeps_at_most_its_bound_of_requests_outstanding() {
    let mut lab = Lab::new(LabOptions {
        server_policy: ServerPolicy {
            max_outstanding: 3,
            ..ServerPolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    // Forwarded queries go unanswered: they stay outstanding at sc@a.
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::CertQuery(q) if q.via.is_some()),
    ));
    for n in 1..=4 {
        lab.command(
            "u1@a.example",
            DeviceCommand::QueryCertificate(principal(&format!("q{n}@b.example"))),
        );
    }
    lab.settle();
    let failed: Vec<(String, ErrorCode)> = lab
        .device_events("u1@a.example")
        .into_iter()
        .filter_map(|e| match e {
            DeviceEvent::QueryFailed(p, code) => Some((p.to_string(), code)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [("q4@b.example".to_string(), ErrorCode::BUSY)]);
}
