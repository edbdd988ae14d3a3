//! Recordings sealed for their reader (KW-CRYPTO-070, KW-CRYPTO-071,
//! KW-REC-011): a recorder's `record-listing` and `record-data`, sealed for
//! the requester of a signed `record-list` or `record-fetch`, with every
//! intermediate value, and the answers that must not open.

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::primitives::{siv_cipher, siv_open, siv_seal};
use crate::crypto::{
    Identity, KxKeyPair, ReaderBinding, Secret32, data_ad, listing_ad, reader_key, reader_key_info,
    sign_message, unsigned,
};
use crate::wire::{
    Bytes, Extensions, List, Message, Principal, PublicKey, RecordData, RecordFetch, RecordList,
    RecordListing, RecordingId, RecordingInfo, RecordingMode, SessionId, Time, TxnId,
    decode_plaintext, encode_plaintext,
};

const NOW: u64 = 1_767_225_600;

/// The recorder: its account and the X25519 key pair of its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderParams {
    recorder: String,
    recorder_private: Hex,
    recorder_public: Hex,
}

/// One answer sealed and opened, or an answer that must not open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderTest {
    #[serde(flatten)]
    meta: Meta,
    /// `seal`: the recorder seals `plaintext` as the answer to `request`
    /// (and the requester opens it, with `requester_private`); `open`:
    /// the requester opens `response`.
    operation: String,
    /// The signed request as received, its whole encoding.
    request: Hex,
    /// The X25519 key of the requester's certificate, `P`.
    requester_public: Hex,
    /// The private key of whoever opens: `P`'s for the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requester_private: Option<Hex>,
    /// `seal`: the recorder's ephemeral private key `e`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ephemeral_private: Option<Hex>,
    /// `seal` of an answer to a `record-fetch`: its `more`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    more: Option<bool>,
    /// `seal`: what is sealed; `open`: what a valid answer opens to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plaintext: Option<Hex>,
    /// `cbor(["keyway-v1 reader key", 1, recorder, requester, E, R, P])`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_info: Option<Hex>,
    /// `X25519(e, P)`, which is `X25519(p, E)`; absent when all zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_ephemeral: Option<Hex>,
    /// `X25519(r, P)`, which is `X25519(p, R)`; absent when all zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_static: Option<Hex>,
    /// `k = HKDF(H(request), shared_ephemeral ‖ shared_static, key_info)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<Hex>,
    /// The associated data of the answer's ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ad: Option<Hex>,
    /// `seal`: the answer (output); `open`: the answer (input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<Hex>,
}

const RECIPE: &str = "The request decodes as a record-list or record-fetch; q = its from. R is params.recorder_public (the public key of params.recorder_private, r); P is requester_public (the public key of requester_private, where given). \
seal: E = X25519 public key of ephemeral_private (e); shared_ephemeral = X25519(e, P), shared_static = X25519(r, P) (all-zero fails); key_info = cbor([\"keyway-v1 reader key\", 1, params.recorder, q, E, R, P]); key = HKDF-SHA256(salt = SHA-256(request), ikm = shared_ephemeral || shared_static, info = key_info); \
for a record-list: ad = cbor([\"keyway-v1 record-listing\", txn]) and response = the record-listing {2: txn, 53: AES-SIV(key, [ad], plaintext), 59: E}, plaintext a recording-list; \
for a record-fetch: ad = cbor([\"keyway-v1 record-data\", txn, recording, index, more]) and response = the record-data {2: txn, 50: recording, 54: AES-SIV(key, [ad], plaintext), 56: index, 57: more, 59: E}, with txn, recording and index the request's. \
Then, with requester_private (p), and for open: shared_ephemeral = X25519(p, E), shared_static = X25519(p, R) with E the response's epk, the same key_info and key, ad from the response's clear fields, AES-SIV decryption of its recordings or chunk: valid tests yield plaintext (a listing's is a recording-list); invalid ones fail with the error, carrying the intermediates computed before the failing step.";

