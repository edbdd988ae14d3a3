//! The firewall agent as a party (KW-FW-005, KW-FW-007, KW-FW-008): it
//! obeys only signed, fresh requests of the servers it is configured with,
//! carries each out once, makes every request idempotent so that a server
//! may send it again, and closes every pinhole at the end of its lifetime.
//! Every refusal is checked to change nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use keyway::core::{
    Addr, DeviceCommand, DeviceEvent, Firewall, FirewallAgent, FirewallEvent, MemoryFirewall, Now,
    Output, Party, PinholeView, ProtocolError, Receive, ServerEvent, SessionEnd,
};
use keyway::crypto::{Identity, SeededEntropy, sign_message, unsigned};
use keyway::testkit::{Lab, LabOptions, Plan, Step, T0, TracingFirewall};
use keyway::wire::{
    ErrorCode, Extensions, MediaCopy, Message, MsgType, PinholeClose, PinholeNarrow, PinholeOpen,
    Principal, SessionId, Time, Transport, TxnId,
};

const SESSION: SessionId = SessionId([0x5e; 16]);

struct Bench {
    agent: FirewallAgent<MemoryFirewall>,
    server: Identity,
    server_addr: Addr,
    agent_addr: Addr,
    rng: SeededEntropy,
    now: Now,
    next_txn: u8,
    /// What the agent told its application, in order.
    events: Vec<FirewallEvent>,
}

fn addr(text: &str) -> Addr {
    text.parse().unwrap()
}

fn bench() -> Bench {
    let deployment = Plan {
        domains: vec!["a.example".into()],
        devices: 0,
        hub: false,
        ..Plan::default()
    }
    .provision();
    let kit = &deployment.domains[0];
    Bench {
        agent: FirewallAgent::new(kit.agent.clone(), MemoryFirewall::new(8)),
        server: kit.server.identity.clone(),
        server_addr: kit.server.addr,
        agent_addr: kit.agent.addr,
        rng: SeededEntropy::from_label("firewall agent tests"),
        now: Now::at(T0),
        next_txn: 0,
        events: Vec::new(),
    }
}

impl Bench {
    fn txn(&mut self) -> TxnId {
        self.next_txn += 1;
        TxnId([self.next_txn; 8])
    }

    fn secs(&self) -> u64 {
        self.now.wall_secs()
    }

    fn open(&mut self, pinhole: u64, src: Option<Addr>, time: u64, lifetime: u64) -> Message {
        Message::PinholeOpen(PinholeOpen {
            txn: self.txn(),
            from: self.server.account.clone(),
            session: SESSION,
            sig: unsigned(),
            time: Time(time),
            pinhole,
            proto: Transport::Udp,
            dst: addr("10.1.0.1:40000"),
            src,
            lifetime,
            public: Some(addr("198.51.100.1:20000")),
            ext: Extensions::new(),
        })
    }

    fn narrow(&mut self, pinhole: u64, src: Addr, time: u64) -> Message {
        Message::PinholeNarrow(PinholeNarrow {
            txn: self.txn(),
            from: self.server.account.clone(),
            sig: unsigned(),
            time: Time(time),
            pinhole,
            src,
            ext: Extensions::new(),
        })
    }

    fn close(&mut self, pinhole: u64, time: u64) -> Message {
        Message::PinholeClose(PinholeClose {
            txn: self.txn(),
            from: self.server.account.clone(),
            sig: unsigned(),
            time: Time(time),
            pinhole,
            ext: Extensions::new(),
        })
    }

    fn copy(&mut self, pinhole: u64, on: bool, time: u64) -> Message {
        Message::MediaCopy(MediaCopy {
            txn: self.txn(),
            from: self.server.account.clone(),
            sig: unsigned(),
            time: Time(time),
            pinhole,
            sink: addr("192.0.2.1:6000"),
            copy: on,
            ext: Extensions::new(),
        })
    }

