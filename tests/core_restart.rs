//! Durability (KW-SM-024, KW-SM-025): a party's store writes are committed
//! before anything that acknowledges them, a failed commit restarts the
//! party from its store, and a server restarted from its store at any
//! point of a call behaves as if it had not restarted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use keyway::core::{
    DeviceCommand, DeviceEvent, Firewall, ServerEvent, SessionEnd, Store, StoreWrite,
};
use keyway::testkit::{Crash, Lab, LabOptions, Node, Step, principal};
use keyway::wire::{Message, MsgType, SessionId};

const CALLER: &str = "u1@a.example";
const CALLEE: &str = "u1@b.example";

/// What a call came to, as its parties saw it and as the deployment was
/// left: what must be the same whether or not a server restarted.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Each device: registered, established, ended, failed.
    devices: Vec<(bool, bool, bool, bool)>,
    /// Frames each device received: (device, epoch, seq).
    media: BTreeSet<(usize, u64, u64)>,
    /// Texts each device received.
    texts: BTreeSet<(usize, String)>,
    /// Frames the recorder recorded: (epoch, seq, data).
    recorded: BTreeSet<(u64, u64, Vec<u8>)>,
    /// Registrations and revocations the caller's server holds at the
    /// end, and the sessions it follows.
    registrations: BTreeSet<String>,
    sessions: usize,
    /// Pinholes left anywhere.
    pinholes: usize,
}

fn outcome(lab: &Lab, session: Option<SessionId>) -> Outcome {
    let mut devices = Vec::new();
    let mut media = BTreeSet::new();
    let mut texts = BTreeSet::new();
    for (i, account) in [CALLER, CALLEE].into_iter().enumerate() {
        let events = lab.device_events(account);
        let has = |f: &dyn Fn(&DeviceEvent) -> bool| events.iter().any(f);
        devices.push((
            has(&|e| matches!(e, DeviceEvent::Registered { .. })),
            has(&|e| matches!(e, DeviceEvent::CallEstablished(s, _) if Some(*s) == session)),
            has(&|e| matches!(e, DeviceEvent::CallEnded(s) if Some(*s) == session)),
            has(&|e| {
                matches!(
                    e,
                    DeviceEvent::CallFailed(..) | DeviceEvent::TamperDetected(..)
                )
            }),
        ));
        for e in &events {
            match e {
                DeviceEvent::MediaReceived { epoch, seq, .. } => {
                    media.insert((i, *epoch, *seq));
                }
                DeviceEvent::InfoReceived(_, text) => {
                    texts.insert((i, text.clone()));
                }
                _ => {}
            }
        }
    }
    let recorded = lab.recorders[0]
        .recorder
        .recordings()
        .flat_map(|r| r.packets.iter().map(|p| (p.epoch, p.seq, p.data.clone())))
        .collect();
    let snapshot = lab.servers[0].store.load().unwrap();
    Outcome {
        devices,
        media,
        texts,
        recorded,
        registrations: snapshot
            .registrations
            .values()
            .map(|r| format!("{} {}", r.account, r.cert.tbs.serial))
            .collect(),
        sessions: lab.server(0).session_ids().len(),
        pinholes: lab.firewall(0).len() + lab.firewall(1).len(),
    }
}

fn lab() -> Lab {
    Lab::new(LabOptions {
        devices: 1,
        record: true,
        ..LabOptions::default()
    })
}

/// A whole call, each step given time for retransmissions: registration
/// of both (F1), a call across domains through the hub (F4, F6, F7),
/// media both ways, text, a rekey, media under the new key, hang-up.
fn call(lab: &mut Lab) -> Option<SessionId> {
    lab.command(CALLER, DeviceCommand::Register);
    lab.command(CALLEE, DeviceCommand::Register);
    lab.advance(40_000);
    if lab
        .try_command(CALLER, DeviceCommand::Call(principal(CALLEE)))
        .is_err()
    {
        return None;
    }
    let session = lab.device(CALLER).sessions().first().copied();
    lab.advance(40_000);
    let session = session?;
    for round in 0..2u8 {
        for who in [CALLER, CALLEE] {
            let frame = format!("{who} {round}").into_bytes();
            let _ = lab.try_command(who, DeviceCommand::Media(session, frame));
            lab.advance(100);
        }
        let _ = lab.try_command(
            CALLEE,
            DeviceCommand::Info(session, format!("text {round}")),
        );
        lab.advance(40_000);
        if round == 0 {
            let _ = lab.try_command(CALLER, DeviceCommand::Rekey(session, false));
            lab.advance(40_000);
        }
    }
    let _ = lab.try_command(CALLER, DeviceCommand::HangUp(session));
    lab.advance(70_000);
    Some(session)
}

