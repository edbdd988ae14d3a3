//! What the state machines return when they refuse an input or a
//! command, and the cases where refusing used to change state: typed
//! errors (KW-ERR-001, KW-ERR-004), session-bound certificates
//! (KW-SM-020), refresh retries (KW-SM-021).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use keyway::core::{
    Addr, ApiMisuse, CallState, DeviceCommand, DeviceEvent, Firewall, ProtocolError, ServerEvent,
};
use keyway::testkit::{Lab, LabOptions, Step, principal};
use keyway::wire::{
    Bye, Contact, ErrorCode, Media, Message, MsgType, OkResponse, RegisterOk, SessionId, Transport,
    TxnId,
};

fn one_domain() -> Lab {
    Lab::new(LabOptions {
        domains: vec!["a.example"],
        hub: false,
        ..LabOptions::default()
    })
}

/// KW-ERR-001: a device refuses what it cannot carry out, and says so: a
/// request it never takes is answered with `unknown-message-type`; a
/// response nothing waits for, and media of no call, are refused
/// without an answer.
#[test]
fn kw_err_001_devices_refuse_with_typed_errors() {
    let mut lab = one_domain();
    lab.register_all();
    let device = lab.devices[0].contact;
    let server = lab.servers[0].addr;
    let stranger: Addr = "198.51.100.9:5060".parse().unwrap();

    // A register is a request only servers carry out.
    let register = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| matches!(m, Message::Register(_)).then_some(m))
        .unwrap();
    let mark = lab.trace.len();
    lab.inject(device, stranger, &register.encode());
    assert_eq!(
        lab.refusals(mark, "u1@a.example"),
        [ProtocolError::Refused {
            re: MsgType::Register,
            code: ErrorCode::UNKNOWN_MESSAGE_TYPE
        }]
    );
    assert!(
        lab.find(
            mark,
            |s| matches!(s, Step::Sent { to, message: Message::Error(e), .. }
        if *to == stranger && e.code == ErrorCode::UNKNOWN_MESSAGE_TYPE)
        )
        .is_some()
    );

    // A response to nothing outstanding: from the server, and from elsewhere.
    let ok = Message::Ok(OkResponse {
        txn: TxnId([9; 8]),
        session: None,
        epoch: None,
        re: MsgType::Info,
        pinhole: None,
        recording: None,
        ext: Default::default(),
    });
    let mark = lab.trace.len();
    lab.inject(device, server, &ok.encode());
    lab.inject(device, stranger, &ok.encode());
    assert_eq!(
        lab.refusals(mark, "u1@a.example"),
        [
            ProtocolError::Unsolicited(MsgType::Ok),
            ProtocolError::Unsolicited(MsgType::Ok)
        ]
    );
    assert!(
        lab.find(mark, |s| matches!(s, Step::Sent { .. })).is_none(),
        "responses are never answered"
    );

    // Media of no call.
    let media = Message::Media(Media {
        from: principal("u2@a.example"),
        session: SessionId([3; 16]),
        stream: 1,
        epoch: 0,
        seq: 0,
        payload: keyway::wire::Bytes::new(vec![0; 20]).unwrap(),
        ext: Default::default(),
    });
    let mark = lab.trace.len();
    lab.inject(device, stranger, &media.encode());
    assert_eq!(
        lab.refusals(mark, "u1@a.example"),
        [ProtocolError::Dropped {
            re: MsgType::Media,
            code: ErrorCode::UNKNOWN_SESSION
        }]
    );

    // Undecodable bytes (a map of one pair, cut short): the wire error,
    // with its offset.
    let mark = lab.trace.len();
    lab.inject(device, stranger, &[0xa1, 0x00]);
    let refused = lab.refusals(mark, "u1@a.example");
    assert!(matches!(refused.as_slice(), [ProtocolError::Undecodable(e)] if e.offset == 0));
    assert_eq!(refused[0].code(), ErrorCode::MALFORMED);
}

