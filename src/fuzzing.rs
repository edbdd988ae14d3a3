//! The bodies of the cargo-fuzz targets in `fuzz/` (feature `fuzzing`), kept
//! here so that normal builds compile and lint them. Each checks more than
//! "does not crash": what is accepted must re-encode to the same bytes.

use crate::cbor::{self, DecodeOptions};
use crate::wire::{ErrorCode, Message};

/// Generic CBOR: both strictness levels; deterministic acceptance implies
/// byte-identical re-encoding; every error offset is within the input.
pub fn cbor_decode(data: &[u8]) {
    match cbor::decode(data, &DecodeOptions::WELL_FORMED) {
        Ok(item) => {
            let _ = cbor::to_diag(&item);
        }
        Err(e) => assert!(e.offset <= data.len(), "offset beyond input"),
    }
    if let Ok(item) = cbor::decode(data, &DecodeOptions::DETERMINISTIC) {
        assert_eq!(
            cbor::encode(&item).ok().as_deref(),
            Some(data),
            "deterministic input must re-encode identically"
        );
    }
}

/// Keyway messages: accepted messages re-encode identically and describe
/// themselves; rejected ones map to a wire error code.
pub fn wire_decode(data: &[u8]) {
    match Message::decode(data) {
        Ok(message) => {
            assert_eq!(message.encode(), data, "encode(decode(b)) != b");
            let node = message.describe();
            let _ = node.to_annotated_diag();
            let _ = node.to_json();
        }
        Err(e) => {
            assert!(e.offset <= data.len(), "offset beyond input");
            assert_eq!(
                ErrorCode::from(&e).class(),
                1,
                "decode errors are wire errors"
            );
        }
    }
}

use std::sync::OnceLock;

use crate::crypto::{
    CertProfile, CertificateAuthority, DirectionKeys, Identity, KeyCache, KeyPolicy, RecipientSpec,
    SealContext, Secret32, SeededEntropy, SigningKeyPair, TrustStore, open, seal, verify_sealed,
};
use crate::wire::{
    Certificate, Domain, MsgType, Permission, Principal, RecipientKind, Role, Sealed, SessionId,
    decode_plaintext, encode_plaintext,
};

struct SealFixture {
    sealed: Vec<u8>,
    bob: Identity,
    alice_cert: Certificate,
    trust: TrustStore,
}

fn seal_fixture() -> Option<&'static SealFixture> {
    static FIXTURE: OnceLock<Option<SealFixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let mut rng = SeededEntropy::from_label("fuzz seal fixture");
            let ca = CertificateAuthority::new(
                Domain::new("a.example").ok()?,
                SigningKeyPair::generate(&mut rng),
            );
            let alice = Identity::generate(Principal::new("alice@a.example").ok()?, &mut rng);
            let bob = Identity::generate(Principal::new("bob@a.example").ok()?, &mut rng);
            let alice_cert = ca.issue(&CertProfile {
                serial: 1,
                subject: alice.account.clone(),
                role: Role::Device,
                sig_key: alice.signing.public(),
                kx_key: alice.kx.public(),
                not_before: 0,
                not_after: u64::MAX,
            });
            let spec = |id: &Identity, anonymous| RecipientSpec {
                id: id.account.clone(),
                kx_key: id.kx.public(),
                kind: RecipientKind::Destination,
                perm: Permission::Read,
                anonymous,
            };
            let ctx = SealContext {
                session: &FUZZ_SESSION,
                cid: 0,
                re: crate::wire::MsgType::Offer,
                to: Some(&bob.account),
            };
            let recipients = [spec(&bob, false), spec(&alice, true)];
            let (sealed, _) = seal(
                ctx,
                &alice,
                &recipients,
                b"fuzz plaintext",
                None,
                &mut KeyCache::new(8),
                &mut rng,
            )
            .ok()?;
            Some(SealFixture {
                sealed: encode_plaintext(&sealed),
                bob,
                alice_cert,
                trust: TrustStore::new(vec![ca.anchor()]),
            })
        })
        .as_ref()
}

const FUZZ_SESSION: SessionId = SessionId([0x5e; 16]);

/// The unwrap path: a valid sealed body with `data` XORed over it (and
/// truncated or extended to its length) is decoded, opened and verified.
/// Whatever the bytes, nothing panics, and a failed open leaves the key
/// cache as it was.
pub fn seal_open(data: &[u8]) {
    let Some(f) = seal_fixture() else { return };
    let mut bytes = f.sealed.clone();
    for (b, d) in bytes.iter_mut().zip(data) {
        *b ^= d;
    }
    if data.len() > bytes.len() {
        bytes.extend_from_slice(data.get(bytes.len()..).unwrap_or_default());
    }
    let Ok(sealed) = decode_plaintext::<Sealed>(&bytes) else {
        return;
    };
    let mut cache = KeyCache::new(4);
    match open(&sealed, &FUZZ_SESSION, &f.bob, &mut cache) {
        Ok(opened) => {
            let _ = verify_sealed(
                &sealed,
                SealContext::of(
                    &sealed,
                    &FUZZ_SESSION,
                    crate::wire::MsgType::Offer,
                    Some(&f.bob.account),
                ),
                &opened.plaintext,
                &opened.cek,
                &f.alice_cert,
                &f.trust,
                1,
            );
        }
        Err(_) => assert!(cache.is_empty(), "a failed open cached a key"),
    }
}

