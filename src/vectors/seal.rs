//! Sealed bodies end to end (KW-CRYPTO-030 to KW-CRYPTO-036, KW-SEAL-*):
//! sealing, editing, and the destination's verdict on tampered bodies.

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::{
    CertProfile, CertificateAuthority, Identity, KeyCache, KxKeyPair, RecipientSpec,
    RecordingEntropy, Rekeying, ScriptedEntropy, SealContext, Secret32, SigningKeyPair,
    TrustAnchor, TrustStore, content_digest, edit, edit_signature_input, open, permission_map,
    seal, seal_signature_input, verify_sealed,
};
use crate::wire::{
    Certificate, Domain, List, Permission, Principal, PublicKey, RecipientKind, Role, Sealed,
    SessionId, decode_plaintext, encode_plaintext, examples,
};

/// The parties and anchors all tests share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealParams {
    now: u64,
    anchors: Vec<Anchor>,
    parties: Vec<Party>,
}

/// A trust anchor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Anchor {
    domain: String,
    public: Hex,
}

/// A party with its keys and certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Party {
    account: String,
    sig_seed: Hex,
    kx_private: Hex,
    certificate: Hex,
}

/// A recipient as the sender chose it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientJson {
    id: String,
    kind: u64,
    perm: u64,
    anonymous: bool,
}

/// Values computed on the way to a sealed body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intermediate {
    cek: Hex,
    hash: Hex,
    map: Hex,
    signature_input: Hex,
}

/// One operation on a sealed body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealTest {
    #[serde(flatten)]
    meta: Meta,
    /// `seal`, `edit` or `open`.
    operation: String,
    session: Hex,
    cid: u64,
    /// The party that seals or edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recipients: Vec<RecipientJson>,
    /// The plaintext sealed, or written by the edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plaintext: Option<Hex>,
    /// The random bytes the operation draws, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    randomness: Option<Hex>,
    /// Edit with a new content key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    new_key: bool,
    /// The servers passed before the editor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    via: Vec<String>,
    /// The body given to `edit` or `open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<Hex>,
    /// The body `seal` or `edit` produces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intermediate: Option<Intermediate>,
    /// The destination that opens and verifies the result.
    reader: String,
}

const RECIPE: &str = "seal: with `randomness` as the random source (ephemeral private key 32 bytes, cek 32, nonce 16), seal plaintext from actor for recipients (spec/crypto.md §4); \
the encoding equals output and the intermediates match. edit: actor opens input, then with `randomness` (new_key: ephemeral 32, cek 32, nonce 16; else none) rewrites it to plaintext; \
equals output. Then (all operations) reader opens the result (input for open) and verifies it with the sender's certificate from params and the anchors at `now` \
(KW-CRYPTO-036): valid tests yield the plaintext, invalid ones fail with the error.";

const NOTES: &[(&str, &str)] = &[
    ("Trial", "Anonymous entries, found by trial unwrap."),
    (
        "MapTampered",
        "An entry was dropped, added, swapped or changed after signing (KW-SEAL-005).",
    ),
    (
        "ReadOnlyChange",
        "A server with read permission changed the content (KW-SEAL-006).",
    ),
    ("ChainTampered", "The edit chain was cut or altered."),
    ("Modified", "A ciphertext bit flipped."),
];

const NOW: u64 = 1_767_225_600 + 60;
const SESSION: SessionId = SessionId([0x5e; 16]);

struct Fixture {
    params: SealParams,
    alice: Identity,
    sc_a: (Identity, Certificate),
}

fn party_json(id: &Identity, cert: &Certificate) -> Party {
    Party {
        account: id.account.as_str().into(),
        sig_seed: Hex(id.signing.seed().expose().to_vec()),
        kx_private: Hex(id.kx.secret().expose().to_vec()),
        certificate: Hex(encode_plaintext(cert)),
    }
}

