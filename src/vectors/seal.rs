//! Sealed bodies end to end (KW-CRYPTO-030 to KW-CRYPTO-036, KW-SEAL-*):
//! sealing, editing, and the destination's verdict on tampered bodies.

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::primitives::siv_cipher;
use crate::crypto::{
    CertProfile, CertificateAuthority, Entropy, Expect, Identity, KekBinding, KeyCache, KxKeyPair,
    RecipientSpec, RecordingEntropy, Rekeying, ScriptedEntropy, SealContext, Secret32,
    SigningKeyPair, TrustAnchor, TrustStore, current_wrapper, derive_kek, edit,
    edit_signature_input, every_editor_signed, open, open_rekey_body, permission_map,
    reencrypt_without_edit, rekey_body_plaintext, seal, seal_signature_input, unwrap_with,
    verify_sealed,
};
use crate::wire::{
    Certificate, Domain, Hash32, List, MsgType, Permission, Principal, PublicKey, Recipient,
    RecipientKind, Role, Sealed, SessionId, decode_plaintext, encode_plaintext, examples,
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

/// Values computed on the way to a sealed body (`seal`, `edit`, `rekey`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intermediate {
    /// The content key the output is under: drawn by a seal, the rekey's
    /// new key, or an edit's (the input's, or the new one when re-keyed).
    cek: Hex,
    /// The digest of the plaintext the output carries: the sender's `hash`,
    /// or the edit's `next`.
    hash: Hex,
    /// The permission map of the output.
    map: Hex,
    /// The newest signature's signed input: the sender's, or the editor's.
    signature_input: Hex,
}

/// The entry a party opens in a body (KW-CRYPTO-034).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryJson {
    /// Its position among the recipients.
    index: u64,
    /// `X25519(party's private key, the current wrapper's epk)`.
    shared_secret: Hex,
    /// The key-encryption key of the entry.
    kek: Hex,
    /// The content key it unwraps, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cek: Option<Hex>,
}

/// One operation on a sealed body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealTest {
    #[serde(flatten)]
    meta: Meta,
    /// `seal`, `edit`, `open`, `rekey` or `open-rekey`.
    operation: String,
    session: Hex,
    /// An input of `seal` and `rekey`; the body's otherwise.
    cid: u64,
    /// The type of the message that carries the body, which the sender's
    /// and editors' signatures bind (KW-CRYPTO-032).
    re: u64,
    /// The account that message is addressed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// The party that seals or edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recipients: Vec<RecipientJson>,
    /// The plaintext sealed (`seal`), written by the edit (`edit`), sealed
    /// by a rekey (`rekey`, an output: `cbor(epoch)`), or opened by the
    /// reader (`open`, an output of a valid test).
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
    /// The body given to `edit`, `open` or `open-rekey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<Hex>,
    /// The body `seal`, `edit` or `rekey` produces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intermediate: Option<Intermediate>,
    /// The entry the editor opens in `input` (`edit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor_entry: Option<EntryJson>,
    /// `rekey`, `open-rekey`: the `from` of the rekey message (for `rekey`,
    /// the actor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    /// `rekey`, `open-rekey`: the `epoch` of the rekey message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    /// `rekey`: the new key sealed; `open-rekey`: the key the reader
    /// obtains (an output of a valid test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rekey_key: Option<Hex>,
    /// The destination that opens and verifies the result.
    reader: String,
    /// The entry the reader opens in the body it checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reader_entry: Option<EntryJson>,
}

impl SealTest {
    /// A test of `operation` with the fields every operation has, and
    /// nothing else yet.
    fn bare(
        meta: Meta,
        operation: String,
        session: Hex,
        cid: u64,
        (re, to): (u64, Option<String>),
        actor: Option<String>,
        reader: String,
    ) -> Self {
        Self {
            meta,
            operation,
            session,
            cid,
            re,
            to,
            actor,
            recipients: vec![],
            plaintext: None,
            randomness: None,
            new_key: false,
            via: vec![],
            input: None,
            output: None,
            intermediate: None,
            actor_entry: None,
            from: None,
            epoch: None,
            rekey_key: None,
            reader,
            reader_entry: None,
        }
    }
}