    /// Signs `message` as the server and hands it to the agent: the
    /// outcome and the agent's answer.
    fn send(&mut self, mut message: Message) -> (Result<(), ProtocolError>, Message) {
        sign_message(&mut message, &self.server.signing).unwrap();
        self.deliver(&message.encode())
    }

    fn deliver(&mut self, bytes: &[u8]) -> (Result<(), ProtocolError>, Message) {
        let receive = Receive::udp(self.server_addr, self.agent_addr, bytes);
        let outcome = self.agent.handle_receive(self.now, receive, &mut self.rng);
        let mut answer = None;
        while let Some(output) = self.agent.poll_output() {
            match output {
                Output::Transmit(t) => {
                    assert_eq!(
                        t.destination, self.server_addr,
                        "answered where it came from"
                    );
                    answer = Some(t.message);
                }
                Output::Event(event) => self.events.push(event),
                _ => {}
            }
        }
        (outcome, answer.expect("every request is answered"))
    }

    fn pinholes(&self) -> Vec<PinholeView> {
        self.agent.firewall().pinholes()
    }
}

#[track_caller]
fn assert_ok(got: (Result<(), ProtocolError>, Message), re: MsgType, pinhole: u64) {
    assert_eq!(got.0, Ok(()));
    match got.1 {
        Message::Ok(ok) => {
            assert_eq!((ok.re, ok.pinhole), (re, Some(pinhole)));
        }
        other => panic!("not ok: {other:?}"),
    }
}

#[track_caller]
fn assert_refused(got: (Result<(), ProtocolError>, Message), re: MsgType, code: ErrorCode) {
    assert_eq!(got.0, Err(ProtocolError::Refused { re, code }));
    match got.1 {
        Message::Error(e) => assert_eq!((e.re, e.code), (Some(re), code)),
        other => panic!("not an error: {other:?}"),
    }
}

/// KW-FW-005: a request not signed by a server the agent obeys is refused
/// and changes nothing: unsigned, signed by another key, or from a server
/// it does not know.
#[test]
fn kw_fw_005_only_its_servers_signed_requests_are_obeyed() {
    let mut b = bench();
    let t = b.secs();
    let unsigned_open = b.open(1, None, t, 60);
    assert_refused(
        b.deliver(&unsigned_open.encode()),
        MsgType::PinholeOpen,
        ErrorCode::SIGNATURE_INVALID,
    );
    let mut forged = b.open(1, None, t, 60);
    let impostor = Identity::generate(
        b.server.account.clone(),
        &mut SeededEntropy::from_label("impostor"),
    );
    sign_message(&mut forged, &impostor.signing).unwrap();
    let got = b.deliver(&forged.encode());
    assert!(matches!(got.1, Message::Error(_)), "{got:?}");
    let mut stranger = b.open(2, None, t, 60);
    if let Message::PinholeOpen(p) = &mut stranger {
        p.from = Principal::new("sc@b.example").unwrap();
    }
    assert_refused(b.send(stranger), MsgType::PinholeOpen, ErrorCode::FORBIDDEN);
    assert!(b.pinholes().is_empty() && b.agent.is_empty());
}

/// KW-FW-007: a request whose `time` is more than the window from the
/// agent's clock, either way, is refused; the lifetime runs from `time`,
/// so an open near the edge of the window ends no later than its server
/// said; and a request older than the last applied to its pinhole is
/// refused, so a late one cannot undo a later one.
#[test]
fn kw_fw_007_requests_are_fresh_and_in_order() {
    let mut b = bench();
    let t = b.secs();
    let stale = b.open(1, None, t - 61, 3600);
    assert_refused(
        b.send(stale),
        MsgType::PinholeOpen,
        ErrorCode::STALE_REQUEST,
    );
    let early = b.open(1, None, t + 61, 3600);
    assert_refused(
        b.send(early),
        MsgType::PinholeOpen,
        ErrorCode::STALE_REQUEST,
    );
    assert!(b.pinholes().is_empty());

    let edge = b.open(1, None, t - 60, 70);
    assert_ok(b.send(edge), MsgType::PinholeOpen, 1);
    assert_eq!(b.pinholes()[0].expires_at, (t + 10) * 1000);

    let later = b.narrow(1, addr("198.51.100.2:20000"), t);
    assert_ok(b.send(later), MsgType::PinholeNarrow, 1);
    let older = b.narrow(1, addr("203.0.113.9:1"), t - 1);
    assert_refused(
        b.send(older),
        MsgType::PinholeNarrow,
        ErrorCode::STALE_REQUEST,
    );
    assert_eq!(b.pinholes()[0].src, Some(addr("198.51.100.2:20000")));
}