fn fixture() -> Fixture {
    let mut rng = entropy_for("seal/pki");
    let ca_a = CertificateAuthority::new(
        Domain("a.example".into()),
        SigningKeyPair::generate(&mut rng),
    );
    let ca_b = CertificateAuthority::new(
        Domain("b.example".into()),
        SigningKeyPair::generate(&mut rng),
    );
    let mut parties = Vec::new();
    let mut make = |ca: &CertificateAuthority, account: &str, role: Role, serial: u64| {
        let id = Identity::generate(Principal(account.into()), &mut rng);
        let cert = ca.issue(&CertProfile {
            serial,
            subject: id.account.clone(),
            role,
            sig_key: id.signing.public(),
            kx_key: id.kx.public(),
            not_before: NOW - 60,
            not_after: NOW + 3540,
        });
        parties.push(party_json(&id, &cert));
        (id, cert)
    };
    let (alice, _) = make(&ca_a, "alice@a.example", Role::Device, 1);
    let sc_a = make(&ca_a, "sc@a.example", Role::Server, 2);
    make(&ca_b, "sc@b.example", Role::Server, 1);
    make(&ca_b, "bob@b.example", Role::Device, 2);
    let anchors = [&ca_a, &ca_b]
        .iter()
        .map(|ca| Anchor {
            domain: ca.domain().as_str().into(),
            public: Hex(ca.anchor().key.0.to_vec()),
        })
        .collect();
    Fixture {
        params: SealParams {
            now: NOW,
            anchors,
            parties,
        },
        alice,
        sc_a,
    }
}

fn recipients() -> Vec<RecipientJson> {
    let r = |id: &str, kind: RecipientKind, perm: Permission| RecipientJson {
        id: id.into(),
        kind: kind.code(),
        perm: perm.code(),
        anonymous: false,
    };
    vec![
        r(
            "sc@a.example",
            RecipientKind::Server,
            Permission::ReadModify,
        ),
        r("sc@b.example", RecipientKind::Server, Permission::Read),
        r(
            "bob@b.example",
            RecipientKind::Destination,
            Permission::Read,
        ),
    ]
}

fn plaintext() -> Vec<u8> {
    encode_plaintext(&examples::session_desc())
}

fn rewritten() -> Vec<u8> {
    let mut desc = examples::session_desc();
    let mut streams = desc.streams.clone().into_vec();
    if let Some(s) = streams.first_mut() {
        s.addr = std::net::SocketAddr::from(([203, 0, 113, 1], 30000));
    }
    desc.streams = List::new(streams).unwrap_or(desc.streams);
    encode_plaintext(&desc)
}

// ----------------------------------------------------------------- running

fn bad(e: String) -> Failure {
    Failure {
        code: "vector".into(),
        detail: e,
    }
}

fn party(params: &SealParams, account: &str) -> Result<(Identity, Certificate), String> {
    let p = params
        .parties
        .iter()
        .find(|p| p.account == account)
        .ok_or(format!("no party {account}"))?;
    let id = Identity {
        account: Principal::new(&p.account).map_err(|e| e.to_string())?,
        signing: SigningKeyPair::from_seed(&Secret32::new(p.sig_seed.array()?)),
        kx: KxKeyPair::from_secret(&Secret32::new(p.kx_private.array()?)),
    };
    let cert = decode_plaintext(&p.certificate.0).map_err(|e| e.to_string())?;
    Ok((id, cert))
}

fn trust(params: &SealParams) -> Result<TrustStore, String> {
    let mut store = TrustStore::default();
    for a in &params.anchors {
        store.add(TrustAnchor {
            domain: Domain::new(&a.domain).map_err(|e| e.to_string())?,
            key: PublicKey(a.public.array()?),
        });
    }
    Ok(store)
}

fn specs(params: &SealParams, recipients: &[RecipientJson]) -> Result<Vec<RecipientSpec>, String> {
    recipients
        .iter()
        .map(|r| {
            let (id, _) = party(params, &r.id)?;
            Ok(RecipientSpec {
                id: id.account,
                kx_key: id.kx.public(),
                kind: RecipientKind::from_code(r.kind).ok_or("kind")?,
                perm: Permission::from_code(r.perm).ok_or("perm")?,
                anonymous: r.anonymous,
            })
        })
        .collect()
}