const RECIPE: &str = "seal: with `randomness` as the random source (ephemeral private key 32 bytes, cek 32, nonce 16), seal plaintext from actor for recipients (spec/crypto.md §4); \
the encoding equals output and the intermediates match. edit: actor opens input (actor_entry), checks it as a destination would (KW-CRYPTO-036), then with `randomness` (new_key: ephemeral 32, cek 32, nonce 16; else none) rewrites it to plaintext; \
equals output, with the intermediates. rekey: actor seals rekey_key as the content key of a body whose plaintext is cbor(epoch) (KW-CRYPTO-042; randomness: ephemeral 32, nonce 16). \
Then (all operations) reader opens the result (input for open and open-rekey; reader_entry) and verifies it with the sender's certificate from params and the anchors at `now` \
(KW-CRYPTO-036; the signatures bind re, the type of the message carrying the body, and to, the account it is addressed to: KW-CRYPTO-032, KW-CRYPTO-035); the reader is that account, so for an offer or answer every explicit read-modify server entry must have signed an edit (KW-SEAL-011): valid tests yield the plaintext, invalid ones fail with the error. For rekey and open-rekey the reader takes the body as a rekey from `from` for `epoch` \
(sealed and signed by `from`, naming `epoch`, KW-SM-016) and obtains rekey_key. cid is the body's. re is 6 (an offer) for seal, edit and open and 10 (a rekey) for rekey and open-rekey; to is the reader. Every party's keys are its certificate's.";

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
    (
        "EditMissing",
        "A server named with read-modify permission on an offer or answer signed no edit: the version before it, put back (KW-SEAL-011).",
    ),
    ("Modified", "A ciphertext bit flipped."),
    (
        "ReEncoded",
        "The sender signed a non-deterministic encoding of the permission map; the destination builds the map from the entries as received, deterministically, so the signature fails (KW-CRYPTO-003).",
    ),
    (
        "RekeyMisused",
        "A body-form rekey presented for another epoch than it names, or sealed by an account other than the rekey's sender (KW-SM-016).",
    ),
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
    Failure::vector(e)
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

/// Every party's keys are those of its certificate, which is valid for it
/// at `now`: the params are one coherent deployment.
fn check_params(params: &SealParams) -> Result<(), String> {
    let store = trust(params)?;
    for p in &params.parties {
        let (id, cert) = party(params, &p.account)?;
        same(
            "sig-key of sig_seed",
            &cert.tbs.sig_key.0,
            &id.signing.public().0,
        )?;
        same(
            "kx-key of kx_private",
            &cert.tbs.kx_key.0,
            &id.kx.public().0,
        )?;
        store
            .check(
                &cert,
                Expect {
                    subject: &id.account,
                    role: None,
                    now: params.now,
                },
            )
            .map_err(|e| format!("certificate of {}: {e}", p.account))?;
    }
    Ok(())
}

fn specs(params: &SealParams, recipients: &[RecipientJson]) -> Result<Vec<RecipientSpec>, String> {
    recipients
        .iter()
        .map(|r| {
            let (id, _) = party(params, &r.id)?;
            Ok(RecipientSpec {
                id: id.account,
                kx_key: id.kx.public(),
                kind: RecipientKind::from_code(r.kind).ok_or(format!("kind {}", r.kind))?,
                perm: Permission::from_code(r.perm).ok_or(format!("perm {}", r.perm))?,
                anonymous: r.anonymous,
            })
        })
        .collect()
}

fn session(t: &SealTest) -> Result<SessionId, String> {
    Ok(SessionId(t.session.array()?))
}

fn decode_body(bytes: &Option<Hex>) -> Result<Sealed, String> {
    let bytes = bytes.as_ref().ok_or("no input")?;
    decode_plaintext(&bytes.0).map_err(|e| e.to_string())
}

