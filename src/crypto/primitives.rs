//! The primitives of suite keyway-v1 (KW-CRYPTO-001) behind small,
//! infallible-where-possible functions, so the constructions read like the
//! spec. Nothing here allocates except `siv_seal`/`siv_open`.

use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes128Siv;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::error::CryptoError;
use super::secret::Secret32;

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA-256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// 32 bytes of HKDF-SHA-256.
pub fn hkdf32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Secret32 {
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA-256's limit of 8160.
    let _ = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, &mut okm);
    let out = Secret32::new(okm);
    zeroize::Zeroize::zeroize(&mut okm);
    out
}

/// 32 bytes of PBKDF2-HMAC-SHA-256.
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> Secret32 {
    Secret32::new(pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(
        password, salt, iterations,
    ))
}

/// An AES-SIV cipher keyed with 32 bytes (AES-CMAC-SIV-256).
pub fn siv_cipher(key: &[u8; 32]) -> Aes128Siv {
    Aes128Siv::new(key.into())
}

/// `SIV(K, headers, plaintext)`: the 16-byte synthetic IV, then the
/// ciphertext.
pub fn siv_seal(cipher: &mut Aes128Siv, headers: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 16 + plaintext.len()];
    let (tag_out, body) = out.split_at_mut(16);
    body.copy_from_slice(plaintext);
    // Fails only beyond 126 headers; ours have at most three.
    if let Ok(tag) = cipher.encrypt_inout_detached(headers.iter().copied(), body.into()) {
        tag_out.copy_from_slice(&tag);
    }
    out
}

/// `SIV⁻¹`: authenticates and decrypts, or fails without releasing
/// anything.
pub fn siv_open(
    cipher: &mut Aes128Siv,
    headers: &[&[u8]],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (tag, body) = sealed
        .split_at_checked(16)
        .ok_or(CryptoError::DecryptFailed)?;
    let tag = aes_siv::Tag::try_from(tag).map_err(|_| CryptoError::DecryptFailed)?;
    let mut out = body.to_vec();
    cipher
        .decrypt_inout_detached(headers.iter().copied(), out.as_mut_slice().into(), &tag)
        .map_err(|_| CryptoError::DecryptFailed)?;
    Ok(out)
}

/// Wraps a 32-byte key without allocating: 48 bytes out.
pub fn siv_wrap32(cipher: &mut Aes128Siv, headers: &[&[u8]], key: &[u8; 32]) -> [u8; 48] {
    let mut out = [0u8; 48];
    let (tag_out, body) = out.split_at_mut(16);
    body.copy_from_slice(key);
    if let Ok(tag) = cipher.encrypt_inout_detached(headers.iter().copied(), body.into()) {
        tag_out.copy_from_slice(&tag);
    }
    out
}

/// Unwraps a 32-byte key without allocating.
pub fn siv_unwrap32(
    cipher: &mut Aes128Siv,
    headers: &[&[u8]],
    wrapped: &[u8],
) -> Result<Secret32, CryptoError> {
    let (tag, body) = wrapped
        .split_at_checked(16)
        .ok_or(CryptoError::DecryptFailed)?;
    let mut key: [u8; 32] = body.try_into().map_err(|_| CryptoError::DecryptFailed)?;
    let tag = aes_siv::Tag::try_from(tag).map_err(|_| CryptoError::DecryptFailed)?;
    let result =
        cipher.decrypt_inout_detached(headers.iter().copied(), key.as_mut_slice().into(), &tag);
    let secret = Secret32::new(key);
    zeroize::Zeroize::zeroize(&mut key);
    result
        .map(|()| secret)
        .map_err(|_| CryptoError::DecryptFailed)
}

/// `X25519(k, P)`, rejecting an all-zero result (KW-CRYPTO-005).
pub fn x25519(
    secret: &x25519_dalek::StaticSecret,
    public: &[u8; 32],
) -> Result<Secret32, CryptoError> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(CryptoError::LowOrderPoint);
    }
    Ok(Secret32::new(shared.to_bytes()))
}

/// `Verify(P, m, s)`, strictly (KW-CRYPTO-001).
pub fn ed25519_verify(
    public: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), CryptoError> {
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(public).map_err(|_| CryptoError::BadPublicKey)?;
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &signature)
        .map_err(|_| CryptoError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KW-CRYPTO-002: every cipher that holds a key — a KEK, a content key,
    /// a session key — erases it, its AES key schedules and its CMAC state
    /// on drop (the `zeroize` features named in Cargo.toml).
    #[test]
    fn kw_crypto_002_key_holding_ciphers_erase_themselves() {
        fn erased_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        erased_on_drop::<Aes128Siv>();
        erased_on_drop::<aes::Aes128>();
        erased_on_drop::<cmac::block_api::CmacCore<aes::Aes128>>();
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// KW-CRYPTO-001: RFC 5297 Appendix A.1 (deterministic AES-SIV).
    #[test]
    fn aes_siv_matches_rfc_5297() {
        let key: [u8; 32] = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .try_into()
            .unwrap();
        let ad = hex("101112131415161718191a1b1c1d1e1f2021222324252627");
        let pt = hex("112233445566778899aabbccddee");
        let out = siv_seal(&mut siv_cipher(&key), &[&ad], &pt);
        assert_eq!(
            out,
            hex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c")
        );
        assert_eq!(siv_open(&mut siv_cipher(&key), &[&ad], &out).unwrap(), pt);
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert_eq!(
            siv_open(&mut siv_cipher(&key), &[&ad], &bad),
            Err(CryptoError::DecryptFailed)
        );
        assert_eq!(
            siv_open(&mut siv_cipher(&key), &[b"x"], &out),
            Err(CryptoError::DecryptFailed)
        );
    }

    /// RFC 7748 §6.1.
    #[test]
    fn x25519_matches_rfc_7748_and_rejects_small_order_keys() {
        let a: [u8; 32] = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .try_into()
            .unwrap();
        let b_pub: [u8; 32] =
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
                .try_into()
                .unwrap();
        let shared = x25519(&x25519_dalek::StaticSecret::from(a), &b_pub).unwrap();
        assert_eq!(
            shared.expose().to_vec(),
            hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
        let zero = [0u8; 32];
        assert_eq!(
            x25519(&x25519_dalek::StaticSecret::from(a), &zero),
            Err(CryptoError::LowOrderPoint)
        );
    }

    /// RFC 4231 test case 2 and RFC 5869 test case 1.
    #[test]
    fn hmac_and_hkdf_match_their_rfcs() {
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        let okm = hkdf32(
            &hex("000102030405060708090a0b0c"),
            &hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
            &hex("f0f1f2f3f4f5f6f7f8f9"),
        );
        assert_eq!(
            okm.expose().to_vec(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
        );
    }

    #[test]
    fn wrap32_matches_the_allocating_form() {
        let key = [9u8; 32];
        let cek = [5u8; 32];
        let headers: [&[u8]; 2] = [b"a", b"bc"];
        let wrapped = siv_wrap32(&mut siv_cipher(&key), &headers, &cek);
        assert_eq!(
            wrapped.to_vec(),
            siv_seal(&mut siv_cipher(&key), &headers, &cek)
        );
        let back = siv_unwrap32(&mut siv_cipher(&key), &headers, &wrapped).unwrap();
        assert_eq!(back.expose(), &cek);
    }
}
