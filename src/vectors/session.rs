//! Session keys as scenarios (KW-KEY-002 to KW-KEY-005, KW-CRYPTO-041,
//! KW-CRYPTO-042), and media payloads (KW-CRYPTO-043).

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, verify_file};
use crate::crypto::{
    CryptoError, DirectionKeys, Entropy, KeyPolicy, Secret32, media_ad, message_ad, open_media,
    rekey_ad, seal_media,
};
use crate::wire::{MsgType, Principal, SessionId};

/// One step of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// `send` (the sender encrypts; payload must match), `receive` (the
    /// receiver decrypts), `rekey` (the sender rekeys under the current key
    /// with `new_key`), `accept-rekey`, `expire`.
    op: String,
    now: u64,
    /// The step is in the direction `to` → `from` (both directions start
    /// with the same epoch-0 key, KW-CRYPTO-040).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reverse: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    msg_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plaintext: Option<Hex>,
    /// The associated data the step computes (every step but `expire`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ad: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_key: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<Hex>,
    /// `ok`, or the protocol error code name the step must fail with.
    expect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// A scenario: the two ends of a session, fed step by step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionTest {
    #[serde(flatten)]
    meta: Meta,
    session: Hex,
    from: String,
    to: String,
    /// The epoch-0 key.
    key: Hex,
    grace_secs: u64,
    steps: Vec<Step>,
}

const RECIPE: &str = "A sender and a receiver hold each direction of the session (from -> to, and to -> from for steps with reverse) with `key` as epoch 0. Apply the steps in order; the step's own direction gives its sender, receiver, and the from and to of its associated data. \
send: payload = AES-SIV(k_epoch, [ad], plaintext) with ad = cbor([\"keyway-v1 msg\", 1, session, from, to, type, epoch, seq]) and the sender's current epoch and next seq (outputs: epoch, seq, ad, payload). \
receive: ad as for send from the step's type, epoch and seq; the receiver checks the epoch (current, or the previous one while now < rekey time + grace_secs), the replay window (64) and decrypts: expect ok with plaintext, or the error; \
a failed step changes no state. rekey: the sender wraps new_key under the current key: wrapped = AES-SIV(k, [ad], new_key) with ad = cbor([\"keyway-v1 rekey\", 1, session, from, to, epoch, seq]), epoch the next one and seq the current epoch's next (outputs: epoch, seq, ad, wrapped), then uses it from seq 0. \
accept-rekey: the receiver checks epoch = current + 1, seq in the current epoch's window, unwraps (ad as for rekey) and installs it. expire: the receiver drops epochs whose grace has passed. \
Every output, expect and detail is recomputed; the scenario's result is that of its first failing step.";

const NOTES: &[(&str, &str)] = &[
    ("Replay", "A sequence number already accepted (KW-KEY-005)."),
    (
        "Stale",
        "An epoch that is retired or was never installed (KW-KEY-005).",
    ),
    ("Moved", "A payload presented as another message type."),
    (
        "Reflected",
        "A payload of one direction presented in the other: the associated data binds from and to (KW-CRYPTO-041).",
    ),
    ("Modified", "A bit of the wrapped key is flipped."),
];

/// Both ends of one direction.
struct Direction {
    sender: DirectionKeys,
    receiver: DirectionKeys,
}

struct Ends {
    forward: Direction,
    reverse: Direction,
    policy: KeyPolicy,
}

fn msg_type(name: Option<&str>) -> Result<MsgType, String> {
    let name = name.ok_or("no msg_type")?;
    MsgType::ALL
        .iter()
        .copied()
        .find(|t| t.name() == name)
        .ok_or(format!("message type {name}"))
}