/// The entry `me` opens in `body`, computed step by step from
/// KW-CRYPTO-033/034 (explicit by `id` and `kid`, else by trial): its
/// index, shared secret, key-encryption key and, if it unwraps, content key.
fn entry_view(body: &Sealed, session: &SessionId, me: &Identity) -> Option<EntryJson> {
    let (wrapper, epk) = current_wrapper(body);
    let my_key = me.kx.public();
    let shared = me.kx.agree(epk).ok()?;
    let unwrap = |i: usize, r: &Recipient| {
        let binding = KekBinding {
            session,
            wrapper,
            epk,
            recipient: &my_key,
            kind: r.kind,
            perm: r.perm,
        };
        let kek = derive_kek(&shared, &binding);
        let cek = unwrap_with(
            &mut siv_cipher(kek.expose()),
            &body.nonce,
            body.cid,
            &r.wrapped,
        )
        .ok();
        EntryJson {
            index: i as u64,
            shared_secret: Hex(shared.expose().to_vec()),
            kek: Hex(kek.expose().to_vec()),
            cek: cek.map(|k| Hex(k.expose().to_vec())),
        }
    };
    let explicit = body
        .recipients
        .iter()
        .position(|r| r.id.as_ref() == Some(&me.account) && r.kid == Some(me.kx.kid()));
    match explicit {
        Some(i) => body.recipients.get(i).map(|r| unwrap(i, r)),
        None => body
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id.is_none() && r.kid.is_none())
            .map(|(i, r)| unwrap(i, r))
            .find(|e| e.cek.is_some()),
    }
}

/// `open`, checked against the step-by-step view of the entry: the same
/// entry, content key and (as `Opened::pending`) key-encryption key.
fn open_checked(
    body: &Sealed,
    session: &SessionId,
    me: &Identity,
    view: Option<&EntryJson>,
) -> Result<crate::crypto::Opened, Failure> {
    let opened = open(body, session, me, &mut KeyCache::new(16))?;
    let view = view.ok_or_else(|| bad("open found an entry the view did not".into()))?;
    let kek = opened.pending.as_ref().map(|p| p.kek().expose().to_vec());
    if view.index != opened.entry as u64
        || view.cek.as_ref().map(|k| k.0.as_slice()) != Some(opened.cek.expose().as_slice())
        || kek.as_deref() != Some(view.kek.0.as_slice())
    {
        return Err(bad("open and the step-by-step view disagree".into()));
    }
    Ok(opened)
}

/// The destination's verdict on a body (KW-CRYPTO-036), or a server's on
/// the way when the carrying message is not addressed to `reader`.
fn destination(
    params: &SealParams,
    carrier: Carrier<'_>,
    reader: &Identity,
    body: &Sealed,
    view: Option<&EntryJson>,
) -> Result<Vec<u8>, Failure> {
    let (_, sender_cert) = party(params, body.sender.as_str()).map_err(bad)?;
    let opened = open_checked(body, carrier.session, reader, view)?;
    verify_sealed(
        body,
        carrier.context(body.cid),
        &opened.plaintext,
        &opened.cek,
        &sender_cert,
        &trust(params).map_err(bad)?,
        params.now,
    )?;
    // KW-SEAL-011, at the destination of an offer or answer only.
    let offer_or_answer = matches!(carrier.re, MsgType::Offer | MsgType::Answer);
    if offer_or_answer && carrier.to == Some(&reader.account) {
        every_editor_signed(body)?;
    }
    Ok(opened.plaintext)
}

/// The message a test's body travels in.
#[derive(Clone, Copy)]
struct Carrier<'a> {
    session: &'a SessionId,
    re: MsgType,
    to: Option<&'a Principal>,
}

impl<'a> Carrier<'a> {
    fn context(self, cid: u64) -> SealContext<'a> {
        SealContext {
            session: self.session,
            cid,
            re: self.re,
            to: self.to,
        }
    }
}

