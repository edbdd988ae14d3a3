//! Key wrap of content keys for one recipient (KW-CRYPTO-033,
//! KW-CRYPTO-034), and the cache that lets repeated wraps and unwraps in a
//! session skip X25519 and HKDF (KW-CRYPTO-050).

use std::collections::{HashMap, VecDeque};

use aes_siv::siv::Aes128Siv;

use super::entropy::Entropy;
use super::error::CryptoError;
use super::keys::KxKeyPair;
use super::primitives::{hkdf32, siv_cipher, siv_unwrap32, siv_wrap32};
use super::secret::Secret32;
use super::structure::{KEK, Part, WRAP, structure};
use crate::wire::{Nonce, Permission, Principal, PublicKey, RecipientKind, SessionId, Suite};

/// What a key-encryption key is bound to (KW-CRYPTO-033): everything but
/// the shared secret.
#[derive(Debug, Clone, Copy)]
pub struct KekBinding<'a> {
    /// The session.
    pub session: &'a SessionId,
    /// The wrapper's account.
    pub wrapper: &'a Principal,
    /// The wrapper's ephemeral public key, `E`.
    pub epk: &'a PublicKey,
    /// The recipient's X25519 public key, `P`.
    pub recipient: &'a PublicKey,
    /// The entry's kind.
    pub kind: RecipientKind,
    /// The entry's permission.
    pub perm: Permission,
}

/// The HKDF info of a key-encryption key.
pub fn kek_info(b: &KekBinding<'_>) -> Vec<u8> {
    structure(
        KEK,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&b.session.0),
            Part::Text(b.wrapper.as_str()),
            Part::Bytes(&b.epk.0),
            Part::Bytes(&b.recipient.0),
            Part::Uint(b.kind.code()),
            Part::Uint(b.perm.code()),
        ],
    )
}

/// `kek = HKDF(session, z, info)` from the shared secret `z`.
pub fn derive_kek(shared: &Secret32, binding: &KekBinding<'_>) -> Secret32 {
    hkdf32(&binding.session.0, shared.expose(), &kek_info(binding))
}

/// The associated data of a wrap: `["keyway-v1 wrap", nonce, u64be(cid)]`.
fn wrap_headers<'a>(nonce: &'a Nonce, cid: &'a [u8; 8]) -> [&'a [u8]; 3] {
    [WRAP, &nonce.0, cid]
}

/// Wraps `cek` under a key-encryption key, without allocating.
pub fn wrap_with(cipher: &mut Aes128Siv, nonce: &Nonce, cid: u64, cek: &Secret32) -> [u8; 48] {
    let cid = cid.to_be_bytes();
    siv_wrap32(cipher, &wrap_headers(nonce, &cid), cek.expose())
}

/// Unwraps a content key, without allocating.
pub fn unwrap_with(
    cipher: &mut Aes128Siv,
    nonce: &Nonce,
    cid: u64,
    wrapped: &[u8],
) -> Result<Secret32, CryptoError> {
    let cid = cid.to_be_bytes();
    siv_unwrap32(cipher, &wrap_headers(nonce, &cid), wrapped)
}

/// A wrap with no cached key: `X25519(e, P)`, HKDF, AES-SIV (the full
/// construction of KW-CRYPTO-033).
pub fn wrap_full(
    ephemeral: &KxKeyPair,
    binding: &KekBinding<'_>,
    nonce: &Nonce,
    cid: u64,
    cek: &Secret32,
) -> Result<[u8; 48], CryptoError> {
    let shared = ephemeral.agree(binding.recipient)?;
    let kek = derive_kek(&shared, binding);
    Ok(wrap_with(&mut siv_cipher(kek.expose()), nonce, cid, cek))
}

/// An unwrap with no cached key (KW-CRYPTO-034).
pub fn unwrap_full(
    me: &KxKeyPair,
    binding: &KekBinding<'_>,
    nonce: &Nonce,
    cid: u64,
    wrapped: &[u8],
) -> Result<Secret32, CryptoError> {
    let shared = me.agree(binding.epk)?;
    let kek = derive_kek(&shared, binding);
    unwrap_with(&mut siv_cipher(kek.expose()), nonce, cid, wrapped)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    Wrap,
    Unwrap,
}

