//! Key pairs and key identifiers (KW-CRYPTO-010).

use ed25519_dalek::Signer;

use super::entropy::Entropy;
use super::error::CryptoError;
use super::primitives::{ed25519_verify, sha256, x25519};
use super::secret::Secret32;
use super::structure::{KID, Part, structure};
use crate::wire::{KeyId, PublicKey, SignatureBytes};

/// What a public key is for, in its key identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Ed25519.
    Signing = 0,
    /// X25519.
    KeyAgreement = 1,
}

/// `kid(P, use) = H(cbor(["keyway-v1 kid", use, P]))[0..8]`.
pub fn key_id(public: &PublicKey, key_use: KeyUse) -> KeyId {
    let digest = sha256(&structure(
        KID,
        &[Part::Uint(key_use as u64), Part::Bytes(&public.0)],
    ));
    let mut kid = [0u8; 8];
    kid.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    KeyId(kid)
}

/// An Ed25519 key pair (zeroized on drop by ed25519-dalek).
#[derive(Clone)]
pub struct SigningKeyPair {
    secret: ed25519_dalek::SigningKey,
}

impl SigningKeyPair {
    /// From a 32-byte seed (the RFC 8032 private key).
    pub fn from_seed(seed: &Secret32) -> Self {
        Self {
            secret: ed25519_dalek::SigningKey::from_bytes(seed.expose()),
        }
    }

    /// A fresh key pair.
    pub fn generate(entropy: &mut impl Entropy) -> Self {
        Self::from_seed(&Secret32::new(entropy.array()))
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.secret.verifying_key().to_bytes())
    }

    /// Its key identifier.
    pub fn kid(&self) -> KeyId {
        key_id(&self.public(), KeyUse::Signing)
    }

    /// `Sign(k, m)`.
    pub fn sign(&self, message: &[u8]) -> SignatureBytes {
        SignatureBytes(self.secret.sign(message).to_bytes())
    }

    /// The private seed, for vectors and key storage.
    pub fn seed(&self) -> Secret32 {
        Secret32::new(self.secret.to_bytes())
    }
}

impl core::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SigningKeyPair({:?})", self.kid())
    }
}

/// `Verify(P, m, s)`, strictly.
pub fn verify(
    public: &PublicKey,
    message: &[u8],
    signature: &SignatureBytes,
) -> Result<(), CryptoError> {
    ed25519_verify(&public.0, message, &signature.0)
}

/// An X25519 key pair (zeroized on drop by x25519-dalek).
#[derive(Clone)]
pub struct KxKeyPair {
    secret: x25519_dalek::StaticSecret,
    public: PublicKey,
}

impl KxKeyPair {
    /// From 32 private bytes.
    pub fn from_secret(secret: &Secret32) -> Self {
        let secret = x25519_dalek::StaticSecret::from(*secret.expose());
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// A fresh key pair.
    pub fn generate(entropy: &mut impl Entropy) -> Self {
        Self::from_secret(&Secret32::new(entropy.array()))
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Its key identifier.
    pub fn kid(&self) -> KeyId {
        key_id(&self.public, KeyUse::KeyAgreement)
    }

    /// `X25519(k, P)`; fails on an all-zero result (KW-CRYPTO-005).
    pub fn agree(&self, peer: &PublicKey) -> Result<Secret32, CryptoError> {
        x25519(&self.secret, &peer.0)
    }

    /// The private bytes, for vectors and key storage.
    pub fn secret(&self) -> Secret32 {
        Secret32::new(self.secret.to_bytes())
    }
}

impl core::fmt::Debug for KxKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KxKeyPair({:?})", self.kid())
    }
}

/// An account with its two key pairs.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The account.
    pub account: crate::wire::Principal,
    /// Its Ed25519 key pair.
    pub signing: SigningKeyPair,
    /// Its X25519 key pair.
    pub kx: KxKeyPair,
}

impl Identity {
    /// Fresh key pairs for `account` (KW-REG-001).
    pub fn generate(account: crate::wire::Principal, entropy: &mut impl Entropy) -> Self {
        let signing = SigningKeyPair::generate(entropy);
        let kx = KxKeyPair::generate(entropy);
        Self {
            account,
            signing,
            kx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;

    /// KW-CRYPTO-001: Ed25519 verification is strict (a non-canonical `S`
    /// is rejected).
    #[test]
    fn signatures_verify_and_bind_the_message() {
        let key = SigningKeyPair::generate(&mut SeededEntropy::from_label("k"));
        let sig = key.sign(b"m");
        verify(&key.public(), b"m", &sig).unwrap();
        assert_eq!(
            verify(&key.public(), b"n", &sig),
            Err(CryptoError::BadSignature)
        );
        let mut bad = sig;
        bad.0[63] ^= 0x80; // S no longer canonical
        assert!(verify(&key.public(), b"m", &bad).is_err());
    }

    #[test]
    fn key_ids_separate_uses() {
        let p = PublicKey([7; 32]);
        assert_ne!(
            key_id(&p, KeyUse::Signing),
            key_id(&p, KeyUse::KeyAgreement)
        );
    }

    #[test]
    fn key_pairs_do_not_print_secrets() {
        let kx = KxKeyPair::generate(&mut SeededEntropy::from_label("k"));
        let text = format!("{kx:?}");
        assert!(text.starts_with("KxKeyPair(KeyId("), "{text}");
    }
}