fn session(t: &SealTest) -> Result<SessionId, String> {
    Ok(SessionId(t.session.array()?))
}

/// Performs the test's seal or edit; returns the body it produced.
fn produce(params: &SealParams, t: &SealTest) -> Result<Option<Sealed>, String> {
    let session = session(t)?;
    let mut entropy = ScriptedEntropy::new(t.randomness.clone().unwrap_or_default().0);
    let actor = t.actor.as_deref().ok_or("no actor");
    let produced = match t.operation.as_str() {
        "seal" => {
            let (sender, _) = party(params, actor?)?;
            let ctx = SealContext {
                session: &session,
                cid: t.cid,
            };
            let pt = t.plaintext.clone().ok_or("no plaintext")?;
            let (sealed, _) = seal(
                ctx,
                &sender,
                &specs(params, &t.recipients)?,
                &pt.0,
                None,
                &mut KeyCache::new(16),
                &mut entropy,
            )
            .map_err(|e| e.to_string())?;
            Some(sealed)
        }
        "edit" => {
            let (editor, cert) = party(params, actor?)?;
            let input: Sealed = decode_plaintext(&t.input.clone().ok_or("no input")?.0)
                .map_err(|e| e.to_string())?;
            let mut cache = KeyCache::new(16);
            let opened = open(&input, &session, &editor, &mut cache).map_err(|e| e.to_string())?;
            let pt = t.plaintext.clone().ok_or("no plaintext")?;
            let via: Vec<Principal> = t
                .via
                .iter()
                .filter_map(|v| Principal::new(v).ok())
                .collect();
            let key_of = |_: usize, r: &crate::wire::Recipient| {
                let id = r.id.as_ref()?;
                party(params, id.as_str()).ok().map(|(p, _)| p.kx.public())
            };
            let rekeying = if t.new_key {
                Rekeying::NewKey {
                    via: &via,
                    key_of: &key_of,
                }
            } else {
                Rekeying::KeepKey
            };
            let (sealed, _) = edit(
                &input,
                &session,
                &editor,
                &cert,
                &opened.cek,
                &pt.0,
                rekeying,
                &mut cache,
                &mut entropy,
            )
            .map_err(|e| e.to_string())?;
            Some(sealed)
        }
        _ => None,
    };
    if entropy.exhausted() || !entropy.consumed() {
        return Err("randomness does not match the operation's draws".into());
    }
    Ok(produced)
}

/// The destination's verdict on a body (KW-CRYPTO-036).
fn destination(params: &SealParams, t: &SealTest, body: &Sealed) -> Result<Vec<u8>, Failure> {
    let session = session(t).map_err(bad)?;
    let (reader, _) = party(params, &t.reader).map_err(bad)?;
    let (_, sender_cert) = party(params, body.sender.as_str()).map_err(bad)?;
    let opened = open(body, &session, &reader, &mut KeyCache::new(16))?;
    verify_sealed(
        body,
        &session,
        &opened.plaintext,
        &sender_cert,
        &trust(params).map_err(bad)?,
        params.now,
    )?;
    Ok(opened.plaintext)
}

fn body_of(t: &SealTest) -> Result<Sealed, String> {
    let bytes = t.output.as_ref().or(t.input.as_ref()).ok_or("no body")?;
    decode_plaintext(&bytes.0).map_err(|e| e.to_string())
}