/// KW-FW-008, KW-FRAME-012: an open sent again with the same fields
/// succeeds and changes nothing — naming a source, it narrows; with other
/// fields it is refused; a retransmission (same `txn`) is answered as the
/// first without being carried out again.
#[test]
fn kw_fw_008_opens_are_idempotent() {
    let mut b = bench();
    let t = b.secs();
    let mut first = b.open(1, None, t, 60);
    sign_message(&mut first, &b.server.signing).unwrap();
    let bytes = first.encode();
    assert_ok(b.deliver(&bytes), MsgType::PinholeOpen, 1);
    let before = b.pinholes();
    assert_ok(b.deliver(&bytes), MsgType::PinholeOpen, 1);
    assert_eq!(b.pinholes(), before);

    let again = b.open(1, None, t, 60);
    assert_ok(b.send(again), MsgType::PinholeOpen, 1);
    assert_eq!(b.pinholes(), before);

    let narrowing = b.open(1, Some(addr("198.51.100.2:20000")), t, 60);
    assert_ok(b.send(narrowing), MsgType::PinholeOpen, 1);
    assert_eq!(b.pinholes()[0].src, Some(addr("198.51.100.2:20000")));
    assert_eq!(b.pinholes().len(), 1);

    let other_lifetime = b.open(1, None, t, 61);
    let held = b.pinholes();
    assert_refused(
        b.send(other_lifetime),
        MsgType::PinholeOpen,
        ErrorCode::BAD_STATE,
    );
    assert_eq!(b.pinholes(), held);
    assert_eq!(b.agent.len(), 1, "one pinhole, however often opened");
    assert!(!b.agent.is_empty());

    let second = b.open(2, None, t, 60);
    assert_ok(b.send(second), MsgType::PinholeOpen, 2);
    assert_eq!((b.agent.len(), b.pinholes().len()), (2, 2));
}

/// KW-FW-008: closing is idempotent and final: a close of a pinhole not
/// held succeeds, and a pinhole closed cannot be opened again (a replayed
/// open) while its lifetime would have lasted; narrowing or copying one
/// not held is refused, but stopping a copy of one not held succeeds.
#[test]
fn kw_fw_008_closes_are_idempotent_and_final() {
    let mut b = bench();
    let t = b.secs();
    let open = b.open(1, None, t, 60);
    assert_ok(b.send(open), MsgType::PinholeOpen, 1);
    let close = b.close(1, t);
    assert_ok(b.send(close), MsgType::PinholeClose, 1);
    assert!(b.pinholes().is_empty());
    let close_again = b.close(1, t);
    assert_ok(b.send(close_again), MsgType::PinholeClose, 1);
    let close_unknown = b.close(9, t);
    assert_ok(b.send(close_unknown), MsgType::PinholeClose, 9);

    let replay = b.open(1, None, t, 60);
    assert_refused(b.send(replay), MsgType::PinholeOpen, ErrorCode::BAD_STATE);
    // An open overtaken by its close is refused too.
    let overtaken = b.open(9, None, t, 60);
    assert_refused(
        b.send(overtaken),
        MsgType::PinholeOpen,
        ErrorCode::BAD_STATE,
    );

    let narrow = b.narrow(5, addr("198.51.100.2:20000"), t);
    assert_refused(
        b.send(narrow),
        MsgType::PinholeNarrow,
        ErrorCode::UNKNOWN_PINHOLE,
    );
    let copy = b.copy(5, true, t);
    assert_refused(b.send(copy), MsgType::MediaCopy, ErrorCode::UNKNOWN_PINHOLE);
    let stop = b.copy(5, false, t);
    assert_ok(b.send(stop), MsgType::MediaCopy, 5);
    assert!(b.pinholes().is_empty() && b.agent.is_empty());
}

