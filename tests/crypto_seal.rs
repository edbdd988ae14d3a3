//! Sealed bodies through trusted and untrusted servers (F4): who can read,
//! who can change, and how the destination tells (KW-SEAL-*,
//! KW-CRYPTO-030 to KW-CRYPTO-036).

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use keyway::crypto::{
    CryptoError, KekBinding, KeyCache, KxKeyPair, RecipientSpec, Rekeying, SealContext, Secret32,
    SeededEntropy, edit, every_editor_signed, open, reencrypt_without_edit, seal, verify_sealed,
    wrap_full,
};
use keyway::wire::{
    Bytes, ErrorCode, List, MsgType, Permission, Principal, PublicKey, RecipientKind, Sealed,
    SessionDesc, SessionId, decode_plaintext, encode_plaintext, examples,
};
use support::pki::{NOW, Party, Pki, pki};

const SESSION: SessionId = SessionId([0x5e; 16]);

/// The destination every body here is sealed for.
static BOB: std::sync::LazyLock<Principal> =
    std::sync::LazyLock::new(|| Principal::new("bob@b.example").unwrap());

/// The context of an offer to bob in `SESSION` (KW-CRYPTO-032).
fn offer() -> SealContext<'static> {
    SealContext {
        session: &SESSION,
        cid: 0,
        re: MsgType::Offer,
        to: Some(&BOB),
    }
}

fn spec(p: &Party, kind: RecipientKind, perm: Permission) -> RecipientSpec {
    RecipientSpec {
        id: p.id.account.clone(),
        kx_key: p.id.kx.public(),
        kind,
        perm,
        anonymous: false,
    }
}

fn recipients(pki: &Pki) -> Vec<RecipientSpec> {
    vec![
        spec(&pki.sc_a, RecipientKind::Server, Permission::ReadModify),
        spec(&pki.sc_b, RecipientKind::Server, Permission::Read),
        spec(&pki.bob, RecipientKind::Destination, Permission::Read),
    ]
}

fn plaintext() -> Vec<u8> {
    encode_plaintext(&examples::session_desc())
}

fn sealed_offer(pki: &Pki) -> Sealed {
    let ctx = offer();
    let mut rng = SeededEntropy::from_label("seal");
    let (sealed, _) = seal(
        ctx,
        &pki.alice.id,
        &recipients(pki),
        &plaintext(),
        None,
        &mut KeyCache::new(64),
        &mut rng,
    )
    .unwrap();
    sealed
}

fn destination_check(pki: &Pki, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
    let opened = open(sealed, &SESSION, &pki.bob.id, &mut KeyCache::new(8))?;
    verify_sealed(
        sealed,
        offer(),
        &opened.plaintext,
        &opened.cek,
        &pki.alice.cert,
        &pki.trust,
        NOW,
    )?;
    Ok(opened.plaintext)
}

/// KW-SEAL-001, KW-SEAL-002, KW-SEAL-003, KW-SEAL-009: each recipient reads;
/// the destination verifies the sender.
#[test]
fn recipients_open_and_the_destination_verifies() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    assert_eq!(destination_check(&pki, &sealed).unwrap(), plaintext());
    for server in [&pki.sc_a, &pki.sc_b] {
        let opened = open(&sealed, &SESSION, &server.id, &mut KeyCache::new(8)).unwrap();
        assert_eq!(opened.plaintext, plaintext());
    }
    let desc: SessionDesc = decode_plaintext(&destination_check(&pki, &sealed).unwrap()).unwrap();
    assert_eq!(desc, examples::session_desc());
}