/// Checks one sealed-body vector (the recipe above).
pub fn run_vector(params: &SealParams, t: &SealTest) -> Result<(), String> {
    if let Some(produced) = produce(params, t)? {
        same(
            "output",
            &t.output.clone().unwrap_or_default().0,
            &encode_plaintext(&produced),
        )?;
        if let Some(i) = &t.intermediate {
            let ctx = SealContext {
                session: &session(t)?,
                cid: t.cid,
            };
            let pt = t.plaintext.clone().unwrap_or_default();
            same("hash", &i.hash.0, &content_digest(ctx, &pt.0).0)?;
            let map = permission_map(&produced.recipients);
            same("map", &i.map.0, &map)?;
            same(
                "signature_input",
                &i.signature_input.0,
                &seal_signature_input(ctx, &produced.sender, &produced.hash, &map),
            )?;
        }
    }
    let body = body_of(t)?;
    let plaintext = t.meta.expect(destination(params, t, &body))?;
    if let Some(pt) = plaintext {
        same("plaintext", &t.plaintext.clone().unwrap_or_default().0, &pt)?;
    }
    Ok(())
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "seal", |t: &SealTest| &t.meta, run_vector)
}

// -------------------------------------------------------------- generating

fn sealed_test(
    f: &Fixture,
    tc: &str,
    comment: &str,
    flags: &[&str],
    anonymous: bool,
) -> (SealTest, Sealed, Secret32) {
    let mut rng = RecordingEntropy::new(entropy_for(tc));
    let mut recipients = recipients();
    for r in &mut recipients {
        r.anonymous = anonymous;
    }
    let ctx = SealContext {
        session: &SESSION,
        cid: 0,
    };
    let specs = specs(&f.params, &recipients).unwrap_or_default();
    let result = seal(
        ctx,
        &f.alice,
        &specs,
        &plaintext(),
        None,
        &mut KeyCache::new(16),
        &mut rng,
    );
    let (sealed, cek) = result.unwrap_or_else(|_| (placeholder(), Secret32::new([0; 32])));
    let map = permission_map(&sealed.recipients);
    let test = SealTest {
        meta: Meta::valid(
            tc,
            comment,
            &[
                "KW-CRYPTO-030",
                "KW-CRYPTO-031",
                "KW-CRYPTO-032",
                "KW-CRYPTO-033",
                "KW-SEAL-001",
                "KW-SEAL-002",
            ],
            flags,
        ),
        operation: "seal".into(),
        session: Hex(SESSION.0.to_vec()),
        cid: 0,
        actor: Some(f.alice.account.as_str().into()),
        recipients,
        plaintext: Some(Hex(plaintext())),
        randomness: Some(Hex(rng.drawn.clone())),
        new_key: false,
        via: vec![],
        input: None,
        output: Some(Hex(encode_plaintext(&sealed))),
        intermediate: Some(Intermediate {
            cek: Hex(cek.expose().to_vec()),
            hash: Hex(sealed.hash.0.to_vec()),
            map: Hex(map.clone()),
            signature_input: Hex(seal_signature_input(
                ctx,
                &sealed.sender,
                &sealed.hash,
                &map,
            )),
        }),
        reader: "bob@b.example".into(),
    };
    (test, sealed, cek)
}

/// Only reached if sealing the fixed fixture fails, which its tests rule out.
fn placeholder() -> Sealed {
    match examples::all().into_iter().nth(5) {
        Some(crate::wire::Message::Offer(o)) => o.body,
        _ => examples::sealed(),
    }
}

fn open_test(
    f: &Fixture,
    tc: &str,
    comment: &str,
    flags: &[&str],
    reqs: &[&str],
    body: &Sealed,
    plaintext: Vec<u8>,
) -> SealTest {
    let mut t = SealTest {
        meta: Meta::valid(tc, comment, reqs, flags),
        operation: "open".into(),
        session: Hex(SESSION.0.to_vec()),
        cid: body.cid,
        actor: None,
        recipients: vec![],
        plaintext: Some(Hex(plaintext)),
        randomness: None,
        new_key: false,
        via: vec![],
        input: Some(Hex(encode_plaintext(body))),
        output: None,
        intermediate: None,
        reader: "bob@b.example".into(),
    };
    if let Err(failure) = destination(&f.params, &t, body) {
        t.meta = Meta::invalid(tc, comment, reqs, flags, &failure);
        t.plaintext = None;
    }
    t
}

