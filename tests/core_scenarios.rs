//! One scenario per claim group (spec/traceability.md), walking the
//! claim's steps in order through the sans-IO device, server, firewall and
//! recorder state machines, joined by the lossless lab network of
//! `support::lab`. Each test is named by the claims it covers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use keyway::core::{
    CallState, DeviceCommand, DeviceEvent, Firewall, FirewallCommand, ServerEvent, ServerPolicy,
    SessionEnd, StoreWrite,
};
use keyway::crypto::KeyPolicy;
use keyway::wire::{ErrorCode, Message, MsgType, Permission, RecipientKind, Transport};
use support::lab::{Lab, LabOptions, Step, principal};

fn one_domain(devices: usize) -> Lab {
    Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices,
        hub: false,
        ..LabOptions::default()
    })
}

fn position(lab: &Lab, from: usize, f: impl Fn(&Step) -> bool) -> usize {
    lab.find(from, f)
        .unwrap_or_else(|| panic!("step not found after {from}"))
}

/// Claims 1, 2, 5, 7, 10, 12, 14 (F1): the device makes its key pairs and
/// sends one request with its location and an issuance request; the server
/// determines the type, challenges, checks both proofs of possession,
/// issues, stores location + certificate + term in one write, then
/// notifies; the device keeps the certificate with the term it was given.
/// KW-REG-001, KW-REG-002, KW-REG-003, KW-REG-004, KW-REG-006,
/// KW-REG-007, KW-REG-008, KW-REG-010, KW-REG-011, KW-REG-012,
/// KW-REG-013, KW-CERT-001, KW-SM-001 (the write before the answer).
#[test]
fn claims_1_2_5_7_10_12_14_registration_issues_a_certificate_with_the_term() {
    let mut lab = one_domain(1);
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let is_register = |auth: bool| move |s: &Step| matches!(s, Step::Sent { message: Message::Register(r), .. } if r.csr.is_some() && r.auth.is_some() == auth);
    // Location and issuance request in one message, no proof yet.
    let first = position(&lab, 0, is_register(false));
    // Type determined: an issuance request without proof is challenged,
    // with a kx-challenge for the X25519 key.
    let challenge = position(
        &lab,
        first,
        |s| matches!(s, Step::Sent { message: Message::Challenge(c), .. } if c.kx_challenge.is_some()),
    );
    let answer = position(&lab, challenge, is_register(true));
    let issued = position(&lab, answer, |s| {
        matches!(
            s,
            Step::Server {
                event: ServerEvent::CertificateIssued { .. },
                ..
            }
        )
    });
    let stored = position(&lab, issued, |s| {
        matches!(
            s,
            Step::Stored {
                write: StoreWrite::PutRegistration(_),
                ..
            }
        )
    });
    let notified = position(&lab, stored, |s| {
        matches!(
            s,
            Step::Sent {
                message: Message::RegisterOk(_),
                ..
            }
        )
    });
    let kept = position(&lab, notified, |s| {
        matches!(
            s,
            Step::Device {
                event: DeviceEvent::Registered { issued: true, .. },
                ..
            }
        )
    });
    assert!(
        first < challenge
            && challenge < answer
            && answer < issued
            && issued < stored
            && stored < notified
            && notified < kept
    );

    let Step::Stored {
        write: StoreWrite::PutRegistration(reg),
        ..
    } = &lab.trace[stored]
    else {
        unreachable!()
    };
    let Step::Sent {
        message: Message::RegisterOk(ok),
        ..
    } = &lab.trace[notified]
    else {
        unreachable!()
    };
    let Step::Sent {
        message: Message::Register(request),
        ..
    } = &lab.trace[first]
    else {
        unreachable!()
    };
    let cert = ok.cert.clone().unwrap();
    // KW-REG-008: from the time of issue to the end of the registration.
    assert_eq!(cert.tbs.not_before.0, reg.not_after - ok.expires);
    assert_eq!(cert.tbs.not_after.0, ok.not_after.0);
    assert_eq!(reg.not_after, ok.not_after.0);
    assert_eq!(reg.cert, cert);
    assert_eq!(reg.contact, request.contact);
    // KW-REG-001: the device's own keys, as its csr proved.
    let csr = request.csr.clone().unwrap();
    assert_eq!(
        (cert.tbs.sig_key, cert.tbs.kx_key),
        (csr.sig_key, csr.kx_key)
    );
    // KW-REG-012: the device holds it, with the term as its validity.
    let device = lab.device("u1@a.example");
    assert_eq!(device.certificate(), Some(&cert));
    assert_eq!(device.registered_until(), Some(ok.not_after.0));
    // KW-REG-013: at most the requested term.
    assert!(ok.expires <= request.expires);
}

/// Claims 3, 4, 9 (F2): a device registers the certificate it holds with
/// its location; the server confirms it and stores the registration; no
/// certificate is issued. KW-REG-002, KW-REG-009, KW-REG-011, KW-REG-012,
/// KW-SM-009.
#[test]
fn claims_3_4_9_registration_with_the_certificate_held() {
    let mut lab = one_domain(1);
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let cert = lab.device("u1@a.example").certificate().cloned().unwrap();
    let mark = lab.trace.len();
    lab.advance(10_000);
    lab.command("u1@a.example", DeviceCommand::RegisterWithCertificate);
    lab.settle();
    let first = position(
        &lab,
        mark,
        |s| matches!(s, Step::Sent { message: Message::Register(r), .. } if r.cert.is_some() && r.csr.is_none()),
    );
    let challenge = position(
        &lab,
        first,
        |s| matches!(s, Step::Sent { message: Message::Challenge(c), .. } if c.kx_challenge.is_none()),
    );
    let stored = position(
        &lab,
        challenge,
        |s| matches!(s, Step::Stored { write: StoreWrite::PutRegistration(r), .. } if r.cert == cert),
    );
    let ok = position(
        &lab,
        stored,
        |s| matches!(s, Step::Sent { message: Message::RegisterOk(ok), .. } if ok.cert.as_ref() == Some(&cert)),
    );
    position(&lab, ok, |s| {
        matches!(
            s,
            Step::Device {
                event: DeviceEvent::Registered { issued: false, .. },
                ..
            }
        )
    });
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Server {
                event: ServerEvent::CertificateIssued { .. },
                ..
            }
        ))
        .is_none(),
        "a confirmed certificate is not reissued"
    );
    let Step::Sent {
        message: Message::RegisterOk(ok),
        ..
    } = &lab.trace[ok]
    else {
        unreachable!()
    };
    // KW-REG-009: the term ends no later than the certificate.
    assert!(ok.not_after.0 <= cert.tbs.not_after.0);
}

