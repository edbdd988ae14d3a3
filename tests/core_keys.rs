//! Session keys and lifetimes at the state machines, with the lab acting
//! as a party where a test needs what only that party could sign: the
//! answer's key (KW-CRYPTO-040), the certificate bound to a session past
//! its term (KW-SM-020), calls whose peer is gone (KW-SM-023), and state
//! a refused message must not change (KW-ERR-004).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use keyway::core::{
    CallState, DeviceCommand, DeviceEvent, DevicePolicy, Millis, ProtocolError, ServerEvent,
    ServerPolicy, SessionEnd,
};
use keyway::crypto::{
    DirectionKeys, KeyCache, RecipientSpec, SealContext, Secret32, SeededEntropy, open, seal,
};
use keyway::testkit::{Faults, Lab, LabOptions, Step, principal};
use keyway::wire::{
    Answer, Bytes, ErrorCode, Info, Message, MsgType, Offer, Permission, RecipientKind, SessionId,
    SessionUpdate, Text, encode_plaintext, examples,
};

const CALLER: &str = "u1@a.example";
const CALLEE: &str = "u1@b.example";

/// The offer as the callee received it, and the key its entry gives.
fn delivered_offer(lab: &Lab, session: SessionId) -> (Offer, Secret32) {
    let offer = lab
        .sent()
        .into_iter()
        .rev()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == "sc@b.example" && o.session == session => Some(o),
            _ => None,
        })
        .expect("the offer reached the callee");
    let callee = &lab.devices[lab.dev(CALLEE)].identity;
    let opened = open(&offer.body, &session, callee, &mut KeyCache::new(4)).unwrap();
    (offer, opened.cek)
}

/// An answer as the callee would send it, sealed under `key` for the
/// caller, with the offer's `txn` as the caller sent it.
fn answer_as_callee(lab: &Lab, session: SessionId, key: &Secret32) -> Message {
    let txn = lab
        .sent()
        .into_iter()
        .find_map(|(from, _, m)| match m {
            Message::Offer(o) if from == CALLER && o.session == session => Some(o.txn),
            _ => None,
        })
        .unwrap();
    let callee = &lab.devices[lab.dev(CALLEE)].identity;
    let caller_cert = lab.device(CALLER).certificate().unwrap().clone();
    let spec = RecipientSpec {
        id: principal(CALLER),
        kx_key: caller_cert.tbs.kx_key,
        kind: RecipientKind::Destination,
        perm: Permission::Read,
        anonymous: false,
    };
    let caller = principal(CALLER);
    let (body, _) = seal(
        SealContext {
            session: &session,
            cid: 0,
            re: MsgType::Answer,
            to: Some(&caller),
        },
        callee,
        &[spec],
        &encode_plaintext(&examples::session_desc()),
        Some(key),
        &mut KeyCache::new(4),
        &mut SeededEntropy::from_label("forged answer"),
    )
    .unwrap();
    Message::Answer(Answer {
        txn,
        from: principal(CALLEE),
        to: principal(CALLER),
        session,
        cert: lab.device(CALLEE).certificate().cloned(),
        body,
        ext: Default::default(),
    })
}

/// Places a call whose answers are lost, and returns its session.
fn call_unanswered(lab: &mut Lab) -> SessionId {
    lab.drop_if = Some(Box::new(|m| matches!(m, Message::Answer(_))));
    let before = lab.device(CALLER).sessions();
    lab.command(CALLER, DeviceCommand::Call(principal(CALLEE)));
    lab.settle();
    lab.drop_if = None;
    lab.device(CALLER)
        .sessions()
        .into_iter()
        .find(|s| !before.contains(s))
        .unwrap()
}