fn edit_test(
    f: &Fixture,
    tc: &str,
    comment: &str,
    input: &Sealed,
    cek: &Secret32,
    new_key: bool,
) -> (SealTest, Sealed) {
    let mut rng = RecordingEntropy::new(entropy_for(tc));
    let (editor, cert) = &f.sc_a;
    let key_of = |_: usize, r: &crate::wire::Recipient| {
        let id = r.id.as_ref()?;
        party(&f.params, id.as_str())
            .ok()
            .map(|(p, _)| p.kx.public())
    };
    let via: [Principal; 0] = [];
    let rekeying = if new_key {
        Rekeying::NewKey {
            via: &via,
            key_of: &key_of,
        }
    } else {
        Rekeying::KeepKey
    };
    let result = edit(
        input,
        &SESSION,
        editor,
        cert,
        cek,
        &rewritten(),
        rekeying,
        &mut KeyCache::new(16),
        &mut rng,
    );
    let (edited, _) = result.unwrap_or_else(|_| (input.clone(), cek.clone()));
    let test = SealTest {
        meta: Meta::valid(
            tc,
            comment,
            &[
                "KW-CRYPTO-035",
                "KW-CRYPTO-036",
                "KW-SEAL-007",
                "KW-SEAL-009",
            ],
            &[],
        ),
        operation: "edit".into(),
        session: Hex(SESSION.0.to_vec()),
        cid: input.cid,
        actor: Some(editor.account.as_str().into()),
        recipients: vec![],
        plaintext: Some(Hex(rewritten())),
        randomness: new_key.then(|| Hex(rng.drawn.clone())),
        new_key,
        via: vec![],
        input: Some(Hex(encode_plaintext(input))),
        output: Some(Hex(encode_plaintext(&edited))),
        intermediate: None,
        reader: "bob@b.example".into(),
    };
    (test, edited)
}

fn with_entries(body: &Sealed, change: impl FnOnce(&mut Vec<crate::wire::Recipient>)) -> Sealed {
    let mut out = body.clone();
    let mut entries = out.recipients.clone().into_vec();
    change(&mut entries);
    if let Some(list) = List::new(entries) {
        out.recipients = list;
    }
    out
}