/// Claims 6, 8, 11, 13, 15 (F3, F8): a certificate query for the own
/// domain is answered after confirming validity; one for another domain
/// is forwarded hop by hop (via, hops), answered there, relayed back the
/// same way and attested for the requesting device; failures carry their
/// codes. KW-QUERY-001, KW-QUERY-002, KW-QUERY-003, KW-QUERY-004,
/// KW-QUERY-005, KW-QUERY-006, KW-ROUTE-001, KW-ROUTE-002, KW-ROUTE-003,
/// KW-ROUTE-004, KW-CERT-002, KW-CERT-005.
#[test]
fn claims_6_8_11_13_15_certificate_query_own_domain_and_forwarded() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();

    // Own domain: determined, looked up, confirmed, notified.
    let mark = lab.trace.len();
    lab.command(
        "u1@a.example",
        DeviceCommand::QueryCertificate(principal("u2@a.example")),
    );
    lab.settle();
    let notify = position(
        &lab,
        mark,
        |s| matches!(s, Step::Sent { from, message: Message::CertNotify(n), .. } if from == "sc@a.example" && n.attestation.is_none()),
    );
    position(
        &lab,
        notify,
        |s| matches!(s, Step::Device { event: DeviceEvent::CertificateAccepted { account, .. }, .. } if account.as_str() == "u2@a.example"),
    );

    // Another domain: forwarded through the hub with via and hops.
    let mark = lab.trace.len();
    lab.command(
        "u1@a.example",
        DeviceCommand::QueryCertificate(principal("u1@b.example")),
    );
    lab.settle();
    let queries: Vec<_> = lab
        .sent()
        .iter()
        .filter_map(|(from, _, m)| match m {
            Message::CertQuery(q) if q.target.as_str() == "u1@b.example" => {
                Some((from.clone(), q.clone()))
            }
            _ => None,
        })
        .collect();
    let hops: Vec<u64> = queries.iter().map(|(_, q)| q.hops.get()).collect();
    assert_eq!(hops, vec![8, 7, 6], "each server decrements hops");
    let via_last: Vec<Option<String>> = queries
        .iter()
        .map(|(_, q)| q.via.as_ref().and_then(|v| v.last()).map(|p| p.to_string()))
        .collect();
    assert_eq!(
        via_last,
        vec![
            None,
            Some("sc@a.example".into()),
            Some("sc@hub.example".into())
        ]
    );
    // Answered by b, relayed back by the hub, attested by a.
    let from_b = position(
        &lab,
        mark,
        |s| matches!(s, Step::Sent { from, message: Message::CertNotify(_), .. } if from == "sc@b.example"),
    );
    let from_hub = position(
        &lab,
        from_b,
        |s| matches!(s, Step::Sent { from, message: Message::CertNotify(_), .. } if from == "sc@hub.example"),
    );
    let from_a = position(
        &lab,
        from_hub,
        |s| matches!(s, Step::Sent { from, message: Message::CertNotify(n), .. } if from == "sc@a.example" && n.attestation.is_some()),
    );
    position(
        &lab,
        from_a,
        |s| matches!(s, Step::Device { event: DeviceEvent::CertificateAccepted { account, .. }, .. } if account.as_str() == "u1@b.example"),
    );

    // Failures (KW-QUERY-005).
    for (target, code) in [
        ("u9@b.example", ErrorCode::UNKNOWN_ACCOUNT),
        ("u1@nowhere.example", ErrorCode::UNKNOWN_DOMAIN),
    ] {
        lab.command(
            "u1@a.example",
            DeviceCommand::QueryCertificate(principal(target)),
        );
        lab.settle();
        assert!(
            lab.device_events("u1@a.example")
                .contains(&DeviceEvent::QueryFailed(principal(target), code)),
            "{target}"
        );
    }
}

/// Claims 16, 17, 24, 28, 31, 34 (F4): the caller seals the session
/// description with a fresh key, wrapped for the callee and for the
/// servers it trusts, each with its permission; a trusted server finds its
/// entry, unwraps and decrypts, then forwards; the untrusted hub forwards
/// the body byte for byte and never holds the key; the callee verifies.
/// KW-SEAL-001, KW-SEAL-002, KW-SEAL-003, KW-SEAL-008, KW-SEAL-009,
/// KW-SEAL-010, KW-POLICY-001, KW-SM-010.
#[test]
fn claims_16_17_24_28_31_34_sealed_offer_through_trusted_and_untrusted_servers() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    let offers: Vec<(String, keyway::wire::Offer)> = lab
        .sent()
        .into_iter()
        .filter_map(|(from, _, m)| match m {
            Message::Offer(o) if o.session == session => Some((from, o)),
            _ => None,
        })
        .collect();
    let senders: Vec<&str> = offers.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        senders,
        [
            "u1@a.example",
            "sc@a.example",
            "sc@hub.example",
            "sc@b.example"
        ]
    );
    let recipients: Vec<(String, RecipientKind, Permission)> = offers[0]
        .1
        .body
        .recipients
        .iter()
        .map(|r| (r.id.as_ref().unwrap().to_string(), r.kind, r.perm))
        .collect();
    assert_eq!(
        recipients,
        [
            (
                "u1@b.example".into(),
                RecipientKind::Destination,
                Permission::Read
            ),
            (
                "sc@a.example".into(),
                RecipientKind::Server,
                Permission::ReadModify
            ),
            (
                "sc@b.example".into(),
                RecipientKind::Server,
                Permission::Read
            ),
        ]
    );
    // The hub has no entry: what it forwards is what it received.
    assert_eq!(offers[2].1.body, offers[1].1.body);
    assert!(
        lab.server_events("sc@hub.example")
            .iter()
            .all(|e| !matches!(
                e,
                ServerEvent::BodyOpened { .. } | ServerEvent::KeyLearned(_)
            ))
    );
    assert!(!lab.servers[2].server.holds_key(&session));
    // Trusted servers opened it with their own entries, then forwarded.
    for (server, perm) in [
        ("sc@a.example", Permission::ReadModify),
        ("sc@b.example", Permission::Read),
    ] {
        assert!(
            lab.server_events(server)
                .contains(&ServerEvent::BodyOpened {
                    session,
                    re: MsgType::Offer,
                    perm
                })
        );
    }
    assert!(
        lab.device_events("u1@b.example")
            .contains(&DeviceEvent::IncomingCall(
                session,
                principal("u1@a.example")
            ))
    );
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::CallEstablished(
                session,
                principal("u1@b.example")
            ))
    );
    assert_eq!(
        lab.device("u1@a.example").call_state(&session),
        Some(CallState::Established)
    );
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(CallState::Established)
    );
}

