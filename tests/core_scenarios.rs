//! One scenario per claim group (spec/traceability.md), walking the
//! claim's steps in order through the sans-IO device, server, firewall and
//! recorder state machines, joined by the lossless lab network of
//! `support::lab`. Each test is named by the claims it covers, and for
//! each of them asserts the claim's steps in the order the claim lists
//! them, by their positions in the lab's trace (`Lab::assert_in_order`).
//! A claim step with no trace step of its own (work inside one state
//! machine, such as generating a key) is named in a comment instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use keyway::core::{
    CallState, DeviceCommand, DeviceEvent, Firewall, FirewallCommand, Party, RecorderEvent,
    ServerEvent, ServerPolicy, SessionEnd, StoreWrite,
};
use keyway::crypto::KeyPolicy;
use keyway::testkit::{ClaimStep, Faults, Lab, LabOptions, Step, principal};
use keyway::wire::{ErrorCode, Message, MsgType, Permission, RecipientKind, Transport};

fn one_domain(devices: usize) -> Lab {
    Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices,
        hub: false,
        ..LabOptions::default()
    })
}

/// One domain of two devices whose server records every session.
fn recorded_domain() -> Lab {
    Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 2,
        hub: false,
        record: true,
        ..LabOptions::default()
    })
}

fn position(lab: &Lab, from: usize, f: impl Fn(&Step) -> bool) -> usize {
    lab.find(from, f)
        .unwrap_or_else(|| panic!("step not found after {from}"))
}

// Trace steps a claim step can be matched with.

/// `from` sent a message of type `t`.
fn sent(from: &str, t: MsgType) -> impl Fn(&Step) -> bool + '_ {
    move |s| matches!(s, Step::Sent { from: f, message, .. } if f == from && message.msg_type() == t)
}

/// `from` sent a message `f` accepts.
fn sent_msg<'a>(from: &'a str, f: impl Fn(&Message) -> bool + 'a) -> impl Fn(&Step) -> bool + 'a {
    move |s| matches!(s, Step::Sent { from: x, message, .. } if x == from && f(message))
}

/// Server `name` reported an event `f` accepts.
fn server<'a>(name: &'a str, f: impl Fn(&ServerEvent) -> bool + 'a) -> impl Fn(&Step) -> bool + 'a {
    move |s| matches!(s, Step::Server { server, event } if server == name && f(event))
}

/// Device `name` reported an event `f` accepts.
fn device<'a>(name: &'a str, f: impl Fn(&DeviceEvent) -> bool + 'a) -> impl Fn(&Step) -> bool + 'a {
    move |s| matches!(s, Step::Device { device, event } if device == name && f(event))
}

/// Server `name` gave its firewall a command `f` accepts, and the firewall
/// took it.
fn firewall<'a>(
    name: &'a str,
    f: impl Fn(&FirewallCommand) -> bool + 'a,
) -> impl Fn(&Step) -> bool + 'a {
    move |s| matches!(s, Step::Firewall { server, command, ok: true } if server == name && f(command))
}

/// Server `name` made a write `f` accepts durable.
fn stored<'a>(name: &'a str, f: impl Fn(&StoreWrite) -> bool + 'a) -> impl Fn(&Step) -> bool + 'a {
    move |s| matches!(s, Step::Stored { server, write } if server == name && f(write))
}

/// A recorder reported an event `f` accepts.
fn recorder(f: impl Fn(&RecorderEvent) -> bool) -> impl Fn(&Step) -> bool {
    move |s| matches!(s, Step::Recorder { event, .. } if f(event))
}

