//! Sealed bodies (F4): content encryption, per-recipient key wrap, the
//! sender's signed permission map, edits by permitted servers, and the
//! destination's check of who wrote each version (KW-CRYPTO-030 to
//! KW-CRYPTO-036).

use super::cert::{Expect, TrustStore};
use super::entropy::Entropy;
use super::error::CryptoError;
use super::kek::{KekBinding, KeyCache, PendingKek, derive_kek, unwrap_with};
use super::keys::{Identity, KeyUse, key_id, verify};
use super::primitives::{sha256, siv_cipher, siv_open, siv_seal};
use super::secret::Secret32;
use super::structure::{BODY, CONTENT, EDIT, KEY_COMMIT, Part, SEAL, opt_bytes, structure};
use crate::cbor;
use crate::wire::{
    Bytes, Certificate, Edit, Extensions, Hash32, List, MsgType, Nonce, Permission, Principal,
    PublicKey, Recipient, RecipientKind, Role, Sealed, SessionId, Suite,
};

/// Who a sealed body is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientSpec {
    /// The recipient's account.
    pub id: Principal,
    /// Its X25519 public key.
    pub kx_key: PublicKey,
    /// Destination device, or a server asked to decrypt.
    pub kind: RecipientKind,
    /// Read, or read and modify.
    pub perm: Permission,
    /// Leave `id` and `kid` out of the entry; the recipient finds it by
    /// trial (KW-SEAL-003).
    pub anonymous: bool,
}

/// The context of a sealed body: where it belongs, and the message that
/// carries it, which the sender's and editors' signatures bind
/// (KW-CRYPTO-032, KW-CRYPTO-035).
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    /// The session.
    pub session: &'a SessionId,
    /// The content identifier.
    pub cid: u64,
    /// The type of the message that carries the body.
    pub re: MsgType,
    /// The account that message is addressed to, if it names one.
    pub to: Option<&'a Principal>,
}

impl<'a> SealContext<'a> {
    /// The context of `sealed` as a receiver finds it: in `session`, in a
    /// message of type `re` addressed to `to`.
    pub fn of(
        sealed: &Sealed,
        session: &'a SessionId,
        re: MsgType,
        to: Option<&'a Principal>,
    ) -> Self {
        Self {
            session,
            cid: sealed.cid,
            re,
            to,
        }
    }

    /// The carrying message's fields the signatures bind.
    fn carrier(&self) -> [Part<'a>; 2] {
        [
            Part::Uint(self.re.code()),
            match self.to {
                Some(to) => Part::Text(to.as_str()),
                None => Part::Null,
            },
        ]
    }
}

/// `cbor(["keyway-v1 body", suite, session, cid, sender])`.
fn body_ad(session: &SessionId, cid: u64, sender: &Principal) -> Vec<u8> {
    structure(
        BODY,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&session.0),
            Part::Uint(cid),
            Part::Text(sender.as_str()),
        ],
    )
}

/// `H(cbor(["keyway-v1 key commit", cek]))`: what a digest binds of the
/// content key (KW-CRYPTO-031).
pub fn key_commitment(cek: &Secret32) -> Hash32 {
    Hash32(sha256(&structure(KEY_COMMIT, &[Part::Bytes(cek.expose())])))
}

/// `H(cbor(["keyway-v1 content", session, cid, key_commitment(cek),
/// plaintext]))` (KW-CRYPTO-031): a version of the control information
/// under the content key it is encrypted with, so that a reader cannot
/// seal the same version again under another key unnoticed.
pub fn content_digest(ctx: SealContext<'_>, cek: &Secret32, plaintext: &[u8]) -> Hash32 {
    Hash32(sha256(&structure(
        CONTENT,
        &[
            Part::Bytes(&ctx.session.0),
            Part::Uint(ctx.cid),
            Part::Bytes(&key_commitment(cek).0),
            Part::Bytes(plaintext),
        ],
    )))
}

/// The permission map `[[id, kid, kind, perm], …]` (KW-CRYPTO-032).
pub fn permission_map(recipients: &[Recipient]) -> Vec<u8> {
    let mut out = Vec::new();
    cbor::write_array_header(&mut out, recipients.len() as u64);
    for r in recipients {
        cbor::write_array_header(&mut out, 4);
        match &r.id {
            Some(id) => cbor::write_text_string(&mut out, id.as_str()),
            None => out.push(0xf6),
        }
        match &r.kid {
            Some(kid) => cbor::write_bytes(&mut out, &kid.0),
            None => out.push(0xf6),
        }
        cbor::write_uint(&mut out, r.kind.code());
        cbor::write_uint(&mut out, r.perm.code());
    }
    out
}