/// Claims 18, 19, 20, 25, 40, 41, 42, 48 (F5): devices and trusted servers
/// keep the session key by session and opposing party and reuse it both
/// ways: later messages carry no wrapped key, and each trusted server
/// reads them. KW-KEY-001, KW-KEY-002, KW-KEY-006.
#[test]
fn claims_18_19_20_25_40_41_42_48_session_key_kept_and_reused_both_ways() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    let mark = lab.trace.len();
    lab.command(
        "u1@b.example",
        DeviceCommand::Info(session, "from callee".into()),
    );
    lab.command(
        "u1@a.example",
        DeviceCommand::Info(session, "from caller".into()),
    );
    lab.settle();
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::InfoReceived(session, "from callee".into()))
    );
    assert!(
        lab.device_events("u1@b.example")
            .contains(&DeviceEvent::InfoReceived(session, "from caller".into()))
    );
    for server in ["sc@a.example", "sc@b.example"] {
        let observed = lab
            .server_events(server)
            .iter()
            .filter(|e| **e == ServerEvent::Observed(session, MsgType::Info))
            .count();
        assert_eq!(observed, 2, "{server} reads both directions");
    }
    assert!(lab.servers[0].server.holds_key(&session) && lab.servers[1].server.holds_key(&session));
    // No sealed body after the offer and answer: the stored key is reused.
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Sent {
                message: Message::Offer(_) | Message::Answer(_),
                ..
            }
        ))
        .is_none()
    );
}

/// Claims 21, 22, 23, 26, 27, 43, 44, 45, 46, 49 (F5): either party rekeys
/// by message count and by time, with the new key wrapped under the
/// current one or sealed for the recipients; both switch; servers follow
/// and keep reading — also the callee's sealed rekey, which it seals for
/// the caller's servers too. KW-KEY-003, KW-KEY-004, KW-KEY-005,
/// KW-KEY-006, KW-SM-004, KW-SM-006.
#[test]
fn claims_21_22_23_26_27_43_to_46_49_periodic_rekey_followed_by_servers() {
    let keys = KeyPolicy {
        rekey_after_secs: 600,
        rekey_after_messages: 3,
        grace_secs: 30,
    };
    let mut lab = Lab::new(LabOptions {
        keys,
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    // By message count: the third message makes the caller rekey.
    for i in 0..3 {
        lab.command(
            "u1@a.example",
            DeviceCommand::Info(session, format!("m{i}")),
        );
        lab.settle();
    }
    let rekeyed = |lab: &Lab, who: &str, sending: bool, epoch: u64| {
        lab.device_events(who).contains(&DeviceEvent::Rekeyed {
            session,
            sending,
            epoch,
        })
    };
    assert!(rekeyed(&lab, "u1@a.example", true, 1));
    assert!(rekeyed(&lab, "u1@b.example", false, 1));
    // Sealed for the recipients instead (the body form).
    lab.command("u1@b.example", DeviceCommand::Rekey(session, true));
    lab.settle();
    assert!(rekeyed(&lab, "u1@a.example", false, 1) && rekeyed(&lab, "u1@b.example", true, 1));
    // By time: the device's timer rekeys when the epoch is 600 s old.
    lab.advance(601_000);
    assert!(rekeyed(&lab, "u1@a.example", true, 2));
    assert!(rekeyed(&lab, "u1@b.example", true, 2));
    // Servers followed every rekey and still read the session.
    for server in ["sc@a.example", "sc@b.example"] {
        let events = lab.server_events(server);
        let rekeys = events
            .iter()
            .filter(|e| matches!(e, ServerEvent::Rekeyed { .. }))
            .count();
        assert_eq!(rekeys, 4, "{server}");
        let mark = lab.trace.len();
        lab.command("u1@a.example", DeviceCommand::Info(session, "after".into()));
        lab.settle();
        assert!(lab.find(mark, |s| matches!(s, Step::Server { server: name, event: ServerEvent::Observed(_, MsgType::Info) } if name == server)).is_some());
    }
}

/// Claims 29, 32, 35, 51, 54, 57 (F6): from the decrypted offer, a pinhole
/// to the caller's media address from any source; from the decrypted
/// answer, the pinhole narrowed to the callee and the way to the callee
/// opened; on the cutoff signal (bye), every pinhole closed.
/// KW-FW-001, KW-FW-002, KW-FW-003, KW-FW-006, KW-SEAL-007, KW-SM-012
/// (the same public address for the same party in every session).
#[test]
fn claims_29_32_35_51_54_57_pinholes_follow_offer_answer_and_bye() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let caller_media = lab.devices[lab.dev("u1@a.example")].media;
    let callee_media = lab.devices[lab.dev("u1@b.example")].media;
    let session = lab.call("u1@a.example", "u1@b.example");
    let a = lab.firewall_commands("sc@a.example");
    let b = lab.firewall_commands("sc@b.example");
    let FirewallCommand::Open {
        pinhole,
        dst,
        src: None,
        public: Some(caller_public),
        ..
    } = a[0].clone()
    else {
        panic!("offer: open from any source, got {:?}", a[0]);
    };
    assert_eq!(dst, caller_media);
    // The offer was forwarded after the pinhole was opened.
    let opened = position(&lab, 0, |s| {
        matches!(
            s,
            Step::Firewall {
                command: FirewallCommand::Open { .. },
                ..
            }
        )
    });
    position(
        &lab,
        opened,
        |s| matches!(s, Step::Sent { from, message: Message::Offer(_), .. } if from == "sc@a.example"),
    );
    let FirewallCommand::Open {
        dst: b_dst,
        src: Some(b_src),
        public: Some(callee_public),
        ..
    } = b[0].clone()
    else {
        panic!("answer: open to the callee, got {:?}", b[0]);
    };
    assert_eq!((b_dst, b_src), (callee_media, caller_public));
    assert_eq!(
        a[1],
        FirewallCommand::Narrow {
            pinhole,
            src: callee_public
        }
    );
    // Media passes both ways; a stranger is dropped at the narrowed pinhole.
    lab.command(
        "u1@a.example",
        DeviceCommand::Media(session, b"to callee".to_vec()),
    );
    lab.command(
        "u1@b.example",
        DeviceCommand::Media(session, b"to caller".to_vec()),
    );
    lab.settle();
    assert!(
        lab.device_events("u1@b.example").iter().any(
            |e| matches!(e, DeviceEvent::MediaReceived { frame, .. } if frame == b"to callee")
        )
    );
    assert!(
        lab.device_events("u1@a.example").iter().any(
            |e| matches!(e, DeviceEvent::MediaReceived { frame, .. } if frame == b"to caller")
        )
    );
    let now = lab.now;
    let stranger = "203.0.113.9:4000".parse().unwrap();
    let fw = lab.servers[0].firewall.as_mut().unwrap();
    assert_eq!(
        fw.filter(now, Transport::Udp, stranger, caller_public)
            .deliver,
        None
    );
    // Bye: closed at both.
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    for server in ["sc@a.example", "sc@b.example"] {
        assert!(
            lab.server_events(server)
                .contains(&ServerEvent::SessionEnded(session, SessionEnd::Bye))
        );
        assert!(matches!(
            lab.firewall_commands(server).last(),
            Some(FirewallCommand::Close { .. })
        ));
    }
    assert!(lab.firewall(0).is_empty() && lab.firewall(1).is_empty());
    let again = lab.call("u1@a.example", "u1@b.example");
    let opened_again = lab.firewall(0).pinholes();
    assert!(
        opened_again
            .iter()
            .any(|p| p.session == again && p.public == Some(caller_public))
    );
}

/// KW-FW-004, KW-SM-013: a session that never sees its bye ends with its term, and
/// its pinholes with it; no pinhole's lifetime exceeds its session's.
#[test]
fn pinholes_end_with_the_session_term() {
    let policy = ServerPolicy {
        session_secs: 120,
        ..ServerPolicy::default()
    };
    let mut lab = Lab::new(LabOptions {
        server_policy: policy,
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    let expiry = lab.server(0).session_expiry(&session).unwrap();
    assert!(
        lab.firewall(0)
            .pinholes()
            .iter()
            .all(|p| p.expires_at <= expiry)
    );
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Bye(_))));
    lab.advance(121_000);
    assert!(
        lab.server_events("sc@a.example")
            .contains(&ServerEvent::SessionEnded(session, SessionEnd::Expired))
    );
    assert!(lab.firewall(0).is_empty() && lab.firewall(1).is_empty());
}

