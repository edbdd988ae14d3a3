//! The recorder as a party (KW-REC-005 to KW-REC-011): it carries out only
//! fresh, signed requests, each at most once, binds commands to the state
//! of their recording, never replaces a key, and seals what it reveals for
//! the requester, whose `RecordingReader` opens it (KW-CRYPTO-070,
//! KW-CRYPTO-071) — down to a recorded call read back end to end. Every
//! refusal is checked for its code and to change nothing: no store write,
//! no recording, key or packet changed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use keyway::core::{
    Addr, Now, Output, Party, ProtocolError, Read, ReadError, Receive, Recorder, RecorderConfig,
    RecordingReader, StoreSnapshot, StoreWrite,
};
use keyway::crypto::{
    CertProfile, CryptoError, Identity, KeyCache, RecipientSpec, SealContext, SeededEntropy,
    TrustStore, seal, sign_message, unsigned,
};
use keyway::testkit::{Plan, T0};
use keyway::wire::{
    Certificate, ErrorCode, Extensions, List, MediaKey, MediaKeys, Message, MsgType, Permission,
    Principal, RecipientKind, RecordFetch, RecordKey, RecordList, RecordStart, RecordStop,
    RecordingId, RecordingMode, Role, SecretBytes32, SessionId, Time, TxnId, encode_plaintext,
};

const SESSION: SessionId = SessionId([0x5e; 16]);
const RECORDING: RecordingId = RecordingId([0xf0; 16]);

fn alice() -> Principal {
    Principal::new("u1@a.example").unwrap()
}

fn bob() -> Principal {
    Principal::new("u2@a.example").unwrap()
}

fn addr(text: &str) -> Addr {
    text.parse().unwrap()
}

/// A recorder, the server it obeys, and two readers: alice, a party of
/// the recordings, and carol, a reader who is no party to them.
struct Bench {
    recorder: Recorder,
    config: RecorderConfig,
    store: StoreSnapshot,
    recorder_cert: Certificate,
    trust: TrustStore,
    recorder_addr: Addr,
    recorder_kx: keyway::wire::PublicKey,
    server: Identity,
    server_addr: Addr,
    alice: Identity,
    alice_addr: Addr,
    carol: Identity,
    cache: KeyCache,
    rng: SeededEntropy,
    now: Now,
    next_txn: u8,
    next_cid: u64,
}

/// What one delivery came to: the outcome, the messages sent (with their
/// destinations) and the store writes.
struct Delivery {
    outcome: Result<(), ProtocolError>,
    sent: Vec<(Addr, Message)>,
    writes: Vec<StoreWrite>,
}

impl Delivery {
    /// The one answer, which goes where the request came from.
    #[track_caller]
    fn answer(&self, to: Addr) -> &Message {
        assert_eq!(self.sent.len(), 1, "one answer: {:?}", self.sent);
        assert_eq!(self.sent[0].0, to, "answered where it came from");
        &self.sent[0].1
    }
}

fn reader_cert(kit: &keyway::testkit::DomainKit, id: &Identity, serial: u64) -> Certificate {
    kit.ca.issue(&CertProfile {
        serial,
        subject: id.account.clone(),
        role: Role::Device,
        sig_key: id.signing.public(),
        kx_key: id.kx.public(),
        not_before: T0 / 1000 - 3600,
        not_after: T0 / 1000 + 24 * 3600,
    })
}

fn bench() -> Bench {
    let deployment = Plan {
        domains: vec!["a.example".into()],
        devices: 3,
        hub: false,
        record: true,
        ..Plan::default()
    }
    .provision();
    let kit = &deployment.domains[0];
    let mut config = kit.recorder.clone().unwrap();
    let alice = kit.devices[0].identity.clone();
    let carol = kit.devices[2].identity.clone();
    config
        .readers
        .insert(alice.account.clone(), reader_cert(kit, &alice, 100));
    config
        .readers
        .insert(carol.account.clone(), reader_cert(kit, &carol, 102));
    let id = &config.identity;
    let recorder_cert = kit.ca.issue(&CertProfile {
        serial: 99,
        subject: id.account.clone(),
        role: Role::Recorder,
        sig_key: id.signing.public(),
        kx_key: id.kx.public(),
        not_before: T0 / 1000 - 3600,
        not_after: T0 / 1000 + 24 * 3600,
    });
    Bench {
        recorder_addr: config.addr,
        recorder_kx: config.identity.kx.public(),
        recorder: Recorder::new(config.clone()),
        trust: config.trust.clone(),
        config,
        store: StoreSnapshot::default(),
        recorder_cert,
        server: kit.server.identity.clone(),
        server_addr: kit.server.addr,
        alice,
        alice_addr: addr("10.1.0.1:5060"),
        carol,
        cache: KeyCache::new(8),
        rng: SeededEntropy::from_label("recorder tests"),
        now: Now::at(T0),
        next_txn: 0,
        next_cid: 0,
    }
}

