//! Typed transport (KW-FRAME-004, KW-FRAME-011): a party answers on the
//! transport, connection and addresses a request came with, and does not
//! retransmit what it sent over TCP, which delivers reliably, though it
//! gives up on it all the same.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use keyway::core::{
    ConnId, Device, DeviceCommand, DeviceEvent, Now, Output, Party, Proto, Receive, Server,
    Transmit,
};
use keyway::crypto::SeededEntropy;
use keyway::testkit::{Plan, T0};
use keyway::wire::{Contact, ErrorCode, Message, Transport};

fn plan() -> Plan {
    Plan {
        domains: vec!["a.example".into()],
        devices: 1,
        hub: false,
        ..Plan::default()
    }
}

fn transmits<P: Party>(party: &mut P) -> Vec<Transmit> {
    std::iter::from_fn(|| party.poll_output())
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// KW-FRAME-004: the challenge to a `register` that came over a TCP
/// connection goes back on that connection, to the address it came from,
/// from the address it came to.
#[test]
fn kw_frame_004_responses_go_back_the_way_requests_came() {
    let deployment = plan().provision();
    let kit = &deployment.domains[0];
    let mut rng = SeededEntropy::from_label("transport");
    let mut device = Device::new(kit.devices[0].config.clone());
    let now = Now::at(T0);
    device
        .command(now, DeviceCommand::Register, &mut rng)
        .unwrap();
    let register = transmits(&mut device).remove(0).message.encode();

    let mut server = Server::new(kit.server.clone());
    let peer = "10.1.0.1:61000".parse().unwrap();
    let local = "192.0.2.1:5061".parse().unwrap();
    let receive = Receive {
        proto: Proto::Tcp(Some(ConnId(7))),
        source: peer,
        destination: local,
        contents: &register,
    };
    server.handle_receive(now, receive, &mut rng).unwrap();
    let out = transmits(&mut server);
    assert_eq!(out.len(), 1);
    let challenge = &out[0];
    assert!(matches!(challenge.message, Message::Challenge(_)));
    assert_eq!(
        (challenge.proto, challenge.destination, challenge.source),
        (Proto::Tcp(Some(ConnId(7))), peer, local)
    );

    // A duplicate over UDP is answered over UDP.
    let receive = Receive::udp(peer, local, &register);
    let _ = server.handle_receive(now, receive, &mut rng);
    let out = transmits(&mut server);
    assert!(out.iter().all(|t| t.proto == Proto::Udp));
}

/// KW-FRAME-011: a device whose contact is over TCP sends its requests
/// over TCP and does not retransmit them; over UDP it does; both give up
/// after 32 s.
#[test]
fn kw_frame_011_no_retransmission_over_tcp() {
    for transport in [Transport::Tcp, Transport::Udp] {
        let deployment = plan().provision();
        let mut config = deployment.domains[0].devices[0].config.clone();
        config.contact = Contact {
            transport,
            addr: config.contact.addr,
        };
        let mut rng = SeededEntropy::from_label("transport");
        let mut device = Device::new(config);
        let now = Now::at(T0);
        device
            .command(now, DeviceCommand::Register, &mut rng)
            .unwrap();
        let sent = transmits(&mut device);
        assert_eq!(sent[0].proto, Proto::of(transport));
        let mut resent = 0;
        let mut failed = false;
        let mut t = now;
        while let Some(deadline) = device.poll_timeout() {
            t = Now::at(deadline);
            device.handle_timeout(t, &mut rng);
            for o in std::iter::from_fn(|| device.poll_output()) {
                match o {
                    Output::Transmit(_) => resent += 1,
                    Output::Event(DeviceEvent::RegistrationFailed(code)) => {
                        assert_eq!(code, ErrorCode::TIMEOUT);
                        failed = true;
                    }
                    _ => {}
                }
            }
            if failed {
                break;
            }
        }
        assert!(failed, "{transport:?}: gave up");
        assert_eq!(t.mono - now.mono, 32_000, "{transport:?}");
        match transport {
            Transport::Tcp => assert_eq!(resent, 0),
            Transport::Udp => assert!(resent >= 6, "{resent}"),
        }
    }
}
