//! What a recorder answers a `record-list` or `record-fetch` with, sealed
//! for the requester who signed it (KW-CRYPTO-070, KW-CRYPTO-071,
//! KW-REC-011): only the requester can open it, only the recorder (or the
//! requester) can have made it, and it is bound to the request and to the
//! response's clear fields, so that a response sent elsewhere — to the
//! address a captured request was replayed from, or seen on the path —
//! reveals nothing of the recording.
//!
//! The key is a one-way "K" pattern of two X25519 agreements: the
//! recorder's fresh ephemeral key with the requester's certificate key
//! (confidentiality even if the recorder's own key is later stolen), and
//! the recorder's certificate key with the requester's (only the recorder
//! can have sealed it), salted with the digest of the request.

use super::entropy::Entropy;
use super::error::CryptoError;
use super::keys::KxKeyPair;
use super::primitives::{hkdf32, sha256, siv_cipher, siv_open, siv_seal};
use super::secret::Secret32;
use super::structure::{Part, READER_KEY, RECORD_DATA_AD, RECORD_LISTING_AD, structure};
use crate::wire::{Principal, PublicKey, RecordingId, Suite, TxnId};

/// Everything a response's key is bound to but the shared secrets
/// (KW-CRYPTO-070).
#[derive(Debug, Clone, Copy)]
pub struct ReaderBinding<'a> {
    /// The recorder's account, `a`.
    pub recorder: &'a Principal,
    /// The X25519 key of the recorder's certificate, `R`.
    pub recorder_kx: &'a PublicKey,
    /// The requester's account (the request's `from`), `q`.
    pub requester: &'a Principal,
    /// The X25519 key of the requester's certificate, `P`.
    pub requester_kx: &'a PublicKey,
    /// The request as received: its whole encoding, `sig` included.
    pub request: &'a [u8],
}

/// `cbor(["keyway-v1 reader key", suite, a, q, E, R, P])`: the HKDF info.
pub fn reader_key_info(b: &ReaderBinding<'_>, epk: &PublicKey) -> Vec<u8> {
    structure(
        READER_KEY,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Text(b.recorder.as_str()),
            Part::Text(b.requester.as_str()),
            Part::Bytes(&epk.0),
            Part::Bytes(&b.recorder_kx.0),
            Part::Bytes(&b.requester_kx.0),
        ],
    )
}

/// `k = HKDF(H(req), z_e ‖ z_s, info)`, from the two shared secrets:
/// `z_e = X25519(e, P)` and `z_s = X25519(r, P)`.
pub fn reader_key(
    b: &ReaderBinding<'_>,
    epk: &PublicKey,
    z_e: &Secret32,
    z_s: &Secret32,
) -> Secret32 {
    let mut ikm = [0u8; 64];
    let (first, second) = ikm.split_at_mut(32);
    first.copy_from_slice(z_e.expose());
    second.copy_from_slice(z_s.expose());
    let key = hkdf32(&sha256(b.request), &ikm, &reader_key_info(b, epk));
    zeroize::Zeroize::zeroize(&mut ikm);
    key
}

/// `cbor(["keyway-v1 record-listing", txn])`: the associated data of a
/// listing.
pub fn listing_ad(txn: &TxnId) -> Vec<u8> {
    structure(RECORD_LISTING_AD, &[Part::Bytes(&txn.0)])
}

/// `cbor(["keyway-v1 record-data", txn, recording, index, more])`: the
/// associated data of a chunk, so that none of its clear fields can be
/// changed.
pub fn data_ad(txn: &TxnId, recording: &RecordingId, index: u64, more: bool) -> Vec<u8> {
    structure(
        RECORD_DATA_AD,
        &[
            Part::Bytes(&txn.0),
            Part::Bytes(&recording.0),
            Part::Uint(index),
            Part::Bool(more),
        ],
    )
}