/// A media key of `sender`'s stream for its description `epoch`.
fn key(sender: &Principal, stream: u64, epoch: u64, byte: u8) -> MediaKey {
    MediaKey {
        sender: sender.clone(),
        stream,
        epoch,
        key: SecretBytes32([byte; 32]),
        ext: Extensions::new(),
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

    /// Media keys sealed for the recorder by the server, as the server
    /// seals them (KW-REC-002).
    fn keys(&mut self, re: MsgType, keys: Vec<MediaKey>) -> keyway::wire::Sealed {
        self.keys_for(&SESSION, re, keys)
    }

    /// Media keys sealed for the recorder under `session`'s identifier.
    fn keys_for(
        &mut self,
        session: &SessionId,
        re: MsgType,
        keys: Vec<MediaKey>,
    ) -> keyway::wire::Sealed {
        let plaintext = encode_plaintext(&MediaKeys {
            keys: List::new(keys).unwrap(),
            ext: Extensions::new(),
        });
        let spec = RecipientSpec {
            id: Principal::new("rec@a.example").unwrap(),
            kx_key: self.recorder_kx,
            kind: RecipientKind::Destination,
            perm: Permission::Read,
            anonymous: false,
        };
        self.next_cid += 1;
        let ctx = SealContext {
            session,
            cid: self.next_cid,
            re,
            to: None,
        };
        seal(
            ctx,
            &self.server,
            &[spec],
            &plaintext,
            None,
            &mut self.cache,
            &mut self.rng,
        )
        .unwrap()
        .0
    }

    fn start(&mut self, time: u64, mode: RecordingMode, keys: Vec<MediaKey>) -> Message {
        let sealed = self.keys(MsgType::RecordStart, keys);
        Message::RecordStart(RecordStart {
            txn: self.txn(),
            from: self.server.account.clone(),
            session: SESSION,
            sig: unsigned(),
            time: Time(time),
            recording: RECORDING,
            mode,
            keys: sealed,
            parties: List::new(vec![alice(), bob()]).unwrap(),
            ext: Extensions::new(),
        })
    }

    fn record_key(&mut self, time: u64, epoch: u64, keys: Vec<MediaKey>) -> Message {
        let sealed = self.keys(MsgType::RecordKey, keys);
        Message::RecordKey(RecordKey {
            txn: self.txn(),
            from: self.server.account.clone(),
            session: SESSION,
            sig: unsigned(),
            time: Time(time),
            epoch,
            recording: RECORDING,
            keys: sealed,
            ext: Extensions::new(),
        })
    }

    fn stop(&mut self, time: u64) -> Message {
        Message::RecordStop(RecordStop {
            txn: self.txn(),
            from: self.server.account.clone(),
            session: SESSION,
            sig: unsigned(),
            time: Time(time),
            recording: RECORDING,
            ext: Extensions::new(),
        })
    }

    fn list(&mut self, from: &Identity, time: u64) -> Message {
        let mut m = Message::RecordList(RecordList {
            txn: self.txn(),
            from: from.account.clone(),
            session: None,
            sig: unsigned(),
            time: Time(time),
            ext: Extensions::new(),
        });
        sign_message(&mut m, &from.signing).unwrap();
        m
    }

    fn fetch(&mut self, from: &Identity, time: u64, index: u64) -> Message {
        let mut m = Message::RecordFetch(RecordFetch {
            txn: self.txn(),
            from: from.account.clone(),
            sig: unsigned(),
            time: Time(time),
            recording: RECORDING,
            index,
            ext: Extensions::new(),
        });
        sign_message(&mut m, &from.signing).unwrap();
        m
    }

    /// Signs a command as the server.
    fn signed(&self, mut message: Message) -> Vec<u8> {
        sign_message(&mut message, &self.server.signing).unwrap();
        message.encode()
    }

    /// Hands `bytes` to the recorder as sent from `from`.
    fn deliver(&mut self, from: Addr, bytes: &[u8]) -> Delivery {
        let receive = Receive::udp(from, self.recorder_addr, bytes);
        let outcome = self
            .recorder
            .handle_receive(self.now, receive, &mut self.rng);
        let mut sent = Vec::new();
        let mut writes = Vec::new();
        while let Some(output) = self.recorder.poll_output() {
            match output {
                Output::Transmit(t) => sent.push((t.destination, t.message)),
                Output::Store(w) => {
                    for write in &w {
                        self.store.apply(write);
                    }
                    writes.extend(w);
                }
                Output::Event(_) => {}
            }
        }
        Delivery {
            outcome,
            sent,
            writes,
        }
    }

    /// A command signed by the server, from the server's address.
    fn command(&mut self, message: Message) -> Delivery {
        let bytes = self.signed(message);
        let from = self.server_addr;
        self.deliver(from, &bytes)
    }

    /// A media packet of alice's stream 1, description 0, under the key
    /// `key(&alice(), 1, 0, byte)`, as a firewall copies it (KW-REC-004).
    fn media(&mut self, byte: u8, seq: u64, frame: &[u8]) -> Delivery {
        let k = keyway::crypto::Secret32::new([byte; 32]);
        let ad = keyway::crypto::media_ad(&SESSION, &alice(), 1, 0, seq);
        let media = Message::Media(keyway::wire::Media {
            from: alice(),
            session: SESSION,
            epoch: 0,
            seq,
            payload: keyway::wire::Bytes::new(keyway::crypto::seal_media(&k, &ad, frame)).unwrap(),
            stream: 1,
            ext: Extensions::new(),
        });
        self.deliver(addr("198.51.100.1:20000"), &media.encode())
    }

    /// The recorder restarted from its store: what it remembered of the
    /// requests it carried out is gone (KW-REC-007).
    fn restart(&mut self) {
        self.recorder = Recorder::restore(self.config.clone(), self.store.clone());
    }

    /// A reader of this recorder for `who`.
    fn reader(&self, who: &Identity) -> RecordingReader {
        RecordingReader::new(who.clone(), &self.recorder_cert, &self.trust, self.now).unwrap()
    }

    /// Time passes; the recorder's timers run.
    fn advance(&mut self, ms: u64) {
        self.now = self.now.later(ms);
        self.recorder.handle_timeout(self.now, &mut self.rng);
        while self.recorder.poll_output().is_some() {}
    }

    /// What the recorder holds: per recording, whether it ended, its keys
    /// and packets.
    fn state(&self) -> Vec<(RecordingId, Option<u64>, usize, usize, RecordingMode)> {
        self.recorder
            .recordings()
            .map(|r| (r.id, r.ended, r.key_count(), r.packets.len(), r.mode))
            .collect()
    }
}

#[track_caller]
fn assert_ok(d: &Delivery, to: Addr, re: MsgType) {
    assert_eq!(d.outcome, Ok(()), "{:?}", d.sent);
    match d.answer(to) {
        Message::Ok(ok) => assert_eq!((ok.re, ok.recording), (re, Some(RECORDING))),
        other => panic!("not ok: {other:?}"),
    }
}

/// Refused with `code`, answered where it came from, and nothing written.
#[track_caller]
fn assert_refused(d: &Delivery, to: Addr, re: MsgType, code: ErrorCode) {
    assert_eq!(d.outcome, Err(ProtocolError::Refused { re, code }));
    match d.answer(to) {
        Message::Error(e) => assert_eq!((e.re, e.code), (Some(re), code)),
        other => panic!("not an error: {other:?}"),
    }
    assert!(
        d.writes.is_empty(),
        "a refusal writes nothing: {:?}",
        d.writes
    );
}

/// KW-REC-006: a command or read whose `time` is more than the window
/// from the recorder's clock, either way, is refused with
/// `stale-request` and changes nothing; at the edge of the window it is
/// carried out.
#[test]
fn kw_rec_006_requests_are_fresh() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    for time in [t - 61, t + 61] {
        let start = b.start(time, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
        let d = b.command(start);
        assert_refused(&d, server, MsgType::RecordStart, ErrorCode::STALE_REQUEST);
        assert!(b.state().is_empty());
    }
    let start = b.start(
        t - 60,
        RecordingMode::Plaintext,
        vec![key(&alice(), 1, 0, 1)],
    );
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let before = b.state();

    let late_key = b.record_key(t - 61, 1, vec![key(&alice(), 1, 1, 2)]);
    let d = b.command(late_key);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::STALE_REQUEST);
    let late_stop = b.stop(t + 61);
    let d = b.command(late_stop);
    assert_refused(&d, server, MsgType::RecordStop, ErrorCode::STALE_REQUEST);
    assert_eq!(b.state(), before);

    let alice_addr = b.alice_addr;
    let alice_id = b.alice.clone();
    let fetch = b.fetch(&alice_id, t - 61, 0);
    let d = b.deliver(alice_addr, &fetch.encode());
    assert_refused(
        &d,
        alice_addr,
        MsgType::RecordFetch,
        ErrorCode::STALE_REQUEST,
    );
    let list = b.list(&alice_id, t + 61);
    let d = b.deliver(alice_addr, &list.encode());
    assert_refused(
        &d,
        alice_addr,
        MsgType::RecordList,
        ErrorCode::STALE_REQUEST,
    );
    assert_eq!(b.state(), before);
}