/// The sender's signed input (KW-CRYPTO-032).
pub fn seal_signature_input(
    ctx: SealContext<'_>,
    sender: &Principal,
    hash: &Hash32,
    map: &[u8],
) -> Vec<u8> {
    let [re, to] = ctx.carrier();
    structure(
        SEAL,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&ctx.session.0),
            Part::Uint(ctx.cid),
            re,
            Part::Text(sender.as_str()),
            to,
            Part::Bytes(&hash.0),
            Part::Encoded(map),
        ],
    )
}

/// An editor's signed input (KW-CRYPTO-035).
pub fn edit_signature_input(
    ctx: SealContext<'_>,
    editor: &Principal,
    prev: &Hash32,
    next: &Hash32,
    epk: Option<&PublicKey>,
    map: &[u8],
) -> Vec<u8> {
    let [re, to] = ctx.carrier();
    structure(
        EDIT,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&ctx.session.0),
            Part::Uint(ctx.cid),
            re,
            to,
            Part::Text(editor.as_str()),
            Part::Bytes(&prev.0),
            Part::Bytes(&next.0),
            opt_bytes(epk.map(|k| k.0.as_slice())),
            Part::Encoded(map),
        ],
    )
}

/// The wrapper of the current entries and its ephemeral key: the last
/// edit that carries an `epk`, or the sender (KW-CRYPTO-033).
pub fn current_wrapper(sealed: &Sealed) -> (&Principal, &PublicKey) {
    sealed
        .edits
        .iter()
        .flat_map(|edits| edits.iter())
        .rev()
        .find_map(|e| e.epk.as_ref().map(|epk| (&e.editor, epk)))
        .unwrap_or((&sealed.sender, &sealed.epk))
}

fn encrypt_content(
    session: &SessionId,
    cid: u64,
    sender: &Principal,
    cek: &Secret32,
    nonce: &Nonce,
    plaintext: &[u8],
) -> Result<Bytes<16, 8192>, CryptoError> {
    let ct = siv_seal(
        &mut siv_cipher(cek.expose()),
        &[&body_ad(session, cid, sender), &nonce.0],
        plaintext,
    );
    let len = ct.len();
    Bytes::new(ct).ok_or(CryptoError::Plaintext(crate::wire::WireError {
        offset: 0,
        kind: crate::wire::WireErrorKind::BadLength {
            actual: len,
            min: 16,
            max: 8192,
        },
    }))
}

fn wrap_entry(
    cache: &mut KeyCache,
    binding: &KekBinding<'_>,
    cid: u64,
    nonce: &Nonce,
    cek: &Secret32,
) -> Result<Bytes<16, 64>, CryptoError> {
    let wrapped = cache.wrap(binding, nonce, cid, cek)?;
    Bytes::new(wrapped.to_vec()).ok_or(CryptoError::DecryptFailed)
}

/// Seals `plaintext` for `recipients` (KW-SEAL-001, KW-SEAL-002,
/// KW-SEAL-005). A fresh content key is drawn unless `cek` is given (a
/// rekey seals a chosen key). Returns the body and its content key.
pub fn seal(
    ctx: SealContext<'_>,
    sender: &Identity,
    recipients: &[RecipientSpec],
    plaintext: &[u8],
    cek: Option<&Secret32>,
    cache: &mut KeyCache,
    entropy: &mut impl Entropy,
) -> Result<(Sealed, Secret32), CryptoError> {
    let epk = cache.ephemeral(ctx.session, entropy).public();
    let cek = match cek {
        Some(k) => k.clone(),
        None => Secret32::new(entropy.array()),
    };
    let nonce = Nonce(entropy.array());
    let ct = encrypt_content(
        ctx.session,
        ctx.cid,
        &sender.account,
        &cek,
        &nonce,
        plaintext,
    )?;
    let hash = content_digest(ctx, &cek, plaintext);
    let mut entries = Vec::with_capacity(recipients.len());
    for spec in recipients {
        let binding = KekBinding {
            session: ctx.session,
            wrapper: &sender.account,
            epk: &epk,
            recipient: &spec.kx_key,
            kind: spec.kind,
            perm: spec.perm,
        };
        let wrapped = wrap_entry(cache, &binding, ctx.cid, &nonce, &cek)?;
        entries.push(Recipient {
            id: (!spec.anonymous).then(|| spec.id.clone()),
            kid: (!spec.anonymous).then(|| key_id(&spec.kx_key, KeyUse::KeyAgreement)),
            kind: spec.kind,
            perm: spec.perm,
            wrapped,
            ext: Extensions::new(),
        });
    }
    let map = permission_map(&entries);
    let sig = sender
        .signing
        .sign(&seal_signature_input(ctx, &sender.account, &hash, &map));
    let recipients = List::new(entries).ok_or(CryptoError::NoEntry)?;
    let sealed = Sealed {
        suite: Suite::KeywayV1,
        cid: ctx.cid,
        sender: sender.account.clone(),
        sender_kid: sender.signing.kid(),
        epk,
        recipients,
        nonce,
        ct,
        hash,
        sig,
        edits: None,
        ext: Extensions::new(),
    };
    Ok((sealed, cek))
}

