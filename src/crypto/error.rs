//! Errors of the crypto layer, and their protocol error codes.

use thiserror::Error;

use crate::wire::{ErrorCode, Principal};

/// Why a certificate was not accepted (KW-CERT-002, in checking order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CertError {
    /// No trusted key for the issuer domain and key identifier.
    #[error("issuer key not trusted")]
    UnknownIssuer,
    /// The issuer's signature does not verify.
    #[error("issuer signature does not verify")]
    BadSignature,
    /// The subject is not the account the certificate is used for.
    #[error("subject is not the expected account")]
    SubjectMismatch,
    /// The role is not the one required.
    #[error("role is not the one required")]
    RoleMismatch,
    /// Before `not-before`.
    #[error("not yet valid")]
    NotYetValid,
    /// After `not-after`.
    #[error("expired")]
    Expired,
    /// Revoked by its issuer.
    #[error("revoked")]
    Revoked,
}

/// A cryptographic check failed, or an input was unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// An Ed25519 signature does not verify (strictly).
    #[error("signature does not verify")]
    BadSignature,
    /// A public key is not a valid Ed25519 key.
    #[error("invalid Ed25519 public key")]
    BadPublicKey,
    /// A key identifier does not name the key it comes with.
    #[error("key identifier does not match the key")]
    KeyIdMismatch,
    /// An X25519 shared secret is all zeros: the peer key has small order
    /// (KW-CRYPTO-005).
    #[error("X25519 shared secret is all zeros (small-order public key)")]
    LowOrderPoint,
    /// Authenticated decryption failed.
    #[error("authenticated decryption failed")]
    DecryptFailed,
    /// A certificate is not acceptable.
    #[error("certificate: {0}")]
    Cert(CertError),
    /// No recipient entry of the sealed body is ours.
    #[error("no recipient entry for this key")]
    NoEntry,
    /// An attestation whose time is too far from the device's clock.
    #[error("attestation time is not within 300 seconds of now")]
    StaleAttestation,
    /// An edit's `prev` is not the digest it changed.
    #[error("the edit chain is broken")]
    BrokenChain,
    /// A change by a server without read-modify permission, or content that
    /// matches no signed version (KW-SEAL-006).
    #[error("change not permitted: {0}")]
    PermissionDenied(&'static str),
    /// An editor without a read-modify entry.
    #[error("{0} has no read-modify permission")]
    EditorNotPermitted(Principal),
    /// A server named with read-modify permission on an offer or answer
    /// signed no edit of it (KW-SEAL-011).
    #[error("{0} has read-modify permission and signed no edit")]
    EditMissing(Principal),
    /// The echoed nonce is not the outstanding challenge's.
    #[error("the echoed nonce is not the outstanding challenge")]
    StaleNonce,
    /// The proof of the provisioned secret does not verify.
    #[error("account proof does not verify")]
    AuthFailed,
    /// A proof of possession of a private key does not verify.
    #[error("proof of possession does not verify")]
    PopFailed,
    /// An iteration count outside 4096..=1000000.
    #[error("iteration count {0} outside 4096..=1000000")]
    BadIterations(u64),
    /// A sequence number already seen, or older than the replay window.
    #[error("sequence number {0} replayed or too old")]
    Replay(u64),
    /// An epoch that is retired, unknown or out of order.
    #[error("epoch {0} is retired, unknown or out of order")]
    StaleEpoch(u64),
    /// The sender's send sequence space is exhausted.
    #[error("sequence numbers exhausted: rekey first")]
    SequenceExhausted,
    /// A key needed for re-wrapping is not known.
    #[error("no public key known for recipient entry {0}")]
    UnknownRecipientKey(usize),
    /// Decrypted content is not a valid structure.
    #[error("decrypted content is malformed: {0}")]
    Plaintext(crate::wire::WireError),
}

impl From<CertError> for CryptoError {
    fn from(e: CertError) -> Self {
        CryptoError::Cert(e)
    }
}

impl From<&CryptoError> for ErrorCode {
    /// The protocol error code for a failed check (errors.md).
    fn from(e: &CryptoError) -> Self {
        match e {
            CryptoError::BadSignature | CryptoError::BadPublicKey | CryptoError::KeyIdMismatch => {
                ErrorCode::SIGNATURE_INVALID
            }
            CryptoError::LowOrderPoint | CryptoError::DecryptFailed | CryptoError::NoEntry => {
                ErrorCode::DECRYPT_FAILED
            }
            CryptoError::StaleAttestation => ErrorCode::CERT_INVALID,
            CryptoError::Cert(c) => match c {
                CertError::UnknownIssuer | CertError::BadSignature | CertError::RoleMismatch => {
                    ErrorCode::CERT_INVALID
                }
                CertError::SubjectMismatch => ErrorCode::CERT_SUBJECT_MISMATCH,
                CertError::NotYetValid => ErrorCode::CERT_NOT_YET_VALID,
                CertError::Expired => ErrorCode::CERT_EXPIRED,
                CertError::Revoked => ErrorCode::CERT_REVOKED,
            },
            CryptoError::BrokenChain
            | CryptoError::PermissionDenied(_)
            | CryptoError::EditorNotPermitted(_)
            | CryptoError::EditMissing(_) => ErrorCode::PERMISSION_DENIED,
            CryptoError::AuthFailed => ErrorCode::AUTH_FAILED,
            CryptoError::StaleNonce => ErrorCode::STALE_NONCE,
            CryptoError::PopFailed => ErrorCode::POP_FAILED,
            CryptoError::BadIterations(_) => ErrorCode::SCHEMA,
            CryptoError::Replay(_) => ErrorCode::REPLAY,
            CryptoError::StaleEpoch(_) => ErrorCode::STALE_EPOCH,
            CryptoError::SequenceExhausted | CryptoError::UnknownRecipientKey(_) => {
                ErrorCode::INTERNAL
            }
            CryptoError::Plaintext(w) => ErrorCode::from(w),
        }
    }
}