/// KW-SEAL-008: a server without an entry learns nothing; no entry unwraps
/// with its key.
#[test]
fn an_untrusted_server_cannot_open() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let mut cache = KeyCache::new(8);
    assert_eq!(
        open(&sealed, &SESSION, &pki.sc_c.id, &mut cache),
        Err(CryptoError::NoEntry)
    );
    assert!(cache.is_empty(), "failed trials leave nothing behind");
    // Nor can it with the entries made anonymous (trial unwrap tries them all).
    let mut anon = sealed.clone();
    let mut entries = anon.recipients.clone().into_vec();
    for r in &mut entries {
        r.id = None;
        r.kid = None;
    }
    anon.recipients = List::new(entries).unwrap();
    assert_eq!(
        open(&anon, &SESSION, &pki.sc_c.id, &mut cache),
        Err(CryptoError::NoEntry)
    );
}

/// KW-SEAL-003: anonymous entries are found by trial unwrap.
#[test]
fn trial_unwrap_finds_anonymous_entries() {
    let pki = pki();
    let mut specs = recipients(&pki);
    for s in &mut specs {
        s.anonymous = true;
    }
    let ctx = offer();
    let (sealed, cek) = seal(
        ctx,
        &pki.alice.id,
        &specs,
        &plaintext(),
        None,
        &mut KeyCache::new(8),
        &mut SeededEntropy::from_label("anon"),
    )
    .unwrap();
    assert!(
        sealed
            .recipients
            .iter()
            .all(|r| r.id.is_none() && r.kid.is_none())
    );
    let opened = open(&sealed, &SESSION, &pki.sc_b.id, &mut KeyCache::new(8)).unwrap();
    assert_eq!((opened.entry, opened.cek), (1, cek));
    assert_eq!(destination_check(&pki, &sealed).unwrap(), plaintext());
}

/// KW-CRYPTO-032: the content identifier a body's signatures cover is
/// the body's own `cid`, whatever the verifier's context names: a body is
/// judged as it is, not as a caller describes it.
#[test]
fn the_content_identifier_is_the_bodys_own() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let opened = open(&sealed, &SESSION, &pki.bob.id, &mut KeyCache::new(8)).unwrap();
    let named_otherwise = SealContext {
        cid: sealed.cid + 7,
        ..offer()
    };
    verify_sealed(
        &sealed,
        named_otherwise,
        &opened.plaintext,
        &opened.cek,
        &pki.alice.cert,
        &pki.trust,
        NOW,
    )
    .unwrap();
    // So does an editor's signature: made under another named cid, the
    // edit still verifies as the body's.
    let mut cache = KeyCache::new(8);
    let at_editor = open(&sealed, &SESSION, &pki.sc_a.id, &mut cache).unwrap();
    let (edited, _) = edit(
        &sealed,
        named_otherwise,
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &at_editor.cek,
        &modified_desc(),
        Rekeying::KeepKey,
        &mut cache,
        &mut SeededEntropy::from_label("edit elsewhere"),
    )
    .unwrap();
    assert_eq!(destination_check(&pki, &edited).unwrap(), modified_desc());
}

/// KW-SEAL-003, KW-CRYPTO-034: an explicit entry is the party's only
/// when it names both its account and its key: an entry for its account
/// under another key (one it held before) is not its, and the party finds
/// its anonymous entry by trial.
#[test]
fn an_explicit_entry_names_both_account_and_key() {
    let pki = pki();
    let old_key = KxKeyPair::generate(&mut SeededEntropy::from_label("sc_b old key"));
    let mut specs = recipients(&pki);
    specs.insert(
        1,
        RecipientSpec {
            kx_key: old_key.public(),
            ..spec(&pki.sc_b, RecipientKind::Server, Permission::Read)
        },
    );
    specs[2].anonymous = true;
    let (sealed, cek) = seal(
        offer(),
        &pki.alice.id,
        &specs,
        &plaintext(),
        None,
        &mut KeyCache::new(8),
        &mut SeededEntropy::from_label("stale entry"),
    )
    .unwrap();
    assert_eq!(sealed.recipients[1].id.as_ref(), Some(&pki.sc_b.id.account));
    let opened = open(&sealed, &SESSION, &pki.sc_b.id, &mut KeyCache::new(8)).unwrap();
    assert_eq!((opened.entry, opened.cek), (2, cek));
}