/// What a recipient gets from a sealed body.
#[derive(Clone)]
pub struct Opened {
    /// The content key.
    pub cek: Secret32,
    /// The control information (current version).
    pub plaintext: Vec<u8>,
    /// Which entry was ours.
    pub entry: usize,
    /// The key-encryption key derived to unwrap our entry, when it was not
    /// cached: for [`KeyCache::commit`] once the caller accepts the message.
    pub pending: Option<PendingKek>,
}

/// The control information carries media keys: it never reaches debug
/// output (KW-CRYPTO-002).
impl core::fmt::Debug for Opened {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opened")
            .field(
                "plaintext",
                &format_args!("<{} bytes redacted>", self.plaintext.len()),
            )
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// Two openings are equal when they found the same key, entry and content;
/// whether a key was still to be cached is not part of the result.
impl PartialEq for Opened {
    fn eq(&self, other: &Self) -> bool {
        self.cek == other.cek && self.plaintext == other.plaintext && self.entry == other.entry
    }
}

impl Eq for Opened {}

/// Finds this party's entry, explicitly or by trial (KW-SEAL-003,
/// KW-CRYPTO-034), unwraps the content key and decrypts. Does not check
/// signatures: see [`verify_sealed`]. Caches nothing: a key derived here
/// comes back in [`Opened::pending`], for the caller to keep once it has
/// accepted the whole message (KW-ERR-004).
pub fn open(
    sealed: &Sealed,
    session: &SessionId,
    me: &Identity,
    cache: &mut KeyCache,
) -> Result<Opened, CryptoError> {
    let (wrapper, epk) = current_wrapper(sealed);
    let my_kid = me.kx.kid();
    let my_key = me.kx.public();
    let binding = |r: &Recipient| KekBinding {
        session,
        wrapper,
        epk,
        recipient: &my_key,
        kind: r.kind,
        perm: r.perm,
    };
    let explicit = sealed
        .recipients
        .iter()
        .position(|r| r.id.as_ref() == Some(&me.account) && r.kid == Some(my_kid));
    let (entry, cek, pending) = match explicit {
        Some(i) => {
            let r = sealed.recipients.get(i).ok_or(CryptoError::NoEntry)?;
            let (cek, pending) = cache.unwrap_deferred(
                &binding(r),
                &me.kx,
                &sealed.nonce,
                sealed.cid,
                &r.wrapped,
            )?;
            (i, cek, pending)
        }
        None => trial_unwrap(sealed, me, cache, &binding)?,
    };
    let ad = body_ad(session, sealed.cid, &sealed.sender);
    let plaintext = siv_open(
        &mut siv_cipher(cek.expose()),
        &[&ad, &sealed.nonce.0],
        &sealed.ct,
    )?;
    Ok(Opened {
        cek,
        plaintext,
        entry,
        pending,
    })
}

/// Tries every anonymous entry (KW-CRYPTO-034). One X25519 serves all
/// entries, since they share the wrapper's ephemeral key; one HKDF serves
/// each (kind, permission). Returns the entry, its content key and, when it
/// was derived here, the key-encryption key to cache once the message is
/// accepted.
fn trial_unwrap<'s>(
    sealed: &'s Sealed,
    me: &Identity,
    cache: &mut KeyCache,
    binding: &dyn Fn(&'s Recipient) -> KekBinding<'s>,
) -> Result<(usize, Secret32, Option<PendingKek>), CryptoError> {
    let anonymous = || {
        sealed
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id.is_none() && r.kid.is_none())
    };
    // Cached keys first: a repeat unwrap costs no X25519.
    for (i, r) in anonymous() {
        let b = binding(r);
        if cache.has_unwrap(&b) {
            if let Ok(cek) = cache.unwrap(&b, &me.kx, &sealed.nonce, sealed.cid, &r.wrapped) {
                return Ok((i, cek, None));
            }
        }
    }
    let (_, epk) = current_wrapper(sealed);
    let shared = me.kx.agree(epk)?;
    let mut keks: Vec<(RecipientKind, Permission, Secret32)> = Vec::new();
    for (i, r) in anonymous() {
        let kek = match keks.iter().find(|(k, p, _)| *k == r.kind && *p == r.perm) {
            Some((_, _, kek)) => kek.clone(),
            None => {
                let kek = derive_kek(&shared, &binding(r));
                keks.push((r.kind, r.perm, kek.clone()));
                kek
            }
        };
        let mut cipher = siv_cipher(kek.expose());
        if let Ok(cek) = unwrap_with(&mut cipher, &sealed.nonce, sealed.cid, &r.wrapped) {
            return Ok((i, cek, Some(KeyCache::pending_unwrap(&binding(r), kek))));
        }
    }
    Err(CryptoError::NoEntry)
}