/// KW-REC-007: a request carried out is not carried out again: sent again
/// from its own address within the transaction cache it is answered from
/// it, as it was; from another address, or after the cache forgot it
/// while its `time` is still fresh, it is refused with `replay` — a stop
/// does not stop again, a fetch or list sends nothing to the other
/// address.
#[test]
fn kw_rec_007_a_request_is_carried_out_once() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    let elsewhere = addr("203.0.113.66:6666");
    let start = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
    let start = b.signed(start);
    let first = b.deliver(server, &start);
    assert_ok(&first, server, MsgType::RecordStart);
    assert_eq!(first.writes.len(), 1);
    let before = b.state();

    // A retransmission: the same answer, nothing done again.
    let again = b.deliver(server, &start);
    assert_eq!(again.answer(server), first.answer(server));
    assert!(again.writes.is_empty());
    // The same bytes from another address.
    let replayed = b.deliver(elsewhere, &start);
    assert_refused(
        &replayed,
        elsewhere,
        MsgType::RecordStart,
        ErrorCode::REPLAY,
    );
    assert_eq!(b.state(), before);

    // A fetch and a list of alice's, captured and sent from another
    // address: nothing is sent there but the refusal.
    assert_eq!(b.media(1, 0, b"frame 0").outcome, Ok(()));
    let alice_addr = b.alice_addr;
    let alice_id = b.alice.clone();
    for request in [b.fetch(&alice_id, t, 0), b.list(&alice_id, t)] {
        let re = request.msg_type();
        let bytes = request.encode();
        let d = b.deliver(alice_addr, &bytes);
        assert_eq!(d.outcome, Ok(()), "{:?}", d.sent);
        assert_ne!(d.answer(alice_addr).msg_type(), MsgType::Error);
        let d = b.deliver(elsewhere, &bytes);
        assert_refused(&d, elsewhere, re, ErrorCode::REPLAY);
    }

    // A stop made 55 s ahead of the recorder's clock, carried out, then
    // sent again from its own address after the transaction cache
    // (64 s) forgot it, while still fresh.
    let stop = b.stop(t + 55);
    let stop = b.signed(stop);
    assert_ok(&b.deliver(server, &stop), server, MsgType::RecordStop);
    let stopped = b.state();
    b.advance(65_000);
    let replayed = b.deliver(server, &stop);
    assert_refused(&replayed, server, MsgType::RecordStop, ErrorCode::REPLAY);
    assert_eq!(b.state(), stopped);
    // Once it is no longer fresh (and the refusal above is forgotten) it
    // is stale.
    b.advance(65_000);
    let d = b.deliver(server, &stop);
    assert_refused(&d, server, MsgType::RecordStop, ErrorCode::STALE_REQUEST);
}

