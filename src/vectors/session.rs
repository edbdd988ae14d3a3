//! Session keys as scenarios (KW-KEY-002 to KW-KEY-005, KW-CRYPTO-041,
//! KW-CRYPTO-042), and media payloads (KW-CRYPTO-043).

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    msg_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plaintext: Option<Hex>,
    /// The associated data, for inspection.
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

/// A scenario: two ends of one direction, fed step by step.
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

const RECIPE: &str = "A sender and a receiver hold the direction from -> to with `key` as epoch 0. Apply the steps in order. \
send: payload = AES-SIV(k_epoch, [cbor([\"keyway-v1 msg\", 1, session, from, to, type, epoch, seq])], plaintext) with the sender's next seq (ad given). \
receive: the receiver checks the epoch (current, or the previous one within grace_secs of the rekey), the replay window (64) and decrypts: expect ok with plaintext, or the error; \
a failed step changes no state. rekey: the sender wraps new_key under the current key: AES-SIV(k, [cbor([\"keyway-v1 rekey\", 1, session, from, to, epoch, seq])], new_key), then uses it. \
accept-rekey: the receiver installs it. expire: the receiver drops epochs whose grace has passed.";

const NOTES: &[(&str, &str)] = &[
    ("Replay", "A sequence number already accepted (KW-KEY-005)."),
    (
        "Stale",
        "An epoch that is retired or was never installed (KW-KEY-005).",
    ),
    ("Moved", "A payload presented as another message type."),
];

struct Ends {
    sender: DirectionKeys,
    receiver: DirectionKeys,
    policy: KeyPolicy,
}

fn msg_type(name: &str) -> Result<MsgType, String> {
    MsgType::ALL
        .iter()
        .copied()
        .find(|t| t.name() == name)
        .ok_or(format!("message type {name}"))
}

fn failure_name(e: CryptoError) -> (String, String) {
    let f = Failure::from(e);
    (f.code, f.detail)
}

/// Applies one step; returns the outcome ("ok" or error) and the step as
/// it should be recorded.
fn apply(ends: &mut Ends, t: &SessionTest, step: &Step) -> Result<Step, String> {
    let mut out = step.clone();
    let session = SessionId(t.session.array()?);
    let from = Principal::new(&t.from).map_err(|e| e.to_string())?;
    let to = Principal::new(&t.to).map_err(|e| e.to_string())?;
    let result: Result<(), CryptoError> = match step.op.as_str() {
        "send" => {
            let ty = msg_type(step.msg_type.as_deref().unwrap_or("info"))?;
            let pt = step.plaintext.clone().unwrap_or_default();
            let sealed = ends.sender.seal(ty, &pt.0).map_err(|e| e.to_string())?;
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
            Ok(())
        }
        "receive" => {
            let ty = msg_type(step.msg_type.as_deref().unwrap_or("info"))?;
            let payload = step.payload.clone().ok_or("no payload")?;
            let r = ends.receiver.open(
                ty,
                step.epoch.unwrap_or(0),
                step.seq.unwrap_or(0),
                &payload.0,
                step.now,
            );
            r.map(|pt| {
                out.plaintext = Some(Hex(pt));
            })
        }
        "rekey" => {
            let key = Secret32::new(step.new_key.clone().ok_or("no new_key")?.array()?);
            let r = ends
                .sender
                .rekey_wrapped_with(key, step.now)
                .map_err(|e| e.to_string())?;
            out.epoch = Some(r.epoch);
            out.seq = Some(r.seq);
            out.ad = Some(Hex(rekey_ad(&session, &from, &to, r.epoch, r.seq)));
            out.wrapped = Some(Hex(r.wrapped.to_vec()));
            Ok(())
        }
        "accept-rekey" => {
            let wrapped = step.wrapped.clone().ok_or("no wrapped")?;
            ends.receiver.accept_rekey_wrapped(
                step.epoch.unwrap_or(0),
                step.seq.unwrap_or(0),
                &wrapped.0,
                step.now,
                &ends.policy,
            )
        }
        "expire" => {
            ends.receiver.expire(step.now);
            Ok(())
        }
        other => return Err(format!("op {other}")),
    };
    match result {
        Ok(()) => {
            out.expect = "ok".into();
            out.detail = None;
        }
        Err(e) => {
            let (code, detail) = failure_name(e);
            out.expect = code;
            out.detail = Some(detail);
            out.plaintext = None;
        }
    }
    Ok(out)
}

fn ends(t: &SessionTest) -> Result<Ends, String> {
    let session = SessionId(t.session.array()?);
    let from = Principal::new(&t.from).map_err(|e| e.to_string())?;
    let to = Principal::new(&t.to).map_err(|e| e.to_string())?;
    let key = Secret32::new(t.key.array()?);
    Ok(Ends {
        sender: DirectionKeys::new(session, from.clone(), to.clone(), key.clone(), 0),
        receiver: DirectionKeys::new(session, from, to, key, 0),
        policy: KeyPolicy {
            grace_secs: t.grace_secs,
            ..KeyPolicy::default()
        },
    })
}