/// Asserts the same steps for each of `claims`: claims that repeat
/// another's steps (a program, its medium).
fn assert_each_in_order(lab: &Lab, from: usize, claims: &[&str], steps: &[ClaimStep<'_>]) {
    for claim in claims {
        lab.assert_in_order(from, claim, steps);
    }
}

/// The order check itself: it finds steps in order, and names the step
/// that is missing or out of order.
#[test]
fn claim_steps_are_reported_missing_or_out_of_order() {
    let mut lab = one_domain(1);
    lab.command("u1@a.example", DeviceCommand::Register);
    lab.settle();
    let request = sent("u1@a.example", MsgType::Register);
    let completed = sent("sc@a.example", MsgType::RegisterOk);
    let offer = sent("u1@a.example", MsgType::Offer);
    let at = lab.assert_in_order(
        0,
        "in order",
        &[("request", &request), ("completion", &completed)],
    );
    assert!(at[0] < at[1]);
    let backwards = lab
        .check_in_order(
            0,
            "backwards",
            &[("completion", &completed), ("request", &request)],
        )
        .unwrap_err();
    assert!(
        backwards.starts_with(&format!(
            "backwards: \"request\" (step {}) does not come after \"completion\" (step {})",
            at[0], at[1]
        )),
        "{backwards}"
    );
    let missing = lab
        .check_in_order(0, "missing", &[("request", &request), ("offer", &offer)])
        .unwrap_err();
    assert!(
        missing.starts_with("missing: \"offer\" is not in the trace after step 0"),
        "{missing}"
    );
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
    const DEVICE: &str = "u1@a.example";
    const SERVER: &str = "sc@a.example";
    let mut lab = one_domain(1);
    lab.command(DEVICE, DeviceCommand::Register);
    lab.settle();
    let combined = |auth: bool| {
        sent_msg(
            DEVICE,
            move |m| matches!(m, Message::Register(r) if r.csr.is_some() && r.auth.is_some() == auth),
        )
    };
    let request = combined(false);
    // Only a register carrying an issuance request (csr) is challenged
    // with a kx-challenge, for the proof of possession of the X25519 key:
    // the challenge shows both the type and the issuance request found.
    let typed = sent_msg(SERVER, |m| matches!(m, Message::Challenge(_)));
    let proved = combined(true);
    // The certificate is issued when the serial it takes is stored, first
    // in the group of writes that also stores the registration; the
    // server's event follows the group (KW-SM-024).
    let issued = stored(SERVER, |w| matches!(w, StoreWrite::NextSerial(_)));
    assert!(
        lab.server_events(SERVER)
            .iter()
            .any(|e| matches!(e, ServerEvent::CertificateIssued { .. }))
    );
    let managed = stored(SERVER, |w| matches!(w, StoreWrite::PutRegistration(_)));
    let completed = sent(SERVER, MsgType::RegisterOk);
    let kept = device(DEVICE, |e| {
        matches!(e, DeviceEvent::Registered { issued: true, .. })
    });

    // Claim 1, device. Generating the key pair has no trace step: it
    // happens inside the device, before the request that carries its
    // public keys (the csr). The location registration and the issuance
    // request are one message, so one step; so are the two completions.
    lab.assert_in_order(
        0,
        "claim 1",
        &[
            (
                "certificate issuance + location registration request",
                &request,
            ),
            (
                "issuance and registration completed, with the term",
                &completed,
            ),
            ("certificate stored", &kept),
        ],
    );
    // Claim 2: the completion's term is what the device stores as the
    // certificate's validity (the values are compared below).
    lab.assert_in_order(
        0,
        "claim 2",
        &[
            ("registration completed, with the term", &completed),
            ("certificate stored with that term", &kept),
        ],
    );
    // Claim 5, server. Checking the proofs of possession (KW-REG-006,
    // KW-REG-007) is part of issuing and has no trace step of its own.
    lab.assert_in_order(
        0,
        "claim 5",
        &[
            ("combined request received", &proved),
            ("certificate issued", &issued),
            ("certificate, location and term stored", &managed),
        ],
    );
    // Claim 7: the device of claim 1 and the server of claim 5 together.
    let at = lab.assert_in_order(
        0,
        "claim 7",
        &[
            ("device: issuance + location request", &request),
            ("server: combined request received", &proved),
            ("server: certificate issued", &issued),
            (
                "server: certificate and location stored with the expiry",
                &managed,
            ),
            ("device: completion with the term received", &completed),
            ("device: certificate stored", &kept),
        ],
    );
    // Claims 10, 12 (its program), 14 (the program's medium).
    assert_each_in_order(
        &lab,
        0,
        &["claim 10", "claim 12", "claim 14"],
        &[
            ("request signal received", &request),
            ("type determined, issuance request included", &typed),
            ("issuance request answered with its proofs", &proved),
            ("certificate issued", &issued),
            ("location and certificate managed (stored)", &managed),
            ("location and issuance completion sent", &completed),
        ],
    );
    let (first, stored_at, notified) = (at[0], at[3], at[4]);

    let Step::Stored {
        write: StoreWrite::PutRegistration(reg),
        ..
    } = &lab.trace[stored_at]
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
    let device = lab.device(DEVICE);
    assert_eq!(device.certificate(), Some(&cert));
    assert_eq!(device.registered_until(), Some(ok.not_after.0));
    // KW-REG-013: at most the requested term.
    assert!(ok.expires <= request.expires);
}

/// Claims 3, 4, 9 (F2): a device registers the certificate it holds with
/// its location; the server confirms it and stores the registration; no
/// certificate is issued; the server then answers an inquiry for it.
/// KW-REG-002, KW-REG-009, KW-REG-011, KW-REG-012, KW-SM-009,
/// KW-QUERY-003.
#[test]
fn claims_3_4_9_registration_with_the_certificate_held() {
    const DEVICE: &str = "u1@a.example";
    const OTHER: &str = "u2@a.example";
    const SERVER: &str = "sc@a.example";
    let mut lab = one_domain(2);
    lab.register_all();
    let cert = lab.device(DEVICE).certificate().cloned().unwrap();
    let mark = lab.trace.len();
    lab.advance(10_000);
    lab.command(DEVICE, DeviceCommand::RegisterWithCertificate);
    lab.settle();
    lab.command(OTHER, DeviceCommand::QueryCertificate(principal(DEVICE)));
    lab.settle();

    // The certificate the device stored when it was issued (F1).
    let held = device(DEVICE, |e| {
        matches!(e, DeviceEvent::Registered { issued: true, .. })
    });
    let with_cert = |auth: bool| {
        let cert = cert.clone();
        sent_msg(
            DEVICE,
            move |m| matches!(m, Message::Register(r) if r.cert.as_ref() == Some(&cert) && r.csr.is_none() && r.auth.is_some() == auth),
        )
    };
    let request = with_cert(false);
    let challenged = sent_msg(SERVER, |m| matches!(m, Message::Challenge(_)));
    let proved = with_cert(true);
    let confirmed = stored(
        SERVER,
        |w| matches!(w, StoreWrite::PutRegistration(r) if r.cert == cert),
    );
    let completed = sent_msg(
        SERVER,
        |m| matches!(m, Message::RegisterOk(ok) if ok.cert.as_ref() == Some(&cert)),
    );
    let kept = device(DEVICE, |e| {
        matches!(e, DeviceEvent::Registered { issued: false, .. })
    });
    let inquiry = sent_msg(
        OTHER,
        |m| matches!(m, Message::CertQuery(q) if q.target.as_str() == DEVICE),
    );
    let notified = sent_msg(
        SERVER,
        |m| matches!(m, Message::CertNotify(n) if n.target.as_str() == DEVICE && n.cert == cert),
    );

    // Claim 3. Generating the key pair has no trace step (the device made
    // it for its first registration). The certificate registration and the
    // location registration are one message, so one step.
    let at = lab.assert_in_order(
        0,
        "claim 3",
        &[
            ("certificate stored (when it was issued)", &held),
            ("certificate + location registration request", &request),
            ("registration completed, with the term", &completed),
            ("completion received", &kept),
        ],
    );
    // Claim 4: the completion's term is stored as the validity.
    lab.assert_in_order(
        mark,
        "claim 4",
        &[
            ("registration completed, with the term", &completed),
            ("term stored", &kept),
        ],
    );
    // Claim 9: the system of claim 7 with a registered certificate, and
    // inquiries answered. Confirming the certificate's validity has no
    // trace step of its own: it is checked before the store write.
    lab.assert_in_order(
        mark,
        "claim 9",
        &[
            ("device: certificate registration request", &request),
            ("server: proof of the account asked for", &challenged),
            ("server: request with the proof received", &proved),
            ("server: certificate and location stored", &confirmed),
            ("server: completion sent", &completed),
            ("device: term stored", &kept),
            ("server: certificate inquiry received", &inquiry),
            ("server: certificate notification sent", &notified),
        ],
    );
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
    } = &lab.trace[at[2]]
    else {
        unreachable!()
    };
    // KW-REG-009: the term ends no later than the certificate.
    assert!(ok.not_after.0 <= cert.tbs.not_after.0);
    // KW-REG-012: kept as the registration's term.
    assert_eq!(lab.device(DEVICE).registered_until(), Some(ok.not_after.0));
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
    const DEVICE: &str = "u1@a.example";
    const A: &str = "sc@a.example";
    const HUB: &str = "sc@hub.example";
    const B: &str = "sc@b.example";
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let query_for = |from: &'static str, target: &'static str| {
        sent_msg(
            from,
            move |m| matches!(m, Message::CertQuery(q) if q.target.as_str() == target),
        )
    };
    let served = |by: &'static str, target: &'static str, attested: bool| {
        server(
            by,
            move |e| matches!(e, ServerEvent::CertificateServed { account, attested: a } if account.as_str() == target && *a == attested),
        )
    };
    let notify = |by: &'static str, target: &'static str, attested: bool| {
        sent_msg(
            by,
            move |m| matches!(m, Message::CertNotify(n) if n.target.as_str() == target && n.attestation.is_some() == attested),
        )
    };
    let accepted = |target: &'static str| {
        device(
            DEVICE,
            move |e| matches!(e, DeviceEvent::CertificateAccepted { account, .. } if account.as_str() == target),
        )
    };

    // Own domain.
    let mark = lab.trace.len();
    lab.command(
        DEVICE,
        DeviceCommand::QueryCertificate(principal("u2@a.example")),
    );
    lab.settle();
    let inquiry = query_for(DEVICE, "u2@a.example");
    // One event once the certificate was found, searched and confirmed
    // valid: the server reports only what it serves, attested for its
    // own device (KW-QUERY-007).
    let confirmed = served(A, "u2@a.example", true);
    let notified = notify(A, "u2@a.example", true);
    let received = accepted("u2@a.example");
    // Claim 6.
    lab.assert_in_order(
        mark,
        "claim 6",
        &[
            ("certificate inquiry received", &inquiry),
            ("certificate's validity confirmed", &confirmed),
            ("certificate notified", &notified),
        ],
    );
    // Claim 8: the device keeps the term of its completion (from its
    // registration, before `mark`); the server answers the inquiry.
    lab.assert_in_order(
        0,
        "claim 8",
        &[
            (
                "registration completed, with the term",
                &sent(A, MsgType::RegisterOk),
            ),
            (
                "term stored",
                &device(DEVICE, |e| matches!(e, DeviceEvent::Registered { .. })),
            ),
            ("certificate inquiry received", &inquiry),
            ("certificate notification sent", &notified),
        ],
    );
    // Claims 11, 13 (its program), 15 (the program's medium), own domain.
    // "Performing session control", "addressed to its own domain?" and
    // "the type of the signal" have no trace step of their own; that the
    // server decided "own domain" shows in it forwarding nothing.
    assert_each_in_order(
        &lab,
        mark,
        &["claim 11", "claim 13", "claim 15"],
        &[
            ("certificate query request received", &inquiry),
            ("certificate present, searched and confirmed", &confirmed),
            ("certificate notification sent to the device", &notified),
            ("notification received", &received),
        ],
    );
    assert!(
        lab.find(
            mark,
            |s| matches!(s, Step::Sent { from, message: Message::CertQuery(_), .. } if from == A)
        )
        .is_none(),
        "a query for the own domain is not forwarded"
    );

    // Another domain: forwarded through the hub with via and hops.
    let mark = lab.trace.len();
    lab.command(
        DEVICE,
        DeviceCommand::QueryCertificate(principal("u1@b.example")),
    );
    lab.settle();
    let inquiry = query_for(DEVICE, "u1@b.example");
    let transferred = query_for(A, "u1@b.example");
    let relayed = query_for(HUB, "u1@b.example");
    let confirmed_b = served(B, "u1@b.example", false);
    let from_b = notify(B, "u1@b.example", false);
    let from_hub = notify(HUB, "u1@b.example", false);
    let attested = served(A, "u1@b.example", true);
    let from_a = notify(A, "u1@b.example", true);
    let received = accepted("u1@b.example");
    // Claims 11, 13, 15, not the own domain: transferred to the
    // destination's server, which answers as for its own domain; the
    // answer comes back the same way and is attested (KW-CERT-005).
    assert_each_in_order(
        &lab,
        mark,
        &["claim 11", "claim 13", "claim 15"],
        &[
            ("certificate query request received", &inquiry),
            (
                "not the own domain: transferred towards the destination",
                &transferred,
            ),
            ("relayed by the hub to the destination server", &relayed),
            (
                "destination server: found, searched and confirmed",
                &confirmed_b,
            ),
            ("destination server: notification sent", &from_b),
            ("relayed back by the hub", &from_hub),
            ("requester's server: confirmed and attested", &attested),
            ("notification sent to the device", &from_a),
            ("notification received", &received),
        ],
    );
    // Claim 6 at the destination's server, and claim 8's inquiry answered.
    lab.assert_in_order(
        mark,
        "claim 6",
        &[
            ("certificate inquiry received", &relayed),
            ("validity confirmed", &confirmed_b),
            ("certificate notified", &from_b),
        ],
    );
    lab.assert_in_order(
        mark,
        "claim 8",
        &[
            ("certificate inquiry received", &inquiry),
            ("certificate notification sent", &from_a),
        ],
    );
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

    // Failures (KW-QUERY-005): claim 11's "is there a certificate?" no —
    // for an account the domain does not have too (KW-SM-028).
    for (target, code) in [
        ("u9@b.example", ErrorCode::CERT_NOT_FOUND),
        ("u1@nowhere.example", ErrorCode::UNKNOWN_DOMAIN),
    ] {
        lab.command(DEVICE, DeviceCommand::QueryCertificate(principal(target)));
        lab.settle();
        assert!(
            lab.device_events(DEVICE)
                .contains(&DeviceEvent::QueryFailed(principal(target), code)),
            "{target}"
        );
    }
}