/// Recomputes one step from its inputs, on the ends' state: the step as
/// it must be recorded (its inputs, outputs, `expect` and `detail`).
fn apply(ends: &mut Ends, t: &SessionTest, step: &Step) -> Result<Step, String> {
    let session = SessionId(t.session.array()?);
    let (from, to, dir) = {
        let a = Principal::new(&t.from).map_err(|e| e.to_string())?;
        let b = Principal::new(&t.to).map_err(|e| e.to_string())?;
        if step.reverse {
            (b, a, &mut ends.reverse)
        } else {
            (a, b, &mut ends.forward)
        }
    };
    let needed = |v: &Option<u64>, name: &str| v.ok_or(format!("no {name}"));
    let mut out = Step {
        op: step.op.clone(),
        now: step.now,
        reverse: step.reverse,
        ..blank()
    };
    let result: Result<(), CryptoError> = match step.op.as_str() {
        "send" => {
            let ty = msg_type(step.msg_type.as_deref())?;
            let pt = step.plaintext.clone().ok_or("no plaintext")?;
            out.msg_type = step.msg_type.clone();
            out.plaintext = Some(pt.clone());
            dir.sender.seal(ty, &pt.0).map(|sealed| {
                out.epoch = Some(sealed.epoch);
                out.seq = Some(sealed.seq);
                out.ad = Some(Hex(message_ad(
                    &session,
                    &from,
                    &to,
                    ty,
                    sealed.epoch,
                    sealed.seq,
                )));
                out.payload = Some(Hex(sealed.payload));
            })
        }
        "receive" => {
            let ty = msg_type(step.msg_type.as_deref())?;
            let (epoch, seq) = (needed(&step.epoch, "epoch")?, needed(&step.seq, "seq")?);
            let payload = step.payload.clone().ok_or("no payload")?;
            out.msg_type = step.msg_type.clone();
            out.epoch = Some(epoch);
            out.seq = Some(seq);
            out.ad = Some(Hex(message_ad(&session, &from, &to, ty, epoch, seq)));
            out.payload = Some(payload.clone());
            dir.receiver
                .open(ty, epoch, seq, &payload.0, step.now)
                .map(|pt| out.plaintext = Some(Hex(pt)))
        }
        "rekey" => {
            let key = step.new_key.clone().ok_or("no new_key")?;
            out.new_key = Some(key.clone());
            dir.sender
                .rekey_wrapped_with(Secret32::new(key.array()?), step.now)
                .map(|r| {
                    out.epoch = Some(r.epoch);
                    out.seq = Some(r.seq);
                    out.ad = Some(Hex(rekey_ad(&session, &from, &to, r.epoch, r.seq)));
                    out.wrapped = Some(Hex(r.wrapped.to_vec()));
                })
        }
        "accept-rekey" => {
            let (epoch, seq) = (needed(&step.epoch, "epoch")?, needed(&step.seq, "seq")?);
            let wrapped = step.wrapped.clone().ok_or("no wrapped")?;
            out.epoch = Some(epoch);
            out.seq = Some(seq);
            out.ad = Some(Hex(rekey_ad(&session, &from, &to, epoch, seq)));
            out.wrapped = Some(wrapped.clone());
            dir.receiver
                .accept_rekey_wrapped(epoch, seq, &wrapped.0, step.now, &ends.policy)
        }
        "expire" => {
            dir.receiver.expire(step.now);
            Ok(())
        }
        other => return Err(format!("unknown op {other:?}")),
    };
    match result {
        Ok(()) => out.expect = "ok".into(),
        Err(e) => {
            let f = Failure::from(e);
            out.expect = f.code;
            out.detail = Some(f.detail);
        }
    }
    Ok(out)
}

fn ends(t: &SessionTest) -> Result<Ends, String> {
    let session = SessionId(t.session.array()?);
    let from = Principal::new(&t.from).map_err(|e| e.to_string())?;
    let to = Principal::new(&t.to).map_err(|e| e.to_string())?;
    let key = Secret32::new(t.key.array()?);
    let direction = |from: &Principal, to: &Principal| Direction {
        sender: DirectionKeys::new(session, from.clone(), to.clone(), key.clone(), 0),
        receiver: DirectionKeys::new(session, from.clone(), to.clone(), key.clone(), 0),
    };
    Ok(Ends {
        forward: direction(&from, &to),
        reverse: direction(&to, &from),
        policy: KeyPolicy {
            grace_secs: t.grace_secs,
            ..KeyPolicy::default()
        },
    })
}

/// A step with nothing filled in.
fn blank() -> Step {
    Step {
        op: String::new(),
        now: 0,
        reverse: false,
        msg_type: None,
        epoch: None,
        seq: None,
        plaintext: None,
        ad: None,
        payload: None,
        new_key: None,
        wrapped: None,
        expect: String::new(),
        detail: None,
    }
}

/// A step as written before generation fills in its outputs.
fn step(op: &str, now: u64) -> Step {
    Step {
        op: op.into(),
        now,
        ..blank()
    }
}