/// KW-REC-005: a reader sees and fetches only the recordings it is a
/// party of (or all, as an auditor); an account the recorder does not
/// know is refused.
#[test]
fn kw_rec_005_readers_see_only_their_recordings() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    let start = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    assert_eq!(b.media(1, 0, b"frame 0").outcome, Ok(()));
    let carol = b.carol.clone();
    let carol_addr = addr("10.1.0.3:5060");
    let list = b.list(&carol, t);
    let d = b.deliver(carol_addr, &list.encode());
    assert_eq!(d.outcome, Ok(()));
    assert!(matches!(d.answer(carol_addr), Message::RecordListing(_)));
    let fetch = b.fetch(&carol, t, 0);
    let d = b.deliver(carol_addr, &fetch.encode());
    assert_refused(
        &d,
        carol_addr,
        MsgType::RecordFetch,
        ErrorCode::RECORDING_FORBIDDEN,
    );
    let stranger = Identity::generate(bob(), &mut SeededEntropy::from_label("stranger"));
    let fetch = b.fetch(&stranger, t, 0);
    let d = b.deliver(carol_addr, &fetch.encode());
    assert_refused(
        &d,
        carol_addr,
        MsgType::RecordFetch,
        ErrorCode::RECORDING_FORBIDDEN,
    );
    let alice_id = b.alice.clone();
    let alice_addr = b.alice_addr;
    let fetch = b.fetch(&alice_id, t, 0);
    let d = b.deliver(alice_addr, &fetch.encode());
    assert_eq!(d.outcome, Ok(()));
    assert!(matches!(d.answer(alice_addr), Message::RecordData(_)));
}

/// KW-REC-008: a `record-start` for a recording held is carried out only
/// for the same live recording, adding the keys it lacks; with another
/// mode or other parties, under another identifier for a session its
/// server records, or for a stopped recording, it is refused with
/// `bad-state`; a stopped recording takes no key, and a second stop
/// changes nothing.
#[test]
fn kw_rec_008_commands_are_bound_to_their_recording() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    let k0 = key(&alice(), 1, 0, 1);
    let start = b.start(t, RecordingMode::Plaintext, vec![k0.clone()]);
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let before = b.state();

    let other_mode = b.start(t, RecordingMode::CiphertextAndKeys, vec![k0.clone()]);
    let d = b.command(other_mode);
    assert_refused(&d, server, MsgType::RecordStart, ErrorCode::BAD_STATE);
    let mut other_parties = b.start(t, RecordingMode::Plaintext, vec![k0.clone()]);
    if let Message::RecordStart(s) = &mut other_parties {
        s.parties = List::new(vec![alice(), Principal::new("eve@a.example").unwrap()]).unwrap();
    }
    let d = b.command(other_parties);
    assert_refused(&d, server, MsgType::RecordStart, ErrorCode::BAD_STATE);
    let mut other_id = b.start(t, RecordingMode::Plaintext, vec![k0.clone()]);
    if let Message::RecordStart(s) = &mut other_id {
        s.recording = RecordingId([0xf1; 16]);
    }
    let d = b.command(other_id);
    assert_refused(&d, server, MsgType::RecordStart, ErrorCode::BAD_STATE);
    assert_eq!(b.state(), before);

    // Sent again after its server restarted, with a key learned since.
    let k1 = key(&bob(), 1, 0, 2);
    let again = b.start(t, RecordingMode::Plaintext, vec![k0.clone(), k1.clone()]);
    let d = b.command(again);
    assert_ok(&d, server, MsgType::RecordStart);
    assert_eq!(d.writes.len(), 1);
    assert_eq!(b.state()[0].2, 2);

    let stop = b.stop(t);
    assert_ok(&b.command(stop), server, MsgType::RecordStop);
    let stopped = b.state();
    let restart = b.start(t, RecordingMode::Plaintext, vec![k0, k1]);
    let d = b.command(restart);
    assert_refused(&d, server, MsgType::RecordStart, ErrorCode::BAD_STATE);
    let late_key = b.record_key(t, 1, vec![key(&alice(), 1, 1, 3)]);
    let d = b.command(late_key);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::BAD_STATE);
    let stop_again = b.stop(t);
    let d = b.command(stop_again);
    assert_ok(&d, server, MsgType::RecordStop);
    assert!(d.writes.is_empty());
    assert_eq!(b.state(), stopped);
}

/// KW-REC-009: a `record-key` carries one description of one sender, and
/// descriptions move forward: keys of another epoch than the message's,
/// or of two senders, are `bad-state`; new keys for a description not
/// above the highest held are `stale-epoch`; keys held already change
/// nothing.
#[test]
fn kw_rec_009_record_keys_move_forward() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    let start = b.start(
        t,
        RecordingMode::Plaintext,
        vec![key(&alice(), 1, 0, 1), key(&bob(), 1, 0, 2)],
    );
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let k2 = key(&alice(), 1, 2, 3);
    let forward = b.record_key(t, 2, vec![k2.clone()]);
    let d = b.command(forward);
    assert_ok(&d, server, MsgType::RecordKey);
    assert_eq!(d.writes.len(), 1);
    let before = b.state();

    // The same keys again under a new transaction: nothing changes.
    let same = b.record_key(t, 2, vec![k2]);
    let d = b.command(same);
    assert_ok(&d, server, MsgType::RecordKey);
    assert!(d.writes.is_empty());
    // An older description of alice's, arriving late.
    let older = b.record_key(t, 1, vec![key(&alice(), 1, 1, 4)]);
    let d = b.command(older);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::STALE_EPOCH);
    // Another stream of the description held.
    let sideways = b.record_key(t, 2, vec![key(&alice(), 2, 2, 5)]);
    let d = b.command(sideways);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::STALE_EPOCH);
    // Keys of another epoch than the message names.
    let mislabelled = b.record_key(t, 3, vec![key(&alice(), 1, 4, 6)]);
    let d = b.command(mislabelled);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::BAD_STATE);
    // Keys of two senders.
    let two = b.record_key(t, 3, vec![key(&alice(), 1, 3, 7), key(&bob(), 1, 3, 8)]);
    let d = b.command(two);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::BAD_STATE);
    assert_eq!(b.state(), before);
    // Bob's descriptions count on their own.
    let bobs = b.record_key(t, 1, vec![key(&bob(), 1, 1, 9)]);
    assert_ok(&b.command(bobs), server, MsgType::RecordKey);
}