/// Claims 16, 17, 24, 28, 31, 34 (F4): the caller seals the session
/// description with a fresh key, wrapped for the callee and for the
/// servers it trusts, each with its permission; a trusted server finds its
/// entry, unwraps and decrypts, then forwards; the untrusted hub forwards
/// the body byte for byte and never holds the key; the callee verifies,
/// and answers and writes under the same session.
/// KW-SEAL-001, KW-SEAL-002, KW-SEAL-003, KW-SEAL-008, KW-SEAL-009,
/// KW-SEAL-010, KW-POLICY-001, KW-SM-010.
#[test]
fn claims_16_17_24_28_31_34_sealed_offer_through_trusted_and_untrusted_servers() {
    const CALLER: &str = "u1@a.example";
    const CALLEE: &str = "u1@b.example";
    const A: &str = "sc@a.example";
    const HUB: &str = "sc@hub.example";
    const B: &str = "sc@b.example";
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let mark = lab.trace.len();
    let session = lab.call(CALLER, CALLEE);
    lab.command(CALLEE, DeviceCommand::Info(session, "from callee".into()));
    lab.settle();

    // The second keys: the certificates of the callee and of the servers
    // the caller wraps the first key for, confirmed before the offer.
    let key_of = |account: &'static str| {
        device(
            CALLER,
            move |e| matches!(e, DeviceEvent::CertificateAccepted { account: a, .. } if a.as_str() == account),
        )
    };
    let offered = sent(CALLER, MsgType::Offer);
    let opened = |by: &'static str| {
        server(
            by,
            move |e| matches!(e, ServerEvent::BodyOpened { session: s, re: MsgType::Offer, .. } if *s == session),
        )
    };
    let (opened_a, opened_b) = (opened(A), opened(B));
    let to_hub = sent(A, MsgType::Offer);
    let from_hub = sent(HUB, MsgType::Offer);
    let to_callee = sent(B, MsgType::Offer);
    let incoming = device(
        CALLEE,
        |e| matches!(e, DeviceEvent::IncomingCall(s, _) if *s == session),
    );
    let answered = sent(CALLEE, MsgType::Answer);
    let established = device(
        CALLER,
        |e| matches!(e, DeviceEvent::CallEstablished(s, _) if *s == session),
    );
    let callee_writes = sent(CALLEE, MsgType::Info);
    let caller_reads = device(
        CALLER,
        |e| matches!(e, DeviceEvent::InfoReceived(s, text) if *s == session && text == "from callee"),
    );

    // Claim 16, device. Generating the first key, encrypting the
    // description and wrapping the key have no trace steps: all happen
    // inside `seal` before the offer is sent. What shows is that every
    // second key was known first, and what the offer carries (below).
    for account in [CALLEE, A, B] {
        lab.assert_in_order(
            mark,
            "claim 16",
            &[
                (
                    "second key of the destination or a server",
                    &key_of(account),
                ),
                (
                    "offer sent: wrapped first key, encrypted information, decryption requests",
                    &offered,
                ),
            ],
        );
    }
    // Claim 17, at each trusted server. Deciding on the decryption
    // request (its explicit entry), unwrapping the first key and
    // decrypting the information are one step, BodyOpened.
    lab.assert_in_order(
        mark,
        "claim 17",
        &[
            ("signal received from the caller", &offered),
            (
                "decision, first key unwrapped, information decrypted",
                &opened_a,
            ),
        ],
    );
    lab.assert_in_order(
        mark,
        "claim 17",
        &[
            ("signal received from the hub", &from_hub),
            (
                "decision, first key unwrapped, information decrypted",
                &opened_b,
            ),
        ],
    );
    // Claim 24: the first device, the server, the second device. Storing
    // the first key by session has no trace step; its reuse shows in the
    // callee's info that the caller reads.
    lab.assert_in_order(
        mark,
        "claim 24",
        &[
            ("first device: sealed offer sent", &offered),
            ("server: decision, unwrap, decrypt", &opened_a),
            ("second device: unwrapped and decrypted", &incoming),
            ("second device: answer sent", &answered),
            ("first device: answer received", &established),
            (
                "second device: information encrypted under the first key sent",
                &callee_writes,
            ),
            ("first device: it is received and decrypted", &caller_reads),
        ],
    );
    // Claim 28: the untrusted hub "executes the same operations" (finds no
    // entry of its own) and forwards; it has no event, which is checked
    // below together with the byte-for-byte body.
    lab.assert_in_order(
        mark,
        "claim 28",
        &[
            ("trusted server: signal received", &offered),
            (
                "trusted server: decision, first key and information decrypted",
                &opened_a,
            ),
            ("trusted server: sent to the untrusted server", &to_hub),
            ("untrusted server: sent on", &from_hub),
            ("destination's trusted server: decrypted", &opened_b),
            ("sent to the receiving device", &to_callee),
            (
                "receiving device: first key unwrapped, information decrypted",
                &incoming,
            ),
        ],
    );
    // Claims 31 (the trusted server's program) and 34 (its medium).
    assert_each_in_order(
        &lab,
        mark,
        &["claim 31", "claim 34"],
        &[
            ("signal received from the device", &offered),
            (
                "decision, first key unwrapped, information decrypted",
                &opened_a,
            ),
            ("signal sent to the untrusted server", &to_hub),
        ],
    );

    let offers: Vec<(String, keyway::wire::Offer)> = lab
        .sent()
        .into_iter()
        .filter_map(|(from, _, m)| match m {
            Message::Offer(o) if o.session == session => Some((from, o)),
            _ => None,
        })
        .collect();
    let senders: Vec<&str> = offers.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(senders, [CALLER, A, HUB, B]);
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
            (CALLEE.into(), RecipientKind::Destination, Permission::Read),
            (A.into(), RecipientKind::Server, Permission::ReadModify),
            (B.into(), RecipientKind::Server, Permission::Read),
        ]
    );
    // The hub has no entry: what it forwards is what it received.
    assert_eq!(offers[2].1.body, offers[1].1.body);
    assert!(lab.server_events(HUB).iter().all(|e| !matches!(
        e,
        ServerEvent::BodyOpened { .. } | ServerEvent::KeyLearned(_)
    )));
    assert!(!lab.servers[2].server.holds_key(&session));
    // Trusted servers opened it with their own entries.
    for (server, perm) in [(A, Permission::ReadModify), (B, Permission::Read)] {
        assert!(
            lab.server_events(server)
                .contains(&ServerEvent::BodyOpened {
                    session,
                    re: MsgType::Offer,
                    perm
                })
        );
    }
    assert_eq!(
        lab.device(CALLER).call_state(&session),
        Some(CallState::Established)
    );
    assert_eq!(
        lab.device(CALLEE).call_state(&session),
        Some(CallState::Established)
    );
}