/// Decrypts a body with a content key already held — a trusted server
/// reading the answer under the session key it learned from the offer
/// (KW-KEY-001, KW-KEY-006). Signatures are checked by [`verify_sealed`].
pub fn open_with_key(
    sealed: &Sealed,
    session: &SessionId,
    cek: &Secret32,
) -> Result<Vec<u8>, CryptoError> {
    let ad = body_ad(session, sealed.cid, &sealed.sender);
    siv_open(
        &mut siv_cipher(cek.expose()),
        &[&ad, &sealed.nonce.0],
        &sealed.ct,
    )
}

/// Replaces a body's control information under its content key without
/// an edit — what a server with read permission must not do
/// (KW-SEAL-006). Exists so that the simulator's fault injection and the
/// tests can show that every destination detects it (KW-SEAL-009).
pub fn reencrypt_without_edit(
    sealed: &Sealed,
    session: &SessionId,
    cek: &Secret32,
    new_plaintext: &[u8],
) -> Result<Sealed, CryptoError> {
    let mut out = sealed.clone();
    out.ct = encrypt_content(
        session,
        sealed.cid,
        &sealed.sender,
        cek,
        &sealed.nonce,
        new_plaintext,
    )?;
    Ok(out)
}

/// The content of a body-form rekey: the epoch the sealed key starts, so
/// that a captured body cannot be replayed as a later epoch (KW-SM-016).
pub fn rekey_body_plaintext(epoch: u64) -> Vec<u8> {
    crate::wire::encode_plaintext(&epoch)
}

/// The key a body-form rekey carries (KW-SM-016): the body opens with this
/// party's entry (a scratch KEK cache, so a refused rekey caches nothing),
/// was sealed and signed by `from` — checked with `sender_cert` and
/// `validate` as [`verify_sealed_with`] does — and names `epoch`.
#[allow(clippy::type_complexity)]
#[allow(clippy::too_many_arguments)]
pub fn open_rekey_body(
    body: &Sealed,
    session: &SessionId,
    from: &Principal,
    to: &Principal,
    epoch: u64,
    me: &Identity,
    sender_cert: &Certificate,
    validate: &dyn Fn(
        &Certificate,
        &Principal,
        Option<Role>,
    ) -> Result<(), super::error::CertError>,
) -> Result<Secret32, CryptoError> {
    if &body.sender != from || &sender_cert.tbs.subject != from {
        return Err(CryptoError::PermissionDenied(
            "rekey sealed by another account",
        ));
    }
    let opened = open(body, session, me, &mut KeyCache::new(1))?;
    verify_sealed_with(
        body,
        SealContext::of(body, session, MsgType::Rekey, Some(to)),
        &opened.plaintext,
        &opened.cek,
        sender_cert,
        validate,
    )?;
    let named: u64 =
        crate::wire::decode_plaintext(&opened.plaintext).map_err(|_| CryptoError::DecryptFailed)?;
    if named != epoch {
        return Err(CryptoError::StaleEpoch(epoch));
    }
    Ok(opened.cek)
}