fn send(now: u64, ty: &str, text: &[u8]) -> Step {
    Step {
        msg_type: Some(ty.into()),
        plaintext: Some(Hex(text.to_vec())),
        ..step("send", now)
    }
}

/// Replays a scenario from its inputs: every step recomputed, and the
/// verdict that of the first failing step. For generation, `links` copy an
/// earlier step's output into a later step's inputs (`receive` of what step
/// `i` sent), and `flips` name the steps whose copied payload or wrapped key
/// gets its first bit flipped.
fn replay(
    t: &SessionTest,
    links: &[(usize, usize)],
    flips: &[usize],
) -> Result<SessionTest, String> {
    let mut e = ends(t)?;
    let mut done: Vec<Step> = Vec::new();
    for (i, s) in t.steps.iter().enumerate() {
        let mut s = s.clone();
        if let Some((_, from)) = links.iter().find(|(to, _)| *to == i) {
            if let Some(src) = done.get(*from) {
                s.epoch = s.epoch.or(src.epoch);
                s.seq = s.seq.or(src.seq);
                s.payload = s.payload.or_else(|| src.payload.clone());
                s.wrapped = s.wrapped.or_else(|| src.wrapped.clone());
                if flips.contains(&i) {
                    let bytes = s.wrapped.as_mut().or(s.payload.as_mut());
                    if let Some(b) = bytes.and_then(|b| b.0.first_mut()) {
                        *b ^= 1;
                    }
                }
            }
        }
        done.push(apply(&mut e, t, &s)?);
    }
    let outcome = match done.iter().find(|s| s.expect != "ok") {
        Some(first) => Err(Failure {
            code: first.expect.clone(),
            detail: first.detail.clone().unwrap_or_default(),
        }),
        None => Ok(()),
    };
    let (meta, _) = t.meta.judged(outcome)?;
    Ok(SessionTest {
        meta,
        steps: done,
        ..t.clone()
    })
}

/// The test recomputed from its inputs.
fn complete(_: &(), t: &SessionTest) -> Result<SessionTest, String> {
    replay(t, &[], &[])
}

fn scenario(
    tc: &str,
    comment: &str,
    reqs: &[&str],
    flags: &[&str],
    steps: Vec<Step>,
    links: &[(usize, usize)],
) -> SessionTest {
    tampered(tc, comment, reqs, flags, steps, links, &[])
}

/// [`scenario`], with the copies into `flips` tampered with.
fn tampered(
    tc: &str,
    comment: &str,
    reqs: &[&str],
    flags: &[&str],
    steps: Vec<Step>,
    links: &[(usize, usize)],
    flips: &[usize],
) -> SessionTest {
    let mut rng = entropy_for(tc);
    let t = SessionTest {
        meta: Meta::valid(tc, comment, reqs, flags),
        session: Hex(rng.array::<16>().to_vec()),
        from: "alice@a.example".into(),
        to: "bob@b.example".into(),
        key: Hex(rng.array::<32>().to_vec()),
        grace_secs: 30,
        steps,
    };
    replay(&t, links, flips).unwrap_or(t)
}

