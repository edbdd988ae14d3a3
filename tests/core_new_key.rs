//! Claims 38 and 39 at the reference server: a server the caller lets
//! modify the offer re-seals it under a content key it generates, wraps
//! that key for the destination, and forwards it with the decryption
//! request and permission; the session then runs under the new key, which
//! the caller and the servers before the editor learn from the answer
//! (KW-CRYPTO-035, KW-CRYPTO-040, KW-SM-011).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;

use keyway::core::{DeviceCommand, DeviceEvent, DevicePolicy, ServerEvent, ServerPolicy};
use keyway::testkit::{Lab, LabOptions, Step, principal};
use keyway::wire::{Message, MsgType, Permission, RecipientKind};

/// sc@b may modify what u1@a sends (its policy for b.example) and
/// re-keys the offers it may modify.
fn rekeying_lab() -> Lab {
    let mut peer_servers = BTreeMap::new();
    peer_servers.insert("b.example".to_string(), Some(Permission::ReadModify));
    let mut server_policies = BTreeMap::new();
    server_policies.insert(
        1,
        ServerPolicy {
            rekey_offers: true,
            ..ServerPolicy::default()
        },
    );
    let mut lab = Lab::new(LabOptions {
        device_policy: DevicePolicy {
            peer_servers,
            ..DevicePolicy::default()
        },
        server_policies,
        ..LabOptions::default()
    });
    lab.register_all();
    lab
}

fn at(lab: &Lab, from: usize, what: &str, f: impl Fn(&Step) -> bool) -> usize {
    lab.find(from, f)
        .unwrap_or_else(|| panic!("no step: {what}"))
}

/// Claim 39, in order: the server generates a new first key, encrypts the
/// information with it, wraps it with the destination's second key, and
/// sends it with the decryption request (the destination's entry) — then
/// the destination decrypts with it, and the whole session runs under it.
#[test]
fn claims_38_39_a_server_reseals_the_offer_under_a_new_key() {
    let mut lab = rekeying_lab();
    let mark = lab.trace.len();
    let session = lab.call("u1@a.example", "u1@b.example");

    // sc@b: read with its entry, replaced the key, then forwarded.
    let opened = at(
        &lab,
        mark,
        "sc@b opens the offer",
        |s| matches!(s, Step::Server { server, event: ServerEvent::BodyOpened { re: MsgType::Offer, perm: Permission::ReadModify, .. } } if server == "sc@b.example"),
    );
    let replaced = at(
        &lab,
        opened,
        "sc@b replaces the key",
        |s| matches!(s, Step::Server { server, event: ServerEvent::KeyReplaced(x) } if server == "sc@b.example" && *x == session),
    );
    let delivered = at(
        &lab,
        replaced,
        "the re-keyed offer reaches u1@b",
        |s| matches!(s, Step::Sent { from, message: Message::Offer(_), .. } if from == "sc@b.example"),
    );
    let Step::Sent {
        message: Message::Offer(offer),
        ..
    } = &lab.trace[delivered]
    else {
        unreachable!()
    };
    let edits = offer.body.edits.clone().unwrap();
    let last = edits.iter().last().unwrap();
    assert_eq!(last.editor, principal("sc@b.example"));
    assert!(
        last.epk.is_some(),
        "a new key, wrapped under sc@b's ephemeral key"
    );
    // The decryption request for the destination, re-wrapped by sc@b.
    assert!(
        offer
            .body
            .recipients
            .iter()
            .any(|r| r.kind == RecipientKind::Destination
                && r.id.as_ref() == Some(&principal("u1@b.example")))
    );
    let incoming = at(
        &lab,
        delivered,
        "u1@b opens it",
        |s| matches!(s, Step::Device { device, event: DeviceEvent::IncomingCall(x, _) } if device == "u1@b.example" && *x == session),
    );
    // The answer, under the new key: the caller and sc@a learn it.
    let learned = at(
        &lab,
        incoming,
        "sc@a learns the new key from the answer",
        |s| matches!(s, Step::Server { server, event: ServerEvent::KeyReplaced(x) } if server == "sc@a.example" && *x == session),
    );
    at(
        &lab,
        learned,
        "u1@a established",
        |s| matches!(s, Step::Device { device, event: DeviceEvent::CallEstablished(x, _) } if device == "u1@a.example" && *x == session),
    );

    // Both directions under the new key, followed by both servers.
    let mark = lab.trace.len();
    lab.command("u1@a.example", DeviceCommand::Info(session, "to b".into()));
    lab.command("u1@b.example", DeviceCommand::Info(session, "to a".into()));
    lab.settle();
    assert!(
        lab.device_events("u1@b.example")
            .contains(&DeviceEvent::InfoReceived(session, "to b".into()))
    );
    assert!(
        lab.device_events("u1@a.example")
            .contains(&DeviceEvent::InfoReceived(session, "to a".into()))
    );
    for server in ["sc@a.example", "sc@b.example"] {
        let followed = lab.trace[mark..]
            .iter()
            .filter(|s| matches!(s, Step::Server { server: n, event: ServerEvent::Observed(x, MsgType::Info) } if n == server && *x == session))
            .count();
        assert_eq!(followed, 2, "{server} reads both directions");
    }
    // A rekey and the bye: every pinhole closes.
    lab.command("u1@b.example", DeviceCommand::Rekey(session, true));
    lab.settle();
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    assert!(lab.firewall(0).is_empty() && lab.firewall(1).is_empty());
    assert!(lab.server(0).session_ids().is_empty() && lab.server(1).session_ids().is_empty());
}

/// KW-CRYPTO-040: a caller that hangs up before it has the answer sends
/// its `bye` under the key it sealed the offer with; the server that
/// replaced that key still recognises it and closes the pinholes it opened
/// for the answer.
#[test]
fn a_bye_under_the_replaced_key_still_ends_the_session() {
    let mut lab = rekeying_lab();
    // The answer, as sc@b forwards it (with its edit), is lost on the way.
    lab.drop_if = Some(Box::new(
        |m| matches!(m, Message::Answer(a) if a.body.edits.is_some()),
    ));
    lab.command(
        "u1@a.example",
        DeviceCommand::Call(principal("u1@b.example")),
    );
    lab.settle();
    let session = lab.device("u1@a.example").sessions()[0];
    assert!(
        !lab.firewall(1).is_empty(),
        "sc@b read the answer and opened the callee's pinhole"
    );
    lab.drop_if = None;
    lab.command("u1@a.example", DeviceCommand::HangUp(session));
    lab.settle();
    assert!(lab.server(1).session_ids().is_empty(), "sc@b ended it");
    assert!(lab.firewall(1).is_empty());
    assert!(lab.firewall(0).is_empty());
}

/// Without the permission to modify, a server keeps the key: the policy
/// does not let a reader re-key (KW-SEAL-006).
#[test]
fn a_reader_never_replaces_the_key() {
    let mut server_policies = BTreeMap::new();
    server_policies.insert(
        1,
        ServerPolicy {
            rekey_offers: true,
            ..ServerPolicy::default()
        },
    );
    let mut lab = Lab::new(LabOptions {
        server_policies,
        ..LabOptions::default()
    });
    lab.register_all();
    let session = lab.call("u1@a.example", "u1@b.example");
    assert!(
        !lab.server_events("sc@b.example")
            .contains(&ServerEvent::KeyReplaced(session))
    );
    assert!(
        lab.device_events("u1@a.example")
            .iter()
            .any(|e| matches!(e, DeviceEvent::CallEstablished(x, _) if *x == session))
    );
}