/// KW-SEAL-005: the signed permission map: entries cannot be dropped,
/// added, swapped or altered.
#[test]
fn the_permission_map_is_signed() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let mutate = |f: &dyn Fn(&mut Vec<keyway::wire::Recipient>)| {
        let mut s = sealed.clone();
        let mut entries = s.recipients.clone().into_vec();
        f(&mut entries);
        s.recipients = List::new(entries).unwrap();
        s
    };
    // Dropped: sc@b's entry.
    let dropped = mutate(&|e| {
        e.remove(1);
    });
    assert_eq!(
        destination_check(&pki, &dropped),
        Err(CryptoError::BadSignature)
    );
    // Added: a copy of bob's entry for the transit server.
    let added = mutate(&|e| {
        let mut extra = e[2].clone();
        extra.id = Some(pki.sc_c.id.account.clone());
        e.push(extra);
    });
    assert_eq!(
        destination_check(&pki, &added),
        Err(CryptoError::BadSignature)
    );
    // Swapped order.
    let swapped = mutate(&|e| e.swap(0, 1));
    assert_eq!(
        destination_check(&pki, &swapped),
        Err(CryptoError::BadSignature)
    );
    // Upgraded permission: sc@b's read becomes read-modify. Its own unwrap
    // fails (the permission is bound in the key), and the destination sees it.
    let upgraded = mutate(&|e| e[1].perm = Permission::ReadModify);
    assert_eq!(
        open(&upgraded, &SESSION, &pki.sc_b.id, &mut KeyCache::new(8)),
        Err(CryptoError::DecryptFailed)
    );
    assert_eq!(
        destination_check(&pki, &upgraded),
        Err(CryptoError::BadSignature)
    );
    // Swapped wrapped keys between two recipients (KW-SEAL-004).
    let crossed = mutate(&|e| {
        let w = e[0].wrapped.clone();
        e[0].wrapped = e[2].wrapped.clone();
        e[2].wrapped = w;
    });
    assert_eq!(
        destination_check(&pki, &crossed),
        Err(CryptoError::DecryptFailed)
    );
}

/// KW-SEAL-004, KW-CRYPTO-030: a body moved to another session, or with a
/// flipped bit, does not open.
#[test]
fn bodies_are_bound_to_their_session_and_authenticated() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let other = SessionId([0x11; 16]);
    assert_eq!(
        open(&sealed, &other, &pki.bob.id, &mut KeyCache::new(8)),
        Err(CryptoError::DecryptFailed)
    );
    let mut flipped = sealed.clone();
    let mut ct = flipped.ct.to_vec();
    ct[20] ^= 1;
    flipped.ct = Bytes::new(ct).unwrap();
    let mut cache = KeyCache::new(8);
    assert_eq!(
        open(&flipped, &SESSION, &pki.bob.id, &mut cache),
        Err(CryptoError::DecryptFailed)
    );
    // KW-ERR-004: the key did unwrap, but the body was rejected: nothing kept.
    assert!(cache.is_empty());
    // Nor after a body that opened: the caller keeps its key only once it
    // has accepted the whole message.
    let opened = open(&sealed, &SESSION, &pki.bob.id, &mut cache).unwrap();
    assert!(cache.is_empty());
    assert!(opened.pending.is_some());
    // KW-CRYPTO-002: the control information carries media keys.
    let shown = format!("{opened:?}");
    assert!(shown.contains("redacted") && !shown.contains(&format!("{:?}", opened.plaintext)));
    cache.commit(opened.pending);
    assert_eq!(cache.len(), 1);
    let again = open(&sealed, &SESSION, &pki.bob.id, &mut cache).unwrap();
    assert!(
        again.pending.is_none(),
        "the second opening uses the cached key"
    );
    assert_eq!(
        ErrorCode::from(&CryptoError::DecryptFailed),
        ErrorCode::DECRYPT_FAILED
    );
}