/// Claims 30, 33, 36, 52, 55, 58 (F7): for a recorded session the server
/// has the firewall copy the media to the recorder, gives the recorder the
/// media keys from the decrypted descriptions — and the new ones after a
/// rekey — and the recorder decrypts and records exactly what was sent;
/// on bye the copy and the recording stop. The recorder has its own
/// certificate the keys are sealed for, obeys only its server's signed
/// commands, keeps a packet copied twice once, and refuses to list
/// recordings to accounts it does not know. KW-REC-001, KW-REC-002,
/// KW-REC-003, KW-REC-004, KW-REC-005, KW-CERT-004, KW-SM-014.
#[test]
fn claims_30_33_36_52_55_58_recording_decrypts_copied_media_across_rekeys() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        hub: false,
        record: true,
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    let recorder = lab.recorders[0].1;
    let copies = lab
        .firewall_commands("sc@a.example")
        .into_iter()
        .filter(|c| matches!(c, FirewallCommand::Copy { sink: Some(s), .. } if *s == recorder))
        .count();
    assert_eq!(copies, 2, "both parties' pinholes are copied");
    let start = position(&lab, 0, |s| {
        matches!(
            s,
            Step::Sent {
                message: Message::RecordStart(_),
                ..
            }
        )
    });
    position(
        &lab,
        start,
        |s| matches!(s, Step::Recorder { event: keyway::core::RecorderEvent::Started(_, id), .. } if *id == session),
    );
    let mut sent = Vec::new();
    for i in 0..3 {
        for who in ["u1@a.example", "u2@a.example"] {
            let frame = format!("{who} frame {i}").into_bytes();
            sent.push(frame.clone());
            lab.command(who, DeviceCommand::Media(session, frame));
        }
    }
    lab.settle();
    // A rekey brings new media keys; the recorder gets them (record-key).
    lab.command("u1@a.example", DeviceCommand::Rekey(session, false));
    lab.settle();
    assert!(
        lab.find(start, |s| matches!(
            s,
            Step::Sent {
                message: Message::RecordKey(_),
                ..
            }
        ))
        .is_some()
    );
    let frame = b"after the rekey".to_vec();
    sent.push(frame.clone());
    lab.command("u1@a.example", DeviceCommand::Media(session, frame));
    lab.settle();
    let recorded: Vec<(u64, Vec<u8>)> = lab
        .trace
        .iter()
        .filter_map(|s| match s {
            Step::Recorder {
                event: keyway::core::RecorderEvent::Recorded { epoch, frame, .. },
                ..
            } => Some((*epoch, frame.clone())),
            _ => None,
        })
        .collect();
    let frames: Vec<Vec<u8>> = recorded.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(frames.len(), sent.len());
    for f in &sent {
        assert!(frames.contains(f), "{}", String::from_utf8_lossy(f));
    }
    assert_eq!(
        recorded.last().map(|(e, _)| *e),
        Some(1),
        "the last frame used the new description"
    );
    // A copy delivered twice is recorded once.
    let media = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(_, _, m)| matches!(m, Message::Media(_)).then_some(m))
        .unwrap();
    let count = |lab: &Lab| {
        lab.trace
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Recorder {
                        event: keyway::core::RecorderEvent::Recorded { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let before = count(&lab);
    lab.inject(
        recorder,
        "198.51.100.1:20000".parse().unwrap(),
        &media.encode(),
    );
    assert_eq!(count(&lab), before);
    // A command whose signature does not verify is refused.
    let Step::Sent {
        message: Message::RecordStart(mut forged),
        ..
    } = lab.trace[start].clone()
    else {
        unreachable!()
    };
    forged.txn = keyway::wire::TxnId([0x55; 8]);
    forged.sig.sig.0[0] ^= 1;
    let mark = lab.trace.len();
    lab.inject(
        recorder,
        lab.servers[0].addr,
        &Message::RecordStart(forged).encode(),
    );
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::SIGNATURE_INVALID)).is_some());
    // Listing by an account the recorder does not know: refused.
    let stranger = keyway::crypto::Identity::generate(
        principal("auditor@a.example"),
        &mut keyway::crypto::SeededEntropy::from_label("stranger"),
    );
    let mut list = Message::RecordList(keyway::wire::RecordList {
        txn: keyway::wire::TxnId([0x66; 8]),
        from: principal("auditor@a.example"),
        session: Some(session),
        sig: keyway::crypto::unsigned(),
        ext: Default::default(),
    });
    keyway::crypto::sign_message(&mut list, &stranger.signing).unwrap();
    let mark = lab.trace.len();
    lab.inject(recorder, lab.devices[0].contact, &list.encode());
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::RECORDING_FORBIDDEN)).is_some());
    lab.command("u2@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    let stop = position(&lab, 0, |s| {
        matches!(
            s,
            Step::Firewall {
                command: FirewallCommand::Copy { sink: None, .. },
                ..
            }
        )
    });
    let record_stop = position(&lab, stop, |s| {
        matches!(
            s,
            Step::Sent {
                message: Message::RecordStop(_),
                ..
            }
        )
    });
    position(&lab, record_stop, |s| {
        matches!(
            s,
            Step::Recorder {
                event: keyway::core::RecorderEvent::Stopped(_),
                ..
            }
        )
    });
}