/// KW-REC-010: a key held is never replaced: another key for it, in a
/// `record-start` sent again or a `record-key`, or two keys for one slot
/// in one command, are refused with `bad-state`.
#[test]
fn kw_rec_010_keys_are_never_replaced() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    let start = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let k1 = b.record_key(t, 1, vec![key(&alice(), 1, 1, 2)]);
    assert_ok(&b.command(k1), server, MsgType::RecordKey);
    let before = b.state();

    let swapped = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 0x66)]);
    let d = b.command(swapped);
    assert_refused(&d, server, MsgType::RecordStart, ErrorCode::BAD_STATE);
    let swapped = b.record_key(t, 1, vec![key(&alice(), 1, 1, 0x66)]);
    let d = b.command(swapped);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::BAD_STATE);
    let twice = b.record_key(t, 2, vec![key(&alice(), 1, 2, 3), key(&alice(), 1, 2, 4)]);
    let d = b.command(twice);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::BAD_STATE);
    assert_eq!(b.state(), before);
}

/// KW-REC-011, KW-CRYPTO-070, KW-CRYPTO-071: what a recorder reveals is
/// sealed for the requester, bound to its request: alice, a party, reads
/// her listing and the frame recorded; carol — a reader of the same
/// recorder, no party — cannot open alice's answers, and an observer of
/// the datagram sees no frame. A fetch of alice's replayed from another
/// address after the recorder restarted (it no longer remembers it,
/// KW-REC-007) is answered there, and no one there can read it.
#[test]
fn kw_rec_011_what_is_read_is_sealed_for_its_requester() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    let start = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let frame = b"a frame nobody else may hear";
    assert_eq!(b.media(1, 0, frame).outcome, Ok(()));
    let alice_id = b.alice.clone();
    let carol_id = b.carol.clone();
    let alice_addr = b.alice_addr;
    let mut alice_reader = b.reader(&alice_id);
    let mut carol_reader = b.reader(&carol_id);
    let mut rng = SeededEntropy::from_label("alice reads");

    let list = alice_reader.list(b.now, None, &mut rng);
    let listing = b
        .deliver(alice_addr, &list.encode())
        .answer(alice_addr)
        .clone();
    assert_eq!(carol_reader.open(&listing), Err(ReadError::Unsolicited));
    let Read::Listing(infos) = alice_reader.open(&listing).unwrap() else {
        panic!("a listing")
    };
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].recording, RECORDING);
    assert_eq!(infos[0].packets, 1);

    let fetch = alice_reader.fetch(b.now, RECORDING, 0, &mut rng);
    let fetch_bytes = fetch.encode();
    let data = b
        .deliver(alice_addr, &fetch_bytes)
        .answer(alice_addr)
        .clone();
    let Message::RecordData(sealed) = &data else {
        panic!("record-data: {data:?}")
    };
    // The observer of the datagram: no frame in it.
    let wire = data.encode();
    assert!(!wire.windows(frame.len()).any(|w| w == frame));
    assert!(
        !sealed
            .chunk
            .as_slice()
            .windows(8)
            .any(|w| frame.windows(8).any(|f| f == w))
    );
    // Carol, given alice's request and answer as if they were hers, with
    // her own key: nothing opens.
    let recorder_account = b.recorder_cert.tbs.subject.clone();
    let recorder_kx = b.recorder_kx;
    let carol_view = keyway::crypto::ReaderBinding {
        recorder: &recorder_account,
        recorder_kx: &recorder_kx,
        requester: &alice(),
        requester_kx: &carol_id.kx.public(),
        request: &fetch_bytes,
    };
    let ad = keyway::crypto::data_ad(&sealed.txn, &sealed.recording, sealed.index, sealed.more);
    assert_eq!(
        keyway::crypto::open_from_recorder(
            &carol_view,
            &carol_id.kx,
            &sealed.epk,
            &ad,
            sealed.chunk.as_slice()
        ),
        Err(CryptoError::DecryptFailed)
    );
    // A clear field moved: alice's reader refuses it, and keeps waiting.
    let mut moved = sealed.clone();
    moved.more = !moved.more;
    assert!(matches!(
        alice_reader.open(&Message::RecordData(moved)),
        Err(ReadError::Crypto(CryptoError::DecryptFailed))
    ));
    assert_eq!(
        alice_reader.open(&data).unwrap(),
        Read::Chunk {
            recording: RECORDING,
            index: 0,
            data: frame.to_vec(),
            more: false,
        }
    );
    // Taken once: the request no longer waits.
    assert_eq!(alice_reader.open(&data), Err(ReadError::Unsolicited));

    // The recorder restarts and forgets the fetch; the captured fetch is
    // sent again, still fresh, from elsewhere: answered there, unreadable.
    b.restart();
    let elsewhere = addr("203.0.113.66:6666");
    let d = b.deliver(elsewhere, &fetch_bytes);
    let Message::RecordData(replayed) = d.answer(elsewhere).clone() else {
        panic!("answered")
    };
    assert!(
        !replayed
            .chunk
            .as_slice()
            .windows(frame.len())
            .any(|w| w == frame)
    );
    let ad = keyway::crypto::data_ad(
        &replayed.txn,
        &replayed.recording,
        replayed.index,
        replayed.more,
    );
    assert_eq!(
        keyway::crypto::open_from_recorder(
            &carol_view,
            &carol_id.kx,
            &replayed.epk,
            &ad,
            replayed.chunk.as_slice()
        ),
        Err(CryptoError::DecryptFailed)
    );
    // It was sealed for alice, as the request it answers.
    let alice_view = keyway::crypto::ReaderBinding {
        requester_kx: &alice_id.kx.public(),
        ..carol_view
    };
    assert_eq!(
        keyway::crypto::open_from_recorder(
            &alice_view,
            &alice_id.kx,
            &replayed.epk,
            &ad,
            replayed.chunk.as_slice()
        )
        .unwrap(),
        frame
    );
    // Carol's own fetch of it is refused (KW-REC-005).
    let mut carol_reader = b.reader(&carol_id);
    let carols = carol_reader.fetch(b.now, RECORDING, 0, &mut rng);
    let carol_addr = addr("10.1.0.3:5060");
    let d = b.deliver(carol_addr, &carols.encode());
    assert_eq!(
        carol_reader.open(d.answer(carol_addr)),
        Err(ReadError::Refused(ErrorCode::RECORDING_FORBIDDEN))
    );
}