fn find_editor_entry<'a>(sealed: &'a Sealed, editor: &Principal) -> Option<&'a Recipient> {
    sealed.recipients.iter().find(|r| {
        r.id.as_ref() == Some(editor)
            && r.kind == RecipientKind::Server
            && r.perm == Permission::ReadModify
    })
}

/// The destination's check (KW-SEAL-009, KW-CRYPTO-036): sender
/// certificate and signature over the current permission map; each edit's
/// permission, certificate, signature and link; and the digest of the
/// plaintext, under the content key `cek` that decrypted it, against the
/// last signed version.
pub fn verify_sealed(
    sealed: &Sealed,
    ctx: SealContext<'_>,
    plaintext: &[u8],
    cek: &Secret32,
    sender_cert: &Certificate,
    trust: &TrustStore,
    now: u64,
) -> Result<(), CryptoError> {
    verify_sealed_with(
        sealed,
        ctx,
        plaintext,
        cek,
        sender_cert,
        &|cert, subject, role| trust.check(cert, Expect { subject, role, now }),
    )
}

/// [`verify_sealed`] with the caller's own certificate check, for parties
/// that confirm some certificates by attestation rather than by an anchor
/// (KW-CERT-005): `validate(cert, subject, role)`.
#[allow(clippy::type_complexity)]
pub fn verify_sealed_with(
    sealed: &Sealed,
    ctx: SealContext<'_>,
    plaintext: &[u8],
    cek: &Secret32,
    sender_cert: &Certificate,
    validate: &dyn Fn(
        &Certificate,
        &Principal,
        Option<Role>,
    ) -> Result<(), super::error::CertError>,
) -> Result<(), CryptoError> {
    // The content is the body's own, whatever the caller named.
    let ctx = SealContext {
        cid: sealed.cid,
        ..ctx
    };
    validate(sender_cert, &sealed.sender, None)?;
    if key_id(&sender_cert.tbs.sig_key, KeyUse::Signing) != sealed.sender_kid {
        return Err(CryptoError::KeyIdMismatch);
    }
    let map = permission_map(&sealed.recipients);
    verify(
        &sender_cert.tbs.sig_key,
        &seal_signature_input(ctx, &sealed.sender, &sealed.hash, &map),
        &sealed.sig,
    )?;
    let mut current = sealed.hash;
    for edit in sealed.edits.iter().flat_map(|e| e.iter()) {
        if find_editor_entry(sealed, &edit.editor).is_none() {
            return Err(CryptoError::EditorNotPermitted(edit.editor.clone()));
        }
        validate(&edit.cert, &edit.editor, Some(Role::Server))?;
        if key_id(&edit.cert.tbs.sig_key, KeyUse::Signing) != edit.kid {
            return Err(CryptoError::KeyIdMismatch);
        }
        let input = edit_signature_input(
            ctx,
            &edit.editor,
            &edit.prev,
            &edit.next,
            edit.epk.as_ref(),
            &map,
        );
        verify(&edit.cert.tbs.sig_key, &input, &edit.sig)?;
        if edit.prev != current {
            return Err(CryptoError::BrokenChain);
        }
        current = edit.next;
    }
    if content_digest(ctx, cek, plaintext) != current {
        return Err(CryptoError::PermissionDenied(
            "content matches no signed version",
        ));
    }
    Ok(())
}

/// The destination's last check of an offer or answer (KW-SEAL-011,
/// KW-CRYPTO-036): every server the sender named with read-modify
/// permission signed an edit, changed or not, so that an earlier version
/// put back without the edits after it is missing one. Servers on the
/// way do not check it: those after them have not edited yet.
pub fn every_editor_signed(sealed: &Sealed) -> Result<(), CryptoError> {
    let edited = |id: &Principal| {
        sealed
            .edits
            .iter()
            .flat_map(|e| e.iter())
            .any(|e| &e.editor == id)
    };
    let unsigned = sealed
        .recipients
        .iter()
        .filter(|r| r.kind == RecipientKind::Server && r.perm == Permission::ReadModify)
        .filter_map(|r| r.id.as_ref())
        .find(|id| !edited(id));
    match unsigned {
        Some(id) => Err(CryptoError::EditMissing(id.clone())),
        None => Ok(()),
    }
}