/// The reader's verdict on a body-form rekey from `from` for `epoch`
/// (KW-CRYPTO-042, KW-SM-016): the key it carries.
fn rekey_reader(
    params: &SealParams,
    carrier: Carrier<'_>,
    reader: &Identity,
    body: &Sealed,
    from: &str,
    epoch: u64,
    view: Option<&EntryJson>,
) -> Result<Secret32, Failure> {
    let (sender, sender_cert) = party(params, from).map_err(bad)?;
    let store = trust(params).map_err(bad)?;
    let validate = |cert: &Certificate, subject: &Principal, role| {
        store.check(
            cert,
            Expect {
                subject,
                role,
                now: params.now,
            },
        )
    };
    let to = carrier
        .to
        .ok_or_else(|| bad("a rekey names its `to`".into()))?;
    let key = open_rekey_body(
        body,
        carrier.session,
        &sender.account,
        to,
        epoch,
        reader,
        &sender_cert,
        &validate,
    )?;
    // The step-by-step view must agree with what the reader obtained.
    let cek = view.and_then(|v| v.cek.as_ref());
    if cek.map(|k| k.0.as_slice()) != Some(key.expose().as_slice()) {
        return Err(bad(
            "open_rekey_body and the step-by-step view disagree".into()
        ));
    }
    Ok(key)
}

fn intermediate(cek: &Secret32, hash: &Hash32, map: Vec<u8>, input: Vec<u8>) -> Intermediate {
    Intermediate {
        cek: Hex(cek.expose().to_vec()),
        hash: Hex(hash.0.to_vec()),
        map: Hex(map),
        signature_input: Hex(input),
    }
}

/// Replays `randomness`; checks afterwards that the operation drew exactly
/// those bytes.
fn scripted(t: &SealTest) -> ScriptedEntropy {
    ScriptedEntropy::new(t.randomness.clone().unwrap_or_default().0)
}

fn drawn_exactly(entropy: &ScriptedEntropy) -> Result<(), String> {
    if entropy.exhausted() || !entropy.consumed() {
        Err("randomness does not match the operation's draws".into())
    } else {
        Ok(())
    }
}