/// Claims 37, 38, 39, 47, 50, 53, 56: each server entry carries its
/// permission; a read-modify server changes the description with a signed
/// edit the destination accepts; a read-only server's change is detected
/// by the destination and the call refused. KW-SEAL-005, KW-SEAL-006,
/// KW-SEAL-007, KW-SEAL-009, KW-POLICY-002, KW-SM-011 (the reference
/// server edits keeping the key).
#[test]
fn claims_37_38_39_47_50_53_56_permissions_edits_and_detected_tampering() {
    // Allowed: sc@a (read-modify) rewrites the caller's media address.
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    assert!(
        lab.server_events("sc@a.example")
            .contains(&ServerEvent::Edited(session, MsgType::Offer))
    );
    let delivered = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == "sc@b.example" => Some(o),
            _ => None,
        })
        .unwrap();
    let edits = delivered.body.edits.clone().unwrap();
    assert_eq!(
        edits
            .iter()
            .map(|e| e.editor.to_string())
            .collect::<Vec<_>>(),
        ["sc@a.example"]
    );
    assert!(edits.iter().all(|e| e.epk.is_none()), "same content key");
    assert_eq!(
        lab.device("u1@b.example").call_state(&session),
        Some(CallState::Established)
    );

    // Not allowed: sc@b may only read, changes the offer anyway.
    let mut policies = std::collections::BTreeMap::new();
    policies.insert(
        1,
        ServerPolicy {
            tamper_read_only: true,
            ..ServerPolicy::default()
        },
    );
    let mut lab = Lab::new(LabOptions {
        server_policies: policies,
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    assert!(
        lab.server_events("sc@b.example")
            .contains(&ServerEvent::Tampered(session, MsgType::Offer))
    );
    let detected = lab.device_events("u1@b.example");
    assert!(detected.contains(&DeviceEvent::TamperDetected(
        session,
        ErrorCode::PERMISSION_DENIED
    )));
    assert!(!detected.contains(&DeviceEvent::IncomingCall(
        session,
        principal("u1@a.example")
    )));
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::CallFailed(
                session,
                ErrorCode::PERMISSION_DENIED
            ))
    );
    // The failed offer ends the session at every server that followed it.
    assert!(lab.firewall(0).is_empty());
}

/// KW-ROUTE-002, KW-ROUTE-003: a request that comes back to a server is a
/// loop; one that must be forwarded with no hops left is refused.
#[test]
fn routing_refuses_loops_and_exhausted_hop_limits() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let a = lab.servers[0].addr;
    let device = lab.devices[0].contact;
    for (via, hops, code) in [
        (
            Some(vec![principal("sc@a.example")]),
            5,
            ErrorCode::LOOP_DETECTED,
        ),
        (None, 0, ErrorCode::HOP_LIMIT_EXCEEDED),
    ] {
        let q = Message::CertQuery(keyway::wire::CertQuery {
            txn: keyway::wire::TxnId([hops as u8 + 1; 8]),
            from: principal("u1@a.example"),
            hops: keyway::wire::Hops::new(hops).unwrap(),
            via: via.map(|v| keyway::wire::Via::new(v).unwrap()),
            target: principal("u1@b.example"),
            ext: Default::default(),
        });
        let mark = lab.trace.len();
        lab.inject(a, device, &q.encode());
        let answered = lab.find(
            mark,
            |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == code),
        );
        assert!(answered.is_some(), "{code:?}");
    }
}

