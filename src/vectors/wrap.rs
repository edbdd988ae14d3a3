//! Per-recipient key wrap (KW-CRYPTO-033, KW-CRYPTO-034, KW-CRYPTO-005,
//! KW-SEAL-004): X25519, HKDF, AES-SIV, with every intermediate value.

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::{
    Entropy, KekBinding, KxKeyPair, Secret32, derive_kek, kek_info, unwrap_full, wrap_full,
};
use crate::wire::{Nonce, Permission, Principal, PublicKey, RecipientKind, SessionId};

/// One wrap, or an unwrap that must fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrapTest {
    #[serde(flatten)]
    meta: Meta,
    session: Hex,
    wrapper: String,
    kind: u64,
    perm: u64,
    cid: u64,
    nonce: Hex,
    /// The wrapper's ephemeral private key: present when the wrap itself is
    /// to be recomputed (valid tests, and wraps that must fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ephemeral_private: Option<Hex>,
    epk: Hex,
    /// The recipient's X25519 public key `P`, as bound in the KEK.
    recipient_public: Hex,
    /// The recipient's private key, for the unwrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipient_private: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cek: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_secret: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kek_info: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kek: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<Hex>,
}

const RECIPE: &str = "If ephemeral_private is present: z = X25519(ephemeral_private, recipient_public); \
kek = HKDF-SHA256(salt = session, ikm = z, info = kek_info) with kek_info = cbor([\"keyway-v1 kek\", 1, session, wrapper, epk, recipient_public, kind, perm]); \
wrapped = AES-SIV(kek, [\"keyway-v1 wrap\", nonce, u64be(cid)], cek); compare every intermediate (valid) or expect the error (invalid). \
Then, if recipient_private is present, unwrap: z = X25519(recipient_private, epk), the same kek with the recipient's own public key, and AES-SIV decryption of wrapped: \
valid tests yield cek, invalid ones fail with the error.";

const NOTES: &[(&str, &str)] = &[
    (
        "LowOrderPoint",
        "An X25519 public key of small order: the shared secret is all zeros and must be rejected (KW-CRYPTO-005).",
    ),
    ("ModifiedTag", "A bit of the synthetic IV is flipped."),
    ("ModifiedCiphertext", "A bit of the wrapped key is flipped."),
    (
        "WrongBinding",
        "The unwrap binds a different session, wrapper, kind, permission, nonce or cid than the wrap did.",
    ),
    (
        "WrongKey",
        "The unwrap uses a private key other than the recipient's.",
    ),
];

fn kind_of(code: u64) -> Result<RecipientKind, String> {
    RecipientKind::from_code(code).ok_or(format!("kind {code}"))
}

fn perm_of(code: u64) -> Result<Permission, String> {
    Permission::from_code(code).ok_or(format!("perm {code}"))
}

struct Base {
    session: SessionId,
    wrapper: Principal,
    kind: RecipientKind,
    perm: Permission,
    cid: u64,
    nonce: Nonce,
    ephemeral: KxKeyPair,
    recipient: KxKeyPair,
    cek: Secret32,
}

fn base(tc: &str, kind: RecipientKind, perm: Permission) -> Base {
    let mut rng = entropy_for(tc);
    Base {
        session: SessionId(rng.array()),
        wrapper: Principal("alice@a.example".into()),
        kind,
        perm,
        cid: 0,
        nonce: Nonce(rng.array()),
        ephemeral: KxKeyPair::generate(&mut rng),
        recipient: KxKeyPair::generate(&mut rng),
        cek: Secret32::new(rng.array()),
    }
}

fn valid(tc: &str, comment: &str, b: &Base) -> WrapTest {
    let epk = b.ephemeral.public();
    let p = b.recipient.public();
    let binding = KekBinding {
        session: &b.session,
        wrapper: &b.wrapper,
        epk: &epk,
        recipient: &p,
        kind: b.kind,
        perm: b.perm,
    };
    let shared = b
        .ephemeral
        .agree(&p)
        .map(|s| s.expose().to_vec())
        .unwrap_or_default();
    let kek = derive_kek(
        &Secret32::new(shared.as_slice().try_into().unwrap_or([0; 32])),
        &binding,
    );
    let wrapped = wrap_full(&b.ephemeral, &binding, &b.nonce, b.cid, &b.cek)
        .map(|w| w.to_vec())
        .unwrap_or_default();
    WrapTest {
        meta: Meta::valid(tc, comment, &["KW-CRYPTO-033", "KW-CRYPTO-034"], &[]),
        session: Hex(b.session.0.to_vec()),
        wrapper: b.wrapper.as_str().into(),
        kind: b.kind.code(),
        perm: b.perm.code(),
        cid: b.cid,
        nonce: Hex(b.nonce.0.to_vec()),
        ephemeral_private: Some(Hex(b.ephemeral.secret().expose().to_vec())),
        epk: Hex(epk.0.to_vec()),
        recipient_public: Hex(p.0.to_vec()),
        recipient_private: Some(Hex(b.recipient.secret().expose().to_vec())),
        cek: Some(Hex(b.cek.expose().to_vec())),
        shared_secret: Some(Hex(shared)),
        kek_info: Some(Hex(kek_info(&binding))),
        kek: Some(Hex(kek.expose().to_vec())),
        wrapped: Some(Hex(wrapped)),
    }
}