/// The test recomputed from its inputs. The recomputed test starts from
/// the fields every operation has and copies only the inputs of its own
/// operation, so that a field another operation would use is reported as
/// unexpected.
fn complete(params: &SealParams, t: &SealTest) -> Result<SealTest, String> {
    check_params(params)?;
    let sid = session(t)?;
    let (reader, _) = party(params, &t.reader)?;
    let mut out = SealTest::bare(
        t.meta.clone(),
        t.operation.clone(),
        t.session.clone(),
        t.cid,
        (t.re, t.to.clone()),
        None,
        t.reader.clone(),
    );
    // The vectors' convention: alice's offer to the reader, or her rekey.
    let re = match t.operation.as_str() {
        "rekey" | "open-rekey" => MsgType::Rekey,
        _ => MsgType::Offer,
    };
    if t.re != re.code() {
        return Err(format!(
            "re {} is not {} for {}",
            t.re,
            re.code(),
            t.operation
        ));
    }
    if t.to.as_deref() != Some(t.reader.as_str()) {
        return Err("to is not the reader".into());
    }
    let to =
        t.to.as_deref()
            .map(Principal::new)
            .transpose()
            .map_err(|e| e.to_string())?;
    let carrier = Carrier {
        session: &sid,
        re,
        to: to.as_ref(),
    };
    let actor = || t.actor.clone().ok_or("no actor");
    let outcome: Result<(), Failure> = match t.operation.as_str() {
        "seal" | "rekey" => {
            let rekey = t.operation == "rekey";
            out.actor = Some(actor()?);
            out.recipients = t.recipients.clone();
            out.randomness = t.randomness.clone();
            let (sender, _) = party(params, &actor()?)?;
            let (pt, key) = if rekey {
                let epoch = t.epoch.ok_or("no epoch")?;
                let key = t.rekey_key.clone().ok_or("no rekey_key")?;
                out.epoch = Some(epoch);
                out.from = Some(actor()?);
                out.rekey_key = Some(key.clone());
                (
                    rekey_body_plaintext(epoch),
                    Some(Secret32::new(key.array()?)),
                )
            } else {
                (t.plaintext.clone().ok_or("no plaintext")?.0, None)
            };
            out.plaintext = Some(Hex(pt.clone()));
            let ctx = carrier.context(t.cid);
            let mut entropy = scripted(t);
            let sealed = seal(
                ctx,
                &sender,
                &specs(params, &t.recipients)?,
                &pt,
                key.as_ref(),
                &mut KeyCache::new(16),
                &mut entropy,
            );
            if sealed.is_ok() {
                drawn_exactly(&entropy)?;
            }
            sealed.map_err(Failure::from).and_then(|(sealed, cek)| {
                let map = permission_map(&sealed.recipients);
                let input = seal_signature_input(ctx, &sealed.sender, &sealed.hash, &map);
                out.intermediate = Some(intermediate(&cek, &sealed.hash, map, input));
                out.output = Some(Hex(encode_plaintext(&sealed)));
                read(params, carrier, &reader, &sealed, &mut out)
            })
        }
        "edit" => {
            let (editor, cert) = party(params, &actor()?)?;
            out.actor = Some(actor()?);
            out.input = t.input.clone();
            out.new_key = t.new_key;
            out.via = t.via.clone();
            out.randomness = t.randomness.clone();
            let pt = t.plaintext.clone().ok_or("no plaintext")?;
            out.plaintext = Some(pt.clone());
            if !t.new_key && t.randomness.is_some() {
                return Err("randomness for an edit that draws none".into());
            }
            let input = decode_body(&t.input)?;
            out.cid = input.cid;
            let via = t
                .via
                .iter()
                .map(|v| Principal::new(v).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let key_of = |_: usize, r: &Recipient| {
                let id = r.id.as_ref()?;
                party(params, id.as_str()).ok().map(|(p, _)| p.kx.public())
            };
            out.actor_entry = entry_view(&input, &sid, &editor);
            let mut entropy = scripted(t);
            // The editor checks the body as a destination would before it
            // edits (KW-CRYPTO-035), then rewrites it.
            let edited = destination(params, carrier, &editor, &input, out.actor_entry.as_ref())
                .and_then(|_| {
                    let opened = open(&input, &sid, &editor, &mut KeyCache::new(16))?;
                    let rekeying = if t.new_key {
                        Rekeying::NewKey {
                            via: &via,
                            key_of: &key_of,
                        }
                    } else {
                        Rekeying::KeepKey
                    };
                    Ok(edit(
                        &input,
                        carrier.context(input.cid),
                        &editor,
                        &cert,
                        &opened.cek,
                        &pt.0,
                        rekeying,
                        &mut KeyCache::new(16),
                        &mut entropy,
                    )?)
                });
            if edited.is_ok() {
                drawn_exactly(&entropy)?;
            }
            edited.and_then(|(sealed, cek)| {
                let map = permission_map(&sealed.recipients);
                let last = sealed.edits.as_ref().and_then(|e| e.iter().last());
                let last = last.ok_or_else(|| bad("edit appended no edit".into()))?;
                let ctx = carrier.context(sealed.cid);
                let input = edit_signature_input(
                    ctx,
                    &last.editor,
                    &last.prev,
                    &last.next,
                    last.epk.as_ref(),
                    &map,
                );
                out.intermediate = Some(intermediate(&cek, &last.next, map, input));
                out.output = Some(Hex(encode_plaintext(&sealed)));
                read(params, carrier, &reader, &sealed, &mut out)
            })
        }
        "open" | "open-rekey" => {
            out.input = t.input.clone();
            let body = decode_body(&t.input)?;
            out.cid = body.cid;
            if t.operation == "open-rekey" {
                out.from = Some(t.from.clone().ok_or("no from")?);
                out.epoch = Some(t.epoch.ok_or("no epoch")?);
            }
            read(params, carrier, &reader, &body, &mut out)
        }
        other => return Err(format!("unknown operation {other:?}")),
    };
    let (meta, _) = t.meta.judged(outcome)?;
    out.meta = meta;
    Ok(out)
}

/// The reader's side of every operation: its entry, then its verdict as a
/// destination (`seal`, `edit`, `open`: the plaintext) or as the receiver of
/// a rekey (`rekey`, `open-rekey`: the key).
fn read(
    params: &SealParams,
    carrier: Carrier<'_>,
    reader: &Identity,
    body: &Sealed,
    out: &mut SealTest,
) -> Result<(), Failure> {
    let sid = carrier.session;
    out.reader_entry = entry_view(body, sid, reader);
    let view = out.reader_entry.as_ref();
    match out.operation.as_str() {
        "rekey" | "open-rekey" => {
            let from = out.from.clone().unwrap_or_default();
            let epoch = out.epoch.unwrap_or_default();
            let key = rekey_reader(params, carrier, reader, body, &from, epoch, view)?;
            if out.operation == "open-rekey" {
                out.rekey_key = Some(Hex(key.expose().to_vec()));
            } else if out.rekey_key.as_ref().map(|k| k.0.as_slice()) != Some(key.expose()) {
                return Err(bad("the reader obtained another key".into()));
            }
        }
        _ => {
            let pt = destination(params, carrier, reader, body, view)?;
            if out.operation == "open" {
                out.plaintext = Some(Hex(pt));
            } else if out.plaintext.as_ref().map(|p| p.0.as_slice()) != Some(pt.as_slice()) {
                return Err(bad("the reader opened another plaintext".into()));
            }
        }
    }
    Ok(())
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "seal", |t: &SealTest| &t.meta, complete)
}

