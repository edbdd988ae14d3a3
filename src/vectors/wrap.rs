//! Per-recipient key wrap (KW-CRYPTO-033, KW-CRYPTO-034, KW-CRYPTO-005,
//! KW-SEAL-004): X25519, HKDF, AES-SIV, with every intermediate value.

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::primitives::siv_cipher;
use crate::crypto::{
    Entropy, KekBinding, KxKeyPair, Secret32, derive_kek, kek_info, unwrap_with, wrap_with,
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
    /// The content key: wrapped (an input, with `ephemeral_private`), or
    /// unwrapped (an output of a valid unwrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cek: Option<Hex>,
    /// `z`, of the wrap (`X25519(ephemeral_private, recipient_public)`) and
    /// of the unwrap (`X25519(recipient_private, epk)`), which agree;
    /// absent when it is all zeros (KW-CRYPTO-005).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_secret: Option<Hex>,
    kek_info: Hex,
    /// The key-encryption key derived from `shared_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kek: Option<Hex>,
    /// An output of the wrap (with `ephemeral_private`), else the input of
    /// the unwrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<Hex>,
}

const RECIPE: &str = "kek_info = cbor([\"keyway-v1 kek\", 1, session, wrapper, epk, recipient_public, kind, perm]). \
If ephemeral_private is present (epk is its public key): z = X25519(ephemeral_private, recipient_public) = shared_secret (an all-zero z fails the wrap); \
kek = HKDF-SHA256(salt = session, ikm = z, info = kek_info); wrapped = AES-SIV(kek, [\"keyway-v1 wrap\", nonce, u64be(cid)], cek). \
Then, if recipient_private is present (recipient_public is its public key), unwrap: z = X25519(recipient_private, epk) = shared_secret (all-zero fails), the same kek, and AES-SIV decryption of wrapped: \
valid tests yield cek; invalid ones fail with the error, carrying the intermediates computed before the failing step.";

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
    let t = WrapTest {
        meta: Meta::valid(tc, comment, &["KW-CRYPTO-033", "KW-CRYPTO-034"], &[]),
        session: Hex(b.session.0.to_vec()),
        wrapper: b.wrapper.as_str().into(),
        kind: b.kind.code(),
        perm: b.perm.code(),
        cid: b.cid,
        nonce: Hex(b.nonce.0.to_vec()),
        ephemeral_private: Some(Hex(b.ephemeral.secret().expose().to_vec())),
        epk: Hex(b.ephemeral.public().0.to_vec()),
        recipient_public: Hex(b.recipient.public().0.to_vec()),
        recipient_private: Some(Hex(b.recipient.secret().expose().to_vec())),
        cek: Some(Hex(b.cek.expose().to_vec())),
        shared_secret: None,
        kek_info: Hex::default(),
        kek: None,
        wrapped: None,
    };
    complete(&(), &t).unwrap_or(t)
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
    t.meta = Meta::valid(tc, comment, requirements, flags);
    t.ephemeral_private = None;
    t.cek = None;
    change(&mut t);
    complete(&(), &t).unwrap_or(t)
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
    // A wrap for a small-order recipient key fails at the wrapper: the
    // all-zero key, and a point of order 8 (KW-CRYPTO-005).
    let at_wrapper = |tc: &str, comment: &str, key: [u8; 32]| {
        let mut t = dest.clone();
        t.meta = Meta::valid(tc, comment, &["KW-CRYPTO-005"], &["LowOrderPoint"]);
        t.recipient_public = Hex(key.to_vec());
        t.recipient_private = None;
        t.wrapped = None;
        complete(&(), &t).unwrap_or(t)
    };
    tests.push(at_wrapper(
        "wrap/zero-recipient-key",
        "wrapping for an all-zero recipient key",
        [0; 32],
    ));
    tests.insert(0, server);
    tests.insert(0, dest.clone());
    tests.push(at_wrapper(
        "wrap/low-order-recipient-key",
        "wrapping for a recipient key of order 8",
        ORDER_8,
    ));
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

/// The wrap and the unwrap the test gives inputs for, filling in `out`'s
/// intermediates and outputs as far as they get.
fn run(t: &WrapTest, out: &mut WrapTest) -> Result<(), Failure> {
    let c = context(t).map_err(Failure::vector)?;
    let p = PublicKey(t.recipient_public.array().map_err(Failure::vector)?);
    let binding = KekBinding {
        session: &c.session,
        wrapper: &c.wrapper,
        epk: &c.epk,
        recipient: &p,
        kind: c.kind,
        perm: c.perm,
    };
    out.kek_info = Hex(kek_info(&binding));
    if let Some(private) = &t.ephemeral_private {
        let eph = KxKeyPair::from_secret(&Secret32::new(private.array().map_err(Failure::vector)?));
        same("epk of ephemeral_private", &t.epk.0, &eph.public().0).map_err(Failure::vector)?;
        let cek = Secret32::new(
            t.cek
                .as_ref()
                .ok_or_else(|| Failure::vector("no cek"))?
                .array()
                .map_err(Failure::vector)?,
        );
        let shared = eph.agree(&p)?;
        let kek = derive_kek(&shared, &binding);
        out.shared_secret = Some(Hex(shared.expose().to_vec()));
        out.kek = Some(Hex(kek.expose().to_vec()));
        let wrapped = wrap_with(&mut siv_cipher(kek.expose()), &c.nonce, t.cid, &cek);
        out.wrapped = Some(Hex(wrapped.to_vec()));
    }
    if let Some(private) = &t.recipient_private {
        let me = KxKeyPair::from_secret(&Secret32::new(private.array().map_err(Failure::vector)?));
        same(
            "recipient_public of recipient_private",
            &t.recipient_public.0,
            &me.public().0,
        )
        .map_err(Failure::vector)?;
        let shared = me.agree(&c.epk)?;
        let kek = derive_kek(&shared, &binding);
        if let Some(z) = &out.shared_secret {
            same("shared secret of the unwrap", &z.0, shared.expose()).map_err(Failure::vector)?;
        }
        out.shared_secret = Some(Hex(shared.expose().to_vec()));
        out.kek = Some(Hex(kek.expose().to_vec()));
        let wrapped = out
            .wrapped
            .clone()
            .ok_or_else(|| Failure::vector("no wrapped key"))?;
        let cek = unwrap_with(&mut siv_cipher(kek.expose()), &c.nonce, t.cid, &wrapped.0)?;
        match &t.cek {
            Some(given) if t.ephemeral_private.is_some() => {
                same("unwrapped cek", &given.0, cek.expose()).map_err(Failure::vector)?;
            }
            _ => out.cek = Some(Hex(cek.expose().to_vec())),
        }
    }
    Ok(())
}

/// The test recomputed from its inputs (the context, `epk`,
/// `recipient_public`, and `ephemeral_private` with `cek` for a wrap, or
/// `wrapped` for an unwrap alone, and `recipient_private` for the unwrap).
fn complete(_: &(), t: &WrapTest) -> Result<WrapTest, String> {
    let mut out = WrapTest {
        shared_secret: None,
        kek: None,
        ..t.clone()
    };
    if t.ephemeral_private.is_some() {
        out.wrapped = None;
    } else {
        out.cek = None;
    }
    let outcome = run(t, &mut out);
    let (meta, _) = t.meta.judged(outcome)?;
    out.meta = meta;
    Ok(out)
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "wrap", |t: &WrapTest| &t.meta, complete)
}