/// KW-CRYPTO-071: a reader takes the recorder's key only from a
/// certificate it confirms with role recorder.
#[test]
fn kw_crypto_071_the_recorder_certificate_is_confirmed() {
    let b = bench();
    let deployment_server_cert = b.config.servers.values().next().unwrap().clone();
    assert_eq!(
        RecordingReader::new(b.alice.clone(), &deployment_server_cert, &b.trust, b.now)
            .unwrap_err(),
        CryptoError::Cert(keyway::crypto::CertError::RoleMismatch)
    );
    let later = b.now.later(2 * 24 * 3600 * 1000);
    assert_eq!(
        RecordingReader::new(b.alice.clone(), &b.recorder_cert, &b.trust, later).unwrap_err(),
        CryptoError::Cert(keyway::crypto::CertError::Expired)
    );
}

/// KW-REC-011, end to end: a recorded call, then its caller — configured
/// as a reader of its domain's recorder — lists and fetches it through
/// the network of the lab, opening each answer with a `RecordingReader`,
/// and gets every frame of the call; a device of another account, also a
/// reader, sees no recording and opens none of the caller's answers.
#[test]
fn kw_rec_011_a_party_reads_its_recorded_call() {
    use keyway::core::DeviceCommand;
    use keyway::testkit::{Lab, LabOptions, Step};
    const CALLER: &str = "u1@a.example";
    const CALLEE: &str = "u2@a.example";
    let opts = LabOptions {
        domains: vec!["a.example"],
        devices: 3,
        hub: false,
        record: true,
        ..LabOptions::default()
    };
    let deployment = opts.plan().provision();
    let kit = &deployment.domains[0];
    let caller = kit.devices[0].identity.clone();
    let other = kit.devices[2].identity.clone();
    let mut lab = Lab::new(opts);
    let recorder_addr = lab.recorders[0].addr;
    {
        let r = &mut lab.recorders[0];
        for (serial, id) in [(100, &caller), (102, &other)] {
            r.config
                .readers
                .insert(id.account.clone(), reader_cert(kit, id, serial));
        }
        r.recorder = Recorder::new(r.config.clone());
    }
    let rid = &lab.recorders[0].config.identity;
    let recorder_cert = kit.ca.issue(&CertProfile {
        serial: 99,
        subject: rid.account.clone(),
        role: Role::Recorder,
        sig_key: rid.signing.public(),
        kx_key: rid.kx.public(),
        not_before: T0 / 1000 - 3600,
        not_after: T0 / 1000 + 24 * 3600,
    });
    let trust = TrustStore::new(vec![kit.ca.anchor()]);

    lab.register_all();
    let session = lab.call(CALLER, CALLEE);
    let mut frames = Vec::new();
    for i in 0..3 {
        for who in [CALLER, CALLEE] {
            let frame = format!("{who} says {i}").into_bytes();
            frames.push(frame.clone());
            lab.command(who, DeviceCommand::Media(session, frame));
        }
    }
    lab.settle();
    lab.command(CALLER, DeviceCommand::HangUp(session));
    lab.settle();

    // The reader's datagrams go to the recorder from its own address; its
    // answers are taken from the lab's trace.
    let mut rng = SeededEntropy::from_label("the caller reads");
    let ask = |lab: &mut Lab, from: Addr, request: &Message| -> Message {
        let mark = lab.trace.len();
        lab.inject(recorder_addr, from, &request.encode());
        lab.trace[mark..]
            .iter()
            .find_map(|s| match s {
                Step::Sent { to, message, .. } if *to == from => Some(message.clone()),
                _ => None,
            })
            .expect("answered where it came from")
    };
    let caller_addr = addr("10.1.0.1:7777");
    let other_addr = addr("10.1.0.3:7777");
    let mut reader =
        RecordingReader::new(caller.clone(), &recorder_cert, &trust, lab.clock()).unwrap();
    let mut others =
        RecordingReader::new(other.clone(), &recorder_cert, &trust, lab.clock()).unwrap();

    let list = reader.list(lab.clock(), None, &mut rng);
    let listing = ask(&mut lab, caller_addr, &list);
    let Ok(Read::Listing(infos)) = reader.open(&listing) else {
        panic!("a listing: {listing:?}")
    };
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(info.session, session);
    assert!(info.ended.is_some());
    assert_eq!(info.packets, frames.len() as u64);

    let mut got = Vec::new();
    let mut index = 0;
    loop {
        let fetch = reader.fetch(lab.clock(), info.recording, index, &mut rng);
        let answer = ask(&mut lab, caller_addr, &fetch);
        // Another reader's key opens nothing of it.
        let binding = keyway::crypto::ReaderBinding {
            recorder: &recorder_cert.tbs.subject,
            recorder_kx: &recorder_cert.tbs.kx_key,
            requester: &caller.account,
            requester_kx: &other.kx.public(),
            request: &fetch.encode(),
        };
        let Message::RecordData(d) = &answer else {
            panic!("record-data: {answer:?}")
        };
        let ad = keyway::crypto::data_ad(&d.txn, &d.recording, d.index, d.more);
        assert!(
            keyway::crypto::open_from_recorder(
                &binding,
                &other.kx,
                &d.epk,
                &ad,
                d.chunk.as_slice()
            )
            .is_err()
        );
        let Ok(Read::Chunk { data, more, .. }) = reader.open(&answer) else {
            panic!("a chunk")
        };
        got.push(data);
        if !more {
            break;
        }
        index += 1;
    }
    got.sort();
    frames.sort();
    assert_eq!(got, frames);

    // The other account is a reader too, but no party: its listing is
    // empty, its fetch refused.
    let list = others.list(lab.clock(), None, &mut rng);
    let listing = ask(&mut lab, other_addr, &list);
    assert_eq!(others.open(&listing), Ok(Read::Listing(Vec::new())));
    let fetch = others.fetch(lab.clock(), info.recording, 0, &mut rng);
    let answer = ask(&mut lab, other_addr, &fetch);
    assert_eq!(
        others.open(&answer),
        Err(ReadError::Refused(ErrorCode::RECORDING_FORBIDDEN))
    );
}