fn modified_desc() -> Vec<u8> {
    let mut desc = examples::session_desc();
    let mut streams = desc.streams.clone().into_vec();
    streams[0].addr = "203.0.113.1:30000".parse().unwrap();
    desc.streams = List::new(streams).unwrap();
    encode_plaintext(&desc)
}

/// KW-SEAL-007, KW-SEAL-009: a read-modify server rewrites the media
/// address keeping the key; the destination sees who wrote the version.
#[test]
fn a_permitted_server_edits_keeping_the_key() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let mut cache = KeyCache::new(8);
    let mut rng = SeededEntropy::from_label("edit");
    let opened = open(&sealed, &SESSION, &pki.sc_a.id, &mut cache).unwrap();
    let (edited, cek) = edit(
        &sealed,
        offer(),
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &opened.cek,
        &modified_desc(),
        Rekeying::KeepKey,
        &mut cache,
        &mut rng,
    )
    .unwrap();
    assert_eq!(cek, opened.cek);
    assert_eq!(edited.edits.as_ref().unwrap().len(), 1);
    assert_eq!(destination_check(&pki, &edited).unwrap(), modified_desc());
    // The read-only server downstream still opens it.
    let seen = open(&edited, &SESSION, &pki.sc_b.id, &mut KeyCache::new(8)).unwrap();
    assert_eq!(seen.plaintext, modified_desc());
}

/// KW-SEAL-007: with a new content key, downstream entries are re-wrapped
/// under the editor's ephemeral key; upstream entries are left.
#[test]
fn a_permitted_server_edits_with_a_new_key() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let mut cache = KeyCache::new(8);
    let mut rng = SeededEntropy::from_label("edit new key");
    let opened = open(&sealed, &SESSION, &pki.sc_a.id, &mut cache).unwrap();
    let keys: Vec<(String, PublicKey)> = [&pki.sc_b, &pki.bob]
        .iter()
        .map(|p| (p.id.account.as_str().to_string(), p.id.kx.public()))
        .collect();
    let key_of = |_: usize, r: &keyway::wire::Recipient| {
        let id = r.id.as_ref()?;
        keys.iter().find(|(a, _)| a == id.as_str()).map(|(_, k)| *k)
    };
    let via = [];
    let (edited, cek) = edit(
        &sealed,
        offer(),
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &opened.cek,
        &modified_desc(),
        Rekeying::NewKey {
            via: &via,
            key_of: &key_of,
        },
        &mut cache,
        &mut rng,
    )
    .unwrap();
    assert_ne!(cek, opened.cek);
    assert!(edited.edits.as_ref().unwrap()[0].epk.is_some());
    assert_eq!(destination_check(&pki, &edited).unwrap(), modified_desc());
    assert_eq!(
        open(&edited, &SESSION, &pki.sc_b.id, &mut KeyCache::new(8))
            .unwrap()
            .cek,
        cek
    );
    // The editor's own entry was left as it was: stale now.
    assert_eq!(edited.recipients[0].wrapped, sealed.recipients[0].wrapped);
}