// -------------------------------------------------------------- generating

/// The destination of every test's message.
fn bob() -> Principal {
    Principal("bob@b.example".into())
}

/// The context of a body alice seals for `bob` in an offer.
fn offer_to(bob: &Principal, cid: u64) -> SealContext<'_> {
    SealContext {
        session: &SESSION,
        cid,
        re: MsgType::Offer,
        to: Some(bob),
    }
}

/// A test of `operation` with nothing but its context filled in.
fn blank(
    f: &Fixture,
    tc: &str,
    comment: &str,
    reqs: &[&str],
    flags: &[&str],
    op: &str,
) -> SealTest {
    // Sealed by alice for bob: an offer, or her rekey.
    let re = match op {
        "rekey" | "open-rekey" => MsgType::Rekey,
        _ => MsgType::Offer,
    };
    SealTest::bare(
        Meta::valid(tc, comment, reqs, flags),
        op.into(),
        Hex(SESSION.0.to_vec()),
        0,
        (re.code(), Some("bob@b.example".into())),
        Some(f.alice.account.as_str().into()),
        "bob@b.example".into(),
    )
}

/// Fills in a test's outputs; a generator's own fixture cannot fail, and if
/// it did the committed file would fail verification.
fn filled(f: &Fixture, t: SealTest) -> SealTest {
    complete(&f.params, &t).unwrap_or(t)
}

fn body(t: &SealTest) -> Sealed {
    decode_body(&t.output).unwrap_or_else(|_| placeholder())
}

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
    let bob = bob();
    let ctx = offer_to(&bob, 0);
    // Recorded draws: the seal below makes them, `complete` replays them.
    let specs = specs(&f.params, &recipients).unwrap_or_default();
    let cek = seal(
        ctx,
        &f.alice,
        &specs,
        &plaintext(),
        None,
        &mut KeyCache::new(16),
        &mut rng,
    )
    .map_or_else(|_| Secret32::new([0; 32]), |(_, cek)| cek);
    let reqs = [
        "KW-CRYPTO-030",
        "KW-CRYPTO-031",
        "KW-CRYPTO-032",
        "KW-CRYPTO-033",
        "KW-SEAL-001",
        "KW-SEAL-002",
        "KW-SEAL-011",
    ];
    let test = filled(
        f,
        SealTest {
            recipients,
            plaintext: Some(Hex(plaintext())),
            randomness: Some(Hex(rng.drawn.clone())),
            ..blank(f, tc, comment, &reqs, flags, "seal")
        },
    );
    let sealed = body(&test);
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
) -> SealTest {
    filled(
        f,
        SealTest {
            actor: None,
            input: Some(Hex(encode_plaintext(body))),
            ..blank(f, tc, comment, reqs, flags, "open")
        },
    )
}