/// The agent tells its application what each request did: a request that
/// changed a held pinhole or found it as asked is `Applied`, one refused is
/// `Refused` with the server and pinhole it named (so that logs and metrics
/// can say whose request failed).
#[test]
fn the_agent_reports_what_each_request_did() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server.account.clone();
    let open = b.open(1, None, t, 60);
    assert_ok(b.send(open), MsgType::PinholeOpen, 1);
    let again = b.open(1, None, t, 60);
    assert_ok(b.send(again), MsgType::PinholeOpen, 1);
    let narrow = b.narrow(1, addr("198.51.100.2:20000"), t);
    assert_ok(b.send(narrow), MsgType::PinholeNarrow, 1);
    let copy = b.copy(1, true, t);
    assert_ok(b.send(copy), MsgType::MediaCopy, 1);
    let unknown = b.narrow(5, addr("198.51.100.2:20000"), t);
    assert_refused(
        b.send(unknown),
        MsgType::PinholeNarrow,
        ErrorCode::UNKNOWN_PINHOLE,
    );
    let copy_unknown = b.copy(6, true, t);
    assert_refused(
        b.send(copy_unknown),
        MsgType::MediaCopy,
        ErrorCode::UNKNOWN_PINHOLE,
    );
    let other_lifetime = b.open(1, None, t, 61);
    assert_refused(
        b.send(other_lifetime),
        MsgType::PinholeOpen,
        ErrorCode::BAD_STATE,
    );
    let stale_close = b.close(1, t - 61);
    assert_refused(
        b.send(stale_close),
        MsgType::PinholeClose,
        ErrorCode::STALE_REQUEST,
    );
    let applied = |re, pinhole| FirewallEvent::Applied {
        server: server.clone(),
        re,
        pinhole,
    };
    let refused = |re, code, pinhole| FirewallEvent::Refused {
        re,
        code,
        pinhole: Some((server.clone(), pinhole)),
    };
    let want = vec![
        FirewallEvent::Opened {
            server: server.clone(),
            pinhole: 1,
            session: SESSION,
        },
        applied(MsgType::PinholeOpen, 1),
        applied(MsgType::PinholeNarrow, 1),
        applied(MsgType::MediaCopy, 1),
        refused(MsgType::PinholeNarrow, ErrorCode::UNKNOWN_PINHOLE, 5),
        refused(MsgType::MediaCopy, ErrorCode::UNKNOWN_PINHOLE, 6),
        refused(MsgType::PinholeOpen, ErrorCode::BAD_STATE, 1),
        refused(MsgType::PinholeClose, ErrorCode::STALE_REQUEST, 1),
    ];
    assert_eq!(b.events, want);
}

/// KW-SM-019, KW-FW-008: the agent remembers at most its bound of closed
/// pinholes; at the bound the oldest is forgotten — an open of it sent
/// again is then taken — while a later one still cannot be reopened.
#[test]
fn kw_sm_019_the_agent_remembers_at_most_its_bound_of_closes() {
    let deployment = Plan {
        domains: vec!["a.example".into()],
        devices: 0,
        hub: false,
        ..Plan::default()
    }
    .provision();
    let mut config = deployment.domains[0].agent.clone();
    config.max_closed = 2;
    let mut b = bench();
    b.agent = FirewallAgent::new(config, MemoryFirewall::new(8));
    let t = b.secs();
    for pinhole in 1..=3 {
        let open = b.open(pinhole, None, t, 60);
        assert_ok(b.send(open), MsgType::PinholeOpen, pinhole);
        let close = b.close(pinhole, t);
        assert_ok(b.send(close), MsgType::PinholeClose, pinhole);
    }
    let reopen_last = b.open(3, None, t, 60);
    assert_refused(
        b.send(reopen_last),
        MsgType::PinholeOpen,
        ErrorCode::BAD_STATE,
    );
    let reopen_oldest = b.open(1, None, t, 60);
    assert_ok(b.send(reopen_oldest), MsgType::PinholeOpen, 1);
}