/// A `register-ok` whose certificate is not the device's own is refused,
/// and the registration fails; a challenge or `register-ok` for another
/// kind of transaction does not consume it.
#[test]
fn unusable_and_misdirected_responses_are_refused() {
    let mut lab = one_domain();
    lab.register_all();
    let device = lab.devices[0].contact;
    let server = lab.servers[0].addr;
    // A query outstanding: its txn answered with a register-ok.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::CertQuery(_))));
    lab.command(
        "u1@a.example",
        DeviceCommand::QueryCertificate(principal("u2@a.example")),
    );
    lab.settle();
    lab.drop_if = None;
    let query = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(_, _, m)| match m {
            Message::CertQuery(q) => Some(q),
            _ => None,
        })
        .unwrap();
    let stolen = Message::RegisterOk(RegisterOk {
        txn: query.txn,
        to: principal("u1@a.example"),
        contact: Contact {
            transport: Transport::Udp,
            addr: device,
        },
        expires: 600,
        cert: lab.device("u2@a.example").certificate().cloned(),
        not_after: keyway::wire::Time(0),
        ext: Default::default(),
    });
    let mark = lab.trace.len();
    lab.inject(device, server, &stolen.encode());
    assert_eq!(
        lab.refusals(mark, "u1@a.example"),
        [ProtocolError::Unsolicited(MsgType::RegisterOk)]
    );
    // The query was not consumed: its real answer still counts.
    lab.advance(600);
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::CertificateAccepted { account, .. } if *account == principal("u2@a.example")))
    );
}

/// Commands a device cannot carry out are refused with a typed error,
/// and change nothing (no output at all).
#[test]
fn commands_that_cannot_be_carried_out_are_refused() {
    let mut lab = one_domain();
    let bogus = SessionId([7; 16]);
    assert_eq!(
        lab.try_command(
            "u1@a.example",
            DeviceCommand::Call(principal("u2@a.example"))
        ),
        Err(ApiMisuse::NotRegistered)
    );
    lab.register_all();
    let mark = lab.trace.len();
    for command in [
        DeviceCommand::Info(bogus, "x".into()),
        DeviceCommand::HangUp(bogus),
        DeviceCommand::Rekey(bogus, false),
        DeviceCommand::Media(bogus, vec![1]),
    ] {
        assert_eq!(
            lab.try_command("u1@a.example", command),
            Err(ApiMisuse::UnknownSession(bogus))
        );
    }
    assert_eq!(lab.trace.len(), mark, "a refused command has no output");

    // A call still waiting for its answer cannot rekey or send media.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Answer(_))));
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u2@a.example")),
    );
    lab.settle();
    let session = lab.device("u1@a.example").sessions()[0];
    assert_eq!(
        lab.device("u1@a.example").call_state(&session),
        Some(CallState::Offering)
    );
    assert_eq!(
        lab.try_command("u1@a.example", DeviceCommand::Rekey(session, true)),
        Err(ApiMisuse::NotEstablished(session))
    );
    assert_eq!(
        lab.try_command("u1@a.example", DeviceCommand::Media(session, vec![1])),
        Err(ApiMisuse::NotEstablished(session))
    );
    assert_eq!(
        lab.try_command("u1@a.example", DeviceCommand::Info(session, "x".into())),
        Err(ApiMisuse::NotEstablished(session))
    );
}

/// KW-ERR-004, KW-SM-019: an in-session request the server cannot
/// forward (its `txn` is outstanding there) is refused with `bad-state`
/// before it is read: an authentic `bye` replayed under a captured `txn`
/// neither ends the session nor closes its pinholes.
#[test]
fn kw_err_004_an_unforwardable_bye_changes_nothing() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    // An info forwarded by sc@a is lost: its txn stays outstanding there.
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::Info(i) if i.via.is_some()),
    ));
    lab.command("u1@a.example", DeviceCommand::Info(session, "one".into()));
    lab.settle();
    let outstanding = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(f, _, m)| match m {
            Message::Info(i) if f == "u1@a.example" => Some(i.txn),
            _ => None,
        })
        .unwrap();
    // The device's bye never reaches sc@a; someone captures it.
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::Bye(b) if b.via.is_none()),
    ));
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    lab.drop_if = None;
    let bye: Bye = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(f, _, m)| match m {
            Message::Bye(b) if f == "u1@a.example" => Some(b),
            _ => None,
        })
        .unwrap();
    let pinholes = lab.firewall(0).pinholes().len();
    assert!(pinholes > 0);
    let thief: Addr = "203.0.113.50:5060".parse().unwrap();
    let mark = lab.trace.len();
    let replayed = Message::Bye(Bye {
        txn: outstanding,
        ..bye
    });
    lab.inject(lab.servers[0].addr, thief, &replayed.encode());
    assert_eq!(
        lab.refusals(mark, "sc@a.example"),
        [ProtocolError::Refused {
            re: MsgType::Bye,
            code: ErrorCode::BAD_STATE
        }]
    );
    assert!(lab.server(0).session_ids().contains(&session));
    assert_eq!(lab.firewall(0).pinholes().len(), pinholes);
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Server {
                event: ServerEvent::Observed(..),
                ..
            }
        ))
        .is_none(),
        "not even read"
    );
}