pub fn generate() -> String {
    let f = fixture();
    let (sealed_t, sealed, cek) = sealed_test(
        &f,
        "seal/explicit",
        "sealed for a read-modify server, a read server and the destination",
        &[],
        false,
    );
    let (anon_t, _, _) = sealed_test(
        &f,
        "seal/anonymous",
        "the same with anonymous entries",
        &["Trial"],
        true,
    );
    let (keep_t, kept) = edit_test(
        &f,
        "seal/edit-keep-key",
        "sc@a rewrites the media address, keeping the content key",
        &sealed,
        &cek,
        false,
    );
    let (new_t, _) = edit_test(
        &f,
        "seal/edit-new-key",
        "sc@a rewrites the media address under a new content key",
        &sealed,
        &cek,
        true,
    );
    let map_reqs = ["KW-SEAL-005", "KW-CRYPTO-036"];
    let pt = plaintext();
    let mut tests = vec![sealed_t, anon_t, keep_t, new_t];
    tests.push(open_test(
        &f,
        "seal/dropped-entry",
        "sc@b's entry removed",
        &["MapTampered"],
        &map_reqs,
        &with_entries(&sealed, |e| {
            e.remove(1);
        }),
        pt.clone(),
    ));
    tests.push(open_test(
        &f,
        "seal/added-entry",
        "an entry added for c.example's server",
        &["MapTampered"],
        &map_reqs,
        &with_entries(&sealed, |e| {
            if let Some(mut extra) = e.get(1).cloned() {
                extra.id = Some(Principal("sc@c.example".into()));
                e.push(extra);
            }
        }),
        pt.clone(),
    ));
    tests.push(open_test(
        &f,
        "seal/swapped-entries",
        "the servers' entries swapped",
        &["MapTampered"],
        &map_reqs,
        &with_entries(&sealed, |e| e.swap(0, 1)),
        pt.clone(),
    ));
    tests.push(open_test(
        &f,
        "seal/upgraded-permission",
        "sc@b's read upgraded to read-modify",
        &["MapTampered"],
        &map_reqs,
        &with_entries(&sealed, |e| {
            if let Some(r) = e.get_mut(1) {
                r.perm = Permission::ReadModify;
            }
        }),
        pt.clone(),
    ));
    let mut flipped = sealed.clone();
    let mut ct = flipped.ct.to_vec();
    if let Some(b) = ct.get_mut(20) {
        *b ^= 1;
    }
    if let Some(bytes) = crate::wire::Bytes::new(ct) {
        flipped.ct = bytes;
    }
    tests.push(open_test(
        &f,
        "seal/modified-ciphertext",
        "a flipped ciphertext bit",
        &["Modified"],
        &["KW-CRYPTO-030"],
        &flipped,
        pt.clone(),
    ));
    // sc@b (read only) re-encrypts the rewritten content under the key it read.
    let rogue = {
        let keep = edit(
            &sealed,
            &SESSION,
            &f.sc_a.0,
            &f.sc_a.1,
            &cek,
            &rewritten(),
            Rekeying::KeepKey,
            &mut KeyCache::new(4),
            &mut entropy_for("unused"),
        );
        let mut body = sealed.clone();
        if let Ok((k, _)) = keep {
            body.ct = k.ct;
        }
        body
    };
    tests.push(open_test(
        &f,
        "seal/read-only-change",
        "a read-only server re-encrypted changed content without an edit",
        &["ReadOnlyChange"],
        &["KW-SEAL-006", "KW-CRYPTO-036"],
        &rogue,
        rewritten(),
    ));
    // sc@b (read only) signs an edit of its own: correct key, certificate
    // and signature, but no read-modify entry.
    let mut forged = kept.clone();
    if let (Some(edits), Ok((sc_b, sc_b_cert))) =
        (forged.edits.take(), party(&f.params, "sc@b.example"))
    {
        let map = permission_map(&forged.recipients);
        let ctx = SealContext {
            session: &SESSION,
            cid: 0,
        };
        let mut list = edits.into_vec();
        if let Some(e) = list.first_mut() {
            e.editor = sc_b.account.clone();
            e.kid = sc_b.signing.kid();
            e.cert = sc_b_cert;
            e.sig = sc_b.signing.sign(&edit_signature_input(
                ctx,
                &e.editor,
                &e.prev,
                &e.next,
                e.epk.as_ref(),
                &map,
            ));
        }
        forged.edits = List::new(list);
    }
    tests.push(open_test(
        &f,
        "seal/edit-by-read-only-server",
        "an edit correctly signed by a server that has only read permission",
        &["ReadOnlyChange"],
        &["KW-SEAL-006", "KW-CRYPTO-036"],
        &forged,
        rewritten(),
    ));
    // A second edit on top, then the first cut out.
    let twice = edit(
        &kept,
        &SESSION,
        &f.sc_a.0,
        &f.sc_a.1,
        &cek,
        &pt,
        Rekeying::KeepKey,
        &mut KeyCache::new(4),
        &mut entropy_for("unused"),
    );
    if let Ok((twice, _)) = twice {
        let mut cut = twice.clone();
        if let Some(edits) = cut.edits.take() {
            cut.edits = List::new(edits.into_vec().into_iter().skip(1).collect());
        }
        tests.push(open_test(
            &f,
            "seal/two-edits",
            "two successive edits by the permitted server",
            &[],
            &["KW-CRYPTO-036"],
            &twice,
            pt.clone(),
        ));
        tests.push(open_test(
            &f,
            "seal/cut-edit-chain",
            "the first of two edits removed",
            &["ChainTampered"],
            &["KW-CRYPTO-036"],
            &cut,
            pt.clone(),
        ));
    }
    VectorFile::new("seal", "spec/crypto.md §4", RECIPE, NOTES, f.params, tests).to_json()
}