/// The recorder's side (KW-CRYPTO-070): draws the ephemeral key (32
/// bytes) and seals `plaintext`; returns `E` and the ciphertext. Fails,
/// sealing nothing, on an all-zero shared secret (KW-CRYPTO-005).
pub fn seal_for_requester(
    b: &ReaderBinding<'_>,
    recorder: &KxKeyPair,
    ad: &[u8],
    plaintext: &[u8],
    entropy: &mut impl Entropy,
) -> Result<(PublicKey, Vec<u8>), CryptoError> {
    let ephemeral = KxKeyPair::generate(entropy);
    let epk = ephemeral.public();
    let z_e = ephemeral.agree(b.requester_kx)?;
    let z_s = recorder.agree(b.requester_kx)?;
    let key = reader_key(b, &epk, &z_e, &z_s);
    let sealed = siv_seal(&mut siv_cipher(key.expose()), &[ad], plaintext);
    Ok((epk, sealed))
}

/// The requester's side (KW-CRYPTO-071): `z_e = X25519(p, E)`,
/// `z_s = X25519(p, R)`, the same key, and `SIV⁻¹`.
pub fn open_from_recorder(
    b: &ReaderBinding<'_>,
    requester: &KxKeyPair,
    epk: &PublicKey,
    ad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let z_e = requester.agree(epk)?;
    let z_s = requester.agree(b.recorder_kx)?;
    let key = reader_key(b, epk, &z_e, &z_s);
    siv_open(&mut siv_cipher(key.expose()), &[ad], sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;

    fn account(s: &str) -> Principal {
        Principal::new(s).unwrap()
    }

    /// KW-CRYPTO-070, KW-CRYPTO-071: the requester opens what the
    /// recorder sealed for it; another key, another request or a changed
    /// clear field does not open.
    #[test]
    fn kw_crypto_070_only_the_requester_opens_and_only_as_sealed() {
        let mut rng = SeededEntropy::from_label("reader");
        let recorder = KxKeyPair::generate(&mut rng);
        let requester = KxKeyPair::generate(&mut rng);
        let other = KxKeyPair::generate(&mut rng);
        let (a, q) = (account("rec@a.example"), account("u1@a.example"));
        let (r_pub, p_pub) = (recorder.public(), requester.public());
        let b = ReaderBinding {
            recorder: &a,
            recorder_kx: &r_pub,
            requester: &q,
            requester_kx: &p_pub,
            request: b"the request",
        };
        let txn = TxnId([7; 8]);
        let rec = RecordingId([9; 16]);
        let ad = data_ad(&txn, &rec, 3, true);
        let (epk, sealed) = seal_for_requester(&b, &recorder, &ad, b"frame", &mut rng).unwrap();
        assert_eq!(
            open_from_recorder(&b, &requester, &epk, &ad, &sealed).unwrap(),
            b"frame"
        );
        assert_eq!(
            open_from_recorder(&b, &other, &epk, &ad, &sealed),
            Err(CryptoError::DecryptFailed)
        );
        let replayed = ReaderBinding {
            request: b"another request",
            ..b
        };
        assert!(open_from_recorder(&replayed, &requester, &epk, &ad, &sealed).is_err());
        let moved = data_ad(&txn, &rec, 4, true);
        assert!(open_from_recorder(&b, &requester, &epk, &moved, &sealed).is_err());
        assert_eq!(
            open_from_recorder(&b, &requester, &PublicKey([0; 32]), &ad, &sealed),
            Err(CryptoError::LowOrderPoint)
        );
        assert_ne!(listing_ad(&txn), ad);
        // Whoever later steals the recorder's key `r` computes
        // X25519(r, P), but not X25519(e, P): the answers it saw stay
        // closed.
        let z_s = recorder.agree(&p_pub).unwrap();
        let guess = recorder.agree(&epk).unwrap();
        let stolen = reader_key(&b, &epk, &guess, &z_s);
        assert!(siv_open(&mut siv_cipher(stolen.expose()), &[&ad], &sealed).is_err());
        // Sealed by another key than the recorder's certificate names:
        // whoever made it, it does not open as the recorder's.
        let impostor = KxKeyPair::generate(&mut rng);
        let (epk, forged) = seal_for_requester(&b, &impostor, &ad, b"forged", &mut rng).unwrap();
        assert_eq!(
            open_from_recorder(&b, &requester, &epk, &ad, &forged),
            Err(CryptoError::DecryptFailed)
        );
    }
}