const NOTES: &[(&str, &str)] = &[
    (
        "WrongKey",
        "The answer is opened with a private key other than the requester's.",
    ),
    (
        "WrongBinding",
        "The answer is opened against another request, or a clear field of it was changed.",
    ),
    ("Modified", "A bit of the sealed content is flipped."),
    (
        "Forged",
        "The answer was sealed with another static key than the recorder's.",
    ),
    (
        "LowOrderPoint",
        "An X25519 public key of small order: the shared secret is all zeros and must be rejected (KW-CRYPTO-005).",
    ),
];

/// A point of order 8 on Curve25519 (not the identity).
const ORDER_8: [u8; 32] = [
    0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
    0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
];

fn account(s: &str) -> Principal {
    Principal(s.into())
}

fn hex_of(k: &Secret32) -> Hex {
    Hex(k.expose().to_vec())
}

/// The parties of every test, from fixed seeds.
struct Parties {
    recorder: KxKeyPair,
    alice: Identity,
    carol: Identity,
}

fn parties() -> Parties {
    let mut rng = entropy_for("reader/parties");
    Parties {
        recorder: KxKeyPair::generate(&mut rng),
        alice: Identity::generate(account("alice@a.example"), &mut rng),
        carol: Identity::generate(account("carol@a.example"), &mut rng),
    }
}

fn fetch(who: &Identity, txn: [u8; 8], time: u64, index: u64) -> Message {
    let mut m = Message::RecordFetch(RecordFetch {
        txn: TxnId(txn),
        from: who.account.clone(),
        sig: unsigned(),
        time: Time(time),
        recording: RecordingId([0xf0; 16]),
        index,
        ext: Extensions::new(),
    });
    let _ = sign_message(&mut m, &who.signing);
    m
}

fn list(who: &Identity, txn: [u8; 8], time: u64) -> Message {
    let mut m = Message::RecordList(RecordList {
        txn: TxnId(txn),
        from: who.account.clone(),
        session: None,
        sig: unsigned(),
        time: Time(time),
        ext: Extensions::new(),
    });
    let _ = sign_message(&mut m, &who.signing);
    m
}