/// KW-SM-020: a refresh during a call replaces and revokes the caller's
/// certificate; the servers and the peer still check the caller's
/// body-form rekeys with the certificate confirmed when the call was set
/// up, so they keep following the call, and its `bye` closes every
/// pinhole.
#[test]
fn kw_sm_020_a_refresh_during_a_call_does_not_lose_the_call() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    let first = lab.device("u1@a.example").certificate().unwrap().tbs.serial;
    // Past 80% of the term: refreshed with a new certificate.
    lab.advance(2_881_000);
    let second = lab.device("u1@a.example").certificate().unwrap().tbs.serial;
    assert_ne!(first, second);
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(CallState::Established)
    );
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::Rekey(session, true));
    lab.settle();
    for server in ["sc@a.example", "sc@b.example"] {
        assert!(
            lab.find(mark, |s| matches!(s, Step::Server { server: n, event: ServerEvent::Rekeyed { .. } } if n == server))
                .is_some(),
            "{server} follows the rekey"
        );
    }
    assert!(
        lab.device_events("u1@b.example")
            .contains(&DeviceEvent::Rekeyed {
                session,
                sending: false,
                epoch: 1
            })
    );
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    assert!(lab.firewall(0).is_empty() && lab.firewall(1).is_empty());
    assert!(lab.server(0).session_ids().is_empty());
}

/// KW-SM-021: a refresh that fails leaves the device registered and is
/// tried again before the term ends; a registration nobody refreshes
/// lapses, and the device says so.
#[test]
fn kw_sm_021_failed_refreshes_are_retried_and_lapses_reported() {
    let mut lab = one_domain();
    lab.register_all();
    let until = lab.device("u1@a.example").registered_until().unwrap();
    // The server answers nothing for a while: the refresh times out.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Register(_))));
    lab.advance(2_881_000);
    assert_eq!(
        lab.device("u1@a.example").registered_until(),
        Some(until),
        "still registered while refreshing"
    );
    lab.advance(40_000);
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::RegistrationFailed(ErrorCode::TIMEOUT))
    );
    assert_eq!(lab.device("u1@a.example").registered_until(), Some(until));
    // The server is back: the retry succeeds before the term ends.
    lab.drop_if = None;
    lab.advance(120_000);
    let renewed = lab.device("u1@a.example").registered_until().unwrap();
    assert!(renewed > until);

    // u2 is cut off for good: its registration lapses.
    let u2 = lab.devices[1].contact;
    lab.drop_if = Some(Box::new(
        move |m| matches!(m, Message::Register(r) if r.contact.addr == u2),
    ));
    lab.advance(3_700_000);
    assert!(
        lab.device_events("u2@a.example")
            .contains(&DeviceEvent::RegistrationExpired)
    );
    assert_eq!(lab.device("u2@a.example").registered_until(), None);
    assert!(lab.device("u2@a.example").certificate().is_none());
}

/// KW-SM-022: a callee of another domain that holds the caller's
/// certificate from an earlier call checks a refreshed caller's offer with
/// it — the refresh replaced the certificate, not the keys — and answers.
#[test]
fn kw_sm_022_a_refreshed_caller_is_still_recognised() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let first = lab.call("u1@a.example", "u2@b.example");
    lab.command("u1@a.example", DeviceCommand::HangUp(first));
    lab.settle();
    let old = lab.device("u1@a.example").certificate().unwrap().clone();
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let new = lab.device("u1@a.example").certificate().unwrap().clone();
    assert_ne!(old.tbs.serial, new.tbs.serial);
    assert_eq!(old.tbs.sig_key, new.tbs.sig_key);
    let second = lab.call("u1@a.example", "u2@b.example");
    assert_eq!(
        lab.device("u1@a.example").call_state(&second),
        Some(CallState::Established)
    );
    assert!(
        !lab.device_events("u2@b.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::TamperDetected(..)))
    );
}