/// KW-REG-005, KW-REG-013, KW-REG-015, KW-REG-016, KW-CERT-006, KW-ERR-004,
/// KW-SM-003, KW-SM-007, KW-SM-008: a replayed proof is refused and
/// changes nothing but spending its nonce; a repeated request gets a fresh
/// challenge; an unknown account is challenged like a known one; a term
/// below the minimum is refused with the minimum; de-registration revokes
/// the certificate, which is no longer served; expiry removes the location.
#[test]
fn registration_refusals_deregistration_and_expiry() {
    let mut lab = one_domain(2);
    lab.register_all();
    // Replay the authenticated register: its nonce is spent.
    let answer = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| match m {
            Message::Register(r) if r.auth.is_some() && r.from.as_str() == "u1@a.example" => {
                Some(r)
            }
            _ => None,
        })
        .unwrap();
    let replay = Message::Register(keyway::wire::Register {
        txn: keyway::wire::TxnId([9; 8]),
        ..answer
    });
    let writes_before = lab.servers[0].store.writes;
    let mark = lab.trace.len();
    lab.inject(
        lab.servers[0].addr,
        lab.devices[0].contact,
        &replay.encode(),
    );
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::STALE_NONCE)).is_some());
    assert_eq!(
        lab.servers[0].store.writes, writes_before,
        "a refused register writes nothing"
    );

    // A repeated request without proof: a fresh challenge each time.
    let initial = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| match m {
            Message::Register(r) if r.auth.is_none() && r.from.as_str() == "u1@a.example" => {
                Some(r)
            }
            _ => None,
        })
        .unwrap();
    let unknown = keyway::wire::Register {
        txn: keyway::wire::TxnId([11; 8]),
        from: principal("nobody@a.example"),
        ..initial.clone()
    };
    let mark = lab.trace.len();
    for r in [initial.clone(), initial, unknown] {
        lab.inject(
            lab.servers[0].addr,
            lab.devices[0].contact,
            &Message::Register(r).encode(),
        );
    }
    let challenges: Vec<keyway::wire::Challenge> = lab.trace[mark..]
        .iter()
        .filter_map(|s| match s {
            Step::Sent {
                message: Message::Challenge(c),
                ..
            } => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(challenges.len(), 3, "the unknown account is challenged too");
    assert_ne!(challenges[0].nonce, challenges[1].nonce);
    assert_eq!(challenges[2].to.as_str(), "nobody@a.example");
    assert_eq!(lab.servers[0].store.writes, writes_before);

    // Below the minimum: refused with min-expires.
    let short = Message::Register(keyway::wire::Register {
        txn: keyway::wire::TxnId([10; 8]),
        from: principal("u2@a.example"),
        contact: keyway::wire::Contact {
            transport: Transport::Udp,
            addr: lab.devices[1].contact,
        },
        expires: 5,
        csr: None,
        cert: None,
        auth: None,
        ext: Default::default(),
    });
    let mark = lab.trace.len();
    lab.inject(lab.servers[0].addr, lab.devices[1].contact, &short.encode());
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::INTERVAL_TOO_BRIEF && e.min_expires == Some(60))).is_some());

    // De-registration: removed, revoked, no longer served.
    let serial = lab.device("u2@a.example").certificate().unwrap().tbs.serial;
    let mark = lab.trace.len();
    lab.command("u2@a.example", DeviceCommand::Deregister);
    lab.settle();
    position(
        &lab,
        mark,
        |s| matches!(s, Step::Stored { write: StoreWrite::DeleteRegistration(a), .. } if a.as_str() == "u2@a.example"),
    );
    position(
        &lab,
        mark,
        |s| matches!(s, Step::Stored { write: StoreWrite::Revoke { serial: s, .. }, .. } if *s == serial),
    );
    assert!(
        lab.device_events("u2@a.example")
            .contains(&DeviceEvent::Deregistered)
    );
    lab.command(
        "u1@a.example",
        DeviceCommand::QueryCertificate(principal("u2@a.example")),
    );
    lab.settle();
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::QueryFailed(
                principal("u2@a.example"),
                ErrorCode::CERT_NOT_FOUND
            ))
    );

    // Expiry: the device is refreshed at 80% of its term; stop it from
    // reaching the server and the registration ends with its term.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Register(_))));
    lab.advance(3_601_000);
    assert!(
        lab.server(0)
            .registration(&principal("u1@a.example"))
            .is_none()
    );
}

/// KW-FRAME-011, KW-FRAME-012, KW-SM-002: a lost request is retransmitted;
/// a duplicate is answered from the transaction, not processed again.
#[test]
fn lost_requests_are_retransmitted_and_duplicates_answered_once() {
    let mut lab = one_domain(2);
    lab.register_all();
    let mut dropped = false;
    lab.drop_if = Some(Box::new(move |m| {
        if matches!(m, Message::Offer(_)) && !dropped {
            dropped = true;
            return true;
        }
        false
    }));
    let session = lab.call("u1@a.example", "u2@a.example");
    assert_eq!(
        lab.device("u1@a.example").call_state(&session),
        Some(CallState::Offering)
    );
    lab.advance(600);
    assert_eq!(
        lab.device("u1@a.example").call_state(&session),
        Some(CallState::Established)
    );
    let offers_from_device = lab
        .sent()
        .iter()
        .filter(|(from, _, m)| from == "u1@a.example" && matches!(m, Message::Offer(_)))
        .count();
    assert_eq!(offers_from_device, 2, "one retransmission");
    // A duplicate of the (answered) offer gets the same answer back.
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| {
            (from == "sc@a.example" && matches!(m, Message::Offer(_))).then_some(m)
        })
        .unwrap();
    let callee = lab.devices[lab.dev("u2@a.example")].contact;
    let answers_before = lab
        .sent()
        .iter()
        .filter(|(_, _, m)| matches!(m, Message::Answer(_)))
        .count();
    lab.inject(callee, lab.servers[0].addr, &offer.encode());
    let answers_after = lab
        .sent()
        .iter()
        .filter(|(_, _, m)| matches!(m, Message::Answer(_)))
        .count();
    assert_eq!(answers_after, answers_before + 1);
    assert_eq!(
        lab.device_events("u2@a.example")
            .iter()
            .filter(|e| matches!(e, DeviceEvent::IncomingCall(..)))
            .count(),
        1
    );
}

/// KW-ERR-003, KW-ERR-005, KW-SM-015: an undecodable datagram is answered
/// with its code and offset, never with more bytes than it had, and at most
/// ten times a second per source. KW-ERR-001, KW-FRAME-013: a response is
/// never answered, and one that matches no transaction is dropped.
#[test]
fn undecodable_datagrams_get_bounded_rate_limited_errors() {
    let mut lab = one_domain(1);
    let server = lab.servers[0].addr;
    let from = "203.0.113.7:5000".parse().unwrap();
    let mut garbage = vec![0xa2, 0x00, 0x01, 0x01, 0x0e];
    garbage.extend_from_slice(&[0u8; 40]);
    let mark = lab.trace.len();
    for _ in 0..20 {
        lab.inject(server, from, &garbage);
    }
    let errors: Vec<keyway::wire::ErrorResponse> = lab.trace[mark..]
        .iter()
        .filter_map(|s| match s {
            Step::Sent {
                message: Message::Error(e),
                ..
            } => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 10, "rate-limited per source");
    assert!(errors.iter().all(|e| e.offset.is_some() && e.txn.is_none()));
    assert!(Message::Error(errors[0].clone()).encode().len() <= garbage.len());
    // A tiny datagram gets nothing: the answer would be larger.
    let mark = lab.trace.len();
    lab.now += 1000;
    lab.inject(server, from, &[0xff]);
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { .. })).is_none());
    // A stray response: no answer.
    let stray = Message::Ok(keyway::wire::OkResponse {
        txn: keyway::wire::TxnId([3; 8]),
        session: None,
        epoch: None,
        re: MsgType::Info,
        pinhole: None,
        recording: None,
        ext: Default::default(),
    });
    lab.inject(server, from, &stray.encode());
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { .. })).is_none());
}