/// KW-SEAL-006: a read-only server's change is detected, whether it
/// re-encrypts silently or signs an edit it may not make.
#[test]
fn a_read_only_server_cannot_change_the_content() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let mut cache = KeyCache::new(8);
    let mut rng = SeededEntropy::from_label("rogue");
    let opened = open(&sealed, &SESSION, &pki.sc_b.id, &mut cache).unwrap();
    // It cannot edit through the API…
    let refused = edit(
        &sealed,
        offer(),
        &pki.sc_b.id,
        &pki.sc_b.cert,
        &opened.cek,
        &modified_desc(),
        Rekeying::KeepKey,
        &mut cache,
        &mut rng,
    );
    assert!(matches!(refused, Err(CryptoError::EditorNotPermitted(_))));
    // …and what it can do by hand is caught: re-encrypting under the key it
    // read, without an edit,
    let rogue = reencrypt(&pki, &sealed, &opened.cek, &modified_desc());
    // The library's fault injection does exactly this.
    assert_eq!(
        keyway::crypto::reencrypt_without_edit(&sealed, &SESSION, &opened.cek, &modified_desc())
            .unwrap(),
        rogue
    );
    assert_eq!(
        destination_check(&pki, &rogue),
        Err(CryptoError::PermissionDenied(
            "content matches no signed version"
        ))
    );
    // or with an edit signed by itself.
    let (permitted, _) = edit(
        &sealed,
        offer(),
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &opened.cek,
        &modified_desc(),
        Rekeying::KeepKey,
        &mut cache,
        &mut rng,
    )
    .unwrap();
    let mut forged = permitted.clone();
    let mut edits = forged.edits.take().unwrap().into_vec();
    edits[0].editor = pki.sc_b.id.account.clone();
    edits[0].cert = pki.sc_b.cert.clone();
    forged.edits = List::new(edits).map(Some).unwrap();
    assert!(matches!(
        destination_check(&pki, &forged),
        Err(CryptoError::EditorNotPermitted(_))
    ));
    assert_eq!(
        ErrorCode::from(&CryptoError::EditorNotPermitted(
            pki.sc_b.id.account.clone()
        )),
        ErrorCode::PERMISSION_DENIED
    );
}

/// Re-encrypts a body's content under `cek` as a rogue hop would.
fn reencrypt(
    _pki: &Pki,
    sealed: &Sealed,
    cek: &keyway::crypto::Secret32,
    plaintext: &[u8],
) -> Sealed {
    use keyway::crypto::primitives::{siv_cipher, siv_seal};
    let ad = {
        let mut out = Vec::new();
        keyway::cbor::write_array_header(&mut out, 5);
        keyway::cbor::write_text_string(&mut out, "keyway-v1 body");
        keyway::cbor::write_uint(&mut out, 1);
        keyway::cbor::write_bytes(&mut out, &SESSION.0);
        keyway::cbor::write_uint(&mut out, sealed.cid);
        keyway::cbor::write_text_string(&mut out, sealed.sender.as_str());
        out
    };
    let mut rogue = sealed.clone();
    rogue.ct = Bytes::new(siv_seal(
        &mut siv_cipher(cek.expose()),
        &[&ad, &sealed.nonce.0],
        plaintext,
    ))
    .unwrap();
    rogue
}

/// KW-CRYPTO-036: edits must chain.
#[test]
fn a_broken_edit_chain_is_detected() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let mut cache = KeyCache::new(8);
    let mut rng = SeededEntropy::from_label("chain");
    let opened = open(&sealed, &SESSION, &pki.sc_a.id, &mut cache).unwrap();
    let (once, cek) = edit(
        &sealed,
        offer(),
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &opened.cek,
        &modified_desc(),
        Rekeying::KeepKey,
        &mut cache,
        &mut rng,
    )
    .unwrap();
    let (twice, _) = edit(
        &once,
        offer(),
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &cek,
        &plaintext(),
        Rekeying::KeepKey,
        &mut cache,
        &mut rng,
    )
    .unwrap();
    assert_eq!(destination_check(&pki, &twice).unwrap(), plaintext());
    // Dropping the first edit breaks the chain.
    let mut cut = twice.clone();
    let edits = cut.edits.take().unwrap().into_vec();
    cut.edits = Some(List::new(edits[1..].to_vec()).unwrap());
    assert_eq!(destination_check(&pki, &cut), Err(CryptoError::BrokenChain));
}

/// KW-CRYPTO-005: wrapping for a small-order key fails.
#[test]
fn small_order_recipient_keys_are_refused() {
    let pki = pki();
    let mut specs = recipients(&pki);
    specs[2].kx_key = PublicKey([0; 32]);
    let ctx = offer();
    let result = seal(
        ctx,
        &pki.alice.id,
        &specs,
        &plaintext(),
        None,
        &mut KeyCache::new(8),
        &mut SeededEntropy::from_label("lo"),
    );
    assert_eq!(result.unwrap_err(), CryptoError::LowOrderPoint);
}