/// KW-SM-022: an offer whose carried certificate has other keys than the
/// account's, as the callee's server confirms it, is refused once the
/// callee has fetched the account's certificate — not fetched forever.
#[test]
fn kw_sm_022_an_offer_under_keys_not_the_accounts_is_refused() {
    use keyway::crypto::{
        CertProfile, CertificateAuthority, Identity, SeededEntropy, SigningKeyPair,
    };
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let first = lab.call("u1@a.example", "u2@b.example");
    lab.command("u1@a.example", DeviceCommand::HangUp(first));
    lab.settle();
    // An offer as u1@a, sealed with other keys under a certificate of
    // another authority that claims a.example.
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| match m {
            Message::Offer(o) if o.via.is_none() => Some(o),
            _ => None,
        })
        .unwrap();
    let mut rng = SeededEntropy::from_label("impostor");
    let rogue = CertificateAuthority::new(
        keyway::wire::Domain::new("a.example").unwrap(),
        SigningKeyPair::generate(&mut rng),
    );
    let impostor = Identity::generate(principal("u1@a.example"), &mut rng);
    let cert = rogue.issue(&CertProfile {
        serial: 99,
        subject: principal("u1@a.example"),
        role: keyway::wire::Role::Device,
        sig_key: impostor.signing.public(),
        kx_key: impostor.kx.public(),
        not_before: lab.now / 1000 - 60,
        not_after: lab.now / 1000 + 3600,
    });
    let forged = keyway::wire::Offer {
        txn: TxnId([0x55; 8]),
        session: SessionId([0x66; 16]),
        cert: Some(cert),
        ..offer
    };
    let mark = lab.trace.len();
    let callee = lab.devices[lab.dev("u2@b.example")].contact;
    lab.inject(
        callee,
        lab.servers[1].addr,
        &Message::Offer(forged).encode(),
    );
    lab.settle();
    let fetched = lab
        .find(mark, |s| matches!(s, Step::Sent { from, message: Message::CertQuery(q), .. } if from == "u2@b.example" && q.target == principal("u1@a.example")))
        .expect("the callee asks for u1@a's certificate although it holds one");
    assert!(
        lab.find(fetched, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::CERT_INVALID))
            .is_some()
    );
    assert!(lab.device("u2@b.example").sessions().is_empty());
}

/// KW-SM-023: a callee whose caller's `bye` never arrived learns the call
/// is over from its next in-session request: the caller answers
/// `unknown-session`, and the callee ends the call too.
#[test]
fn kw_sm_023_a_call_the_peer_no_longer_has_ends() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Bye(_))));
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.advance(40_000);
    lab.drop_if = None;
    assert_eq!(lab.device("u1@a.example").call_state(&session), None);
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(CallState::Established)
    );
    lab.command(
        "u1@b.example",
        DeviceCommand::Info(session, "still there?".into()),
    );
    lab.settle();
    assert_eq!(lab.device("u1@b.example").call_state(&session), None);
    assert!(
        lab.device_events("u1@b.example")
            .contains(&DeviceEvent::CallFailed(
                session,
                ErrorCode::UNKNOWN_SESSION
            ))
    );
}

/// KW-FRAME-012 with §5: a duplicate of a refused request gets the same
/// `error` again and is reported refused again.
#[test]
fn a_duplicate_of_a_refused_request_is_refused_again() {
    let mut lab = one_domain();
    lab.register_all();
    let device = lab.devices[0].contact;
    let stranger: Addr = "198.51.100.9:5060".parse().unwrap();
    let register = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| matches!(m, Message::Register(_)).then_some(m))
        .unwrap();
    let refused = ProtocolError::Refused {
        re: MsgType::Register,
        code: ErrorCode::UNKNOWN_MESSAGE_TYPE,
    };
    for _ in 0..2 {
        let mark = lab.trace.len();
        lab.inject(device, stranger, &register.encode());
        assert_eq!(
            lab.refusals(mark, "u1@a.example"),
            std::slice::from_ref(&refused)
        );
        assert!(
            lab.find(mark, |s| matches!(
                s,
                Step::Sent {
                    message: Message::Error(_),
                    ..
                }
            ))
            .is_some()
        );
    }
}

