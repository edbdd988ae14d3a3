//! One example of every message, built from fixed values. They are the
//! byte-exact examples of spec/examples/ and the seeds of tests and fuzzing.
//! Keys, signatures and ciphertexts here are placeholders of the right size;
//! cryptographically valid examples are the vectors under `vectors/`.

// Every value here is a literal, not input: a bad one fails every test.
#![allow(clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn account(text: &str) -> Principal {
    Principal::new(text).expect("example account")
}

fn fill<const N: usize>(byte: u8) -> [u8; N] {
    let mut out = [byte; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = byte.wrapping_add(i as u8);
    }
    out
}

fn bytes<const MIN: usize, const MAX: usize>(byte: u8, len: usize) -> Bytes<MIN, MAX> {
    let v: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
    Bytes::new(v).expect("example byte string length")
}

fn list<T, const MIN: usize, const MAX: usize>(items: Vec<T>) -> List<T, MIN, MAX> {
    List::new(items).expect("example list length")
}

const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn alice() -> Principal {
    account("alice@a.example")
}
fn bob() -> Principal {
    account("bob@b.example")
}
fn server_a() -> Principal {
    account("sc@a.example")
}
fn recorder_a() -> Principal {
    account("rec@a.example")
}

fn txn(n: u8) -> TxnId {
    TxnId(fill(n))
}
fn session() -> SessionId {
    SessionId(fill(0x5e))
}
fn sig(n: u8) -> Signature {
    Signature {
        kid: KeyId(fill(n)),
        sig: SignatureBytes(fill(n.wrapping_add(0x40))),
    }
}
fn contact() -> Contact {
    Contact {
        transport: Transport::Udp,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 5070),
    }
}
fn media_addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)), port)
}

/// A certificate for `subject` issued by `issuer`.
pub fn certificate(subject: Principal, issuer: &str, role: Role) -> Certificate {
    Certificate {
        tbs: CertTbs {
            suite: Suite::KeywayV1,
            serial: 4711,
            issuer: Domain::new(issuer).expect("example domain"),
            issuer_kid: KeyId(fill(0xc0)),
            subject,
            role,
            sig_key: PublicKey(fill(0x10)),
            kx_key: PublicKey(fill(0x20)),
            not_before: Time(T0),
            not_after: Time(T0 + 3600),
            ext: Extensions::new(),
        },
        sig: SignatureBytes(fill(0xe0)),
    }
}

/// A sealed body with a destination entry and a server entry.
pub fn sealed() -> Sealed {
    Sealed {
        suite: Suite::KeywayV1,
        cid: 0,
        sender: alice(),
        sender_kid: KeyId(fill(0x11)),
        epk: PublicKey(fill(0x30)),
        recipients: list(vec![
            Recipient {
                id: Some(server_a()),
                kid: Some(KeyId(fill(0x21))),
                kind: RecipientKind::Server,
                perm: Permission::ReadModify,
                wrapped: bytes(0x70, 48),
                ext: Extensions::new(),
            },
            Recipient {
                id: Some(bob()),
                kid: Some(KeyId(fill(0x22))),
                kind: RecipientKind::Destination,
                perm: Permission::Read,
                wrapped: bytes(0x80, 48),
                ext: Extensions::new(),
            },
        ]),
        nonce: Nonce(fill(0x90)),
        ct: bytes(0xa0, 40),
        hash: Hash32(fill(0xb0)),
        sig: SignatureBytes(fill(0x50)),
        edits: Some(list(vec![Edit {
            editor: server_a(),
            kid: KeyId(fill(0x23)),
            prev: Hash32(fill(0xb0)),
            next: Hash32(fill(0xd0)),
            sig: SignatureBytes(fill(0x60)),
            epk: None,
            cert: certificate(server_a(), "a.example", Role::Server),
            ext: Extensions::new(),
        }])),
        ext: Extensions::new(),
    }
}

/// A session description with one audio stream.
pub fn session_desc() -> SessionDesc {
    SessionDesc {
        salt: Nonce(fill(0x01)),
        streams: list(vec![Stream {
            id: 1,
            kind: MediaKind::Audio,
            addr: media_addr(7, 40000),
            params: Text::new("opus/48000/2").expect("params"),
            key: SecretBytes32(fill(0x33)),
            ext: Extensions::new(),
        }]),
        ext: Extensions::new(),
    }
}