fn edit_test(
    f: &Fixture,
    tc: &str,
    comment: &str,
    input: &Sealed,
    cek: &Secret32,
    (content, new_key): (&[u8], bool),
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
    // Recorded draws, replayed by `complete`.
    let bob = bob();
    let _ = edit(
        input,
        offer_to(&bob, input.cid),
        editor,
        cert,
        cek,
        content,
        rekeying,
        &mut KeyCache::new(16),
        &mut rng,
    );
    let reqs = [
        "KW-CRYPTO-035",
        "KW-CRYPTO-036",
        "KW-SEAL-007",
        "KW-SEAL-009",
        "KW-SEAL-011",
    ];
    let test = filled(
        f,
        SealTest {
            actor: Some(editor.account.as_str().into()),
            plaintext: Some(Hex(content.to_vec())),
            randomness: new_key.then(|| Hex(rng.drawn.clone())),
            new_key,
            input: Some(Hex(encode_plaintext(input))),
            ..blank(f, tc, comment, &reqs, &[], "edit")
        },
    );
    let edited = decode_body(&test.output).unwrap_or_else(|_| input.clone());
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

/// `bytes` with its first head, if its argument is below 24, written with
/// a one-byte argument: the same item, not deterministically encoded.
fn widen_head(bytes: &[u8]) -> Vec<u8> {
    match bytes {
        [head, rest @ ..] if head & 0x1f < 24 => {
            let mut out = vec![(head & 0xe0) | 24, head & 0x1f];
            out.extend_from_slice(rest);
            out
        }
        _ => bytes.to_vec(),
    }
}

/// A body with a flipped bit in byte `at` of its ciphertext.
fn flipped(body: &Sealed, at: usize) -> Sealed {
    let mut out = body.clone();
    let mut ct = out.ct.to_vec();
    if let Some(b) = ct.get_mut(at) {
        *b ^= 1;
    }
    if let Some(bytes) = crate::wire::Bytes::new(ct) {
        out.ct = bytes;
    }
    out
}

pub fn generate() -> String {
    let f = fixture();
    let (sealed_t, sealed, cek) = sealed_test(
        &f,
        "seal/explicit",
        "sealed for a read-modify server, a read server and the destination; as alice sealed it, before sc@a signed it, the destination refuses it",
        &["EditMissing"],
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
        (&rewritten(), false),
    );
    let (new_t, _) = edit_test(
        &f,
        "seal/edit-new-key",
        "sc@a rewrites the media address under a new content key",
        &sealed,
        &cek,
        (&rewritten(), true),
    );
    let (pass_t, _) = edit_test(
        &f,
        "seal/edit-unchanged",
        "sc@a passes the content on unchanged and signs it (next = prev)",
        &sealed,
        &cek,
        (&plaintext(), false),
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
    ));
    tests.push(open_test(
        &f,
        "seal/swapped-entries",
        "the servers' entries swapped",
        &["MapTampered"],
        &map_reqs,
        &with_entries(&sealed, |e| e.swap(0, 1)),
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
    ));
    tests.push(open_test(
        &f,
        "seal/modified-ciphertext",
        "a flipped ciphertext bit",
        &["Modified"],
        &["KW-CRYPTO-030"],
        &flipped(&sealed, 20),
    ));
    // sc@b (read only) re-encrypts the rewritten content under the key it read.
    let rogue = reencrypt_without_edit(&sealed, &SESSION, &cek, &rewritten())
        .unwrap_or_else(|_| sealed.clone());
    tests.push(open_test(
        &f,
        "seal/read-only-change",
        "a read-only server re-encrypted changed content without an edit",
        &["ReadOnlyChange"],
        &["KW-SEAL-006", "KW-CRYPTO-036"],
        &rogue,
    ));
    // sc@b (read only) signs an edit of its own: correct key, certificate
    // and signature, but no read-modify entry.
    let mut forged = kept.clone();
    if let (Some(edits), Ok((sc_b, sc_b_cert))) =
        (forged.edits.take(), party(&f.params, "sc@b.example"))
    {
        let map = permission_map(&forged.recipients);
        let bob = bob();
        let ctx = offer_to(&bob, 0);
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
    ));
    // A second edit on top, then the first cut out.
    let bob = bob();
    let twice = edit(
        &kept,
        offer_to(&bob, kept.cid),
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
        ));
        tests.push(open_test(
            &f,
            "seal/cut-edit-chain",
            "the first of two edits removed",
            &["ChainTampered"],
            &["KW-CRYPTO-036"],
            &cut,
        ));
    }
    // The sender's signature made over a non-deterministic encoding of the
    // map (its array head in two bytes): the destination's own, deterministic
    // map does not verify (KW-CRYPTO-003).
    let mut reencoded = sealed.clone();
    let ctx = offer_to(&bob, sealed.cid);
    let wide = widen_head(&permission_map(&sealed.recipients));
    reencoded.sig = f.alice.signing.sign(&seal_signature_input(
        ctx,
        &sealed.sender,
        &sealed.hash,
        &wide,
    ));
    tests.push(open_test(
        &f,
        "seal/re-encoded-map",
        "the sender's signature over the permission map with a non-shortest array head",
        &["ReEncoded"],
        &["KW-CRYPTO-003", "KW-CRYPTO-032", "KW-CRYPTO-036"],
        &reencoded,
    ));
    tests.push(pass_t);
    tests.extend(rekey_tests(&f));
    VectorFile::new("seal", "spec/crypto.md §4", RECIPE, NOTES, f.params, tests).to_json()
}