/// KW-FW-008: a pinhole belongs to the server that opened it; the same
/// identifier of another server it obeys is another pinhole.
#[test]
fn kw_fw_008_pinholes_belong_to_their_server() {
    let deployment = Plan {
        domains: vec!["a.example".into()],
        devices: 0,
        hub: false,
        ..Plan::default()
    }
    .provision();
    let kit = &deployment.domains[0];
    let second = Identity::generate(
        Principal::new("sc2@a.example").unwrap(),
        &mut SeededEntropy::from_label("second server"),
    );
    let cert = kit.ca.issue(&keyway::crypto::CertProfile {
        serial: 77,
        subject: second.account.clone(),
        role: keyway::wire::Role::Server,
        sig_key: second.signing.public(),
        kx_key: second.kx.public(),
        not_before: T0 / 1000 - 10,
        not_after: T0 / 1000 + 3600,
    });
    let mut config = kit.agent.clone();
    config.servers.insert(second.account.clone(), cert);
    let mut b = bench();
    b.agent = FirewallAgent::new(config, MemoryFirewall::new(8));
    let t = b.secs();
    let open = b.open(1, None, t, 60);
    assert_ok(b.send(open), MsgType::PinholeOpen, 1);
    let first_server = b.server.clone();
    b.server = second;
    let narrow = b.narrow(1, addr("198.51.100.2:20000"), t);
    assert_refused(
        b.send(narrow),
        MsgType::PinholeNarrow,
        ErrorCode::UNKNOWN_PINHOLE,
    );
    let close = b.close(1, t);
    assert_ok(b.send(close), MsgType::PinholeClose, 1);
    assert_eq!(
        b.pinholes().len(),
        1,
        "another server's close closes nothing"
    );
    b.server = first_server;
    let close = b.close(1, t);
    assert_ok(b.send(close), MsgType::PinholeClose, 1);
    assert!(b.pinholes().is_empty());
}

/// KW-FW-004: the agent closes a pinhole at the end of its lifetime by
/// itself, whatever its server does, and says so.
#[test]
fn kw_fw_004_the_agent_closes_pinholes_at_the_end_of_their_lifetime() {
    let mut b = bench();
    let t = b.secs();
    let open = b.open(1, None, t, 5);
    assert_ok(b.send(open), MsgType::PinholeOpen, 1);
    let deadline = b.agent.poll_timeout().unwrap();
    assert!(deadline <= (t + 5) * 1000);
    b.now = Now::at(deadline);
    b.agent.handle_timeout(b.now, &mut b.rng);
    let events: Vec<FirewallEvent> = std::iter::from_fn(|| b.agent.poll_output())
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FirewallEvent::Expired { pinhole: 1, .. }))
    );
    assert!(b.pinholes().is_empty() && b.agent.is_empty());
}

// ------------------------------------------------------------ with servers

const CALLER: &str = "u1@a.example";
const CALLEE: &str = "u1@b.example";
const A: &str = "sc@a.example";

fn lab() -> Lab {
    let mut lab = Lab::new(LabOptions {
        devices: 1,
        ..LabOptions::default()
    });
    lab.register_all();
    lab
}

fn sent_by(from: &'static str, f: impl Fn(&Message) -> bool) -> impl Fn(&Step) -> bool {
    move |s| matches!(s, Step::Sent { from: x, message, .. } if x == from && f(message))
}