/// KW-CRYPTO-004: every random value of a seal (ephemeral key, content key,
/// nonce) comes from the caller's source: the same source seals the same
/// bytes, another source other bytes.
#[test]
fn sealing_draws_randomness_only_from_the_caller() {
    let pki = pki();
    let ctx = offer();
    let run = |label: &str| {
        seal(
            ctx,
            &pki.alice.id,
            &recipients(&pki),
            &plaintext(),
            None,
            &mut KeyCache::new(8),
            &mut SeededEntropy::from_label(label),
        )
        .unwrap()
        .0
    };
    assert_eq!(run("a"), run("a"));
    let (a, b) = (run("a"), run("b"));
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.epk, b.epk);
    assert_ne!(a.recipients[0].wrapped, b.recipients[0].wrapped);
}

/// KW-KEY-001, KW-KEY-006: a server that learned the session key from the
/// offer reads a body sealed under the same key (the answer) without an
/// entry of its own; any other key fails.
#[test]
fn a_body_under_a_known_key_opens_without_an_entry() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let opened = open(&sealed, &SESSION, &pki.sc_a.id, &mut KeyCache::new(8)).unwrap();
    assert_eq!(
        keyway::crypto::open_with_key(&sealed, &SESSION, &opened.cek).unwrap(),
        plaintext()
    );
    let wrong = keyway::crypto::Secret32::new([1; 32]);
    assert!(keyway::crypto::open_with_key(&sealed, &SESSION, &wrong).is_err());
    assert!(keyway::crypto::open_with_key(&sealed, &SessionId([0; 16]), &opened.cek).is_err());
}

/// KW-CRYPTO-031: a digest binds the content key. sc@b, which may only
/// read, seals the offer's very plaintext again under a key of its own —
/// a new ephemeral key, every entry re-wrapped, the sender's hash and
/// signature kept (neither covers the ephemeral key or the entries'
/// wrapped keys). Bob's entry opens, the plaintext is the one alice
/// signed, and yet the body is refused: its key is not the one she
/// committed to, so a reader cannot give the parties different keys.
#[test]
fn kw_crypto_031_a_reader_cannot_seal_again_under_another_key() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let mut rng = SeededEntropy::from_label("re-sealing reader");
    let other = Secret32::new([0x0b; 32]);
    let mut forged = reencrypt_without_edit(&sealed, &SESSION, &other, &plaintext()).unwrap();
    let ephemeral = KxKeyPair::generate(&mut rng);
    forged.epk = ephemeral.public();
    let keys = [&pki.sc_a, &pki.sc_b, &pki.bob];
    let mut entries = forged.recipients.clone().into_vec();
    for (entry, party) in entries.iter_mut().zip(keys) {
        let binding = KekBinding {
            session: &SESSION,
            wrapper: &pki.alice.id.account,
            epk: &forged.epk,
            recipient: &party.id.kx.public(),
            kind: entry.kind,
            perm: entry.perm,
        };
        let wrapped = wrap_full(&ephemeral, &binding, &forged.nonce, forged.cid, &other).unwrap();
        entry.wrapped = Bytes::new(wrapped.to_vec()).unwrap();
    }
    forged.recipients = List::new(entries).unwrap();
    let opened = open(&forged, &SESSION, &pki.bob.id, &mut KeyCache::new(8)).unwrap();
    assert_eq!(opened.plaintext, plaintext());
    assert_eq!(opened.cek, other);
    assert_eq!(
        destination_check(&pki, &forged),
        Err(CryptoError::PermissionDenied(
            "content matches no signed version"
        ))
    );
    assert_eq!(destination_check(&pki, &sealed), Ok(plaintext()));
}