/// The body form of a rekey (KW-CRYPTO-042): alice seals the new key of
/// epoch 1 for the call's recipients; bob takes it as her rekey, or refuses
/// it for another epoch, from another sender, or modified (KW-SM-016).
fn rekey_tests(f: &Fixture) -> Vec<SealTest> {
    let reqs = ["KW-CRYPTO-042", "KW-SM-016", "KW-CRYPTO-036"];
    let tc = "seal/rekey-body";
    let mut rng = entropy_for(tc);
    let key = Secret32::new(rng.array());
    let mut recorded = RecordingEntropy::new(rng);
    let sealed_by = |who: &Identity, rng: &mut dyn crate::crypto::Entropy| {
        let specs = specs(&f.params, &recipients()).unwrap_or_default();
        let bob = bob();
        let ctx = SealContext {
            re: MsgType::Rekey,
            ..offer_to(&bob, 0)
        };
        seal(
            ctx,
            who,
            &specs,
            &rekey_body_plaintext(1),
            Some(&key),
            &mut KeyCache::new(16),
            &mut { rng },
        )
        .map_or_else(|_| placeholder(), |(s, _)| s)
    };
    let good = sealed_by(&f.alice, &mut recorded);
    let valid = filled(
        f,
        SealTest {
            recipients: recipients(),
            randomness: Some(Hex(recorded.drawn.clone())),
            epoch: Some(1),
            rekey_key: Some(Hex(key.expose().to_vec())),
            ..blank(
                f,
                tc,
                "alice seals the key of epoch 1 for the call's recipients; bob takes it as her rekey",
                &reqs,
                &[],
                "rekey",
            )
        },
    );
    let taken = |tc: &str, comment: &str, flags: &[&str], body: &Sealed, epoch: u64| {
        filled(
            f,
            SealTest {
                actor: None,
                input: Some(Hex(encode_plaintext(body))),
                from: Some(f.alice.account.as_str().into()),
                epoch: Some(epoch),
                ..blank(f, tc, comment, &reqs, flags, "open-rekey")
            },
        )
    };
    let other = sealed_by(&f.sc_a.0, &mut entropy_for("seal/rekey-body-other-sender"));
    vec![
        valid,
        taken(
            "seal/rekey-body-wrong-epoch",
            "alice's rekey body naming epoch 1, presented as her rekey to epoch 2",
            &["RekeyMisused"],
            &good,
            2,
        ),
        taken(
            "seal/rekey-body-other-sender",
            "a rekey body sealed and signed by sc@a, presented as alice's rekey",
            &["RekeyMisused"],
            &other,
            1,
        ),
        taken(
            "seal/rekey-body-modified",
            "alice's rekey body with a flipped bit in its synthetic IV",
            &["Modified"],
            &flipped(&good, 0),
            1,
        ),
    ]
}