/// An unwrap of `from`'s wrapped key under a changed context.
fn mutated(
    from: &WrapTest,
    tc: &str,
    comment: &str,
    flags: &[&str],
    requirements: &[&str],
    change: impl FnOnce(&mut WrapTest),
) -> WrapTest {
    let mut t = from.clone();
    t.ephemeral_private = None;
    t.cek = None;
    t.shared_secret = None;
    t.kek_info = None;
    t.kek = None;
    change(&mut t);
    let failure = run_unwrap(&t).err().unwrap_or(Failure {
        code: "none".into(),
        detail: "accepted".into(),
    });
    t.meta = Meta::invalid(tc, comment, requirements, flags, &failure);
    t
}

/// A point of order 8 on Curve25519 (not the identity).
const ORDER_8: [u8; 32] = [
    0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
    0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
];

pub fn generate() -> String {
    let dest = valid(
        "wrap/destination-read",
        "wrap for the destination device, read permission",
        &base(
            "wrap/destination-read",
            RecipientKind::Destination,
            Permission::Read,
        ),
    );
    let server = valid(
        "wrap/server-read-modify",
        "wrap for a server with a decryption request and read-modify permission",
        &base(
            "wrap/server-read-modify",
            RecipientKind::Server,
            Permission::ReadModify,
        ),
    );
    let seal4 = ["KW-SEAL-004", "KW-CRYPTO-033"];
    let flip = |t: &mut WrapTest, at: usize| {
        if let Some(w) = t.wrapped.as_mut().and_then(|w| w.0.get_mut(at)) {
            *w ^= 1;
        }
    };
    let mut tests = vec![
        mutated(
            &dest,
            "wrap/modified-tag",
            "the synthetic IV has a flipped bit",
            &["ModifiedTag"],
            &["KW-CRYPTO-034"],
            |t| flip(t, 0),
        ),
        mutated(
            &dest,
            "wrap/modified-ciphertext",
            "the wrapped key has a flipped bit",
            &["ModifiedCiphertext"],
            &["KW-CRYPTO-034"],
            |t| flip(t, 47),
        ),
        mutated(
            &dest,
            "wrap/wrong-recipient-key",
            "another party's private key",
            &["WrongKey"],
            &["KW-CRYPTO-034"],
            |t| {
                let other = KxKeyPair::generate(&mut entropy_for("wrap/wrong-recipient-key"));
                t.recipient_private = Some(Hex(other.secret().expose().to_vec()));
                t.recipient_public = Hex(other.public().0.to_vec());
            },
        ),
        mutated(
            &server,
            "wrap/wrong-permission",
            "a read-modify entry claimed as read (AD binds the permission)",
            &["WrongBinding"],
            &seal4,
            |t| t.perm = Permission::Read.code(),
        ),
        mutated(
            &dest,
            "wrap/upgraded-permission",
            "a read entry claimed as read-modify",
            &["WrongBinding"],
            &seal4,
            |t| t.perm = Permission::ReadModify.code(),
        ),
        mutated(
            &dest,
            "wrap/wrong-kind",
            "a destination entry claimed as a server's",
            &["WrongBinding"],
            &seal4,
            |t| t.kind = RecipientKind::Server.code(),
        ),
        mutated(
            &dest,
            "wrap/wrong-session",
            "the entry moved to another session",
            &["WrongBinding"],
            &seal4,
            |t| {
                if let Some(b) = t.session.0.get_mut(0) {
                    *b ^= 1;
                }
            },
        ),
        mutated(
            &dest,
            "wrap/wrong-wrapper",
            "another wrapper named",
            &["WrongBinding"],
            &seal4,
            |t| t.wrapper = "mallory@a.example".into(),
        ),
        mutated(
            &dest,
            "wrap/wrong-nonce",
            "the entry moved to a body with another nonce",
            &["WrongBinding"],
            &seal4,
            |t| {
                if let Some(b) = t.nonce.0.get_mut(0) {
                    *b ^= 1;
                }
            },
        ),
        mutated(
            &dest,
            "wrap/wrong-cid",
            "the entry moved to another content",
            &["WrongBinding"],
            &seal4,
            |t| t.cid = 1,
        ),
        mutated(
            &dest,
            "wrap/zero-epk",
            "an all-zero ephemeral key",
            &["LowOrderPoint"],
            &["KW-CRYPTO-005"],
            |t| t.epk = Hex(vec![0; 32]),
        ),
        mutated(
            &dest,
            "wrap/low-order-epk",
            "an ephemeral key of order 8",
            &["LowOrderPoint"],
            &["KW-CRYPTO-005"],
            |t| t.epk = Hex(ORDER_8.to_vec()),
        ),
    ];
    // A wrap for a small-order recipient key fails at the wrapper.
    let mut zero = dest.clone();
    zero.recipient_public = Hex(vec![0; 32]);
    zero.recipient_private = None;
    zero.cek = dest.cek.clone();
    zero.shared_secret = None;
    zero.kek_info = None;
    zero.kek = None;
    zero.wrapped = None;
    let failure = run_wrap(&zero).err().unwrap_or(Failure {
        code: "none".into(),
        detail: "accepted".into(),
    });
    zero.meta = Meta::invalid(
        "wrap/zero-recipient-key",
        "wrapping for an all-zero recipient key",
        &["KW-CRYPTO-005"],
        &["LowOrderPoint"],
        &failure,
    );
    tests.push(zero);
    tests.insert(0, server);
    tests.insert(0, dest);
    VectorFile::new("wrap", "spec/crypto.md §4", RECIPE, NOTES, (), tests).to_json()
}