/// KW-SM-025: each server of the call — the caller's, the callee's, the
/// hub — is restarted from its store after each of its inputs in turn,
/// once with that input's outputs carried out, once with them lost
/// (committed, then the crash); each time the call comes to the same as
/// without a restart: both devices registered, the call set up, every
/// frame and text delivered and recorded, the call ended at both, no
/// pinhole left, the same registrations held.
#[test]
fn kw_sm_025_a_server_restarted_at_every_point_of_a_call_behaves_as_if_it_had_not() {
    let mut baseline = lab();
    let session = call(&mut baseline);
    let expected = outcome(&baseline, session);
    assert_eq!(expected.devices, vec![(true, true, true, false); 2]);
    // Two frames each way; the caller's server records what reaches its
    // party: the callee's two.
    assert_eq!(expected.media.len(), 4);
    assert_eq!(expected.texts.len(), 2);
    assert_eq!(expected.recorded.len(), 2);
    assert_eq!((expected.sessions, expected.pinholes), (0, 0));
    for server in 0..baseline.servers.len() {
        let inputs = baseline.inputs[&Node::Server(server)];
        assert!(inputs > 20, "server {server}: {inputs} inputs");
        let mut restarts = 0;
        for at in 1..=inputs {
            for lose_outputs in [false, true] {
                let mut lab = lab();
                lab.crash = Some(Crash {
                    server,
                    at,
                    lose_outputs,
                });
                let session = call(&mut lab);
                let restarted = lab
                    .trace
                    .iter()
                    .any(|s| matches!(s, Step::Restarted { .. }));
                // Retransmissions may make a run take fewer inputs than
                // the baseline's; a crash staged after the last is not.
                if !restarted {
                    continue;
                }
                restarts += 1;
                assert_eq!(
                    outcome(&lab, session),
                    expected,
                    "server {server}, crash after input {at} of {inputs}, outputs lost: \
                     {lose_outputs}"
                );
            }
        }
        assert!(
            restarts >= inputs,
            "server {server}: {restarts} restarts of {inputs}"
        );
    }
}

/// KW-SM-024: a store that fails a commit acknowledges nothing: the
/// register whose registration could not be stored is not answered, and
/// the server, restarted from its store, holds no registration; once the
/// store works again, the device's retransmission registers it.
#[test]
fn kw_sm_024_nothing_is_acknowledged_that_was_not_committed() {
    let mut lab = lab();
    // The challenge writes nothing; the next commit, the registration's,
    // fails.
    lab.servers[0].store.fail_after = Some(0);
    let before = lab.trace.len();
    lab.command(CALLER, DeviceCommand::Register);
    lab.settle();
    let after: Vec<&Step> = lab.trace[before..].iter().collect();
    assert!(
        !after.iter().any(|s| matches!(
            s,
            Step::Sent {
                message: Message::RegisterOk(_),
                ..
            }
        )),
        "nothing acknowledged"
    );
    assert!(
        after
            .iter()
            .any(|s| matches!(s, Step::Restarted { node } if node == "sc@a.example"))
    );
    assert!(
        lab.servers[0]
            .store
            .load()
            .unwrap()
            .registrations
            .is_empty()
    );
    assert!(lab.server(0).registration(&principal(CALLER)).is_none());
    lab.servers[0].store.fail_after = None;
    lab.advance(40_000);
    assert!(lab.server(0).registration(&principal(CALLER)).is_some());
    assert!(
        lab.device_events(CALLER)
            .iter()
            .any(|e| matches!(e, DeviceEvent::Registered { .. }))
    );
}