/// A reader keeps at most 64 requests waiting for their answers, the
/// oldest forgotten first, and a request answered waits no more: what a
/// recorder, or anyone sending from its address, can make it hold is
/// bounded.
#[test]
fn a_readers_waiting_requests_are_bounded() {
    let mut b = bench();
    let t = b.secs();
    let server = b.server_addr;
    let start = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let alice_id = b.alice.clone();
    let alice_addr = b.alice_addr;
    let mut reader = b.reader(&alice_id);
    let mut rng = SeededEntropy::from_label("alice lists");
    let mut answered = |b: &mut Bench, reader: &mut RecordingReader| {
        let list = reader.list(b.now, None, &mut rng);
        b.deliver(alice_addr, &list.encode())
            .answer(alice_addr)
            .clone()
    };
    let first = answered(&mut b, &mut reader);
    let second = answered(&mut b, &mut reader);
    assert!(reader.open(&second).is_ok());
    let early = answered(&mut b, &mut reader);
    // 62 more wait: 64 in all with `first` and `early`; one more pushes
    // `first` out.
    let mut filler = SeededEntropy::from_label("filler");
    for _ in 0..63 {
        let _ = reader.list(b.now, None, &mut filler);
    }
    assert_eq!(reader.open(&first), Err(ReadError::Unsolicited));
    assert!(matches!(reader.open(&early), Ok(Read::Listing(_))));
}

/// KW-REC-009, KW-SM-014: a `record-key` adds keys only to a recording of
/// the session it names, from the server that started it: one that names
/// the recording but another session, its keys sealed for that session,
/// is refused with `unknown-recording` and adds nothing. The recorder
/// finds the recording by its session, and by no other.
#[test]
fn kw_rec_009_a_record_key_for_another_session_is_refused() {
    let mut b = bench();
    let server = b.server_addr;
    let t = b.secs();
    let start = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let other = SessionId([0x6f; 16]);
    let sealed = b.keys_for(&other, MsgType::RecordKey, vec![key(&alice(), 1, 1, 2)]);
    let record_key = Message::RecordKey(RecordKey {
        txn: b.txn(),
        from: b.server.account.clone(),
        session: other,
        sig: unsigned(),
        time: Time(t),
        epoch: 1,
        recording: RECORDING,
        keys: sealed,
        ext: Extensions::new(),
    });
    let before = b.state();
    let d = b.command(record_key);
    assert_refused(&d, server, MsgType::RecordKey, ErrorCode::UNKNOWN_RECORDING);
    assert_eq!(b.state(), before);
    assert_eq!(
        b.recorder.recording_of(&SESSION).map(|r| r.key_count()),
        Some(1)
    );
    assert!(b.recorder.recording_of(&other).is_none());
    // Nor does a record-stop naming the recording and another session
    // end it.
    let stop = match b.stop(t) {
        Message::RecordStop(stop) => Message::RecordStop(RecordStop {
            session: other,
            ..stop
        }),
        _ => unreachable!(),
    };
    let d = b.command(stop);
    assert_refused(
        &d,
        server,
        MsgType::RecordStop,
        ErrorCode::UNKNOWN_RECORDING,
    );
    assert_eq!(b.state(), before);
}

/// KW-REC-008: a recorder keeps at most its capacity of recordings. When
/// full of live ones it refuses a new one with `busy`; once one has ended,
/// a new recording takes the place of the oldest ended one.
#[test]
fn kw_rec_008_a_recorder_keeps_at_most_its_capacity() {
    let mut b = bench();
    b.config.capacity = 2;
    b.recorder = Recorder::new(b.config.clone());
    let t = b.secs();
    let start = |b: &mut Bench, n: u8| {
        let session = SessionId([n; 16]);
        let keys = b.keys_for(&session, MsgType::RecordStart, vec![key(&alice(), 1, 0, n)]);
        Message::RecordStart(RecordStart {
            txn: b.txn(),
            from: b.server.account.clone(),
            session,
            sig: unsigned(),
            time: Time(t),
            recording: RecordingId([n; 16]),
            mode: RecordingMode::Plaintext,
            keys,
            parties: List::new(vec![alice(), bob()]).unwrap(),
            ext: Extensions::new(),
        })
    };
    for n in [1, 2] {
        let m = start(&mut b, n);
        assert_eq!(b.command(m).outcome, Ok(()));
    }
    let m = start(&mut b, 3);
    assert_eq!(
        b.command(m).outcome,
        Err(ProtocolError::Refused {
            re: MsgType::RecordStart,
            code: ErrorCode::BUSY
        })
    );
    let stop = Message::RecordStop(RecordStop {
        txn: b.txn(),
        from: b.server.account.clone(),
        session: SessionId([1; 16]),
        sig: unsigned(),
        time: Time(t),
        recording: RecordingId([1; 16]),
        ext: Extensions::new(),
    });
    assert_eq!(b.command(stop).outcome, Ok(()));
    let m = start(&mut b, 3);
    assert_eq!(b.command(m).outcome, Ok(()));
    let kept: Vec<RecordingId> = b.recorder.recordings().map(|r| r.id).collect();
    assert_eq!(kept, [RecordingId([2; 16]), RecordingId([3; 16])]);
}

