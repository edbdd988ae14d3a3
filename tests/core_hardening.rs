//! The protocol's weaknesses closed, each at the level of the party that
//! must refuse, each asserting the refusal's code and that nothing
//! changed: accounts are not enumerable (KW-SM-028), a contact is where
//! its register came from (KW-REG-017), a revoked certificate of a
//! server's domain is not carried on (KW-CERT-006), the servers an offer
//! must make recipients are policy (KW-POLICY-002), media packets are
//! accepted once (KW-KEY-007), and an unsigned `error` ends no more than
//! its transaction (KW-FRAME-014).
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