/// KW-SM-017, KW-SM-025: a session that ended is remembered across a
/// restart: its offer, replayed to the restarted server, is refused and
/// reopens no pinhole.
#[test]
fn kw_sm_017_a_replayed_offer_is_refused_after_a_restart() {
    let mut lab = lab();
    lab.command(CALLER, DeviceCommand::Register);
    lab.command(CALLEE, DeviceCommand::Register);
    lab.advance(1_000);
    let session = lab.call(CALLER, CALLEE);
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == CALLER => Some(o),
            _ => None,
        })
        .unwrap();
    lab.command(CALLER, DeviceCommand::HangUp(session));
    lab.settle();
    assert!(lab.session_ended(0, session, SessionEnd::Bye));
    lab.restart_server(0);
    lab.settle();
    let mark = lab.trace.len();
    let server = lab.servers[0].addr;
    let from = lab.devices[0].contact;
    lab.inject(server, from, &Message::Offer(offer).encode());
    lab.settle();
    assert!(lab.find(mark, |s| matches!(s, Step::Sent { message: Message::Error(e), .. } if e.re == Some(MsgType::Offer))).is_some());
    assert!(lab.firewall(0).is_empty());
    assert!(lab.server(0).session_ids().is_empty());
}

/// KW-SM-012, KW-SM-025: the public address of a party's media address is
/// kept across a restart.
#[test]
fn kw_sm_012_public_addresses_survive_a_restart() {
    let mut lab = lab();
    lab.register_all();
    let media = lab.devices[lab.dev(CALLER)].media;
    let session = lab.call(CALLER, CALLEE);
    let public = lab.server(0).public_address(&media).unwrap();
    lab.command(CALLER, DeviceCommand::HangUp(session));
    lab.settle();
    lab.restart_server(0);
    lab.settle();
    assert_eq!(lab.server(0).public_address(&media), Some(public));
    let again = lab.call(CALLER, CALLEE);
    let offer = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if o.session == again && from == "sc@a.example" => Some(o),
            _ => None,
        })
        .unwrap();
    assert!(offer.body.edits.is_some());
    assert!(
        lab.firewall(0)
            .pinholes()
            .iter()
            .any(|p| p.public == Some(public))
    );
}