/// KW-SM-026: the caller's server forwards the offer only once its
/// firewall has opened the caller's pinhole, and relays the answer only
/// once it has narrowed it; the callee's server relays the answer only
/// once its firewall has opened the callee's.
#[test]
fn kw_sm_026_offer_and_answer_wait_for_their_pinholes() {
    let mut lab = lab();
    let mark = lab.trace.len();
    let session = lab.call(CALLER, CALLEE);
    let ok_to = |server: &'static str, re: MsgType| move |s: &Step| matches!(s, Step::Sent { from, message: Message::Ok(ok), .. } if from.starts_with("fw@") && ok.re == re && from.ends_with(&server[3..]));
    lab.assert_in_order(
        mark,
        "KW-SM-026, offer",
        &[
            ("caller's pinhole opened", &ok_to(A, MsgType::PinholeOpen)),
            (
                "offer forwarded",
                &sent_by(
                    A,
                    |m| matches!(m, Message::Offer(o) if o.session == session),
                ),
            ),
        ],
    );
    lab.assert_in_order(
        mark,
        "KW-SM-026, answer",
        &[
            (
                "callee's pinhole opened",
                &ok_to("sc@b.example", MsgType::PinholeOpen),
            ),
            (
                "answer relayed by the callee's server",
                &sent_by("sc@b.example", |m| matches!(m, Message::Answer(_))),
            ),
            (
                "caller's pinhole narrowed",
                &ok_to(A, MsgType::PinholeNarrow),
            ),
            (
                "answer relayed",
                &sent_by(A, |m| matches!(m, Message::Answer(_))),
            ),
        ],
    );
}

/// The caller calls while domain `d`'s firewall no longer obeys its
/// server: the lab after it, the trace mark before the call, and the
/// session and code of the call's failure.
fn call_past_a_disobeying_firewall(d: usize) -> (Lab, usize, (SessionId, ErrorCode)) {
    let mut lab = lab();
    let mut config = lab.deployment.domains[d].agent.clone();
    config.servers.clear();
    lab.agents[d].agent = FirewallAgent::new(config, TracingFirewall::new(1000));
    let mark = lab.trace.len();
    lab.command(
        CALLER,
        DeviceCommand::Call(keyway::testkit::principal(CALLEE)),
    );
    lab.settle();
    let failed = lab
        .device_events(CALLER)
        .iter()
        .find_map(|e| match e {
            DeviceEvent::CallFailed(s, code) => Some((*s, *code)),
            _ => None,
        })
        .expect("the call failed");
    (lab, mark, failed)
}

/// KW-SM-026: a firewall that refuses the caller's pinhole fails the
/// offer with `firewall-failure`; nothing is forwarded, the session
/// ends, no pinhole is left.
#[test]
fn kw_sm_026_a_refused_pinhole_fails_the_offer() {
    let (lab, mark, session) = call_past_a_disobeying_firewall(0);
    assert_eq!(session.1, ErrorCode::FIREWALL_FAILURE);
    assert!(lab.session_ended(0, session.0, SessionEnd::Failed));
    assert!(lab.server_events(A).iter().any(
        |e| matches!(e, ServerEvent::FirewallFailed { code, .. } if *code == ErrorCode::FORBIDDEN)
    ));
    assert!(
        lab.find(mark, sent_by(A, |m| matches!(m, Message::Offer(_))))
            .is_none()
    );
    assert!(lab.firewall(0).is_empty());
}

/// KW-SM-026 on the answer: the callee's firewall refuses the pinholes the
/// answer needs; the callee's server does not relay the answer but fails
/// the offer with `firewall-failure` and ends the session, and the caller's
/// call fails.
#[test]
fn kw_sm_026_a_refused_pinhole_fails_the_answer() {
    let (lab, mark, (session, code)) = call_past_a_disobeying_firewall(1);
    assert_eq!(code, ErrorCode::FIREWALL_FAILURE);
    assert!(lab.session_ended(1, session, SessionEnd::Failed));
    // The callee answered; its server relayed no answer.
    assert!(
        lab.find(mark, sent_by(CALLEE, |m| matches!(m, Message::Answer(_))))
            .is_some()
    );
    assert!(
        lab.find(
            mark,
            sent_by("sc@b.example", |m| matches!(m, Message::Answer(_)))
        )
        .is_none()
    );
}