/// KW-CRYPTO-040, claim 19: when the caller let no server modify its
/// offer, an answer under another key than the offer's is refused, even
/// signed by the callee; under the offer's key the same answer is taken.
#[test]
fn kw_crypto_040_an_answer_under_another_key_needs_an_editor() {
    let mut lab = Lab::new(LabOptions {
        device_policy: DevicePolicy {
            own_server: Some(Permission::Read),
            ..DevicePolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    let server = lab.servers[0].addr;
    let caller = lab.devices[lab.dev(CALLER)].contact;

    let first = call_unanswered(&mut lab);
    let other = Secret32::new([0x77; 32]);
    let mark = lab.trace.len();
    lab.inject(
        caller,
        server,
        &answer_as_callee(&lab, first, &other).encode(),
    );
    assert_eq!(
        lab.refusals(mark, CALLER),
        [ProtocolError::BadResponse {
            re: MsgType::Answer,
            code: ErrorCode::DECRYPT_FAILED
        }]
    );
    assert_eq!(lab.device(CALLER).call_state(&first), None);

    let second = call_unanswered(&mut lab);
    let (_, key) = delivered_offer(&lab, second);
    let mark = lab.trace.len();
    lab.inject(
        caller,
        server,
        &answer_as_callee(&lab, second, &key).encode(),
    );
    assert!(lab.refusals(mark, CALLER).is_empty());
    assert_eq!(
        lab.device(CALLER).call_state(&second),
        Some(CallState::Established)
    );
}

/// KW-SM-020 at both ends: a call outlives the caller's certificate (its
/// term passes; a refresh replaced it long before); the callee and both
/// servers still take the caller's body-form rekey, checked with the
/// certificate confirmed when the call was set up.
#[test]
fn kw_sm_020_a_call_outlives_the_certificate_it_was_set_up_with() {
    let mut lab = Lab::new(LabOptions {
        server_policy: ServerPolicy {
            session_secs: 7200,
            ..ServerPolicy::default()
        },
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call(CALLER, CALLEE);
    let bound = lab.device(CALLER).certificate().unwrap().clone();
    // Past the bound certificate's last second.
    let past: Millis = (bound.tbs.not_after.0 + 60) * 1000 - lab.now;
    lab.advance(past);
    assert!(lab.now / 1000 > bound.tbs.not_after.0);
    assert_ne!(
        lab.device(CALLER).certificate().unwrap().tbs.serial,
        bound.tbs.serial
    );
    assert_eq!(
        lab.device(CALLEE).call_state(&session),
        Some(CallState::Established)
    );
    let mark = lab.trace.len();
    lab.command(CALLER, DeviceCommand::Rekey(session, true));
    lab.settle();
    assert!(lab.refusals(mark, CALLEE).is_empty());
    assert!(lab.find(mark, |s| matches!(s, Step::Device { device, event: DeviceEvent::Rekeyed { sending: false, .. } } if device == CALLEE)).is_some());
    for server in ["sc@a.example", "sc@b.example"] {
        assert!(
            lab.find(mark, |s| matches!(s, Step::Server { server: n, event: ServerEvent::Rekeyed { from, .. } } if n == server && *from == principal(CALLER))).is_some(),
            "{server} follows"
        );
    }
}

/// KW-SM-023: a callee that cannot be reached any more — its request
/// times out — and one that has de-registered — its server answers
/// `not-registered` — end the call at the caller's next request.
#[test]
fn kw_sm_023_unreachable_and_unregistered_peers_end_the_call() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call(CALLER, CALLEE);
    let last_hop = principal("sc@b.example");
    lab.drop_if = Some(Box::new(
        move |m| matches!(m, Message::Info(i) if i.via.as_ref().is_some_and(|v| v.contains(&last_hop))),
    ));
    lab.command(CALLER, DeviceCommand::Info(session, "anyone?".into()));
    lab.advance(40_000);
    lab.drop_if = None;
    assert!(
        lab.device_events(CALLER)
            .contains(&DeviceEvent::CallFailed(session, ErrorCode::TIMEOUT))
    );

    let session = lab.call("u2@a.example", "u2@b.example");
    lab.command("u2@b.example", DeviceCommand::Deregister);
    lab.settle();
    lab.command(
        "u2@a.example",
        DeviceCommand::Info(session, "anyone?".into()),
    );
    lab.settle();
    assert!(
        lab.device_events("u2@a.example")
            .contains(&DeviceEvent::CallFailed(session, ErrorCode::NOT_REGISTERED))
    );
    assert_eq!(lab.device("u2@a.example").call_state(&session), None);
}

/// KW-SM-020, KW-CRYPTO-050: once a call is set up, each device holds the
/// peer's certificate it confirmed, and the callee the key-encryption key
/// of the offer it accepted.
#[test]
fn kw_sm_020_a_call_binds_each_peers_certificate() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    assert_eq!(lab.device(CALLEE).cached_keys(), 0);
    let session = lab.call(CALLER, CALLEE);
    let subject = |lab: &Lab, who: &str| {
        lab.device(who)
            .peer_certificate(&session)
            .map(|c| c.tbs.subject.clone())
    };
    assert_eq!(subject(&lab, CALLER), Some(principal(CALLEE)));
    assert_eq!(subject(&lab, CALLEE), Some(principal(CALLER)));
    assert!(lab.device(CALLEE).cached_keys() > 0);
    // The servers on the path keep the keys of what they read, too.
    assert!(
        lab.server(0).cached_keys() >= 2,
        "{}",
        lab.server(0).cached_keys()
    );
}

/// KW-SM-012: the caller's server holds a public address for the caller's
/// media address, other than it, while the call lasts.
#[test]
fn kw_sm_012_a_server_maps_its_callers_media_address() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let media = lab.devices[lab.dev(CALLER)].media;
    assert_eq!(lab.server(0).public_address(&media), None);
    lab.call(CALLER, CALLEE);
    let public = lab.server(0).public_address(&media);
    assert!(public.is_some_and(|p| p != media), "{public:?}");
}

/// KW-ERR-004 at a device: an offer that unwraps but fails verification
/// (a read-only server changed it) leaves no key in the device's cache.
#[test]
fn kw_err_004_a_refused_offer_leaves_the_callee_no_key() {
    let mut lab = Lab::new(LabOptions::default());
    lab.inject_faults(
        1,
        Faults {
            tamper_read_only: true,
            ..Faults::default()
        },
    );
    lab.register_all();
    assert_eq!(lab.device(CALLEE).cached_keys(), 0);
    lab.command(CALLER, DeviceCommand::Call(principal(CALLEE)));
    lab.settle();
    assert!(
        lab.device_events(CALLEE)
            .iter()
            .any(|e| matches!(e, DeviceEvent::TamperDetected(..)))
    );
    assert_eq!(lab.device(CALLEE).cached_keys(), 0);
}

/// KW-ERR-004, KW-KEY-005: an `info` that decrypts but is not a session
/// update is refused with `schema` and does not spend its sequence
/// number: a genuine `info` with that number is taken afterwards.
#[test]
fn kw_err_004_a_refused_info_spends_no_sequence_number() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call(CALLER, CALLEE);
    let (_, key) = delivered_offer(&lab, session);
    let callee = lab.devices[lab.dev(CALLEE)].contact;
    let server = lab.servers[1].addr;
    let signing = lab.devices[lab.dev(CALLER)].identity.signing.clone();
    let info = |keys: &mut DirectionKeys, plaintext: &[u8], txn: u8| {
        let sealed = keys.seal(MsgType::Info, plaintext).unwrap();
        let mut info = Message::Info(Info {
            txn: keyway::wire::TxnId([txn; 8]),
            from: principal(CALLER),
            to: principal(CALLEE),
            session,
            hops: keyway::wire::Hops::new(4).unwrap(),
            via: None,
            sig: keyway::crypto::unsigned(),
            epoch: sealed.epoch,
            seq: sealed.seq,
            payload: Bytes::new(sealed.payload).unwrap(),
            ext: Default::default(),
        });
        keyway::crypto::sign_message(&mut info, &signing).unwrap();
        info
    };
    let keys = || {
        DirectionKeys::new(
            session,
            principal(CALLER),
            principal(CALLEE),
            key.clone(),
            0,
        )
    };
    let mark = lab.trace.len();
    lab.inject(callee, server, &info(&mut keys(), b"\xff", 1).encode());
    assert_eq!(
        lab.refusals(mark, CALLEE),
        [ProtocolError::Refused {
            re: MsgType::Info,
            code: ErrorCode::SCHEMA
        }]
    );
    let update = SessionUpdate {
        text: Text::new("same seq, genuine".to_string()),
        desc: None,
        ext: Default::default(),
    };
    let genuine = info(&mut keys(), &encode_plaintext(&update), 2);
    let Message::Info(i) = &genuine else {
        unreachable!()
    };
    assert_eq!(i.seq, 0);
    let mark = lab.trace.len();
    lab.inject(callee, server, &genuine.encode());
    assert!(lab.refusals(mark, CALLEE).is_empty());
    assert!(
        lab.device_events(CALLEE)
            .contains(&DeviceEvent::InfoReceived(
                session,
                "same seq, genuine".into()
            ))
    );
}

/// KW-SM-005, KW-CRYPTO-044: a receiver holds a request under the epoch
/// right after its current one, whose `rekey` may still be on its way,
/// and no other: an `info` or a `bye` under an epoch two or more ahead is
/// refused at once with `stale-epoch` by the callee, and the callee's
/// server, which follows the session, does not hold it either; the call
/// goes on.
#[test]
fn kw_sm_005_only_the_next_epoch_is_held_for_its_rekey() {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call(CALLER, CALLEE);
    let (_, key) = delivered_offer(&lab, session);
    // From the hub, as the callee's server receives the caller's requests.
    let (server, hub) = (lab.servers[1].addr, lab.servers[2].addr);
    let signing = lab.devices[lab.dev(CALLER)].identity.signing.clone();
    let mut keys = DirectionKeys::new(session, principal(CALLER), principal(CALLEE), key, 0);
    for (txn, epoch, bye) in [(1u8, 2u64, false), (2, 9, false), (3, 2, true)] {
        let re = if bye { MsgType::Bye } else { MsgType::Info };
        let sealed = keys.seal(re, b"").unwrap();
        let (txn, from, to) = (
            keyway::wire::TxnId([txn; 8]),
            principal(CALLER),
            principal(CALLEE),
        );
        let (hops, sig, payload) = (
            keyway::wire::Hops::new(4).unwrap(),
            keyway::crypto::unsigned(),
            Bytes::new(sealed.payload).unwrap(),
        );
        let mut request = if bye {
            Message::Bye(keyway::wire::Bye {
                txn,
                from,
                to,
                session,
                hops,
                via: None,
                sig,
                epoch,
                seq: sealed.seq,
                payload,
                ext: Default::default(),
            })
        } else {
            Message::Info(Info {
                txn,
                from,
                to,
                session,
                hops,
                via: None,
                sig,
                epoch,
                seq: sealed.seq,
                payload,
                ext: Default::default(),
            })
        };
        keyway::crypto::sign_message(&mut request, &signing).unwrap();
        let mark = lab.trace.len();
        lab.inject(server, hub, &request.encode());
        lab.settle();
        assert_eq!(
            lab.refusals(mark, CALLEE),
            [ProtocolError::Refused {
                re,
                code: ErrorCode::STALE_EPOCH
            }],
            "{re:?} under epoch {epoch}"
        );
        assert!(
            lab.find(mark, |s| matches!(
                s,
                Step::Server { server, event: ServerEvent::Rejected(r, ErrorCode::STALE_EPOCH) }
                    if server == "sc@b.example" && *r == re
            ))
            .is_some(),
            "the server refuses to hold {re:?} under epoch {epoch}"
        );
        assert_eq!(
            lab.device(CALLEE).call_state(&session),
            Some(CallState::Established)
        );
    }
}

/// An established call whose caller rekeys and loses the `rekey` (its
/// retransmission comes later): the lab, and the session.
fn call_whose_rekey_is_lost() -> (Lab, SessionId) {
    let mut lab = Lab::new(LabOptions::default());
    lab.register_all();
    let session = lab.call(CALLER, CALLEE);
    let mut dropped = false;
    lab.drop_if = Some(Box::new(move |m| {
        let first_rekey = matches!(m, Message::Rekey(_)) && !dropped;
        dropped |= first_rekey;
        first_rekey
    }));
    lab.command(CALLER, DeviceCommand::Rekey(session, false));
    (lab, session)
}

/// KW-SM-005: a `bye` that overtakes its `rekey` is held and carried out
/// as soon as the rekey arrives — the caller sends it once, and the call
/// ends when the rekey lands, not at the bye's retransmission.
#[test]
fn kw_sm_005_a_bye_that_overtakes_its_rekey_ends_the_call_with_the_rekey() {
    let (mut lab, session) = call_whose_rekey_is_lost();
    lab.command(CALLER, DeviceCommand::HangUp(session));
    lab.settle();
    assert_eq!(
        lab.device(CALLEE).call_state(&session),
        Some(CallState::Established),
        "the bye is held"
    );
    let mark = lab.trace.len();
    lab.advance(10_000);
    assert_eq!(lab.device(CALLEE).call_state(&session), None);
    let event = |wanted: fn(&DeviceEvent) -> bool| {
        lab.find(
            mark,
            |s| matches!(s, Step::Device { device, event } if device == CALLEE && wanted(event)),
        )
        .unwrap()
    };
    let rekeyed = event(|e| matches!(e, DeviceEvent::Rekeyed { sending: false, .. }));
    let ended = event(|e| matches!(e, DeviceEvent::CallEnded(_)));
    assert!(rekeyed < ended);
    // Nothing brought the bye again in between: the held one ended it.
    assert!(!lab.trace[rekeyed..ended].iter().any(|s| matches!(
        s,
        Step::Sent {
            message: Message::Bye(_),
            ..
        }
    )));
    // The servers that follow the session held it too: each follows the
    // caller's rekey, then ends the session by the bye.
    for (i, name) in [(0, "sc@a.example"), (1, "sc@b.example")] {
        let followed = lab
            .find(mark, |s| matches!(s, Step::Server { server, event: ServerEvent::Rekeyed { .. } } if server == name))
            .unwrap();
        let ended = lab
            .find(mark, |s| matches!(s, Step::Server { server, event: ServerEvent::SessionEnded(_, SessionEnd::Bye) } if server == name))
            .unwrap_or_else(|| panic!("{name} ends the session by the bye"));
        assert!(followed < ended, "{name}");
        assert!(lab.session_ended(i, session, SessionEnd::Bye));
    }
}

/// KW-SM-005: at most 8 requests are held per call for their rekey. Of
/// nine `info`s that overtake it — the one with the new media keys that
/// every rekey brings, then eight with text — the first eight are read as
/// soon as the rekey lands; the ninth was dropped, and only its
/// retransmission brings it.
#[test]
fn kw_sm_005_at_most_eight_requests_are_held() {
    let (mut lab, session) = call_whose_rekey_is_lost();
    for i in 0..8 {
        lab.command(CALLER, DeviceCommand::Info(session, format!("info {i}")));
    }
    lab.settle();
    let mark = lab.trace.len();
    lab.advance(10_000);
    let rekeyed = lab
        .find(mark, |s| matches!(s, Step::Device { device, event: DeviceEvent::Rekeyed { sending: false, .. } } if device == CALLEE))
        .unwrap();
    // Up to the next info the callee's server sends: the held ones only.
    let resent = lab
        .find(rekeyed, |s| matches!(s, Step::Sent { from, message: Message::Info(_), .. } if from == "sc@b.example"))
        .unwrap();
    let read = lab.trace[rekeyed..resent]
        .iter()
        .filter(|s| matches!(s, Step::Device { device, event: DeviceEvent::InfoReceived(..) } if device == CALLEE))
        .count();
    // The first held, without text, is read without an event.
    assert_eq!(read, 7);
    let all = lab
        .device_events(CALLEE)
        .iter()
        .filter(|e| matches!(e, DeviceEvent::InfoReceived(..)))
        .count();
    assert_eq!(all, 8);
    // The callee's server, which follows the session, held eight as well:
    // it reads them once it follows the rekey, and not the ninth, which it
    // carried on without holding.
    let observed = lab
        .server_events("sc@b.example")
        .iter()
        .filter(|e| matches!(e, ServerEvent::Observed(s, MsgType::Info) if *s == session))
        .count();
    assert_eq!(observed, 8);
    // Held infos end nothing.
    assert!(lab.server(1).session_ids().contains(&session));
    assert_eq!(
        lab.device(CALLEE).call_state(&session),
        Some(CallState::Established)
    );
}

/// KW-CRYPTO-036 step 3, KW-SEAL-006: an edit signed by a server whose
/// entry only lets it read, and genuine edits forwarded out of order, are
/// both refused by the destination with `permission-denied`, reported as
/// tampering, and set no call up.
#[test]
fn kw_crypto_036_forged_and_reordered_edits_are_detected() {
    use keyway::core::Forgery;
    for (faults, forgery) in [
        (
            Faults {
                forge_edit: true,
                ..Faults::default()
            },
            Forgery::Edit,
        ),
        (
            Faults {
                reorder_edits: true,
                ..Faults::default()
            },
            Forgery::Reordered,
        ),
    ] {
        let mut lab = Lab::new(LabOptions::default());
        lab.inject_faults(1, faults);
        lab.register_all();
        lab.command(CALLER, DeviceCommand::Call(principal(CALLEE)));
        lab.settle();
        let forged = lab
            .server_events("sc@b.example")
            .into_iter()
            .find_map(|e| match e {
                ServerEvent::Forged(session, MsgType::Offer, f) if f == forgery => Some(session),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{forgery:?}: sc@b forged nothing"));
        assert!(
            lab.device_events(CALLEE)
                .contains(&DeviceEvent::TamperDetected(
                    forged,
                    ErrorCode::PERMISSION_DENIED
                )),
            "{forgery:?}: {:?}",
            lab.device_events(CALLEE)
        );
        assert_eq!(lab.device(CALLEE).call_state(&forged), None);
        assert!(
            !lab.device_events(CALLEE)
                .iter()
                .any(|e| matches!(e, DeviceEvent::IncomingCall(..)))
        );
    }
}