/// A step as written before generation fills in its outputs.
fn step(op: &str, now: u64) -> Step {
    Step {
        op: op.into(),
        now,
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

fn send(now: u64, ty: &str, text: &[u8]) -> Step {
    Step {
        msg_type: Some(ty.into()),
        plaintext: Some(Hex(text.to_vec())),
        ..step("send", now)
    }
}

/// Fills a scenario's outputs by running it. Steps that refer to an
/// earlier step's output (`receive` of step `i`) copy it through `link`.
fn run_scenario(mut t: SessionTest, links: &[(usize, usize)]) -> SessionTest {
    let Ok(mut e) = ends(&t) else { return t };
    let mut done: Vec<Step> = Vec::new();
    for (i, s) in t.steps.clone().into_iter().enumerate() {
        let mut s = s;
        if let Some((_, from)) = links.iter().find(|(to, _)| *to == i) {
            if let Some(src) = done.get(*from) {
                s.epoch = s.epoch.or(src.epoch);
                s.seq = s.seq.or(src.seq);
                s.payload = s.payload.or_else(|| src.payload.clone());
                s.wrapped = s.wrapped.or_else(|| src.wrapped.clone());
            }
        }
        match apply(&mut e, &t, &s) {
            Ok(out) => done.push(out),
            Err(_) => done.push(s),
        }
    }
    t.steps = done;
    if let Some(first) = t.steps.iter().find(|s| s.expect != "ok") {
        let failure = Failure {
            code: first.expect.clone(),
            detail: first.detail.clone().unwrap_or_default(),
        };
        let m = t.meta.clone();
        let reqs: Vec<&str> = m.requirements.iter().map(String::as_str).collect();
        let flags: Vec<&str> = m.flags.iter().map(String::as_str).collect();
        t.meta = Meta::invalid(&m.tc_id, &m.comment, &reqs, &flags, &failure);
    }
    t
}

fn scenario(
    tc: &str,
    comment: &str,
    reqs: &[&str],
    flags: &[&str],
    steps: Vec<Step>,
    links: &[(usize, usize)],
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
    run_scenario(t, links)
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
            "the session key of epoch 0 encrypts successive messages; a bye's payload is empty",
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
    VectorFile::new("session", "spec/crypto.md §5", RECIPE, NOTES, (), tests).to_json()
}

/// Checks one scenario: every recomputed step equals the recorded one.
pub fn run_vector(t: &SessionTest) -> Result<(), String> {
    let mut e = ends(t)?;
    for (i, s) in t.steps.iter().enumerate() {
        let got = apply(&mut e, t, s)?;
        let field = |name: &str, a: &Option<Hex>, b: &Option<Hex>| match (a, b) {
            (Some(a), Some(b)) => same(&format!("step {i} {name}"), &a.0, &b.0),
            (None, None) => Ok(()),
            _ => Err(format!("step {i} {name}: presence differs")),
        };
        if got.expect != s.expect || got.detail != s.detail {
            return Err(format!(
                "step {i}: expected {} ({:?}), got {} ({:?})",
                s.expect, s.detail, got.expect, got.detail
            ));
        }
        field("payload", &s.payload, &got.payload)?;
        field("wrapped", &s.wrapped, &got.wrapped)?;
        field("ad", &s.ad, &got.ad)?;
        field("plaintext", &s.plaintext, &got.plaintext)?;
    }
    // The test's verdict is its first failing step's, if any.
    let first = t.steps.iter().find(|s| s.expect != "ok");
    let expected = first.map(|s| s.expect.clone());
    let verdict_ok = match t.meta.result {
        super::common::Verdict::Valid => first.is_none(),
        super::common::Verdict::Invalid => t.meta.error == expected,
    };
    if verdict_ok {
        Ok(())
    } else {
        Err("verdict does not match the steps".into())
    }
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(
        text,
        "session",
        |t: &SessionTest| &t.meta,
        |_: &(), t| run_vector(t),
    )
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
    other_stream.ad = Hex(media_ad(&session, &from, 2, 0, 42));
    other_stream.frame = None;
    other_stream.meta = Meta::invalid(
        "media/other-stream",
        "the frame presented as another stream's",
        &["KW-CRYPTO-043"],
        &["Moved"],
        &Failure::from(CryptoError::DecryptFailed),
    );
    let recipe = "payload = AES-SIV(key, [ad], frame) with ad = cbor([\"keyway-v1 media\", 1, session, from, stream, epoch, seq]) (compare ad); valid tests decrypt to frame, invalid ones fail.";
    VectorFile::new(
        "media",
        "spec/crypto.md §5",
        recipe,
        NOTES,
        (),
        vec![good, other_stream],
    )
    .to_json()
}

pub fn verify_media_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(
        text,
        "media",
        |t: &MediaTest| &t.meta,
        |_: &(), t| {
            let session = SessionId(t.session.array()?);
            let from = Principal::new(&t.from).map_err(|e| e.to_string())?;
            let ad = media_ad(&session, &from, t.stream, t.epoch, t.seq);
            same("ad", &t.ad.0, &ad)?;
            let key = Secret32::new(t.key.array()?);
            if let Some(frame) = t
                .meta
                .expect(open_media(&key, &ad, &t.payload.0).map_err(Failure::from))?
            {
                same("frame", &t.frame.clone().unwrap_or_default().0, &frame)?;
                same("payload", &t.payload.0, &seal_media(&key, &ad, &frame))?;
            }
            Ok(())
        },
    )
}