pub fn generate() -> String {
    let new_key = |tc: &str| Hex(entropy_for(&format!("{tc}/new-key")).array::<32>().to_vec());
    let receive = |now: u64, ty: &str| Step {
        msg_type: Some(ty.into()),
        ..step("receive", now)
    };
    let tests = vec![
        scenario(
            "session/reuse-both-ways",
            "the session key of epoch 0 encrypts successive messages of one direction (session/both-directions has both); a bye's payload is empty",
            &["KW-KEY-001", "KW-KEY-002", "KW-CRYPTO-040", "KW-CRYPTO-041"],
            &[],
            vec![
                send(10, "info", b"first"),
                receive(10, "info"),
                send(11, "info", b"second"),
                receive(11, "info"),
                send(12, "bye", b""),
                receive(12, "bye"),
            ],
            &[(1, 0), (3, 2), (5, 4)],
        ),
        scenario(
            "session/replay",
            "the same payload twice: the second is a replay",
            &["KW-KEY-005"],
            &["Replay"],
            vec![
                send(10, "info", b"once"),
                receive(10, "info"),
                receive(11, "info"),
            ],
            &[(1, 0), (2, 0)],
        ),
        scenario(
            "session/out-of-order",
            "a later message first, then the earlier one: both accepted",
            &["KW-KEY-005"],
            &[],
            vec![
                send(10, "info", b"a"),
                send(10, "info", b"b"),
                receive(11, "info"),
                receive(11, "info"),
            ],
            &[(2, 1), (3, 0)],
        ),
        scenario(
            "session/moved-type",
            "an info payload presented as a bye",
            &["KW-CRYPTO-041"],
            &["Moved"],
            vec![send(10, "info", b"x"), receive(10, "bye")],
            &[(1, 0)],
        ),
        scenario(
            "session/rekey-and-grace",
            "rekey under the current key; the old epoch is accepted within the grace window, then retired",
            &[
                "KW-KEY-003",
                "KW-KEY-004",
                "KW-KEY-005",
                "KW-CRYPTO-042",
                "KW-CRYPTO-044",
            ],
            &["Stale"],
            vec![
                send(10, "info", b"late"),
                Step {
                    new_key: Some(new_key("session/rekey-and-grace")),
                    ..step("rekey", 100)
                },
                step("accept-rekey", 100),
                send(101, "info", b"new epoch"),
                receive(101, "info"),
                receive(129, "info"),
                step("expire", 130),
                receive(131, "info"),
            ],
            &[(2, 1), (4, 3), (5, 0), (7, 0)],
        ),
        scenario(
            "session/replayed-rekey",
            "a rekey accepted twice: the second names an epoch that is not next",
            &["KW-KEY-005", "KW-CRYPTO-042"],
            &["Stale"],
            vec![
                Step {
                    new_key: Some(new_key("session/replayed-rekey")),
                    ..step("rekey", 5)
                },
                step("accept-rekey", 5),
                step("accept-rekey", 6),
            ],
            &[(1, 0), (2, 0)],
        ),
        scenario(
            "session/unknown-epoch",
            "a message of an epoch never installed",
            &["KW-KEY-005"],
            &["Stale"],
            vec![
                send(10, "info", b"x"),
                Step {
                    epoch: Some(7),
                    msg_type: Some("info".into()),
                    ..step("receive", 10)
                },
            ],
            &[(1, 0)],
        ),
    ];
    let mut tests = tests;
    // The replay window's edge: after seq 64, seq 1 (63 below) is accepted
    // and seq 0 (64 below) is not.
    let mut edge: Vec<Step> = (0..=64).map(|i| send(10, "info", &[i as u8])).collect();
    edge.extend([
        receive(11, "info"),
        receive(11, "info"),
        receive(11, "info"),
    ]);
    tests.push(scenario(
        "session/replay-window-edge",
        "after seq 64, seq 1 is inside the window and seq 0 outside",
        &["KW-KEY-005", "KW-CRYPTO-044"],
        &["Replay"],
        edge,
        &[(65, 64), (66, 1), (67, 0)],
    ));
    // The grace window's edge: the old epoch is accepted before, not at,
    // rekey time + grace.
    tests.push(scenario(
        "session/grace-edge",
        "a message of the replaced epoch arriving exactly when the grace ends",
        &["KW-KEY-004", "KW-CRYPTO-044"],
        &["Stale"],
        vec![
            send(10, "info", b"late"),
            Step {
                new_key: Some(new_key("session/grace-edge")),
                ..step("rekey", 100)
            },
            step("accept-rekey", 100),
            receive(130, "info"),
        ],
        &[(2, 1), (3, 0)],
    ));
    // Both directions of one session: each starts from the epoch-0 key
    // and has its own sequence numbers and epochs (KW-CRYPTO-040), and the
    // associated data names the direction (KW-CRYPTO-041).
    let back = |s: Step| Step { reverse: true, ..s };
    tests.push(scenario(
        "session/both-directions",
        "alice and bob each send under the epoch-0 key; alice's rekey leaves bob's direction at epoch 0",
        &[
            "KW-KEY-001",
            "KW-CRYPTO-040",
            "KW-CRYPTO-041",
            "KW-CRYPTO-042",
        ],
        &[],
        vec![
            send(10, "info", b"hello"),
            receive(10, "info"),
            back(send(11, "info", b"hello")),
            back(receive(11, "info")),
            Step {
                new_key: Some(new_key("session/both-directions")),
                ..step("rekey", 20)
            },
            step("accept-rekey", 20),
            back(send(21, "info", b"after")),
            back(receive(21, "info")),
            send(22, "info", b"after"),
            receive(22, "info"),
        ],
        &[(1, 0), (3, 2), (5, 4), (7, 6), (9, 8)],
    ));
    tests.push(scenario(
        "session/reflected",
        "alice's payload presented to her as bob's",
        &["KW-CRYPTO-040", "KW-CRYPTO-041"],
        &["Reflected"],
        vec![send(10, "info", b"hello"), back(receive(10, "info"))],
        &[(1, 0)],
    ));
    tests.push(tampered(
        "session/rekey-modified",
        "a rekey whose wrapped key has a flipped bit, then the genuine one: the failure changed nothing",
        &["KW-CRYPTO-042", "KW-CRYPTO-044", "KW-ERR-004"],
        &["Modified"],
        vec![
            Step {
                new_key: Some(new_key("session/rekey-modified")),
                ..step("rekey", 5)
            },
            step("accept-rekey", 5),
            step("accept-rekey", 6),
            send(7, "info", b"new epoch"),
            receive(7, "info"),
        ],
        &[(1, 0), (2, 0), (4, 3)],
        &[1],
    ));
    VectorFile::new("session", "spec/crypto.md §5", RECIPE, NOTES, (), tests).to_json()
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "session", |t: &SessionTest| &t.meta, complete)
}