/// KW-ERR-002: an error code the receiver does not know counts as the first
/// code of its class.
#[test]
fn unknown_error_codes_count_as_their_class() {
    assert_eq!(ErrorCode(299).understood(), ErrorCode::AUTH_FAILED);
    assert_eq!(ErrorCode(399).understood(), ErrorCode::CERT_INVALID);
    assert_eq!(ErrorCode(777).understood(), ErrorCode::INTERNAL);
    assert_eq!(ErrorCode::REPLAY.understood(), ErrorCode::REPLAY);
    let mut lab = one_domain(1);
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Register(_))));
    lab.command("u1@a.example", DeviceCommand::Register);
    let txn = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| match m {
            Message::Register(r) => Some(r.txn),
            _ => None,
        })
        .unwrap();
    let error = Message::Error(keyway::wire::ErrorResponse {
        txn: Some(txn),
        re: Some(MsgType::Register),
        code: ErrorCode(299),
        reason: None,
        offset: None,
        min_expires: None,
        retry_after: None,
        ext: Default::default(),
    });
    lab.inject(lab.devices[0].contact, lab.servers[0].addr, &error.encode());
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::RegistrationFailed(ErrorCode::AUTH_FAILED))
    );
}

/// KW-REG-014, KW-SM-009: the device refreshes at 80% of its term with a
/// new certificate; the one it replaces is revoked.
#[test]
fn registration_is_refreshed_before_it_ends() {
    let mut lab = one_domain(1);
    lab.register_all();
    let first = lab.device("u1@a.example").certificate().cloned().unwrap();
    lab.advance(2_881_000);
    let second = lab.device("u1@a.example").certificate().cloned().unwrap();
    assert_ne!(first.tbs.serial, second.tbs.serial);
    assert!(lab.trace.iter().any(|s| matches!(s, Step::Stored { write: StoreWrite::Revoke { serial, .. }, .. } if *serial == first.tbs.serial)));
    assert!(
        lab.server(0)
            .registration(&principal("u1@a.example"))
            .is_some_and(|r| r.cert == second)
    );
}

/// KW-SM-005: an `info` under a new epoch that overtakes its `rekey` is
/// held, not refused, and read once the rekey arrives.
#[test]
fn messages_that_overtake_their_rekey_are_held() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    let mut dropped = false;
    lab.drop_if = Some(Box::new(move |m| {
        if matches!(m, Message::Rekey(_)) && !dropped {
            dropped = true;
            return true;
        }
        false
    }));
    // The rekey is lost; the info under the new epoch arrives first.
    lab.command("u1@a.example", DeviceCommand::Rekey(session, false));
    lab.command(
        "u1@a.example",
        DeviceCommand::Info(session, "under epoch 1".into()),
    );
    lab.settle();
    let got = |lab: &Lab| {
        lab.device_events("u1@b.example")
            .contains(&DeviceEvent::InfoReceived(session, "under epoch 1".into()))
    };
    assert!(!got(&lab));
    lab.advance(1_000);
    assert!(got(&lab));
    assert!(
        lab.device_events("u1@b.example")
            .iter()
            .all(|e| !matches!(e, DeviceEvent::Rejected(_)))
    );
}

/// KW-REG-010, KW-FW-004: after a crash the server has every acknowledged
/// registration with its certificate, and closes the pinholes of the
/// sessions it lost.
#[test]
fn a_restarted_server_keeps_registrations_and_closes_orphan_pinholes() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let cert = lab.device("u1@a.example").certificate().cloned().unwrap();
    lab.call("u1@a.example", "u1@b.example");
    assert!(!lab.firewall(0).is_empty());
    lab.restart_server(0);
    assert!(
        lab.firewall(0).is_empty(),
        "every pinhole of a lost session is closed"
    );
    let kept = lab
        .server(0)
        .registration(&principal("u1@a.example"))
        .unwrap();
    assert_eq!(kept.cert, cert);
    // It still serves the certificate.
    lab.command(
        "u2@a.example",
        DeviceCommand::QueryCertificate(principal("u1@a.example")),
    );
    lab.settle();
    assert!(lab.device_events("u2@a.example").iter().any(|e| matches!(e, DeviceEvent::CertificateAccepted { account, .. } if account.as_str() == "u1@a.example")));
}

/// KW-SM-016: bodies bind to their senders. An offer whose `from` is not
/// its body's sender is refused; a body-form rekey sealed by anyone but
/// the party it claims to come from changes nothing, so a `bye` under the
/// forger's key does not end the session or close its pinholes.
#[test]
fn bodies_are_accepted_only_from_their_senders() {
    use keyway::crypto::{
        Identity, KeyCache, RecipientSpec, SealContext, SeededEntropy, rekey_body_plaintext, seal,
    };
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        hub: false,
        ..LabOptions::default()
    });
    lab.register_all();
    // An offer re-labelled as coming from someone else.
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::Offer(o) if o.via.is_none()),
    ));
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u2@a.example")),
    );
    lab.settle();
    lab.drop_if = None;
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(_, _, m)| match m {
            Message::Offer(o) => Some(o),
            _ => None,
        })
        .unwrap();
    let relabelled = keyway::wire::Offer {
        from: principal("u2@a.example"),
        cert: None,
        ..offer
    };
    let mark = lab.trace.len();
    let cached = lab.server(0).cached_keys();
    lab.inject(
        lab.servers[0].addr,
        lab.devices[1].contact,
        &Message::Offer(relabelled).encode(),
    );
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::PERMISSION_DENIED)).is_some());
    // KW-ERR-004: its entry unwrapped, but the refused offer left no key.
    assert_eq!(lab.server(0).cached_keys(), cached);

    // A forged body-form rekey, then a bye under the forged key.
    let session = lab.call("u1@a.example", "u2@a.example");
    let server_cert = lab.server(0).certificate().clone();
    let mut rng = SeededEntropy::from_label("forger");
    let forger = Identity::generate(principal("u1@a.example"), &mut rng);
    let key = keyway::crypto::Secret32::new([0x42; 32]);
    let spec = RecipientSpec {
        id: principal("sc@a.example"),
        kx_key: server_cert.tbs.kx_key,
        kind: RecipientKind::Server,
        perm: Permission::Read,
        anonymous: false,
    };
    let (body, _) = seal(
        SealContext {
            session: &session,
            cid: 0,
        },
        &forger,
        &[spec],
        &rekey_body_plaintext(1),
        Some(&key),
        &mut KeyCache::new(4),
        &mut rng,
    )
    .unwrap();
    let rekey = Message::Rekey(keyway::wire::Rekey {
        txn: keyway::wire::TxnId([0x77; 8]),
        from: principal("u1@a.example"),
        to: principal("u2@a.example"),
        session,
        hops: keyway::wire::Hops::new(8).unwrap(),
        via: None,
        body: Some(body),
        epoch: 1,
        seq: 40,
        payload: None,
        wrapped: None,
        ext: Default::default(),
    });
    let mark = lab.trace.len();
    lab.inject(lab.servers[0].addr, lab.devices[0].contact, &rekey.encode());
    lab.settle();
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Server {
                event: ServerEvent::Rekeyed { .. },
                ..
            }
        ))
        .is_none()
    );
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Device {
                event: DeviceEvent::Rekeyed { .. },
                ..
            }
        ))
        .is_none()
    );
    let mut forged = keyway::crypto::DirectionKeys::new(
        session,
        principal("u1@a.example"),
        principal("u2@a.example"),
        key,
        0,
    );
    forged.switch_sending(1, keyway::crypto::Secret32::new([0x42; 32]), 0);
    let sealed = forged.seal(MsgType::Bye, &[]).unwrap();
    let bye = Message::Bye(keyway::wire::Bye {
        txn: keyway::wire::TxnId([0x78; 8]),
        from: principal("u1@a.example"),
        to: principal("u2@a.example"),
        session,
        hops: keyway::wire::Hops::new(8).unwrap(),
        via: None,
        epoch: sealed.epoch,
        seq: sealed.seq,
        payload: keyway::wire::Bytes::new(sealed.payload).unwrap(),
        ext: Default::default(),
    });
    lab.inject(lab.servers[0].addr, lab.devices[0].contact, &bye.encode());
    lab.settle();
    assert!(
        lab.server(0).session_ids().contains(&session),
        "the session goes on"
    );
    assert!(!lab.firewall(0).is_empty(), "its pinholes stay open");
    assert_eq!(
        lab.device("u2@a.example").call_state(&session),
        Some(CallState::Established)
    );
}