/// A session that ends while its offer, or its answer, waits for the
/// firewall — the caller hangs up — leaves no transaction in progress: a
/// retransmission of the offer is then refused (the session ended), not
/// ignored as still being carried out.
#[test]
fn a_session_ended_while_waiting_for_the_firewall_leaves_nothing_in_progress() {
    for waits_on_answer in [false, true] {
        let mut lab = lab();
        lab.drop_if = Some(Box::new(move |m| match waits_on_answer {
            false => matches!(m, Message::PinholeOpen(_)),
            true => matches!(m, Message::PinholeNarrow(_)),
        }));
        let mark = lab.trace.len();
        lab.command(
            CALLER,
            DeviceCommand::Call(keyway::testkit::principal(CALLEE)),
        );
        lab.settle();
        // The caller's offer, which sc@a is still carrying out (its answer
        // is the offer's response, under the same txn).
        let offer = lab
            .find(mark, sent_by(CALLER, |m| matches!(m, Message::Offer(_))))
            .map(|i| match &lab.trace[i] {
                Step::Sent { message, .. } => message.clone(),
                _ => unreachable!(),
            })
            .unwrap();
        let from = lab.devices[lab.dev(CALLER)].contact;
        if waits_on_answer {
            assert!(
                lab.find(mark, sent_by(CALLEE, |m| matches!(m, Message::Answer(_))))
                    .is_some()
            );
        }
        let session = lab.device(CALLER).sessions()[0];
        lab.command(CALLER, DeviceCommand::HangUp(session));
        lab.settle();
        assert!(lab.server(0).session_ids().is_empty(), "{waits_on_answer}");
        let mark = lab.trace.len();
        lab.inject(lab.servers[0].addr, from, &offer.encode());
        assert!(
            lab.find(mark, sent_by(A, |m| matches!(m, Message::Error(_))))
                .is_some(),
            "{waits_on_answer}: the retransmission is answered"
        );
    }
}

/// KW-SM-026: a firewall that does not answer fails the offer after
/// the give-up time; nothing is forwarded and no session is left.
#[test]
fn kw_sm_026_an_unanswering_firewall_fails_the_offer() {
    let mut lab = lab();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::PinholeOpen(_))));
    let mark = lab.trace.len();
    lab.command(
        CALLER,
        DeviceCommand::Call(keyway::testkit::principal(CALLEE)),
    );
    lab.advance(40_000);
    assert!(
        lab.find(
            mark,
            sent_by(
                A,
                |m| matches!(m, Message::Error(e) if e.code == ErrorCode::FIREWALL_FAILURE)
            )
        )
        .is_some()
    );
    assert!(
        lab.find(mark, sent_by(A, |m| matches!(m, Message::Offer(_))))
            .is_none()
    );
    assert!(lab.server(0).session_ids().is_empty());
    assert!(lab.device(CALLER).sessions().is_empty());
}

/// KW-SM-027: when the caller's `ack` never passes, the servers end
/// the session 64 s after relaying the answer and close its pinholes;
/// the callee gives up waiting for the `ack` before then.
#[test]
fn kw_sm_027_an_unacknowledged_answer_ends_the_session() {
    let mut lab = lab();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Ack(_))));
    let session = lab.call(CALLER, CALLEE);
    assert!(!lab.firewall(0).is_empty() && !lab.firewall(1).is_empty());
    lab.advance(40_000);
    assert!(
        lab.device_events(CALLEE)
            .contains(&DeviceEvent::CallFailed(session, ErrorCode::TIMEOUT))
    );
    assert!(!lab.session_ended(0, session, SessionEnd::Unacknowledged));
    lab.advance(30_000);
    for server in [0, 1] {
        assert!(lab.session_ended(server, session, SessionEnd::Unacknowledged));
    }
    assert!(lab.firewall(0).is_empty() && lab.firewall(1).is_empty());
}