/// KW-SM-025: revocations and ended sessions are forgotten once they no
/// longer matter, in the store as in memory, so that the store does not
/// grow for ever.
#[test]
fn kw_sm_025_the_store_forgets_what_stopped_mattering() {
    let mut lab = Lab::new(LabOptions {
        devices: 1,
        server_policy: keyway::core::ServerPolicy {
            session_secs: 120,
            min_expires: 60,
            ..keyway::core::ServerPolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    // A refresh revokes the first certificate.
    lab.command(CALLER, DeviceCommand::Register);
    lab.settle();
    let session = lab.call(CALLER, CALLEE);
    lab.command(CALLER, DeviceCommand::HangUp(session));
    lab.settle();
    let held = lab.servers[0].store.load().unwrap();
    assert_eq!(held.revoked.len(), 1);
    assert!(held.ended.contains_key(&session));
    // Past the session's term and the revoked certificate's end.
    lab.advance(3_700_000);
    let held = lab.servers[0].store.load().unwrap();
    assert!(held.revoked.is_empty(), "{:?}", held.revoked);
    assert!(held.ended.is_empty());
    assert!(lab.trace.iter().any(|s| matches!(
        s,
        Step::Stored {
            write: StoreWrite::Prune { .. },
            ..
        }
    )));
}

/// KW-REC-005, KW-SM-025: a recorder restarted from its store keeps its
/// recordings and goes on recording a session its server restarted with.
#[test]
fn kw_rec_005_recordings_survive_a_restart() {
    let mut lab = lab();
    lab.register_all();
    let session = lab.call(CALLER, CALLEE);
    // The callee's media reaches the caller through the caller's
    // firewall, which copies it to the caller's server's recorder.
    lab.command(CALLEE, DeviceCommand::Media(session, b"one".to_vec()));
    lab.settle();
    lab.restart_recorder(0);
    lab.restart_server(0);
    lab.settle();
    lab.command(CALLEE, DeviceCommand::Media(session, b"two".to_vec()));
    lab.settle();
    let frames: Vec<Vec<u8>> = lab.recorders[0]
        .recorder
        .recordings()
        .flat_map(|r| r.packets.iter().map(|p| p.data.clone()))
        .collect();
    assert_eq!(frames, vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(
        lab.server_events("sc@a.example")
            .iter()
            .any(|e| matches!(e, ServerEvent::Restored { sessions: 1, .. }))
    );
}

/// KW-SM-025: a server restarted while its offer waits for the firewall
/// (KW-SM-026) ignores the caller's retransmissions of it, as before the
/// restart, and forwards it once the firewall answers; the call is set up.
#[test]
fn kw_sm_025_an_offer_waiting_for_the_firewall_survives_a_restart() {
    let mut lab = lab();
    lab.command(CALLER, DeviceCommand::Register);
    lab.command(CALLEE, DeviceCommand::Register);
    lab.advance(1_000);
    // The firewall hears nothing for a while.
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::PinholeOpen(_))));
    lab.command(CALLER, DeviceCommand::Call(principal(CALLEE)));
    lab.settle();
    let session = lab.device(CALLER).sessions()[0];
    assert_eq!(lab.server(0).session_ids(), vec![session]);
    lab.restart_server(0);
    let mark = lab.trace.len();
    // The caller retransmits its offer: ignored while it is carried out.
    lab.advance(2_000);
    assert!(
        lab.find(mark, |s| matches!(s, Step::Sent { from, message: Message::Error(_), .. } if from == "sc@a.example"))
            .is_none()
    );
    assert!(
        lab.find(
            mark,
            |s| matches!(s, Step::Sent { from, message: Message::Offer(_), .. } if from == CALLER)
        )
        .is_some()
    );
    lab.drop_if = None;
    lab.advance(10_000);
    assert!(
        lab.device_events(CALLER)
            .contains(&DeviceEvent::CallEstablished(session, principal(CALLEE)))
    );
}

/// KW-SM-025, KW-FRAME-012: a server restarted after it relayed an answer
/// answers the offer's retransmission — the same `txn` from the same hop —
/// with that answer again, also once its transaction cache no longer holds
/// it; the offer under another `txn`, or from another address, gets no
/// answer but a refusal.
#[test]
fn kw_sm_025_a_restarted_server_answers_only_the_offers_retransmission() {
    let mut lab = lab();
    lab.register_all();
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Ack(_))));
    let session = lab.call(CALLER, CALLEE);
    let offer = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == CALLER && o.session == session => Some(o),
            _ => None,
        })
        .unwrap();
    lab.restart_server(0);
    lab.settle();
    let server = lab.servers[0].addr;
    let caller = lab.devices[lab.dev(CALLER)].contact;
    let elsewhere = "203.0.113.9:5060".parse().unwrap();
    // The restored transaction cache holds the answer too; 4,100 other
    // answered requests push it out, so that the session must answer.
    for n in 0u32..4100 {
        let mut txn = [0x51; 8];
        txn[..4].copy_from_slice(&n.to_be_bytes());
        let query = Message::CertQuery(keyway::wire::CertQuery {
            txn: keyway::wire::TxnId(txn),
            from: principal("u9@a.example"),
            hops: keyway::wire::UpTo::new(8).unwrap(),
            via: None,
            target: principal("u7@a.example"),
            ext: keyway::wire::Extensions::new(),
        });
        lab.inject(server, elsewhere, &query.encode());
    }
    lab.settle();
    let other_txn = keyway::wire::Offer {
        txn: keyway::wire::TxnId([0x0f; 8]),
        ..offer.clone()
    };
    for (from, sent, answered) in [
        (elsewhere, offer.clone(), false),
        (caller, other_txn, false),
        (caller, offer, true),
    ] {
        let mark = lab.trace.len();
        lab.inject(server, from, &Message::Offer(sent).encode());
        let answers: Vec<bool> = lab.trace[mark..]
            .iter()
            .filter_map(|s| match s {
                Step::Sent { to, message, .. } if *to == from => {
                    Some(matches!(message, Message::Answer(a) if a.session == session))
                }
                _ => None,
            })
            .collect();
        assert_eq!(answers, [answered], "{from}");
    }
    // The caller's ack never comes: the restored server still ends the
    // session unacknowledged (KW-SM-027), its deadline kept in the store.
    lab.advance(70_000);
    assert!(lab.session_ended(0, session, SessionEnd::Unacknowledged));
}