struct Context {
    session: SessionId,
    wrapper: Principal,
    kind: RecipientKind,
    perm: Permission,
    nonce: Nonce,
    epk: PublicKey,
}

fn context(t: &WrapTest) -> Result<Context, String> {
    Ok(Context {
        session: SessionId(t.session.array()?),
        wrapper: Principal::new(&t.wrapper).map_err(|e| e.to_string())?,
        kind: kind_of(t.kind)?,
        perm: perm_of(t.perm)?,
        nonce: Nonce(t.nonce.array()?),
        epk: PublicKey(t.epk.array()?),
    })
}

fn run_wrap(t: &WrapTest) -> Result<Vec<u8>, Failure> {
    let c = context(t).map_err(|e| Failure {
        code: "vector".into(),
        detail: e,
    })?;
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let eph = KxKeyPair::from_secret(&Secret32::new(
        t.ephemeral_private
            .as_ref()
            .ok_or_else(|| bad("no ephemeral".into()))?
            .array()
            .map_err(bad)?,
    ));
    let cek = Secret32::new(
        t.cek
            .as_ref()
            .ok_or_else(|| bad("no cek".into()))?
            .array()
            .map_err(bad)?,
    );
    let p = PublicKey(t.recipient_public.array().map_err(bad)?);
    let binding = KekBinding {
        session: &c.session,
        wrapper: &c.wrapper,
        epk: &c.epk,
        recipient: &p,
        kind: c.kind,
        perm: c.perm,
    };
    Ok(wrap_full(&eph, &binding, &c.nonce, t.cid, &cek)?.to_vec())
}

fn run_unwrap(t: &WrapTest) -> Result<Vec<u8>, Failure> {
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let c = context(t).map_err(bad)?;
    let me = KxKeyPair::from_secret(&Secret32::new(
        t.recipient_private
            .as_ref()
            .ok_or_else(|| bad("no recipient key".into()))?
            .array()
            .map_err(bad)?,
    ));
    let p = me.public();
    let binding = KekBinding {
        session: &c.session,
        wrapper: &c.wrapper,
        epk: &c.epk,
        recipient: &p,
        kind: c.kind,
        perm: c.perm,
    };
    let wrapped = t
        .wrapped
        .as_ref()
        .ok_or_else(|| bad("no wrapped key".into()))?;
    Ok(unwrap_full(&me, &binding, &c.nonce, t.cid, &wrapped.0)?
        .expose()
        .to_vec())
}

/// Checks one wrap vector (the recipe above).
pub fn run_vector(t: &WrapTest) -> Result<(), String> {
    if t.ephemeral_private.is_some() {
        let wrapped = t.meta.expect(run_wrap(t))?;
        if let Some(wrapped) = wrapped {
            let c = context(t)?;
            let eph = KxKeyPair::from_secret(&Secret32::new(
                t.ephemeral_private
                    .as_ref()
                    .map(|h| h.array())
                    .transpose()?
                    .unwrap_or([0; 32]),
            ));
            same("epk", &t.epk.0, &eph.public().0)?;
            let p = PublicKey(t.recipient_public.array()?);
            let shared = eph.agree(&p).map_err(|e| e.to_string())?;
            let binding = KekBinding {
                session: &c.session,
                wrapper: &c.wrapper,
                epk: &c.epk,
                recipient: &p,
                kind: c.kind,
                perm: c.perm,
            };
            let check = |name: &str, v: &Option<Hex>, actual: &[u8]| match v {
                Some(h) => same(name, &h.0, actual),
                None => Err(format!("{name} missing")),
            };
            check("shared_secret", &t.shared_secret, shared.expose())?;
            check("kek_info", &t.kek_info, &kek_info(&binding))?;
            check("kek", &t.kek, derive_kek(&shared, &binding).expose())?;
            check("wrapped", &t.wrapped, &wrapped)?;
        }
    }
    if t.recipient_private.is_some() {
        if let Some(cek) = t.meta.expect(run_unwrap(t))? {
            match &t.cek {
                Some(expected) => same("cek", &expected.0, &cek)?,
                None => return Err("cek missing".into()),
            }
        }
    }
    Ok(())
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(
        text,
        "wrap",
        |t: &WrapTest| &t.meta,
        |_: &(), t| run_vector(t),
    )
}