/// In-session payloads: `data` gives an epoch, a sequence number and a
/// payload. A rejected payload must not disturb the receiver: a genuine
/// payload still opens afterwards.
pub fn session_open(data: &[u8]) {
    let session = SessionId([1; 16]);
    let (Ok(a), Ok(b)) = (
        Principal::new("alice@a.example"),
        Principal::new("bob@b.example"),
    ) else {
        return;
    };
    let key = Secret32::new([7; 32]);
    let mut sender = DirectionKeys::new(session, a.clone(), b.clone(), key.clone(), 0);
    let mut receiver = DirectionKeys::new(session, a, b, key, 0);
    let Ok(genuine) = sender.seal(MsgType::Info, b"genuine") else {
        return;
    };
    let (head, payload) = data.split_at(data.len().min(2));
    let epoch = u64::from(head.first().copied().unwrap_or(0) % 3);
    let seq = u64::from(head.get(1).copied().unwrap_or(0));
    let forged = receiver.open(MsgType::Info, epoch, seq, payload, 0);
    if forged.is_ok() {
        // Only the genuine payload can open: the fuzzer reproduced it.
        assert_eq!(payload, genuine.payload.as_slice());
        return;
    }
    let _ = receiver.accept_rekey_wrapped(epoch, seq, payload, 0, &KeyPolicy::default());
    assert!(
        receiver
            .open(
                MsgType::Info,
                genuine.epoch,
                genuine.seq,
                &genuine.payload,
                0
            )
            .is_ok(),
        "a rejected input disturbed the receiver"
    );
}

/// The deployment the state machines are fuzzed in, provisioned once
/// (PBKDF2 of the accounts' verifiers is slow): one domain, one device,
/// its server, recorder and firewall agent.
fn fuzz_deployment() -> &'static crate::testkit::Deployment {
    static DEPLOYMENT: OnceLock<crate::testkit::Deployment> = OnceLock::new();
    DEPLOYMENT.get_or_init(|| {
        crate::testkit::Plan {
            label: "keyway fuzz core".into(),
            domains: vec!["a.example".into()],
            devices: 1,
            hub: false,
            record: true,
            provisioned_identities: false,
            recorder_capacity: 4,
            ..crate::testkit::Plan::default()
        }
        .provision()
    })
}

/// The state machines' input path: `data` is split into datagrams (a
/// length byte, then that many bytes) and fed to a fresh server, device,
/// recorder and firewall agent, with a timeout after each. Whatever
/// arrives, nothing panics; and datagrams from nowhere change no durable
/// state and no firewall: without a challenge of its own no `register` can
/// pass, and without the server's signature no pinhole opens.
pub fn core_receive(data: &[u8]) {
    use crate::core::{
        Device, FirewallAgent, MemoryFirewall, Now, Party, Receive, Recorder, Server, drain,
    };
    let deployment = fuzz_deployment();
    let Some(kit) = deployment.domains.first() else {
        return;
    };
    let (Some(device_kit), Some(recorder_cfg)) = (kit.devices.first(), kit.recorder.as_ref())
    else {
        return;
    };
    let mut rng = SeededEntropy::from_label("keyway fuzz core");
    let mut server = Server::new(kit.server.clone());
    let mut device = Device::new(device_kit.config.clone());
    let mut recorder = Recorder::new(recorder_cfg.clone());
    let mut agent = FirewallAgent::new(kit.agent.clone(), MemoryFirewall::new(16));
    let server_addr = kit.server.addr;
    let device_addr = device_kit.config.contact.addr;
    let agent_addr = kit.agent.addr;
    let mut now = Now::at(1_800_000_000_000);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (datagram, next) = tail.split_at(take);
        rest = next;
        now = now.later(700);
        // Refused or not, what follows must hold.
        let _ = server.handle_receive(
            now,
            Receive::udp(device_addr, server_addr, datagram),
            &mut rng,
        );
        let _ = device.handle_receive(
            now,
            Receive::udp(server_addr, device_addr, datagram),
            &mut rng,
        );
        let _ = recorder.handle_receive(
            now,
            Receive::udp(server_addr, recorder_cfg.addr, datagram),
            &mut rng,
        );
        let _ = agent.handle_receive(
            now,
            Receive::udp(server_addr, agent_addr, datagram),
            &mut rng,
        );
        server.handle_timeout(now, &mut rng);
        device.handle_timeout(now, &mut rng);
        agent.handle_timeout(now, &mut rng);
        // Through the one driver loop, as any driver carries them out.
        let mut nowhere = FromNowhere {
            agent: agent_addr,
            durable: None,
        };
        let carried = [
            drain(&mut server, &mut nowhere),
            drain(&mut device, &mut nowhere),
            drain(&mut recorder, &mut nowhere),
            drain(&mut agent, &mut nowhere),
        ];
        assert!(
            carried.iter().all(Result::is_ok),
            "a datagram from nowhere changed durable state: {:?}",
            nowhere.durable
        );
        assert!(
            agent.is_empty() && agent.firewall().is_empty(),
            "a datagram from nowhere opened a pinhole"
        );
    }
}

/// The driver of the `core_receive` body: datagrams from nowhere may be
/// answered, never acted on — no write may reach a store, no request the
/// firewall.
struct FromNowhere {
    agent: std::net::SocketAddr,
    durable: Option<String>,
}

impl<E> crate::core::Driver<E> for FromNowhere {
    fn transmit(&mut self, transmit: crate::core::Transmit) {
        assert!(
            transmit.destination != self.agent,
            "a datagram from nowhere reached the firewall: {:?}",
            transmit.message.msg_type()
        );
    }

    fn commit(&mut self, group: &[crate::core::StoreWrite]) -> Result<(), crate::core::StoreError> {
        self.durable = Some(format!("{group:?}"));
        Err(crate::core::StoreError::Unavailable(
            "nothing may be written".into(),
        ))
    }

    fn event(&mut self, _event: E) {}
}