/// Claims 18, 19, 20, 25, 40, 41, 42, 48 (F5): devices and trusted servers
/// keep the session key by session and opposing party and reuse it both
/// ways: later messages carry no wrapped key, and each trusted server
/// reads them. KW-KEY-001, KW-KEY-002, KW-KEY-006.
#[test]
fn claims_18_19_20_25_40_41_42_48_session_key_kept_and_reused_both_ways() {
    const CALLER: &str = "u1@a.example";
    const CALLEE: &str = "u1@b.example";
    const A: &str = "sc@a.example";
    const B: &str = "sc@b.example";
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let start = lab.trace.len();
    let session = lab.call(CALLER, CALLEE);
    let mark = lab.trace.len();
    // One direction after the other, so that each step below is the
    // message of one direction.
    lab.command(CALLER, DeviceCommand::Info(session, "from caller".into()));
    lab.settle();
    lab.command(CALLEE, DeviceCommand::Info(session, "from callee".into()));
    lab.settle();

    let offered = sent(CALLER, MsgType::Offer);
    let delivered = sent(B, MsgType::Offer);
    let incoming = device(
        CALLEE,
        |e| matches!(e, DeviceEvent::IncomingCall(s, _) if *s == session),
    );
    let learned = |by: &'static str| server(by, move |e| *e == ServerEvent::KeyLearned(session));
    let opened_a = server(A, |e| {
        matches!(
            e,
            ServerEvent::BodyOpened {
                re: MsgType::Offer,
                ..
            }
        )
    });
    let read = |by: &'static str| {
        server(by, move |e| {
            *e == ServerEvent::Observed(session, MsgType::Info)
        })
    };
    let passed = |by: &'static str, writer: &'static str| {
        sent_msg(
            by,
            move |m| matches!(m, Message::Info(i) if i.from.as_str() == writer),
        )
    };
    let writes = |who: &'static str| sent(who, MsgType::Info);
    let reads = |who: &'static str, text: &'static str| {
        device(
            who,
            move |e| matches!(e, DeviceEvent::InfoReceived(s, t) if *s == session && t == text),
        )
    };

    // Claims 18 and 40, at each trusted server: the first key stored by
    // session (KeyLearned), then reused to read both directions. "By
    // opposing device" (claim 40) has no trace step: a session has one
    // key for its two parties here.
    for by in [A, B] {
        for claim in ["claim 18", "claim 40"] {
            lab.assert_in_order(
                start,
                claim,
                &[
                    ("first key stored by session", &learned(by)),
                    ("reused: the caller's information decrypted", &read(by)),
                    ("and passed on", &passed(by, CALLER)),
                    ("reused: the callee's information decrypted", &read(by)),
                    ("and passed on", &passed(by, CALLEE)),
                ],
            );
        }
    }
    // Claims 19 and 41, the receiving device. Storing the key by session
    // (and opposing device) has no trace step; its reuse shows in the
    // callee reading and writing under it.
    assert_each_in_order(
        &lab,
        start,
        &["claim 19", "claim 41"],
        &[
            ("signal with the wrapped first key received", &delivered),
            ("first key unwrapped, information decrypted", &incoming),
            (
                "information decrypted with the stored key",
                &reads(CALLEE, "from caller"),
            ),
            ("information encrypted with it sent", &writes(CALLEE)),
            ("the caller decrypts it", &reads(CALLER, "from callee")),
        ],
    );
    // Claims 20 and 42, the originating device: the first key is its own
    // from the offer on (storing it has no trace step).
    assert_each_in_order(
        &lab,
        start,
        &["claim 20", "claim 42"],
        &[
            ("first key generated and sent (offer)", &offered),
            ("information encrypted with it sent", &writes(CALLER)),
            ("information encrypted with it received", &writes(CALLEE)),
            ("and decrypted", &reads(CALLER, "from callee")),
        ],
    );
    // Claims 25 and 48, the system: originating device, server, receiving
    // device, each keeping and reusing the key.
    assert_each_in_order(
        &lab,
        start,
        &["claim 25", "claim 48"],
        &[
            ("originating device: sealed offer", &offered),
            ("server: decision, unwrap, decrypt", &opened_a),
            ("server: first key stored by session", &learned(A)),
            ("receiving device: unwrapped, decrypted", &incoming),
            (
                "originating device: information under the key sent",
                &writes(CALLER),
            ),
            ("server: reused to decrypt it", &read(A)),
            (
                "receiving device: decrypted it",
                &reads(CALLEE, "from caller"),
            ),
            (
                "receiving device: information under the key sent",
                &writes(CALLEE),
            ),
            ("server: reused to decrypt it", &read(A)),
            (
                "originating device: decrypted it",
                &reads(CALLER, "from callee"),
            ),
        ],
    );
    for server in [A, B] {
        let observed = lab
            .server_events(server)
            .iter()
            .filter(|e| **e == ServerEvent::Observed(session, MsgType::Info))
            .count();
        assert_eq!(observed, 2, "{server} reads both directions");
    }
    assert!(lab.servers[0].server.holds_key(&session) && lab.servers[1].server.holds_key(&session));
    // No new key after the offer and answer: the stored key is reused.
    assert!(
        lab.find(mark, |s| matches!(
            s,
            Step::Sent {
                message: Message::Offer(_) | Message::Answer(_) | Message::Rekey(_),
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
    const CALLER: &str = "u1@a.example";
    const CALLEE: &str = "u1@b.example";
    const A: &str = "sc@a.example";
    const B: &str = "sc@b.example";
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
    let session = lab.call(CALLER, CALLEE);
    let mark = lab.trace.len();
    // By message count: the third message makes the caller rekey.
    for i in 0..3 {
        lab.command(CALLER, DeviceCommand::Info(session, format!("m{i}")));
        lab.settle();
    }
    // Sealed for the recipients instead (the body form), by each party.
    lab.command(CALLEE, DeviceCommand::Rekey(session, true));
    lab.settle();
    lab.command(CALLER, DeviceCommand::Rekey(session, true));
    lab.settle();
    // By time: the device's timer rekeys when the epoch is 600 s old.
    lab.advance(601_000);

    let rekey = |who: &'static str, epoch: u64, body: bool| {
        sent_msg(
            who,
            move |m| matches!(m, Message::Rekey(r) if r.epoch == epoch && r.body.is_some() == body && r.wrapped.is_some() != body),
        )
    };
    let switched = |who: &'static str, sending: bool, epoch: u64| {
        device(who, move |e| {
            *e == DeviceEvent::Rekeyed {
                session,
                sending,
                epoch,
            }
        })
    };
    // A message encrypted under the new key.
    let under = |who: &'static str, writer: &'static str, epoch: u64| {
        sent_msg(
            who,
            move |m| matches!(m, Message::Info(i) if i.from.as_str() == writer && i.epoch == epoch),
        )
    };
    let followed = |by: &'static str, writer: &'static str, epoch: u64| {
        server(
            by,
            move |e| matches!(e, ServerEvent::Rekeyed { session: s, from, epoch: n } if *s == session && from.as_str() == writer && *n == epoch),
        )
    };
    let passed_rekey = |by: &'static str, writer: &'static str, epoch: u64| {
        sent_msg(
            by,
            move |m| matches!(m, Message::Rekey(r) if r.from.as_str() == writer && r.epoch == epoch),
        )
    };
    let read = |by: &'static str| {
        server(by, move |e| {
            *e == ServerEvent::Observed(session, MsgType::Info)
        })
    };
    let third = sent_msg(
        CALLER,
        |m| matches!(m, Message::Info(i) if i.epoch == 0 && i.seq == 2),
    );

    // Each rekey below: (who, new epoch, body form, its servers in path
    // order, the peer). The body form seals the new key for the
    // recipients' public keys (the claims' "arbitrary second key"), the
    // wrapped form wraps it under the stored key (claims 43 and 44's
    // "first key already stored"). Generating the new key has no trace
    // step; the time trigger neither (it is the lab's clock).
    let rekeys: [(&str, u64, bool, [&str; 2], &str); 5] = [
        (CALLER, 1, false, [A, B], CALLEE),
        (CALLEE, 1, true, [B, A], CALLER),
        (CALLER, 2, true, [A, B], CALLEE),
        (CALLER, 3, false, [A, B], CALLEE),
        (CALLEE, 2, false, [B, A], CALLER),
    ];
    for (who, epoch, body, servers, peer) in rekeys {
        // Claims 21 and 44 (the receiving device), 22 and 43 (the
        // originating one): the new key is sent, encrypted, before any
        // message encrypted under it, and the peer switches to it.
        let claims: &[&str] = if who == CALLEE {
            &["claim 21", "claim 44"]
        } else {
            &["claim 22", "claim 43"]
        };
        assert_each_in_order(
            &lab,
            mark,
            claims,
            &[
                ("new key sent, encrypted", &rekey(who, epoch, body)),
                ("switched to it", &switched(who, true, epoch)),
                (
                    "information encrypted with it sent",
                    &under(who, who, epoch),
                ),
                ("the peer switched to it", &switched(peer, false, epoch)),
            ],
        );
        // Claims 23, 45, 46, at each trusted server: the signal with the
        // new key received, followed, passed on, then messages under the
        // new key read. Claims 45 and 46 also have the server generate a
        // new key and re-encrypt for the opposing device: no trace step
        // yet, the server passes the device's rekey on.
        for by in servers {
            for claim in ["claim 23", "claim 45", "claim 46"] {
                let at = lab.assert_in_order(
                    mark,
                    claim,
                    &[
                        ("signal with the new key sent", &rekey(who, epoch, body)),
                        ("received and followed", &followed(by, who, epoch)),
                        ("passed on", &passed_rekey(by, who, epoch)),
                        ("information under the new key read", &read(by)),
                        ("and passed on", &under(by, who, epoch)),
                    ],
                );
                // `Observed` does not say which message was read: the one
                // passed on is, if the server reported reading it just
                // before it sent it on.
                assert!(read(by)(&lab.trace[at[4] - 1]), "{claim}: {by} read it");
            }
        }
        // Claims 26, 27, 49, the system: the updating device, its
        // servers in path order, the other device.
        assert_each_in_order(
            &lab,
            mark,
            &["claim 26", "claim 27", "claim 49"],
            &[
                ("device: new key sent", &rekey(who, epoch, body)),
                ("first server followed", &followed(servers[0], who, epoch)),
                ("second server followed", &followed(servers[1], who, epoch)),
                ("other device switched", &switched(peer, false, epoch)),
            ],
        );
    }
    // The count trigger: the third message, then the rekey (claim 22).
    lab.assert_in_order(
        mark,
        "claim 22",
        &[
            ("third message under the first key", &third),
            ("new key sent", &rekey(CALLER, 1, false)),
        ],
    );
    // Servers followed every rekey and still read the session.
    for server in [A, B] {
        let events = lab.server_events(server);
        let rekeys = events
            .iter()
            .filter(|e| matches!(e, ServerEvent::Rekeyed { .. }))
            .count();
        assert_eq!(rekeys, 5, "{server}");
        let mark = lab.trace.len();
        lab.command(CALLER, DeviceCommand::Info(session, "after".into()));
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
    const CALLER: &str = "u1@a.example";
    const CALLEE: &str = "u1@b.example";
    const A: &str = "sc@a.example";
    const B: &str = "sc@b.example";
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let caller_media = lab.devices[lab.dev(CALLER)].media;
    let callee_media = lab.devices[lab.dev(CALLEE)].media;
    let mark = lab.trace.len();
    let session = lab.call(CALLER, CALLEE);
    lab.command(CALLER, DeviceCommand::Media(session, b"to callee".to_vec()));
    lab.command(CALLEE, DeviceCommand::Media(session, b"to caller".to_vec()));
    lab.settle();
    // A stranger is dropped at the narrowed pinhole (KW-FW-002).
    let caller_public = lab
        .firewall(0)
        .pinholes()
        .into_iter()
        .find_map(|p| (p.dst == caller_media).then_some(p.public))
        .flatten()
        .unwrap();
    let now = lab.now;
    let stranger = "203.0.113.9:4000".parse().unwrap();
    let fw = lab.firewall_mut(0);
    assert_eq!(
        fw.filter(now, Transport::Udp, stranger, caller_public)
            .deliver,
        None
    );
    lab.command(CALLER, DeviceCommand::HangUp(session));
    lab.settle();

    let opened = |by: &'static str, re: MsgType| {
        server(
            by,
            move |e| matches!(e, ServerEvent::BodyOpened { re: r, .. } if *r == re),
        )
    };
    let from_any = firewall(
        A,
        |c| matches!(c, FirewallCommand::Open { dst, src: None, public: Some(_), .. } if *dst == caller_media),
    );
    let narrowed = firewall(A, |c| matches!(c, FirewallCommand::Narrow { .. }));
    let to_callee = firewall(
        B,
        |c| matches!(c, FirewallCommand::Open { dst, src: Some(_), .. } if *dst == callee_media),
    );
    let media_at = |who: &'static str, frame: &'static [u8]| {
        device(
            who,
            move |e| matches!(e, DeviceEvent::MediaReceived { frame: f, .. } if f == frame),
        )
    };
    let cutoff = sent(CALLER, MsgType::Bye);
    let closed = |by: &'static str| firewall(by, |c| matches!(c, FirewallCommand::Close { .. }));

    // Claims 29, 32 (its program), 35 (the program's medium), at the
    // caller's server: from the offer, a pinhole from any source; from the
    // decrypted answer, narrowed to the callee; on the cutoff, closed.
    // "Passes packets from a specified address" is the callee's media
    // reaching the caller through the narrowed pinhole; "prevents their
    // passage" after the close is the firewall's state, checked below.
    let at = lab.assert_in_order(
        mark,
        "claims 29, 32, 35",
        &[
            (
                "filter change from the caller's media address: from any source",
                &from_any,
            ),
            (
                "information from the other device decrypted",
                &opened(A, MsgType::Answer),
            ),
            ("filter change: from the callee only", &narrowed),
            (
                "packets from the specified address passed",
                &media_at(CALLER, b"to caller"),
            ),
            ("cutoff signal received", &cutoff),
            ("filter change: closed", &closed(A)),
        ],
    );
    // The offer was forwarded after the pinhole was opened.
    lab.assert_in_order(
        mark,
        "claim 29",
        &[
            ("pinhole opened", &from_any),
            ("offer forwarded", &sent(A, MsgType::Offer)),
        ],
    );
    // Claims 51, 54 (its program), 57 (the program's medium): the
    // decrypted offer, a filter change; then the decrypted answer, a
    // filter change; packets pass both ways (claim 51).
    assert_each_in_order(
        &lab,
        mark,
        &["claim 51", "claim 54", "claim 57"],
        &[
            ("first key and offer decrypted", &opened(A, MsgType::Offer)),
            ("filter change requested", &from_any),
            (
                "answer from the receiving device decrypted",
                &opened(A, MsgType::Answer),
            ),
            ("filter change requested", &narrowed),
        ],
    );
    // At the callee's server, the answer's filter change follows both
    // decrypted descriptions.
    assert_each_in_order(
        &lab,
        mark,
        &["claim 51", "claim 54", "claim 57"],
        &[
            ("offer decrypted", &opened(B, MsgType::Offer)),
            ("answer decrypted", &opened(B, MsgType::Answer)),
            ("filter change requested", &to_callee),
            ("answer forwarded", &sent(B, MsgType::Answer)),
        ],
    );
    for frame in [
        media_at(CALLEE, b"to callee"),
        media_at(CALLER, b"to caller"),
    ] {
        lab.assert_in_order(
            mark,
            "claim 51",
            &[
                ("filter changes requested", &narrowed),
                ("main information passed", &frame),
            ],
        );
    }
    lab.assert_in_order(
        mark,
        "claim 29",
        &[("cutoff signal received", &cutoff), ("closed", &closed(B))],
    );

    let Step::Firewall {
        command:
            FirewallCommand::Open {
                pinhole,
                public: Some(public),
                ..
            },
        ..
    } = lab.trace[at[0]].clone()
    else {
        unreachable!()
    };
    assert_eq!(public, caller_public);
    let b_open = position(&lab, mark, &to_callee);
    let Step::Firewall {
        command:
            FirewallCommand::Open {
                src: Some(b_src),
                public: Some(callee_public),
                ..
            },
        ..
    } = lab.trace[b_open].clone()
    else {
        unreachable!()
    };
    assert_eq!(b_src, caller_public);
    let Step::Firewall { command, .. } = &lab.trace[at[2]] else {
        unreachable!()
    };
    assert_eq!(
        *command,
        FirewallCommand::Narrow {
            pinhole,
            src: callee_public
        }
    );
    // Bye: closed at both; now nothing passes, not even the callee
    // (claim 32, "preventing the passage").
    for server in [A, B] {
        assert!(
            lab.server_events(server)
                .contains(&ServerEvent::SessionEnded(session, SessionEnd::Bye))
        );
    }
    let now = lab.now;
    let fw = lab.firewall_mut(0);
    assert_eq!(
        fw.filter(now, Transport::Udp, callee_public, caller_public)
            .deliver,
        None
    );
    assert!(lab.firewall(0).is_empty() && lab.firewall(1).is_empty());
    let again = lab.call(CALLER, CALLEE);
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
    const CALLER: &str = "u1@a.example";
    const CALLEE: &str = "u2@a.example";
    const A: &str = "sc@a.example";
    let mut lab = recorded_domain();
    lab.register_all();
    let mark = lab.trace.len();
    let session = lab.call(CALLER, CALLEE);
    let recorder_addr = lab.recorders[0].addr;
    let mut frames_sent = Vec::new();
    for i in 0..3 {
        for who in [CALLER, CALLEE] {
            let frame = format!("{who} frame {i}").into_bytes();
            frames_sent.push(frame.clone());
            lab.command(who, DeviceCommand::Media(session, frame));
        }
    }
    lab.settle();
    // A rekey brings new media keys; the recorder gets them (record-key).
    let rekeyed = lab.trace.len();
    lab.command(CALLER, DeviceCommand::Rekey(session, false));
    lab.settle();
    let frame = b"after the rekey".to_vec();
    frames_sent.push(frame.clone());
    lab.command(CALLER, DeviceCommand::Media(session, frame));
    lab.settle();

    let opened = |re: MsgType| {
        server(
            A,
            move |e| matches!(e, ServerEvent::BodyOpened { re: r, .. } if *r == re),
        )
    };
    let filter_change = firewall(A, |c| matches!(c, FirewallCommand::Open { .. }));
    let narrowed = firewall(A, |c| matches!(c, FirewallCommand::Narrow { .. }));
    // The server commands the transfer: a signed `media-copy` to its
    // firewall agent (KW-REC-001, KW-FW-005), which carries it out.
    let copy = sent_msg(
        A,
        |m| matches!(m, Message::MediaCopy(c) if c.copy && c.sink == recorder_addr),
    );
    assert!(lab.trace.iter().any(firewall(
        A,
        |c| matches!(c, FirewallCommand::Copy { sink: Some(s), .. } if *s == recorder_addr),
    )));
    let keys_given = sent_msg(
        A,
        |m| matches!(m, Message::RecordStart(r) if r.session == session),
    );
    let started = recorder(|e| matches!(e, RecorderEvent::Started(_, id) if *id == session));
    let media = |epoch: u64| move |s: &Step| matches!(s, Step::Sent { message: Message::Media(m), .. } if m.session == session && m.epoch == epoch);
    let recorded = |epoch: u64| {
        recorder(
            move |e| matches!(e, RecorderEvent::Recorded { session: s, epoch: n, .. } if *s == session && *n == epoch),
        )
    };

    // Claims 30, 33 (its program), 36 (the program's medium): a filter
    // change and the command to transfer the media; the media keys, from
    // the decrypted descriptions, handed over; copied media decrypted and
    // recorded. The server hands the keys to its recorder (KW-REC-002), so
    // decrypting and recording are one trace step, the recorder's.
    assert_each_in_order(
        &lab,
        mark,
        &["claim 30", "claim 33", "claim 36"],
        &[
            ("filter change requested", &filter_change),
            ("main information transfer commanded", &copy),
            ("key information given to the recorder", &keys_given),
            ("recorder holds it", &started),
            ("main information sent through the firewall", &media(0)),
            ("decrypted with the key obtained, recorded", &recorded(0)),
        ],
    );
    // Claims 52, 55 (its program), 58 (the program's medium). The claim
    // names the first key's decryption "when transmitting and receiving a
    // signal": at the offer and answer, before the transfer is commanded.
    assert_each_in_order(
        &lab,
        mark,
        &["claim 52", "claim 55", "claim 58"],
        &[
            (
                "first key and the caller's description decrypted",
                &opened(MsgType::Offer),
            ),
            (
                "the callee's description decrypted",
                &opened(MsgType::Answer),
            ),
            (
                "filter change requested (narrowed to the callee)",
                &narrowed,
            ),
            ("main information transfer commanded", &copy),
            ("main information received from the firewall", &media(0)),
            ("decrypted with the media key, recorded", &recorded(0)),
        ],
    );
    // Across the rekey: the new description's keys reach the recorder
    // before the media under them is recorded.
    assert_each_in_order(
        &lab,
        rekeyed,
        &["claim 30", "claim 52"],
        &[
            ("new key sent", &sent(CALLER, MsgType::Rekey)),
            (
                "server followed",
                &server(A, |e| matches!(e, ServerEvent::Rekeyed { .. })),
            ),
            (
                "new media keys given to the recorder",
                &sent_msg(A, |m| matches!(m, Message::RecordKey(k) if k.epoch == 1)),
            ),
            (
                "recorder holds them",
                &recorder(|e| matches!(e, RecorderEvent::KeysAdded(..))),
            ),
            ("media under the new keys sent", &media(1)),
            ("decrypted and recorded", &recorded(1)),
        ],
    );
    let copies = lab
        .firewall_commands(A)
        .into_iter()
        .filter(|c| matches!(c, FirewallCommand::Copy { sink: Some(s), .. } if *s == recorder_addr))
        .count();
    assert_eq!(copies, 2, "both parties' pinholes are copied");
    let recorded_frames: Vec<(u64, Vec<u8>)> = lab
        .trace
        .iter()
        .filter_map(|s| match s {
            Step::Recorder {
                event: RecorderEvent::Recorded { epoch, frame, .. },
                ..
            } => Some((*epoch, frame.clone())),
            _ => None,
        })
        .collect();
    let frames: Vec<Vec<u8>> = recorded_frames.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(frames.len(), frames_sent.len());
    for f in &frames_sent {
        assert!(frames.contains(f), "{}", String::from_utf8_lossy(f));
    }
    assert_eq!(
        recorded_frames.last().map(|(e, _)| *e),
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
                        event: RecorderEvent::Recorded { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let before = count(&lab);
    lab.inject(
        recorder_addr,
        "198.51.100.1:20000".parse().unwrap(),
        &media.encode(),
    );
    assert_eq!(count(&lab), before);
    // A command whose signature does not verify is refused.
    let start = position(&lab, mark, &keys_given);
    let Step::Sent {
        message: Message::RecordStart(mut forged),
        ..
    } = lab.trace[start].clone()
    else {
        unreachable!()
    };
    forged.txn = keyway::wire::TxnId([0x55; 8]);
    forged.sig.sig.0[0] ^= 1;
    let forged_at = lab.trace.len();
    lab.inject(
        recorder_addr,
        lab.servers[0].addr,
        &Message::RecordStart(forged).encode(),
    );
    assert!(lab.find(forged_at, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::SIGNATURE_INVALID)).is_some());
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
        time: keyway::wire::Time(lab.clock().wall_secs()),
        ext: Default::default(),
    });
    keyway::crypto::sign_message(&mut list, &stranger.signing).unwrap();
    let listed_at = lab.trace.len();
    lab.inject(recorder_addr, lab.devices[0].contact, &list.encode());
    assert!(lab.find(listed_at, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.code == ErrorCode::RECORDING_FORBIDDEN)).is_some());
    // Bye: the copy stops, then the recording (KW-REC-003).
    let ended = lab.trace.len();
    lab.command(CALLEE, DeviceCommand::HangUp(session));
    lab.settle();
    lab.assert_in_order(
        ended,
        "claim 30",
        &[
            ("cutoff signal", &sent(CALLEE, MsgType::Bye)),
            (
                "transfer stopped",
                &sent_msg(A, |m| matches!(m, Message::MediaCopy(c) if !c.copy)),
            ),
            ("recording stopped", &sent(A, MsgType::RecordStop)),
            (
                "recorder stopped",
                &recorder(|e| matches!(e, RecorderEvent::Stopped(_))),
            ),
        ],
    );
}

