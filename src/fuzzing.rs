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
                &FUZZ_SESSION,
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

/// A registered device's verifier, computed once (PBKDF2 is slow).
fn fuzz_verifier() -> Option<&'static crate::crypto::register::Verifier> {
    static VERIFIER: std::sync::OnceLock<Option<crate::crypto::register::Verifier>> =
        std::sync::OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            crate::crypto::register::Verifier::with_salt(
                b"fuzz secret",
                crate::wire::Nonce([3; 16]),
                4096,
            )
            .ok()
        })
        .as_ref()
}

/// The state machines' input path: `data` is split into datagrams (a
/// length byte, then that many bytes) and fed to a fresh server, device
/// and recorder, with a timeout after each. Whatever arrives, nothing
/// panics; and datagrams from nowhere change no durable state and no
/// firewall: without a challenge of its own no `register` can pass.
pub fn core_receive(data: &[u8]) {
    use crate::core::{
        DeviceConfig, DevicePolicy, FirewallPlan, Output, Recorder, RecorderConfig, Server,
        ServerConfig, ServerPolicy,
    };
    use crate::wire::{Contact, Transport};
    let (Some(verifier), Ok(domain), Ok(account), Ok(server_account), Ok(rec_account)) = (
        fuzz_verifier(),
        Domain::new("a.example"),
        Principal::new("u1@a.example"),
        Principal::new("sc@a.example"),
        Principal::new("rec@a.example"),
    ) else {
        return;
    };
    let mut rng = SeededEntropy::from_label("keyway fuzz core");
    let ca = CertificateAuthority::new(domain, SigningKeyPair::generate(&mut rng));
    let id = Identity::generate(server_account.clone(), &mut rng);
    let profile = |id: &Identity, role| CertProfile {
        serial: 1,
        subject: id.account.clone(),
        role,
        sig_key: id.signing.public(),
        kx_key: id.kx.public(),
        not_before: 0,
        not_after: u64::MAX / 2000,
    };
    let cert = ca.issue(&profile(&id, Role::Server));
    let rec_id = Identity::generate(rec_account, &mut rng);
    let addr = std::net::SocketAddr::from(([192, 0, 2, 1], 5060));
    let device_addr = std::net::SocketAddr::from(([10, 1, 0, 1], 5060));
    let mut accounts = std::collections::BTreeMap::new();
    accounts.insert(account.clone(), verifier.clone());
    let mut servers = std::collections::BTreeMap::new();
    servers.insert(server_account.clone(), cert.clone());
    let mut server = Server::new(ServerConfig {
        identity: id,
        cert,
        ca: ca.clone(),
        anchors: vec![ca.anchor()],
        addr,
        directory: Default::default(),
        accounts,
        policy: ServerPolicy::default(),
        retransmit: Default::default(),
        keys: KeyPolicy::default(),
        firewall: Some(FirewallPlan {
            public_ip: std::net::IpAddr::from([198, 51, 100, 1]),
            first_port: 20_000,
            ports: 100,
        }),
        recorder: None,
        decoy_secret: Secret32::new([9; 32]),
    });
    let mut device = crate::core::Device::new(DeviceConfig {
        account,
        secret: b"fuzz secret".to_vec(),
        server: addr,
        server_account,
        contact: Contact {
            transport: Transport::Udp,
            addr: device_addr,
        },
        media: std::net::SocketAddr::from(([10, 1, 0, 1], 40_000)),
        expires: 3600,
        anchor: ca.anchor(),
        policy: DevicePolicy::default(),
        retransmit: Default::default(),
        keys: KeyPolicy::default(),
        identity: None,
    });
    let mut recorder = Recorder::new(RecorderConfig {
        identity: rec_id,
        trust: TrustStore::new(vec![ca.anchor()]),
        servers,
        readers: Default::default(),
        auditors: Default::default(),
        capacity: 4,
    });
    let mut now = 1_800_000_000_000;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (datagram, next) = tail.split_at(take);
        rest = next;
        now += 700;
        // Refused or not, what follows must hold.
        let _ = server.handle_receive(now, device_addr, datagram, &mut rng);
        let _ = device.handle_receive(now, addr, datagram, &mut rng);
        let _ = recorder.handle_receive(now, addr, datagram);
        server.handle_timeout(now, &mut rng);
        device.handle_timeout(now, &mut rng);
        while let Some(output) = server.poll_output() {
            assert!(
                !matches!(output, Output::Store(_) | Output::Firewall(_)),
                "a datagram from nowhere changed durable state: {output:?}"
            );
        }
        while device.poll_output().is_some() {}
        while recorder.poll_output().is_some() {}
    }
}