/// The driver contract (`Party::handle_timeout`: waking a party early does
/// no harm): a callee woken before its deadline while it waits for the
/// caller's `ack` keeps the call, which fails only at the deadline
/// (KW-SM-027).
#[test]
fn a_callee_woken_early_keeps_its_answered_call() {
    let mut lab = lab();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Ack(_))));
    let session = lab.call(CALLER, CALLEE);
    let i = lab.dev(CALLEE);
    let early = lab.clock().later(1_000);
    let d = &mut lab.devices[i];
    d.device.handle_timeout(early, &mut d.rng);
    assert_eq!(
        lab.device(CALLEE).call_state(&session),
        Some(keyway::core::CallState::Answered)
    );
}

/// KW-SM-027: only the caller's `ack` sets the session up. An `ack`
/// the callee signs for its own call — a party to the session, so its
/// signature passes — is carried on, but the servers still wait for the
/// caller's, and end the session unacknowledged without it.
#[test]
fn kw_sm_027_only_the_callers_ack_sets_the_session_up() {
    let mut lab = lab();
    // Every ack of the caller is lost.
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::Ack(a) if a.from.as_str() == CALLER),
    ));
    let session = lab.call(CALLER, CALLEE);
    let callee = &lab.devices[lab.dev(CALLEE)];
    let mut ack = Message::Ack(keyway::wire::Ack {
        txn: TxnId([0xac; 8]),
        from: keyway::testkit::principal(CALLEE),
        to: keyway::testkit::principal(CALLER),
        session,
        hops: keyway::wire::Hops::new(8).unwrap(),
        via: None,
        sig: unsigned(),
        ext: Extensions::default(),
    });
    sign_message(&mut ack, &callee.identity.signing).unwrap();
    let (contact, server) = (callee.contact, lab.servers[1].addr);
    let mark = lab.trace.len();
    lab.inject(server, contact, &ack.encode());
    lab.settle();
    assert!(lab.refusals(mark, "sc@b.example").is_empty(), "carried on");
    lab.advance(70_000);
    for server in [0, 1] {
        assert!(lab.session_ended(server, session, SessionEnd::Unacknowledged));
    }
}

/// KW-FW-002, KW-SM-026: a server relays an answer only once every
/// firewall request it made for it — the caller's pinhole narrowed, the
/// callee's opened — is acknowledged. With the `pinhole-open` lost, the
/// narrowing acknowledged is not enough: the answer waits, and goes on
/// when the retransmitted request is acknowledged.
#[test]
fn kw_fw_002_an_answer_waits_for_every_pinhole() {
    let mut lab = Lab::new(LabOptions {
        domains: vec!["a.example"],
        devices: 2,
        hub: false,
        ..LabOptions::default()
    });
    lab.register_all();
    // The offer's pinhole-open passes; the answer's is lost once.
    let mut opens = 0;
    lab.drop_if = Some(Box::new(move |m| {
        if matches!(m, Message::PinholeOpen(_)) {
            opens += 1;
            return opens == 2;
        }
        false
    }));
    let mark = lab.trace.len();
    lab.command(
        CALLER,
        DeviceCommand::Call(keyway::testkit::principal("u2@a.example")),
    );
    lab.settle();
    let answered = lab.find(
        mark,
        sent_by("u2@a.example", |m| matches!(m, Message::Answer(_))),
    );
    let narrowed = lab.find(mark, sent_by(A, |m| matches!(m, Message::PinholeNarrow(_))));
    assert!(answered.is_some() && narrowed.is_some());
    assert!(
        lab.find(
            narrowed.unwrap(),
            sent_by("fw@a.example", |m| matches!(m, Message::Ok(_)))
        )
        .is_some(),
        "the narrowing is acknowledged"
    );
    let relayed = |lab: &Lab| lab.find(mark, sent_by(A, |m| matches!(m, Message::Answer(_))));
    assert!(relayed(&lab).is_none(), "the answer waits");
    lab.advance(2_000);
    assert!(relayed(&lab).is_some());
}