/// KW-CRYPTO-032, KW-CRYPTO-035: the sender's and each editor's signatures
/// bind the message the body travels in, its type and the account it is
/// addressed to: the same body checked as an answer's, a rekey's or as
/// addressed to another account fails `signature-invalid`; so does an edit
/// signed for another message, though the sender's signature holds.
#[test]
fn kw_crypto_032_a_body_is_bound_to_the_message_it_was_sealed_for() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    let opened = open(&sealed, &SESSION, &pki.bob.id, &mut KeyCache::new(8)).unwrap();
    let check = |body: &Sealed, ctx: SealContext<'_>| {
        verify_sealed(
            body,
            ctx,
            &opened.plaintext,
            &opened.cek,
            &pki.alice.cert,
            &pki.trust,
            NOW,
        )
    };
    assert_eq!(check(&sealed, offer()), Ok(()));
    let carol = Principal::new("carol@b.example").unwrap();
    for ctx in [
        SealContext {
            re: MsgType::Answer,
            ..offer()
        },
        SealContext {
            re: MsgType::Rekey,
            ..offer()
        },
        SealContext {
            to: Some(&carol),
            ..offer()
        },
        SealContext {
            to: None,
            ..offer()
        },
    ] {
        assert_eq!(
            ErrorCode::from(&check(&sealed, ctx).unwrap_err()),
            ErrorCode::SIGNATURE_INVALID,
            "{:?} {:?}",
            ctx.re,
            ctx.to
        );
    }
    // sc@a's edit signed as if the body were in an answer.
    let as_answer = SealContext {
        re: MsgType::Answer,
        ..offer()
    };
    let mut rng = SeededEntropy::from_label("edit for another message");
    let (edited, _) = edit(
        &sealed,
        as_answer,
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &opened.cek,
        &opened.plaintext,
        Rekeying::KeepKey,
        &mut KeyCache::new(8),
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        ErrorCode::from(&check(&edited, offer()).unwrap_err()),
        ErrorCode::SIGNATURE_INVALID
    );
}

/// KW-SEAL-011, KW-CRYPTO-036 step 5: at the destination of an offer, the
/// body as the sender sealed it, with sc@a (read-modify) named and no edit
/// of sc@a, is refused with `permission-denied` — what an on-path party
/// sends when it puts back the version before sc@a's edit; signed by sc@a,
/// changed or not, it passes. An anonymous read-modify entry cannot edit
/// and is not required to.
#[test]
fn kw_seal_011_an_edit_cannot_be_undone_by_putting_back_the_earlier_version() {
    let pki = pki();
    let sealed = sealed_offer(&pki);
    assert_eq!(destination_check(&pki, &sealed), Ok(plaintext()));
    assert_eq!(
        every_editor_signed(&sealed),
        Err(CryptoError::EditMissing(pki.sc_a.id.account.clone()))
    );
    assert_eq!(
        ErrorCode::from(&every_editor_signed(&sealed).unwrap_err()),
        ErrorCode::PERMISSION_DENIED
    );
    let opened = open(&sealed, &SESSION, &pki.sc_a.id, &mut KeyCache::new(8)).unwrap();
    let (signed, _) = edit(
        &sealed,
        offer(),
        &pki.sc_a.id,
        &pki.sc_a.cert,
        &opened.cek,
        &opened.plaintext,
        Rekeying::KeepKey,
        &mut KeyCache::new(8),
        &mut SeededEntropy::from_label("pass"),
    )
    .unwrap();
    let edit = signed
        .edits
        .as_ref()
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .clone();
    assert_eq!(edit.prev, edit.next, "unchanged: next = prev");
    assert_eq!(destination_check(&pki, &signed), Ok(plaintext()));
    assert_eq!(every_editor_signed(&signed), Ok(()));
    // Anonymous entries: none can edit, none is required to.
    let mut anonymous = sealed.clone();
    let entries: Vec<_> = anonymous
        .recipients
        .iter()
        .cloned()
        .map(|mut r| {
            r.id = None;
            r.kid = None;
            r
        })
        .collect();
    anonymous.recipients = List::new(entries).unwrap();
    assert_eq!(every_editor_signed(&anonymous), Ok(()));
}
