//! Cryptography of suite keyway-v1 (spec/crypto.md): keys and key
//! identifiers, certificates and attestations, registration proofs, sealed
//! bodies with per-recipient key wrap, session keys, message signatures,
//! recordings sealed for their reader.
//!
//! Layer rule: imports `cbor` and `wire` only. Randomness comes from the
//! caller through [`Entropy`].

mod cert;
mod entropy;
mod error;
mod kek;
mod keys;
mod msgsig;
pub mod primitives;
mod reader;
pub mod register;
mod seal;
mod secret;
mod session;
pub(crate) mod structure;

pub use cert::{
    ATTESTATION_SKEW_SECS, CertProfile, CertificateAuthority, Expect, TrustAnchor, TrustStore,
    attest, attestation_signature_input, cert_signature_input, check_attestation,
};
pub use entropy::{Entropy, RecordingEntropy, ScriptedEntropy, SeededEntropy};
pub use error::{CertError, CryptoError};
pub use kek::{
    KekBinding, KeyCache, PendingKek, derive_kek, kek_info, unwrap_full, unwrap_with, wrap_full,
    wrap_with,
};
pub use keys::{Identity, KeyUse, KxKeyPair, SigningKeyPair, key_id, verify};
pub use msgsig::{message_signature_input, sign_message, unsigned, verify_message};
pub use reader::{
    ReaderBinding, data_ad, listing_ad, open_from_recorder, reader_key, reader_key_info,
    seal_for_requester,
};
pub use seal::{
    Opened, RecipientSpec, Rekeying, SealContext, content_digest, current_wrapper, edit,
    edit_signature_input, every_editor_signed, key_commitment, open, open_rekey_body,
    open_with_key, permission_map, reencrypt_without_edit, rekey_body_plaintext, seal,
    seal_signature_input, verify_sealed, verify_sealed_with,
};
pub use secret::{Secret32, ct_eq};
pub use session::{
    DirectionKeys, DirectionState, EpochState, KeyPolicy, REPLAY_WINDOW, RekeyWrapped,
    ReplayWindow, SealedPayload, Seen, SessionKeys, media_ad, message_ad, open_media, rekey_ad,
    seal_media,
};