/// KW-REC-004: in ciphertext-and-keys mode a recorder keeps the packet as
/// received, which the keys it holds open; in plaintext mode, the frame.
#[test]
fn kw_rec_004_a_recording_keeps_what_its_mode_says() {
    for mode in [RecordingMode::CiphertextAndKeys, RecordingMode::Plaintext] {
        let mut b = bench();
        let t = b.secs();
        let server = b.server_addr;
        let start = b.start(t, mode, vec![key(&alice(), 1, 0, 1)]);
        assert_ok(&b.command(start), server, MsgType::RecordStart);
        let frame = b"a frame of a recorded call";
        assert_eq!(b.media(1, 0, frame).outcome, Ok(()));
        let kept = b.recorder.recording_of(&SESSION).unwrap().packets[0]
            .data
            .clone();
        let ad = keyway::crypto::media_ad(&SESSION, &alice(), 1, 0, 0);
        let k = keyway::crypto::Secret32::new([1; 32]);
        match mode {
            RecordingMode::CiphertextAndKeys => {
                assert_ne!(kept, frame.to_vec());
                assert_eq!(keyway::crypto::open_media(&k, &ad, &kept).unwrap(), frame);
            }
            _ => assert_eq!(kept, frame.to_vec()),
        }
    }
}

/// A `record-start` of recording `n` (session `n`, media key `n`) with
/// these parties.
fn start_with(b: &mut Bench, n: u8, parties: Vec<Principal>) -> Message {
    let session = SessionId([n; 16]);
    let keys = b.keys_for(&session, MsgType::RecordStart, vec![key(&alice(), 1, 0, n)]);
    let time = Time(b.secs());
    Message::RecordStart(RecordStart {
        txn: b.txn(),
        from: b.server.account.clone(),
        session,
        sig: unsigned(),
        time,
        recording: RecordingId([n; 16]),
        mode: RecordingMode::Plaintext,
        keys,
        parties: List::new(parties).unwrap(),
        ext: Extensions::new(),
    })
}

/// What alice's `record-list` (of `session`, or all) gets back.
fn alice_lists(b: &mut Bench, session: Option<SessionId>) -> Vec<keyway::wire::RecordingInfo> {
    let alice_id = b.alice.clone();
    let alice_addr = b.alice_addr;
    let mut reader = b.reader(&alice_id);
    let list = reader.list(b.now, session, &mut b.rng);
    let answer = b
        .deliver(alice_addr, &list.encode())
        .answer(alice_addr)
        .clone();
    match reader.open(&answer) {
        Ok(Read::Listing(infos)) => infos,
        other => panic!("not a listing: {other:?} from {answer:?}"),
    }
}

/// messages.md §3.10, KW-REC-005: a listing holds only the recordings of
/// the session asked for, and at most 64, however many the reader may see.
#[test]
fn kw_rec_005_a_listing_holds_the_session_asked_for_and_at_most_64() {
    let mut b = bench();
    b.config.capacity = 80;
    b.recorder = Recorder::new(b.config.clone());
    for n in 1..=70 {
        let m = start_with(&mut b, n, vec![alice(), bob()]);
        assert_eq!(b.command(m).outcome, Ok(()));
    }
    assert_eq!(alice_lists(&mut b, None).len(), 64);
    let one = alice_lists(&mut b, Some(SessionId([5; 16])));
    assert_eq!(
        one.iter().map(|i| i.session).collect::<Vec<_>>(),
        [SessionId([5; 16])]
    );
}

/// messages.md §3.10: a listing holds as many recordings as fit in one
/// message (`recordings` at most 16,384 bytes); those of eight long
/// account names each do not all fit.
#[test]
fn a_listing_holds_as_many_recordings_as_fit() {
    let mut b = bench();
    let long = |i: usize| {
        let local = format!("p{i}{}", "x".repeat(62));
        let domain = format!(
            "{}.{}.{}.example",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(50)
        );
        Principal::new(&format!("{local}@{domain}")).unwrap()
    };
    let parties: Vec<Principal> = std::iter::once(alice()).chain((1..8).map(long)).collect();
    for n in 1..=12 {
        let m = start_with(&mut b, n, parties.clone());
        assert_eq!(b.command(m).outcome, Ok(()));
    }
    let listed = alice_lists(&mut b, None).len();
    assert!((1..12).contains(&listed), "{listed} listed of 12");
}

/// KW-REC-007: the recorder asks to be woken while it remembers requests
/// — when the first of them may be forgotten, never earlier than now — and
/// not when it remembers none, so that its memory of requests is freed
/// without being polled in a loop.
#[test]
fn kw_rec_007_the_recorder_is_woken_to_forget_requests() {
    let mut b = bench();
    assert_eq!(b.recorder.poll_timeout(), None);
    let t = b.secs();
    let server = b.server_addr;
    let start = b.start(t, RecordingMode::Plaintext, vec![key(&alice(), 1, 0, 1)]);
    assert_ok(&b.command(start), server, MsgType::RecordStart);
    let due = b.recorder.poll_timeout().expect("woken to forget");
    assert!(due > b.now.mono && due <= b.now.mono + 130_000, "{due}");
    b.advance(200_000);
    assert_eq!(b.recorder.poll_timeout(), None);
}