/// The cache key: every binding input except the wrapper's account, which
/// the entry holds and lookups compare (so no lookup allocates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    direction: Direction,
    session: [u8; 16],
    epk: [u8; 32],
    recipient: [u8; 32],
    kind: u8,
    perm: u8,
}

impl Slot {
    fn new(direction: Direction, b: &KekBinding<'_>) -> Self {
        Self {
            direction,
            session: b.session.0,
            epk: b.epk.0,
            recipient: b.recipient.0,
            kind: b.kind.code() as u8,
            perm: b.perm.code() as u8,
        }
    }
}

struct Cached {
    wrapper: Principal,
    cipher: Aes128Siv,
}

/// A key-encryption key that unwrapped an entry of a message not yet
/// accepted. The caller hands it to [`KeyCache::commit`] once it accepts the
/// whole message, and drops it otherwise, so that a rejected message leaves
/// the cache as it was (KW-ERR-004).
#[derive(Clone)]
pub struct PendingKek {
    slot: Slot,
    wrapper: Principal,
    kek: Secret32,
}

impl core::fmt::Debug for PendingKek {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PendingKek(<redacted>)")
    }
}

impl PendingKek {
    /// The key that unwrapped the entry, for callers that record it (the
    /// vectors' intermediates).
    pub fn kek(&self) -> &Secret32 {
        &self.kek
    }
}

/// Per-session ephemeral keys of this party as a wrapper, and cached
/// key-encryption keys. Bounded: beyond `capacity` entries the oldest are
/// erased, so remote parties cannot grow it without limit.
pub struct KeyCache {
    ephemerals: HashMap<SessionId, KxKeyPair>,
    /// foldhash with a per-instance random seed: a third of SipHash's cost
    /// on the cached wrap path, and still seeded against flooding by remote
    /// parties, who choose `epk`; the cache is bounded besides.
    keks: HashMap<Slot, Cached, foldhash::fast::RandomState>,
    order: VecDeque<Slot>,
    capacity: usize,
}

impl core::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "KeyCache({} sessions, {} keys)",
            self.ephemerals.len(),
            self.keks.len()
        )
    }
}

impl KeyCache {
    /// An empty cache holding at most `capacity` key-encryption keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            ephemerals: HashMap::new(),
            keks: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// This party's ephemeral key for `session`, drawn on first use.
    pub fn ephemeral(&mut self, session: &SessionId, entropy: &mut impl Entropy) -> &KxKeyPair {
        self.ephemerals
            .entry(*session)
            .or_insert_with(|| KxKeyPair::generate(entropy))
    }

    /// The ephemeral key for `session`, if one was drawn.
    pub fn existing_ephemeral(&self, session: &SessionId) -> Option<&KxKeyPair> {
        self.ephemerals.get(session)
    }

    /// Erases everything kept for `session` (KW-CRYPTO-050).
    pub fn forget_session(&mut self, session: &SessionId) {
        self.ephemerals.remove(session);
        self.keks.retain(|slot, _| slot.session != session.0);
        self.order.retain(|slot| slot.session != session.0);
    }

    /// Number of cached key-encryption keys.
    pub fn len(&self) -> usize {
        self.keks.len()
    }

    /// Whether no key-encryption key is cached.
    pub fn is_empty(&self) -> bool {
        self.keks.is_empty()
    }

    fn cached(&mut self, slot: &Slot, wrapper: &Principal) -> Option<&mut Aes128Siv> {
        self.keks
            .get_mut(slot)
            .filter(|c| &c.wrapper == wrapper)
            .map(|c| &mut c.cipher)
    }