/// A listing of one recording of alice's call with bob.
fn listing_plaintext() -> Vec<u8> {
    let Some(parties) = List::new(vec![account("alice@a.example"), account("bob@b.example")])
    else {
        return Vec::new();
    };
    let info = RecordingInfo {
        recording: RecordingId([0xf0; 16]),
        session: SessionId([0x5e; 16]),
        started: Time(NOW - 125),
        ended: Some(Time(NOW - 5)),
        mode: RecordingMode::Plaintext,
        parties,
        packets: 1,
        bytes: 24,
        ext: Extensions::new(),
    };
    List::<RecordingInfo, 0, 64>::new(vec![info])
        .map(|l| encode_plaintext(&l))
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn sealing(
    tc: &str,
    comment: &str,
    requirements: &[&str],
    flags: &[&str],
    request: &Message,
    requester: Option<&Identity>,
    requester_public: PublicKey,
    more: Option<bool>,
    plaintext: &[u8],
    params: &ReaderParams,
) -> ReaderTest {
    let ephemeral = KxKeyPair::generate(&mut entropy_for(tc));
    let t = ReaderTest {
        meta: Meta::valid(tc, comment, requirements, flags),
        operation: "seal".into(),
        request: Hex(request.encode()),
        requester_public: Hex(requester_public.0.to_vec()),
        requester_private: requester.map(|r| hex_of(&r.kx.secret())),
        ephemeral_private: Some(hex_of(&ephemeral.secret())),
        more,
        plaintext: Some(Hex(plaintext.to_vec())),
        key_info: None,
        shared_ephemeral: None,
        shared_static: None,
        key: None,
        ad: None,
        response: None,
    };
    complete(params, &t).unwrap_or(t)
}

/// An opening of `from`'s answer, changed by `change`.
fn opening(
    from: &ReaderTest,
    tc: &str,
    comment: &str,
    flags: &[&str],
    params: &ReaderParams,
    change: impl FnOnce(&mut ReaderTest),
) -> ReaderTest {
    let mut t = from.clone();
    t.meta = Meta::valid(tc, comment, &["KW-CRYPTO-071", "KW-REC-011"], flags);
    t.operation = "open".into();
    t.ephemeral_private = None;
    t.more = None;
    t.plaintext = None;
    change(&mut t);
    complete(params, &t).unwrap_or(t)
}

/// `t`'s response, decoded, changed and encoded again.
fn rewrite(t: &mut ReaderTest, change: impl FnOnce(&mut Message)) {
    if let Some(r) = t.response.as_mut()
        && let Ok(mut m) = Message::decode(&r.0)
    {
        change(&mut m);
        *r = Hex(m.encode());
    }
}

pub fn generate() -> String {
    let p = parties();
    let params = ReaderParams {
        recorder: "rec@a.example".into(),
        recorder_private: hex_of(&p.recorder.secret()),
        recorder_public: Hex(p.recorder.public().0.to_vec()),
    };
    let reqs = ["KW-CRYPTO-070", "KW-CRYPTO-071", "KW-REC-011"];
    let alice_fetch = fetch(&p.alice, [0x34; 8], NOW, 0);
    let data = sealing(
        "reader/record-data",
        "a chunk sealed for alice, the requester of the fetch, and opened by her",
        &reqs,
        &[],
        &alice_fetch,
        Some(&p.alice),
        p.alice.kx.public(),
        Some(true),
        b"alice@a.example frame 0, 24",
        &params,
    );
    let listing = sealing(
        "reader/record-listing",
        "a listing sealed for alice, the requester of the list, and opened by her",
        &reqs,
        &[],
        &list(&p.alice, [0x33; 8], NOW),
        Some(&p.alice),
        p.alice.kx.public(),
        None,
        &listing_plaintext(),
        &params,
    );
    let last = sealing(
        "reader/record-data-last",
        "the last chunk (more false) sealed for alice",
        &reqs,
        &[],
        &fetch(&p.alice, [0x35; 8], NOW + 1, 5),
        Some(&p.alice),
        p.alice.kx.public(),
        Some(false),
        &[0x42; 40],
        &params,
    );
    let mut tests = vec![data.clone(), listing.clone(), last];
    tests.push(opening(
        &data,
        "reader/other-requester",
        "carol, who received alice's answer (a replayed fetch of alice's, or the datagram seen), opens it with her key",
        &["WrongKey"],
        &params,
        |t| {
            t.requester_private = Some(hex_of(&p.carol.kx.secret()));
            t.requester_public = Hex(p.carol.kx.public().0.to_vec());
        },
    ));
    tests.push(opening(
        &data,
        "reader/other-request",
        "the answer opened against another request of alice's: the same txn, made a second later",
        &["WrongBinding"],
        &params,
        |t| t.request = Hex(fetch(&p.alice, [0x34; 8], NOW + 1, 0).encode()),
    ));
    tests.push(opening(
        &data,
        "reader/moved-index",
        "the answer's index changed",
        &["WrongBinding"],
        &params,
        |t| {
            rewrite(t, |m| {
                if let Message::RecordData(d) = m {
                    d.index = 1;
                }
            })
        },
    ));
    tests.push(opening(
        &data,
        "reader/flipped-more",
        "the answer's more flipped",
        &["WrongBinding"],
        &params,
        |t| {
            rewrite(t, |m| {
                if let Message::RecordData(d) = m {
                    d.more = !d.more;
                }
            })
        },
    ));
    tests.push(opening(
        &listing,
        "reader/modified-listing",
        "a bit of the sealed listing flipped",
        &["Modified"],
        &params,
        |t| {
            rewrite(t, |m| {
                if let Message::RecordListing(l) = m {
                    let mut b = l.recordings.0.clone();
                    if let Some(x) = b.get_mut(20) {
                        *x ^= 1;
                    }
                    if let Some(bytes) = Bytes::new(b) {
                        l.recordings = bytes;
                    }
                }
            })
        },
    ));
    // An answer sealed for alice with another static key than the
    // recorder's: only the recorder (or alice) can make one that opens.
    let impostor = KxKeyPair::generate(&mut entropy_for("reader/forged-recorder"));
    let forged_params = ReaderParams {
        recorder_private: hex_of(&impostor.secret()),
        recorder_public: Hex(impostor.public().0.to_vec()),
        ..params.clone()
    };
    let forged = sealing(
        "reader/forged-recorder",
        "",
        &reqs,
        &[],
        &alice_fetch,
        None,
        p.alice.kx.public(),
        Some(true),
        b"not what was recorded",
        &forged_params,
    );
    tests.push(opening(
        &data,
        "reader/forged-recorder",
        "an answer sealed for alice with another static key than the recorder's",
        &["Forged"],
        &params,
        |t| t.response = forged.response.clone(),
    ));
    tests.push(opening(
        &data,
        "reader/zero-epk",
        "an answer with an all-zero ephemeral key",
        &["LowOrderPoint"],
        &params,
        |t| {
            rewrite(t, |m| {
                if let Message::RecordData(d) = m {
                    d.epk = PublicKey([0; 32]);
                }
            })
        },
    ));
    tests.push(sealing(
        "reader/low-order-requester-key",
        "sealing for a requester key of order 8 fails at the recorder",
        &["KW-CRYPTO-070", "KW-CRYPTO-005"],
        &["LowOrderPoint"],
        &alice_fetch,
        None,
        PublicKey(ORDER_8),
        Some(true),
        b"never sealed",
        &params,
    ));
    VectorFile::new("reader", "spec/crypto.md §8", RECIPE, NOTES, params, tests).to_json()
}

/// The request's parts a response is bound to.
struct Request {
    from: Principal,
    txn: TxnId,
    /// A fetch's recording and index; `None` for a list.
    fetch: Option<(RecordingId, u64)>,
}

fn request_of(bytes: &[u8]) -> Result<Request, Failure> {
    match Message::decode(bytes)? {
        Message::RecordList(m) => Ok(Request {
            from: m.from,
            txn: m.txn,
            fetch: None,
        }),
        Message::RecordFetch(m) => Ok(Request {
            from: m.from,
            txn: m.txn,
            fetch: Some((m.recording, m.index)),
        }),
        _ => Err(Failure::vector("not a record-list or record-fetch")),
    }
}

fn key_pair(h: &Hex) -> Result<KxKeyPair, Failure> {
    Ok(KxKeyPair::from_secret(&Secret32::new(
        h.array().map_err(Failure::vector)?,
    )))
}

/// The answer's epk, associated data and sealed content.
fn opened_parts(response: &Message) -> Result<(PublicKey, Vec<u8>, Vec<u8>), Failure> {
    match response {
        Message::RecordListing(m) => Ok((m.epk, listing_ad(&m.txn), m.recordings.0.clone())),
        Message::RecordData(m) => Ok((
            m.epk,
            data_ad(&m.txn, &m.recording, m.index, m.more),
            m.chunk.0.clone(),
        )),
        _ => Err(Failure::vector("not a record-listing or record-data")),
    }
}

/// The seal and the opening the test gives inputs for, filling in `out`'s
/// intermediates and outputs as far as they get.
fn run(params: &ReaderParams, t: &ReaderTest, out: &mut ReaderTest) -> Result<(), Failure> {
    let recorder = key_pair(&params.recorder_private)?;
    same(
        "recorder_public of recorder_private",
        &params.recorder_public.0,
        &recorder.public().0,
    )
    .map_err(Failure::vector)?;
    let recorder_account =
        Principal::new(&params.recorder).map_err(|e| Failure::vector(e.to_string()))?;
    let req = request_of(&t.request.0)?;
    let p = PublicKey(t.requester_public.array().map_err(Failure::vector)?);
    let r = recorder.public();
    let binding = ReaderBinding {
        recorder: &recorder_account,
        recorder_kx: &r,
        requester: &req.from,
        requester_kx: &p,
        request: &t.request.0,
    };
    let opener = match &t.requester_private {
        Some(private) => {
            let me = key_pair(private)?;
            same(
                "requester_public of requester_private",
                &p.0,
                &me.public().0,
            )
            .map_err(Failure::vector)?;
            Some(me)
        }
        None => None,
    };
    match t.operation.as_str() {
        "seal" => {
            let e = key_pair(
                t.ephemeral_private
                    .as_ref()
                    .ok_or_else(|| Failure::vector("seal without ephemeral_private"))?,
            )?;
            let plaintext = t
                .plaintext
                .as_ref()
                .ok_or_else(|| Failure::vector("seal without plaintext"))?;
            let epk = e.public();
            out.key_info = Some(Hex(reader_key_info(&binding, &epk)));
            let z_e = e.agree(&p)?;
            out.shared_ephemeral = Some(hex_of(&z_e));
            let z_s = recorder.agree(&p)?;
            out.shared_static = Some(hex_of(&z_s));
            let key = reader_key(&binding, &epk, &z_e, &z_s);
            out.key = Some(hex_of(&key));
            let response = match (req.fetch, t.more) {
                (None, None) => {
                    let ad = listing_ad(&req.txn);
                    let ct = siv_seal(&mut siv_cipher(key.expose()), &[&ad], &plaintext.0);
                    out.ad = Some(Hex(ad));
                    Message::RecordListing(RecordListing {
                        txn: req.txn,
                        recordings: Bytes::new(ct)
                            .ok_or_else(|| Failure::vector("listing too long"))?,
                        epk,
                        ext: Extensions::new(),
                    })
                }
                (Some((recording, index)), Some(more)) => {
                    let ad = data_ad(&req.txn, &recording, index, more);
                    let ct = siv_seal(&mut siv_cipher(key.expose()), &[&ad], &plaintext.0);
                    out.ad = Some(Hex(ad));
                    Message::RecordData(RecordData {
                        txn: req.txn,
                        recording,
                        chunk: Bytes::new(ct).ok_or_else(|| Failure::vector("chunk too long"))?,
                        index,
                        more,
                        epk,
                        ext: Extensions::new(),
                    })
                }
                _ => return Err(Failure::vector("more is given for a fetch, and only then")),
            };
            out.response = Some(Hex(response.encode()));
        }
        "open" => {}
        other => return Err(Failure::vector(format!("operation {other}"))),
    }
    let Some(me) = opener else {
        return Ok(());
    };
    let response_bytes = out
        .response
        .clone()
        .ok_or_else(|| Failure::vector("nothing to open"))?;
    let response = Message::decode(&response_bytes.0)?;
    let (epk, ad, sealed) = opened_parts(&response)?;
    let info = reader_key_info(&binding, &epk);
    if let Some(given) = &out.key_info {
        same("key_info of the opening", &given.0, &info).map_err(Failure::vector)?;
    }
    out.key_info = Some(Hex(info));
    out.ad = Some(Hex(ad.clone()));
    let z_e = me.agree(&epk)?;
    agree_or_set(&mut out.shared_ephemeral, &z_e, "shared_ephemeral")?;
    let z_s = me.agree(&r)?;
    agree_or_set(&mut out.shared_static, &z_s, "shared_static")?;
    let key = reader_key(&binding, &epk, &z_e, &z_s);
    agree_or_set(&mut out.key, &key, "key")?;
    let plaintext = siv_open(&mut siv_cipher(key.expose()), &[&ad], &sealed)?;
    if matches!(response, Message::RecordListing(_)) {
        decode_plaintext::<List<RecordingInfo, 0, 64>>(&plaintext)?;
    }
    match &t.plaintext {
        Some(given) if t.operation == "seal" => {
            same("opened plaintext", &given.0, &plaintext).map_err(Failure::vector)?;
        }
        _ => out.plaintext = Some(Hex(plaintext)),
    }
    Ok(())
}

/// Records `value` as `slot`, or checks it equals what the seal computed.
fn agree_or_set(slot: &mut Option<Hex>, value: &Secret32, what: &str) -> Result<(), Failure> {
    if let Some(given) = slot {
        same(what, &given.0, value.expose()).map_err(Failure::vector)?;
    }
    *slot = Some(hex_of(value));
    Ok(())
}

/// The test recomputed from its inputs (`request`, `requester_public`,
/// and for a seal `ephemeral_private`, `plaintext` and `more`, for an
/// opening `response`, and `requester_private` to open).
fn complete(params: &ReaderParams, t: &ReaderTest) -> Result<ReaderTest, String> {
    let mut out = ReaderTest {
        key_info: None,
        shared_ephemeral: None,
        shared_static: None,
        key: None,
        ad: None,
        ..t.clone()
    };
    if t.operation == "seal" {
        out.response = None;
    } else {
        out.plaintext = None;
    }
    let outcome = run(params, t, &mut out);
    let (meta, _) = t.meta.judged(outcome)?;
    out.meta = meta;
    Ok(out)
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "reader", |t: &ReaderTest| &t.meta, complete)
}