/// Claims 37, 38, 47, 50, 53, 56: each server entry carries its
/// permission; a read-modify server changes the description with a signed
/// edit the destination accepts; a read-only server's change is detected
/// by the destination and the call refused. KW-SEAL-005, KW-SEAL-006,
/// KW-SEAL-007, KW-SEAL-009, KW-POLICY-002, KW-SM-011 (a server that
/// rewrites media keeps the key; one that re-keys, claim 39, is
/// `core_new_key`).
#[test]
fn claims_37_38_47_50_53_56_permissions_edits_and_detected_tampering() {
    const CALLER: &str = "u1@a.example";
    const CALLEE: &str = "u1@b.example";
    const A: &str = "sc@a.example";
    const HUB: &str = "sc@hub.example";
    const B: &str = "sc@b.example";
    // Allowed: sc@a (read-modify) rewrites the caller's media address.
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let mark = lab.trace.len();
    let session = lab.call(CALLER, CALLEE);
    lab.command(CALLER, DeviceCommand::Info(session, "from caller".into()));
    lab.settle();
    lab.command(CALLEE, DeviceCommand::Info(session, "from callee".into()));
    lab.settle();

    let key_of_a = device(
        CALLER,
        |e| matches!(e, DeviceEvent::CertificateAccepted { account, .. } if account.as_str() == A),
    );
    // The decryption request (a server entry) and the change permission
    // notification (read-modify) for sc@a, with the content id.
    let offered = sent_msg(CALLER, |m| {
        matches!(m, Message::Offer(o) if o.body.recipients.iter().any(|r| {
            r.id.as_ref().is_some_and(|id| id.as_str() == A)
                && r.kind == RecipientKind::Server
                && r.perm == Permission::ReadModify
        }))
    });
    let opened = |by: &'static str, perm: Permission| {
        server(by, move |e| {
            *e == ServerEvent::BodyOpened {
                session,
                re: MsgType::Offer,
                perm,
            }
        })
    };
    let (opened_a, opened_b) = (
        opened(A, Permission::ReadModify),
        opened(B, Permission::Read),
    );
    let edited = server(A, |e| *e == ServerEvent::Edited(session, MsgType::Offer));
    let edited_sent = |by: &'static str| {
        sent_msg(
            by,
            |m| matches!(m, Message::Offer(o) if o.body.edits.as_ref().is_some_and(|e| e.iter().any(|e| e.editor.as_str() == A))),
        )
    };
    let incoming = device(
        CALLEE,
        |e| matches!(e, DeviceEvent::IncomingCall(s, _) if *s == session),
    );
    let writes = |who: &'static str| sent(who, MsgType::Info);
    let reads = |who: &'static str| {
        device(
            who,
            move |e| matches!(e, DeviceEvent::InfoReceived(s, _) if *s == session),
        )
    };

    // Claim 37, device. Generating the first key, encrypting and wrapping
    // it for the one permitted server have no trace steps (inside `seal`).
    lab.assert_in_order(
        mark,
        "claim 37",
        &[
            ("the permitted server's second key", &key_of_a),
            (
                "sent: wrapped key, information, decryption request, change permission",
                &offered,
            ),
        ],
    );
    // Claim 38, server. Unwrapping with its own key and decrypting are one
    // step (BodyOpened). Encrypting the first key for the next server or
    // the destination has no trace step here: sc@a keeps the key (the
    // re-keying server of claim 39 is `core_new_key`) and the caller's
    // entries for sc@b and the callee travel on, re-signed in the edit.
    lab.assert_in_order(
        mark,
        "claim 38",
        &[
            ("signal received", &offered),
            ("first key unwrapped, information decrypted", &opened_a),
            ("changed information encrypted under the first key", &edited),
            (
                "sent with the next server's decryption request",
                &edited_sent(A),
            ),
            ("next server: decrypted as permitted (read only)", &opened_b),
            ("sent to the destination", &edited_sent(B)),
            (
                "destination: unwrapped and verified after the edit",
                &incoming,
            ),
        ],
    );
    // Claim 47, the system: the re-encrypting server, the devices storing
    // the key by session and opposing device (no trace step) and using it
    // both ways.
    lab.assert_in_order(
        mark,
        "claim 47",
        &[
            ("device: permitted server's key", &key_of_a),
            ("device: sealed offer with permissions", &offered),
            ("server: decision, unwrap, decrypt", &opened_a),
            ("server: changed and re-encrypted", &edited),
            (
                "server: sent on with the decryption request",
                &edited_sent(A),
            ),
            ("receiving device: unwrapped, decrypted", &incoming),
            (
                "originating device: information under the key sent",
                &writes(CALLER),
            ),
            ("receiving device: decrypted", &reads(CALLEE)),
            (
                "receiving device: information under the key sent",
                &writes(CALLEE),
            ),
            ("originating device: decrypted", &reads(CALLER)),
        ],
    );
    // Claim 50, the method: the request value and content id go with the
    // key wrapped for the server's published key; the server decides by
    // its entry, decrypts, changes, re-encrypts (same key) and sends on.
    lab.assert_in_order(
        mark,
        "claim 50",
        &[
            ("server's published second key", &key_of_a),
            ("decryption request and content id sent", &offered),
            ("decided, decrypted, change made possible", &opened_a),
            ("changed and encrypted with the same first key", &edited),
            ("sent to the next server", &edited_sent(A)),
            ("which sends it on", &edited_sent(HUB)),
        ],
    );
    // Claims 53 (the server's program) and 56 (its medium).
    assert_each_in_order(
        &lab,
        mark,
        &["claim 53", "claim 56"],
        &[
            ("decided, decrypted", &opened_a),
            ("changed, encrypted with the same first key", &edited),
            ("sent to the next server", &edited_sent(A)),
        ],
    );
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == CALLER => Some(o),
            _ => None,
        })
        .unwrap();
    // Claim 50's content ID: the body's cid names the content to
    // decrypt (crypto.md §4).
    assert_eq!(offer.body.cid, 0);
    let delivered = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == B => Some(o),
            _ => None,
        })
        .unwrap();
    let edits = delivered.body.edits.clone().unwrap();
    assert_eq!(
        edits
            .iter()
            .map(|e| e.editor.to_string())
            .collect::<Vec<_>>(),
        [A]
    );
    assert!(edits.iter().all(|e| e.epk.is_none()), "same content key");
    assert_eq!(
        lab.device(CALLEE).call_state(&session),
        Some(CallState::Established)
    );

    // Not allowed: sc@b may only read, changes the offer anyway.
    let mut lab = Lab::new(LabOptions::default());
    lab.inject_faults(
        1,
        Faults {
            tamper_read_only: true,
            ..Faults::default()
        },
    );
    lab.register_all();
    let mark = lab.trace.len();
    let session = lab.call(CALLER, CALLEE);
    // KW-SEAL-006: the destination detects the change of a reader.
    lab.assert_in_order(
        mark,
        "claim 38 (read only)",
        &[
            (
                "read-only server decrypted",
                &server(B, |e| {
                    matches!(
                        e,
                        ServerEvent::BodyOpened {
                            re: MsgType::Offer,
                            perm: Permission::Read,
                            ..
                        }
                    )
                }),
            ),
            (
                "changed it anyway",
                &server(B, |e| *e == ServerEvent::Tampered(session, MsgType::Offer)),
            ),
            ("sent to the destination", &sent(B, MsgType::Offer)),
            (
                "destination detected it",
                &device(CALLEE, |e| {
                    *e == DeviceEvent::TamperDetected(session, ErrorCode::PERMISSION_DENIED)
                }),
            ),
            (
                "the call failed",
                &device(CALLER, |e| {
                    *e == DeviceEvent::CallFailed(session, ErrorCode::PERMISSION_DENIED)
                }),
            ),
        ],
    );
    assert!(
        !lab.device_events(CALLEE)
            .contains(&DeviceEvent::IncomingCall(session, principal(CALLER)))
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
/// changes nothing; a repeated request gets a fresh
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
    // Twenty within one second, a millisecond apart.
    lab.now = lab.now / 1000 * 1000;
    for _ in 0..20 {
        lab.inject(server, from, &garbage);
        lab.now += 1;
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
    // Another source in that second neither answers for the first nor
    // frees it from its limit.
    let other = "203.0.113.8:5000".parse().unwrap();
    let mark_other = lab.trace.len();
    lab.inject(server, other, &garbage);
    lab.inject(server, from, &garbage);
    let to: Vec<keyway::core::Addr> = lab.trace[mark_other..]
        .iter()
        .filter_map(|s| match s {
            Step::Sent { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(to, [other]);
    assert!(errors.iter().all(|e| e.offset.is_some() && e.txn.is_none()));
    assert!(Message::Error(errors[0].clone()).encode().len() <= garbage.len());
    // A datagram exactly as long as its answer is answered.
    let fits = Message::Error(errors[0].clone()).encode().len();
    let mark = lab.trace.len();
    lab.now += 1000;
    lab.inject(server, from, &garbage[..fits]);
    let answered: Vec<usize> = lab.trace[mark..]
        .iter()
        .filter_map(|s| match s {
            Step::Sent { message, .. } => Some(message.encode().len()),
            _ => None,
        })
        .collect();
    assert_eq!(answered, [fits]);
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

/// KW-REG-010, KW-SM-025: after a crash the server has every acknowledged
/// registration with its certificate, and goes on with the sessions it
/// followed: their pinholes stay as they were, media passes, and the
/// `bye` closes them (KW-FW-003) as if there had been no crash.
#[test]
fn a_restarted_server_keeps_registrations_and_sessions() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let cert = lab.device("u1@a.example").certificate().cloned().unwrap();
    let session = lab.call("u1@a.example", "u1@b.example");
    let pinholes = lab.firewall(0).pinholes();
    assert!(!pinholes.is_empty());
    lab.restart_server(0);
    lab.settle();
    assert_eq!(lab.firewall(0).pinholes(), pinholes);
    assert_eq!(lab.server(0).session_ids(), vec![session]);
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
    // Media still passes its firewall, and the bye closes its pinholes.
    let received = |lab: &Lab| {
        lab.device_events("u1@b.example")
            .iter()
            .filter(|e| matches!(e, DeviceEvent::MediaReceived { .. }))
            .count()
    };
    let before = received(&lab);
    lab.command(
        "u1@a.example",
        DeviceCommand::Media(session, b"after".to_vec()),
    );
    lab.settle();
    assert_eq!(received(&lab), before + 1);
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    assert!(lab.session_ended(0, session, SessionEnd::Bye));
    assert!(lab.firewall(0).is_empty() && lab.firewall(1).is_empty());
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
            re: MsgType::Rekey,
            to: Some(&principal("u2@a.example")),
        },
        &forger,
        &[spec],
        &rekey_body_plaintext(1),
        Some(&key),
        &mut KeyCache::new(4),
        &mut rng,
    )
    .unwrap();
    let mut rekey = Message::Rekey(keyway::wire::Rekey {
        txn: keyway::wire::TxnId([0x77; 8]),
        from: principal("u1@a.example"),
        to: principal("u2@a.example"),
        session,
        hops: keyway::wire::Hops::new(8).unwrap(),
        via: None,
        sig: keyway::crypto::unsigned(),
        body: Some(body),
        epoch: 1,
        seq: 40,
        payload: None,
        wrapped: None,
        ext: Default::default(),
    });
    keyway::crypto::sign_message(&mut rekey, &forger.signing).unwrap();
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
    let mut bye = Message::Bye(keyway::wire::Bye {
        txn: keyway::wire::TxnId([0x78; 8]),
        from: principal("u1@a.example"),
        to: principal("u2@a.example"),
        session,
        hops: keyway::wire::Hops::new(8).unwrap(),
        via: None,
        sig: keyway::crypto::unsigned(),
        epoch: sealed.epoch,
        seq: sealed.seq,
        payload: keyway::wire::Bytes::new(sealed.payload).unwrap(),
        ext: Default::default(),
    });
    keyway::crypto::sign_message(&mut bye, &forger.signing).unwrap();
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

/// KW-REC-002, KW-SM-025: a server keeps the media keys of each party's
/// four latest descriptions, and after a restart sends its recorder a
/// `record-start` with exactly those: after five rekeys of the caller, its
/// descriptions 2 to 5 and the callee's first, and no older one.
#[test]
fn kw_rec_002_a_restarted_server_sends_the_latest_media_keys() {
    use keyway::wire::{MediaKeys, decode_plaintext};
    let mut lab = recorded_domain();
    lab.register_all();
    let (caller, callee) = (principal("u1@a.example"), principal("u2@a.example"));
    let session = lab.call(caller.as_str(), callee.as_str());
    for _ in 0..5 {
        lab.command(caller.as_str(), DeviceCommand::Rekey(session, false));
        lab.settle();
    }
    let mark = lab.trace.len();
    lab.restart_server(0);
    lab.settle();
    let start = lab.trace[mark..]
        .iter()
        .find_map(|s| match s {
            Step::Sent {
                message: Message::RecordStart(r),
                ..
            } => Some(r.clone()),
            _ => None,
        })
        .expect("a record-start after the restart");
    let recorder = &lab.recorders[0].config.identity;
    let opened = keyway::crypto::open(
        &start.keys,
        &session,
        recorder,
        &mut keyway::crypto::KeyCache::new(4),
    )
    .unwrap();
    let keys = decode_plaintext::<MediaKeys>(&opened.plaintext).unwrap();
    let numbers = |party: &keyway::wire::Principal| {
        keys.keys
            .iter()
            .filter(|k| &k.sender == party)
            .map(|k| k.epoch)
            .collect::<std::collections::BTreeSet<u64>>()
    };
    assert_eq!(numbers(&caller), [2, 3, 4, 5].into());
    assert_eq!(numbers(&callee), [0].into());
}

/// KW-ROUTE-001, KW-ROUTE-003: the offer that servers read, and the
/// in-session requests — `ack`, `info`, `rekey`, `bye` — go hop by hop:
/// each server decrements `hops` and adds itself to `via`, so a loop of
/// them ends.
#[test]
fn in_session_requests_carry_via_and_hops() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let caller = "u1@a.example";
    let session = lab.call(caller, "u1@b.example");
    lab.command(caller, DeviceCommand::Rekey(session, false));
    lab.settle();
    lab.command(caller, DeviceCommand::HangUp(session));
    lab.settle();
    let route = |m: &Message| match m {
        Message::Offer(r) => Some((r.from.clone(), r.hops, r.via.clone())),
        Message::Ack(r) => Some((r.from.clone(), r.hops, r.via.clone())),
        Message::Info(r) => Some((r.from.clone(), r.hops, r.via.clone())),
        Message::Rekey(r) => Some((r.from.clone(), r.hops, r.via.clone())),
        Message::Bye(r) => Some((r.from.clone(), r.hops, r.via.clone())),
        _ => None,
    };
    for re in [
        MsgType::Offer,
        MsgType::Ack,
        MsgType::Info,
        MsgType::Rekey,
        MsgType::Bye,
    ] {
        let mut hops_and_via = Vec::new();
        for sender in [caller, "sc@a.example", "sc@hub.example"] {
            let (_, hops, via) = lab
                .sent()
                .into_iter()
                .filter(|(from, _, m)| from == sender && m.msg_type() == re)
                .find_map(|(_, _, m)| route(&m).filter(|(from, ..)| from.as_str() == caller))
                .unwrap_or_else(|| panic!("{sender} sends {re:?}"));
            let last = via.and_then(|v| v.last().map(|p| p.to_string()));
            hops_and_via.push((hops.get(), last));
        }
        assert_eq!(
            hops_and_via,
            [
                (8, None),
                (7, Some("sc@a.example".into())),
                (6, Some("sc@hub.example".into()))
            ],
            "{re:?}"
        );
    }
}

/// KW-REC-001: a server records a session only when its policy selects a
/// party of its own domain, and only with pinholes to copy. Selecting
/// `u1@a.example` records its calls and not another local account's; a
/// domain without a firewall records nothing.
#[test]
fn kw_rec_001_only_selected_sessions_with_media_to_copy_are_recorded() {
    use keyway::core::{RecordPolicy, Server};
    let selected = principal("u1@a.example");
    let lab_with = |firewall: bool| {
        let mut plan = LabOptions {
            domains: vec!["a.example"],
            devices: 3,
            hub: false,
            record: true,
            ..LabOptions::default()
        }
        .plan();
        plan.record_policies = [(0, RecordPolicy::Accounts([selected.clone()].into()))].into();
        let mut lab = Lab::from_plan(&plan);
        if !firewall {
            lab.servers[0].config.firewall = None;
            lab.servers[0].server = Server::new(lab.servers[0].config.clone());
        }
        lab.register_all();
        lab
    };
    let started = |lab: &Lab, session| {
        lab.server_events("sc@a.example")
            .iter()
            .filter(|e| matches!(e, ServerEvent::RecordingStarted(s, _) if *s == session))
            .count()
    };
    let mut lab = lab_with(true);
    let unselected = lab.call("u2@a.example", "u3@a.example");
    assert_eq!(started(&lab, unselected), 0);
    let recorded = lab.call("u2@a.example", selected.as_str());
    assert_eq!(started(&lab, recorded), 1);
    let mut lab = lab_with(false);
    let without_firewall = lab.call("u2@a.example", selected.as_str());
    assert_eq!(started(&lab, without_firewall), 0);
    assert!(lab.recorders[0].recorder.recordings().next().is_none());
}

/// KW-SEAL-008, KW-ROUTE-001, KW-ROUTE-003: an offer a server cannot read
/// (the caller made no server a recipient) is forwarded with its body
/// byte for byte, and still hop by hop: each server decrements `hops` and
/// adds itself to `via`.
#[test]
fn an_unreadable_offer_is_forwarded_with_via_and_hops() {
    use keyway::core::DevicePolicy;
    let mut lab = Lab::new(LabOptions {
        device_policy: DevicePolicy {
            own_server: None,
            peer_server: None,
            ..DevicePolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    let mark = lab.trace.len();
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u1@b.example")),
    );
    lab.settle();
    let offers: Vec<_> = ["u1@a.example", "sc@a.example", "sc@hub.example"]
        .into_iter()
        .map(|sender| {
            lab.trace[mark..]
                .iter()
                .find_map(|s| match s {
                    Step::Sent {
                        from,
                        message: Message::Offer(o),
                        ..
                    } if from == sender => Some(o.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{sender} sends the offer"))
        })
        .collect();
    let route: Vec<(u64, Option<String>)> = offers
        .iter()
        .map(|o| {
            let last = o.via.as_ref().and_then(|v| v.last()).map(|p| p.to_string());
            (o.hops.get(), last)
        })
        .collect();
    assert_eq!(
        route,
        [
            (8, None),
            (7, Some("sc@a.example".into())),
            (6, Some("sc@hub.example".into()))
        ]
    );
    assert!(offers.iter().all(|o| o.body == offers[0].body));
}

/// KW-FW-004, KW-REC-003: a recorded session that reaches its term ends
/// there: its pinholes are closed for the record, but no copy is stopped —
/// the agent closed the pinholes, and their copies with them, at that same
/// instant.
#[test]
fn a_session_at_its_term_stops_no_copy() {
    let mut lab = recorded_domain();
    lab.register_all();
    let session = lab.call("u1@a.example", "u2@a.example");
    assert!(
        lab.trace
            .iter()
            .any(|s| matches!(s, Step::Sent { message: Message::MediaCopy(c), .. } if c.copy))
    );
    let term = lab.server(0).session_expiry(&session).unwrap();
    lab.advance(term - lab.clock().mono - 1000);
    // The server woken at the very instant its term ends.
    lab.now = term;
    let mark = lab.trace.len();
    let now = lab.clock();
    let s = &mut lab.servers[0];
    s.server.handle_timeout(now, &mut s.rng);
    lab.drain(keyway::testkit::Node::Server(0));
    assert!(lab.session_ended(0, session, keyway::core::SessionEnd::Expired));
    let sent: Vec<MsgType> = lab.trace[mark..]
        .iter()
        .filter_map(|s| match s {
            Step::Sent { from, message, .. } if from == "sc@a.example" => Some(message.msg_type()),
            _ => None,
        })
        .collect();
    assert!(sent.contains(&MsgType::PinholeClose), "{sent:?}");
    assert!(!sent.contains(&MsgType::MediaCopy), "{sent:?}");
}