/// How an editor re-encrypts (KW-CRYPTO-035).
pub enum Rekeying<'a> {
    /// Keep the content key and nonce.
    KeepKey,
    /// Draw a new content key, nonce and ephemeral key, and re-wrap every
    /// entry but the editor's own and those of `via`, looking up each
    /// recipient's X25519 key with `key_of(index, entry)`.
    NewKey {
        /// The servers the message has passed.
        via: &'a [Principal],
        /// The X25519 key of an entry's recipient.
        key_of: &'a dyn Fn(usize, &Recipient) -> Option<PublicKey>,
    },
}

/// An editor's change of the control information (KW-SEAL-007): the new
/// body, and the content key it is under.
#[allow(clippy::too_many_arguments)]
pub fn edit(
    sealed: &Sealed,
    ctx: SealContext<'_>,
    editor: &Identity,
    editor_cert: &Certificate,
    cek: &Secret32,
    new_plaintext: &[u8],
    rekeying: Rekeying<'_>,
    cache: &mut KeyCache,
    entropy: &mut impl Entropy,
) -> Result<(Sealed, Secret32), CryptoError> {
    let ctx = SealContext {
        cid: sealed.cid,
        ..ctx
    };
    let session = ctx.session;
    if find_editor_entry(sealed, &editor.account).is_none() {
        return Err(CryptoError::EditorNotPermitted(editor.account.clone()));
    }
    let prev = sealed
        .edits
        .iter()
        .flat_map(|e| e.iter())
        .last()
        .map_or(sealed.hash, |e| e.next);
    let mut out = sealed.clone();
    let (cek, epk) = match rekeying {
        Rekeying::KeepKey => (cek.clone(), None),
        Rekeying::NewKey { via, key_of } => {
            let epk = cache.ephemeral(session, entropy).public();
            let cek = Secret32::new(entropy.array());
            out.nonce = Nonce(entropy.array());
            let mut entries = out.recipients.clone().into_vec();
            for (i, entry) in entries.iter_mut().enumerate() {
                let upstream = entry
                    .id
                    .as_ref()
                    .is_some_and(|id| id == &editor.account || via.contains(id));
                if upstream {
                    continue;
                }
                let key = key_of(i, entry).ok_or(CryptoError::UnknownRecipientKey(i))?;
                let binding = KekBinding {
                    session,
                    wrapper: &editor.account,
                    epk: &epk,
                    recipient: &key,
                    kind: entry.kind,
                    perm: entry.perm,
                };
                entry.wrapped = wrap_entry(cache, &binding, ctx.cid, &out.nonce, &cek)?;
            }
            out.recipients = List::new(entries).ok_or(CryptoError::NoEntry)?;
            (cek, Some(epk))
        }
    };
    out.ct = encrypt_content(
        ctx.session,
        ctx.cid,
        &sealed.sender,
        &cek,
        &out.nonce,
        new_plaintext,
    )?;
    // The version the edit signs is under the key it ends up under.
    let next = content_digest(ctx, &cek, new_plaintext);
    let map = permission_map(&out.recipients);
    let sig = editor.signing.sign(&edit_signature_input(
        ctx,
        &editor.account,
        &prev,
        &next,
        epk.as_ref(),
        &map,
    ));
    let mut edits = out.edits.take().map(List::into_vec).unwrap_or_default();
    edits.push(Edit {
        editor: editor.account.clone(),
        kid: editor.signing.kid(),
        prev,
        next,
        sig,
        epk,
        cert: editor_cert.clone(),
        ext: Extensions::new(),
    });
    out.edits = Some(List::new(edits).ok_or(CryptoError::PermissionDenied("edit chain full"))?);
    Ok((out, cek))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two openings are equal in key, content and entry alike; whether a
    /// key was left to cache is not compared.
    #[test]
    fn openings_are_equal_in_key_content_and_entry() {
        let opened = |key: u8, plaintext: &[u8], entry: usize| Opened {
            cek: Secret32::new([key; 32]),
            plaintext: plaintext.to_vec(),
            entry,
            pending: None,
        };
        let base = opened(1, b"sdp", 0);
        assert_eq!(base, opened(1, b"sdp", 0));
        for other in [
            opened(2, b"sdp", 0),
            opened(1, b"sdq", 0),
            opened(1, b"sdp", 1),
        ] {
            assert_ne!(base, other);
        }
    }
}