/// One example of every message type, in type-code order.
pub fn all() -> Vec<Message> {
    let e = Extensions::new;
    vec![
        Message::Register(Register {
            txn: txn(0x01),
            from: alice(),
            contact: contact(),
            expires: 3600,
            csr: Some(CertRequest {
                suite: Suite::KeywayV1,
                sig_key: PublicKey(fill(0x10)),
                kx_key: PublicKey(fill(0x20)),
                pop: SignatureBytes(fill(0x40)),
                ext: e(),
            }),
            cert: None,
            auth: Some(AuthResponse {
                nonce: Nonce(fill(0x99)),
                proof: Mac32(fill(0xa9)),
                kx_proof: Some(Mac32(fill(0xb9))),
                epk: PublicKey(fill(0xc9)),
                cert_pop: None,
                ext: e(),
            }),
            ext: e(),
        }),
        Message::Challenge(Challenge {
            txn: txn(0x01),
            to: alice(),
            sig: sig(0x21),
            expires: 30,
            cert: certificate(server_a(), "a.example", Role::Server),
            nonce: Nonce(fill(0x99)),
            salt: Nonce(fill(0x88)),
            iterations: 4096,
            kx_challenge: PublicKey(fill(0x77)),
            ext: e(),
        }),
        Message::RegisterOk(RegisterOk {
            txn: txn(0x01),
            to: alice(),
            contact: contact(),
            expires: 3600,
            cert: Some(certificate(alice(), "a.example", Role::Device)),
            not_after: Time(T0 + 3600),
            ext: e(),
        }),
        Message::CertQuery(CertQuery {
            txn: txn(0x02),
            from: alice(),
            hops: UpTo::new(7).expect("hops"),
            via: Some(list(vec![server_a()])),
            target: bob(),
            ext: e(),
        }),
        Message::CertNotify(CertNotify {
            txn: txn(0x02),
            to: alice(),
            cert: certificate(bob(), "b.example", Role::Device),
            target: bob(),
            attestation: Some(Attestation {
                attester: server_a(),
                kid: KeyId(fill(0x21)),
                at: Time(T0 + 60),
                sig: SignatureBytes(fill(0x61)),
                cert: certificate(server_a(), "a.example", Role::Server),
                ext: e(),
            }),
            ext: e(),
        }),
        Message::Offer(Offer {
            txn: txn(0x03),
            from: alice(),
            to: bob(),
            session: session(),
            hops: UpTo::new(8).expect("hops"),
            via: None,
            cert: None,
            body: sealed(),
            ext: e(),
        }),
        Message::Answer(Answer {
            txn: txn(0x03),
            from: bob(),
            to: alice(),
            session: session(),
            cert: Some(certificate(bob(), "b.example", Role::Device)),
            body: Sealed {
                sender: bob(),
                edits: None,
                ..sealed()
            },
            ext: e(),
        }),
        Message::Ack(Ack {
            txn: txn(0x04),
            from: alice(),
            to: bob(),
            session: session(),
            hops: UpTo::new(8).expect("hops"),
            via: None,
            sig: sig(0x34),
            ext: e(),
        }),
        Message::Info(Info {
            txn: txn(0x05),
            from: alice(),
            to: bob(),
            session: session(),
            hops: UpTo::new(6).expect("hops"),
            via: Some(list(vec![server_a()])),
            sig: sig(0x35),
            epoch: 0,
            seq: 1,
            payload: bytes(0xc0, 32),
            ext: e(),
        }),
        Message::Rekey(Rekey {
            txn: txn(0x06),
            from: bob(),
            to: alice(),
            session: session(),
            hops: UpTo::new(8).expect("hops"),
            via: None,
            sig: sig(0x36),
            body: None,
            epoch: 1,
            seq: 9,
            payload: None,
            wrapped: Some(bytes(0xd0, 48)),
            ext: e(),
        }),
        Message::Bye(Bye {
            txn: txn(0x07),
            from: alice(),
            to: bob(),
            session: session(),
            hops: UpTo::new(8).expect("hops"),
            via: None,
            sig: sig(0x37),
            epoch: 1,
            seq: 12,
            payload: bytes(0xe0, 16),
            ext: e(),
        }),
        Message::Ok(OkResponse {
            txn: txn(0x07),
            session: Some(session()),
            epoch: None,
            re: MsgType::Bye,
            pinhole: None,
            recording: None,
            ext: e(),
        }),
        Message::Error(ErrorResponse {
            txn: Some(txn(0x01)),
            re: Some(MsgType::Register),
            code: ErrorCode::INTERVAL_TOO_BRIEF,
            reason: Text::new("expires below the minimum"),
            offset: None,
            min_expires: Some(60),
            retry_after: None,
            ext: e(),
        }),
        Message::PinholeOpen(PinholeOpen {
            txn: txn(0x20),
            from: server_a(),
            session: session(),
            sig: sig(0x24),
            time: Time(T0 + 30),
            pinhole: 1,
            proto: Transport::Udp,
            dst: media_addr(7, 40000),
            src: None,
            lifetime: 7200,
            public: Some(media_addr(1, 20000)),
            ext: e(),
        }),
        Message::PinholeNarrow(PinholeNarrow {
            txn: txn(0x21),
            from: server_a(),
            sig: sig(0x24),
            time: Time(T0 + 30),
            pinhole: 1,
            src: SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42)),
                50000,
            ),
            ext: e(),
        }),
        Message::PinholeClose(PinholeClose {
            txn: txn(0x22),
            from: server_a(),
            sig: sig(0x24),
            time: Time(T0 + 30),
            pinhole: 1,
            ext: e(),
        }),
        Message::MediaCopy(MediaCopy {
            txn: txn(0x23),
            from: server_a(),
            sig: sig(0x24),
            time: Time(T0 + 30),
            pinhole: 1,
            sink: media_addr(200, 6000),
            copy: true,
            ext: e(),
        }),
        Message::RecordStart(RecordStart {
            txn: txn(0x30),
            from: server_a(),
            session: session(),
            sig: sig(0x24),
            time: Time(T0 + 30),
            recording: RecordingId(fill(0xf0)),
            mode: RecordingMode::Plaintext,
            keys: Sealed {
                sender: server_a(),
                recipients: list(vec![Recipient {
                    id: Some(recorder_a()),
                    kid: Some(KeyId(fill(0x25))),
                    kind: RecipientKind::Destination,
                    perm: Permission::Read,
                    wrapped: bytes(0x71, 48),
                    ext: e(),
                }]),
                edits: None,
                ..sealed()
            },
            parties: list(vec![alice(), bob()]),
            ext: e(),
        }),
        Message::RecordKey(RecordKey {
            txn: txn(0x31),
            from: server_a(),
            session: session(),
            sig: sig(0x24),
            time: Time(T0 + 90),
            epoch: 1,
            recording: RecordingId(fill(0xf0)),
            keys: Sealed {
                sender: server_a(),
                edits: None,
                ..sealed()
            },
            ext: e(),
        }),
        Message::RecordStop(RecordStop {
            txn: txn(0x32),
            from: server_a(),
            session: session(),
            sig: sig(0x24),
            time: Time(T0 + 125),
            recording: RecordingId(fill(0xf0)),
            ext: e(),
        }),
        Message::RecordList(RecordList {
            txn: txn(0x33),
            from: alice(),
            session: None,
            sig: sig(0x11),
            time: Time(T0 + 200),
            ext: e(),
        }),
        Message::RecordListing(RecordListing {
            txn: txn(0x33),
            // A listing of one recording, sealed for alice (KW-CRYPTO-070).
            recordings: bytes(0x90, 132),
            epk: PublicKey(fill(0x3a)),
            ext: e(),
        }),
        Message::RecordFetch(RecordFetch {
            txn: txn(0x34),
            from: alice(),
            sig: sig(0x11),
            time: Time(T0 + 201),
            recording: RecordingId(fill(0xf0)),
            index: 0,
            ext: e(),
        }),
        Message::RecordData(RecordData {
            txn: txn(0x34),
            recording: RecordingId(fill(0xf0)),
            chunk: bytes(0x00, 40),
            index: 0,
            more: true,
            epk: PublicKey(fill(0x3b)),
            ext: e(),
        }),
        Message::Media(Media {
            from: alice(),
            session: session(),
            epoch: 1,
            seq: 4242,
            payload: bytes(0x40, 36),
            stream: 1,
            ext: e(),
        }),
    ]
}