/// KW-SM-017: a replayed offer of a session that ended neither reopens
/// pinholes nor rings the callee again.
#[test]
fn a_replayed_offer_does_not_restart_its_session() {
    let mut lab = one_domain(2);
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    assert!(lab.firewall(0).is_empty());
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == "u1@a.example" => Some(o),
            _ => None,
        })
        .unwrap();
    let mark = lab.trace.len();
    let replay = keyway::wire::Offer {
        txn: keyway::wire::TxnId([0x99; 8]),
        ..offer.clone()
    };
    lab.inject(
        lab.servers[0].addr,
        lab.devices[0].contact,
        &Message::Offer(replay).encode(),
    );
    lab.settle();
    assert!(lab.firewall(0).is_empty());
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::BAD_STATE)).is_some());
    // Straight to the callee, past the server: refused there too.
    let forwarded = keyway::wire::Offer {
        txn: keyway::wire::TxnId([0x9a; 8]),
        ..offer
    };
    let callee = lab.devices[lab.dev("u2@a.example")].contact;
    lab.inject(
        callee,
        lab.servers[0].addr,
        &Message::Offer(forwarded).encode(),
    );
    assert_eq!(
        lab.device_events("u2@a.example")
            .iter()
            .filter(|e| matches!(e, DeviceEvent::IncomingCall(..)))
            .count(),
        1
    );
}

/// KW-SM-018: a server opens pinholes only to the host its party
/// registered from; an offer with media elsewhere is refused.
#[test]
fn pinholes_open_only_to_the_registered_host() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        hub: false,
        media_elsewhere: true,
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::CallFailed(session, ErrorCode::FORBIDDEN))
    );
    assert!(lab.firewall(0).is_empty());
}

/// KW-SM-019: a `txn` already outstanding at a server is not taken over by
/// a second request that reuses it.
#[test]
fn a_reused_transaction_cannot_capture_a_response() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    // The first query waits at the hub (its forward is lost).
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::CertQuery(q) if q.via.is_some()),
    ));
    lab.command(
        "u1@a.example",
        DeviceCommand::QueryCertificate(principal("u1@b.example")),
    );
    lab.settle();
    let query = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::CertQuery(q) if from == "u1@a.example" => Some(q),
            _ => None,
        })
        .unwrap();
    let thief = "203.0.113.50:5060".parse().unwrap();
    let stolen = keyway::wire::CertQuery {
        from: principal("u2@a.example"),
        target: principal("u2@b.example"),
        ..query
    };
    let mark = lab.trace.len();
    lab.inject(
        lab.servers[0].addr,
        thief,
        &Message::CertQuery(stolen).encode(),
    );
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { to, message: Message::Error(e), .. } if *to == thief && e.code == ErrorCode::BAD_STATE)).is_some());
}

/// KW-POLICY-001: a device seals only for the servers its policy trusts
/// for the destination's domain, with the permission it gives them.
#[test]
fn the_device_policy_chooses_servers_per_destination_domain() {
    let mut policy = keyway::core::DevicePolicy::default();
    policy
        .peer_servers
        .insert("b.example".into(), Some(Permission::ReadModify));
    policy.peer_servers.insert("c.example".into(), None);
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example", "b.example", "c.example"],
        devices: 1,
        device_policy: policy,
        ..LabOptions::default()
    });
    lab.register_all();
    let entries = |lab: &Lab, session| -> Vec<(String, Permission)> {
        lab.sent()
            .into_iter()
            .find_map(|(from, _, m)| match m {
                Message::Offer(o) if from == "u1@a.example" && o.session == session => Some(o),
                _ => None,
            })
            .unwrap()
            .body
            .recipients
            .iter()
            .map(|r| (r.id.as_ref().unwrap().to_string(), r.perm))
            .collect()
    };
    let to_b = lab.call("u1@a.example", "u1@b.example");
    assert_eq!(
        entries(&lab, to_b),
        [
            ("u1@b.example".to_string(), Permission::Read),
            ("sc@a.example".to_string(), Permission::ReadModify),
            ("sc@b.example".to_string(), Permission::ReadModify),
        ]
    );
    let to_c = lab.call("u1@a.example", "u1@c.example");
    assert_eq!(
        entries(&lab, to_c),
        [
            ("u1@c.example".to_string(), Permission::Read),
            ("sc@a.example".to_string(), Permission::ReadModify),
        ]
    );
    // sc@c, not trusted, never reads the offer.
    assert!(!lab.server(2).holds_key(&to_c));
    assert_eq!(
        lab.device("u1@a.example").call_state(&to_c),
        Some(CallState::Established)
    );
}