/// KW-ERR-004, KW-SM-019: a server whose outstanding requests are all but
/// used up takes an in-session request's place before reading it, so what
/// reading it sends (the recorder's new keys) cannot make its forward
/// fail after the fact: the `info` is read and forwarded, or refused and
/// not read.
#[test]
fn kw_err_004_reading_a_request_cannot_starve_its_forward() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        hub: false,
        record: true,
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    lab.command("u1@a.example", DeviceCommand::Info(session, "x".into()));
    lab.settle();
    let info = lab
        .sent()
        .into_iter()
        .find_map(|(f, _, m)| match m {
            Message::Info(i) if f == "u1@a.example" => Some(i),
            _ => None,
        })
        .unwrap();
    let server = lab.servers[0].addr;
    let u2 = lab.devices[1].contact;
    let thief: Addr = "203.0.113.7:5060".parse().unwrap();
    let signing = lab.devices[lab.dev("u1@a.example")]
        .identity
        .signing
        .clone();
    // Fill sc@a's outstanding requests with forwards that go nowhere.
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::Info(i) if i.txn.0[0] == 0xee),
    ));
    let mut fillers = Vec::new();
    for k in 0u32.. {
        let mut txn = [0xee; 8];
        txn[4..].copy_from_slice(&k.to_be_bytes());
        let mut filler = Message::Info(keyway::wire::Info {
            txn: TxnId(txn),
            seq: 1_000_000 + u64::from(k),
            ..info.clone()
        });
        // Signed as the device would (KW-CRYPTO-061): the server carries
        // it on, and only then finds it does not open.
        keyway::crypto::sign_message(&mut filler, &signing).unwrap();
        let mark = lab.trace.len();
        lab.inject(server, thief, &filler.encode());
        if !lab.refusals(mark, "sc@a.example").is_empty() {
            break;
        }
        fillers.push(TxnId(txn));
    }
    lab.queue.clear();
    // Two places free again.
    for txn in &fillers[..2] {
        let ok = Message::Ok(OkResponse {
            txn: *txn,
            session: Some(session),
            epoch: None,
            re: MsgType::Info,
            pinhole: None,
            recording: None,
            ext: Default::default(),
        });
        lab.inject(server, u2, &ok.encode());
    }
    lab.queue.clear();
    // A rekey (one place) and the info with its new description (the
    // other), whose keys the server owes the recorder.
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::Rekey(session, false));
    lab.settle();
    let refused_info = lab.refusals(mark, "sc@a.example").iter().any(|e| {
        matches!(
            e,
            ProtocolError::Refused {
                re: MsgType::Info,
                ..
            }
        )
    });
    let read = lab
        .find(mark, |s| matches!(s, Step::Server { server, event: ServerEvent::Observed(_, MsgType::Info) } if server == "sc@a.example"))
        .is_some();
    assert!(!refused_info, "the info had its place");
    assert!(read);
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { from, message: Message::Info(_), .. } if from == "sc@a.example")).is_some());
}

/// KW-SM-029: a `bye` replayed under a fresh `txn` after the call ended
/// is refused with `unknown-session`, not acknowledged; the original's
/// retransmission (same `txn`) is still answered `ok` from the cache.
#[test]
fn kw_sm_029_a_bye_for_a_call_the_device_does_not_have_is_refused() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    assert_eq!(lab.device("u1@b.example").call_state(&session), None);
    let callee = lab.devices[lab.dev("u1@b.example")].contact;
    let (server, bye) = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(f, to, m)| match m {
            Message::Bye(b) if to == callee => Some((f, b)),
            _ => None,
        })
        .unwrap();
    let server = lab
        .servers
        .iter()
        .find(|s| s.server.account().to_string() == server)
        .map(|s| s.addr)
        .unwrap();
    // The original, again: answered from the cache (KW-FRAME-012).
    let mark = lab.trace.len();
    lab.inject(callee, server, &Message::Bye(bye.clone()).encode());
    assert!(lab.refusals(mark, "u1@b.example").is_empty());
    assert!(
        lab.find(
            mark,
            |s| matches!(s, Step::Sent { message: Message::Ok(ok), .. } if ok.txn == bye.txn)
        )
        .is_some()
    );
    // A replay under a fresh txn: refused, nothing acknowledged.
    let mark = lab.trace.len();
    let fresh = TxnId([0x5a; 8]);
    let replayed = Message::Bye(Bye { txn: fresh, ..bye });
    lab.inject(callee, server, &replayed.encode());
    assert_eq!(
        lab.refusals(mark, "u1@b.example"),
        [ProtocolError::Refused {
            re: MsgType::Bye,
            code: ErrorCode::UNKNOWN_SESSION
        }]
    );
    assert!(
        lab.find(
            mark,
            |s| matches!(s, Step::Sent { message: Message::Ok(ok), .. } if ok.txn == fresh)
        )
        .is_none()
    );
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.txn == Some(fresh) && e.code == ErrorCode::UNKNOWN_SESSION)).is_some());
}