/// One media frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaTest {
    #[serde(flatten)]
    meta: Meta,
    key: Hex,
    session: Hex,
    from: String,
    stream: u64,
    epoch: u64,
    seq: u64,
    ad: Hex,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frame: Option<Hex>,
    payload: Hex,
}

pub fn generate_media() -> String {
    let mut rng = entropy_for("media/frame");
    let key = Secret32::new(rng.array());
    let session = SessionId(rng.array());
    let from = Principal("alice@a.example".into());
    let frame: Vec<u8> = (0..160).map(|i| i as u8).collect();
    let ad = media_ad(&session, &from, 1, 0, 42);
    let payload = seal_media(&key, &ad, &frame);
    let good = MediaTest {
        meta: Meta::valid(
            "media/frame",
            "a 160-byte audio frame",
            &["KW-CRYPTO-043", "KW-REC-004"],
            &[],
        ),
        key: Hex(key.expose().to_vec()),
        session: Hex(session.0.to_vec()),
        from: from.as_str().into(),
        stream: 1,
        epoch: 0,
        seq: 42,
        ad: Hex(ad),
        frame: Some(Hex(frame)),
        payload: Hex(payload),
    };
    let mut other_stream = good.clone();
    other_stream.stream = 2;
    other_stream.frame = None;
    other_stream.meta = Meta::valid(
        "media/other-stream",
        "the frame presented as another stream's",
        &["KW-CRYPTO-043"],
        &["Moved"],
    );
    let good = complete_media(&(), &good).unwrap_or(good);
    let other_stream = complete_media(&(), &other_stream).unwrap_or(other_stream);
    let recipe = "payload = AES-SIV(key, [ad], frame) with ad = cbor([\"keyway-v1 media\", 1, session, from, stream, epoch, seq]) (compare ad); valid tests decrypt to frame, invalid ones fail.";
    VectorFile::new(
        "media",
        "spec/crypto.md §5",
        recipe,
        &[("Moved", "A payload presented as another stream's.")],
        (),
        vec![good, other_stream],
    )
    .to_json()
}

/// The test recomputed from its inputs (`key`, `session`, `from`,
/// `stream`, `epoch`, `seq`, and `frame` or `payload`): `ad`; with `frame`,
/// the payload sealing it; without, the opened frame of a valid payload.
fn complete_media(_: &(), t: &MediaTest) -> Result<MediaTest, String> {
    let session = SessionId(t.session.array()?);
    let from = Principal::new(&t.from).map_err(|e| e.to_string())?;
    let ad = media_ad(&session, &from, t.stream, t.epoch, t.seq);
    let key = Secret32::new(t.key.array()?);
    let payload = match &t.frame {
        Some(frame) => Hex(seal_media(&key, &ad, &frame.0)),
        None => t.payload.clone(),
    };
    let (meta, frame) = t
        .meta
        .judged(open_media(&key, &ad, &payload.0).map_err(Failure::from))?;
    Ok(MediaTest {
        meta,
        ad: Hex(ad),
        frame: frame.map(Hex),
        payload,
        ..t.clone()
    })
}

pub fn verify_media_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "media", |t: &MediaTest| &t.meta, complete_media)
}