    fn insert(&mut self, slot: Slot, wrapper: &Principal, kek: &Secret32) -> &mut Aes128Siv {
        if !self.keks.contains_key(&slot) {
            while self.keks.len() >= self.capacity {
                match self.order.pop_front() {
                    Some(old) => {
                        self.keks.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(slot);
        }
        let cached = Cached {
            wrapper: wrapper.clone(),
            cipher: siv_cipher(kek.expose()),
        };
        &mut self.keks.entry(slot).insert_entry(cached).into_mut().cipher
    }

    /// Wraps `cek` for a recipient with this party's ephemeral key for the
    /// session, which must have been drawn ([`KeyCache::ephemeral`]).
    pub fn wrap(
        &mut self,
        binding: &KekBinding<'_>,
        nonce: &Nonce,
        cid: u64,
        cek: &Secret32,
    ) -> Result<[u8; 48], CryptoError> {
        let slot = Slot::new(Direction::Wrap, binding);
        if let Some(cipher) = self.cached(&slot, binding.wrapper) {
            return Ok(wrap_with(cipher, nonce, cid, cek));
        }
        let ephemeral = self
            .ephemerals
            .get(binding.session)
            .filter(|e| &e.public() == binding.epk)
            .ok_or(CryptoError::NoEntry)?;
        let shared = ephemeral.agree(binding.recipient)?;
        let kek = derive_kek(&shared, binding);
        let cipher = self.insert(slot, binding.wrapper, &kek);
        Ok(wrap_with(cipher, nonce, cid, cek))
    }

    /// A pending key for an unwrap under `binding`, found outside the cache
    /// (e.g. by trial).
    pub fn pending_unwrap(binding: &KekBinding<'_>, kek: Secret32) -> PendingKek {
        PendingKek {
            slot: Slot::new(Direction::Unwrap, binding),
            wrapper: binding.wrapper.clone(),
            kek,
        }
    }

    /// Keeps the key of a message the caller has accepted (KW-ERR-004).
    pub fn commit(&mut self, pending: Option<PendingKek>) {
        if let Some(p) = pending {
            self.insert(p.slot, &p.wrapper, &p.kek);
        }
    }

    /// Whether an unwrap key for `binding` is cached.
    pub fn has_unwrap(&self, binding: &KekBinding<'_>) -> bool {
        self.keks
            .get(&Slot::new(Direction::Unwrap, binding))
            .is_some_and(|c| &c.wrapper == binding.wrapper)
    }

    /// Unwraps an entry wrapped for `me` without caching a newly derived
    /// key: that key is returned for [`KeyCache::commit`] once the caller
    /// has accepted the whole message, so a rejected message leaves the
    /// cache as it was (KW-ERR-004).
    pub fn unwrap_deferred(
        &mut self,
        binding: &KekBinding<'_>,
        me: &KxKeyPair,
        nonce: &Nonce,
        cid: u64,
        wrapped: &[u8],
    ) -> Result<(Secret32, Option<PendingKek>), CryptoError> {
        let slot = Slot::new(Direction::Unwrap, binding);
        if let Some(cipher) = self.cached(&slot, binding.wrapper) {
            return unwrap_with(cipher, nonce, cid, wrapped).map(|cek| (cek, None));
        }
        let shared = me.agree(binding.epk)?;
        let kek = derive_kek(&shared, binding);
        let cek = unwrap_with(&mut siv_cipher(kek.expose()), nonce, cid, wrapped)?;
        Ok((cek, Some(Self::pending_unwrap(binding, kek))))
    }

    /// Unwraps an entry wrapped for `me`.
    pub fn unwrap(
        &mut self,
        binding: &KekBinding<'_>,
        me: &KxKeyPair,
        nonce: &Nonce,
        cid: u64,
        wrapped: &[u8],
    ) -> Result<Secret32, CryptoError> {
        let slot = Slot::new(Direction::Unwrap, binding);
        if let Some(cipher) = self.cached(&slot, binding.wrapper) {
            return unwrap_with(cipher, nonce, cid, wrapped);
        }
        let shared = me.agree(binding.epk)?;
        let kek = derive_kek(&shared, binding);
        let mut cipher = siv_cipher(kek.expose());
        let cek = unwrap_with(&mut cipher, nonce, cid, wrapped)?;
        // Only a key that unwrapped something is worth keeping: trial
        // unwraps of entries for others must not fill the cache.
        self.insert(slot, binding.wrapper, &kek);
        Ok(cek)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;

    /// KW-CRYPTO-050: a cached key wraps as a fresh one would, and the cache
    /// key binds everything the derivation binds.
    #[test]
    fn kw_crypto_050_cached_and_fresh_wraps_agree_and_bind_the_permission() {
        let mut rng = SeededEntropy::from_label("kek");
        let session = SessionId([1; 16]);
        let alice = Principal::new("alice@a.example").unwrap();
        let bob = KxKeyPair::generate(&mut rng);
        let mut sender = KeyCache::new(8);
        let epk = sender.ephemeral(&session, &mut rng).public();
        let bob_pub = bob.public();
        let binding = KekBinding {
            session: &session,
            wrapper: &alice,
            epk: &epk,
            recipient: &bob_pub,
            kind: RecipientKind::Destination,
            perm: Permission::Read,
        };
        let cek = Secret32::new([9; 32]);
        let nonce = Nonce([2; 16]);
        let first = sender.wrap(&binding, &nonce, 0, &cek).unwrap();
        let second = sender.wrap(&binding, &nonce, 0, &cek).unwrap();
        assert_eq!(first, second, "AES-SIV is deterministic");
        assert_eq!(sender.len(), 1);

        let mut receiver = KeyCache::new(8);
        for _ in 0..2 {
            let got = receiver.unwrap(&binding, &bob, &nonce, 0, &first).unwrap();
            assert_eq!(got, cek);
        }
        // The permission is bound: the same entry claimed as read-modify fails.
        let upgraded = KekBinding {
            perm: Permission::ReadModify,
            ..binding
        };
        assert_eq!(
            receiver.unwrap(&upgraded, &bob, &nonce, 0, &first),
            Err(CryptoError::DecryptFailed)
        );
        // So are the nonce and the content id.
        assert!(
            receiver
                .unwrap(&binding, &bob, &Nonce([3; 16]), 0, &first)
                .is_err()
        );
        assert!(receiver.unwrap(&binding, &bob, &nonce, 1, &first).is_err());
        // Another wrapper name with the same ephemeral key is a miss, not a hit.
        let mallory = Principal::new("mallory@a.example").unwrap();
        let renamed = KekBinding {
            wrapper: &mallory,
            ..binding
        };
        assert!(receiver.unwrap(&renamed, &bob, &nonce, 0, &first).is_err());

        assert!(!sender.is_empty());
        assert!(sender.existing_ephemeral(&session).is_some());
        sender.forget_session(&session);
        assert!(sender.is_empty());
        assert!(sender.existing_ephemeral(&session).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut rng = SeededEntropy::from_label("bound");
        let me = KxKeyPair::generate(&mut rng);
        let alice = Principal::new("alice@a.example").unwrap();
        let mut cache = KeyCache::new(4);
        let mut wrappers = KeyCache::new(64);
        let me_pub = me.public();
        let mut epks = Vec::new();
        for i in 0..14u8 {
            let session = SessionId([i; 16]);
            let epk = wrappers.ephemeral(&session, &mut rng).public();
            let b = KekBinding {
                session: &session,
                wrapper: &alice,
                epk: &epk,
                recipient: &me_pub,
                kind: RecipientKind::Destination,
                perm: Permission::Read,
            };
            let wrapped = wrappers
                .wrap(&b, &Nonce([0; 16]), 0, &Secret32::new([i; 32]))
                .unwrap();
            cache.unwrap(&b, &me, &Nonce([0; 16]), 0, &wrapped).unwrap();
            epks.push(epk);
            if i < 10 {
                assert_eq!(cache.len(), usize::from(i + 1).min(4));
            }
            if i == 9 {
                // KW-CRYPTO-050: forgetting a session erases its keys, and
                // only its.
                cache.forget_session(&SessionId([9; 16]));
                assert_eq!(cache.len(), 3);
                cache.forget_session(&SessionId([0; 16]));
                assert_eq!(cache.len(), 3, "session 0 was evicted long ago");
            }
        }
        // The oldest go first, as before the forgetting: only the last
        // four sessions' keys are left.
        assert_eq!(cache.len(), 4);
        for (i, epk) in epks.iter().enumerate() {
            let session = SessionId([i as u8; 16]);
            let b = KekBinding {
                session: &session,
                wrapper: &alice,
                epk,
                recipient: &me_pub,
                kind: RecipientKind::Destination,
                perm: Permission::Read,
            };
            assert_eq!(cache.has_unwrap(&b), i >= 10, "session {i}");
        }
    }
}
