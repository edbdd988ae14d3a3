//! Registration crypto (F1, F2): the account verifier and proof
//! (KW-CRYPTO-020, KW-CRYPTO-021), proof of possession of the signing key
//! (KW-CRYPTO-022) and of the key-agreement key (KW-CRYPTO-023), and the
//! server's signature of its challenge (KW-CRYPTO-025).

use zeroize::Zeroize;

use super::cert::{CertProfile, CertificateAuthority, Expect, TrustStore};
use super::entropy::Entropy;
use super::error::CryptoError;
use super::keys::{Identity, KeyUse, KxKeyPair, SigningKeyPair, key_id, verify};
use super::primitives::{hkdf32, hmac_sha256, pbkdf2_sha256, sha256};
use super::secret::{Secret32, ct_eq};
use super::structure::{
    AUTH, AUTH_MASK, CERT_POP, CHALLENGE, CLIENT_KEY, CSR, KX_POP, Part, structure,
};
use crate::wire::{
    CertRequest, Certificate, Challenge, Extensions, Mac32, Message, Nonce, Principal, PublicKey,
    Register, Role, Signature, SignatureBytes, Suite,
};

/// Fewest and most PBKDF2 iterations a challenge may ask for.
pub const ITERATIONS: core::ops::RangeInclusive<u64> = 4096..=1_000_000;

fn check_iterations(iterations: u64) -> Result<u32, CryptoError> {
    if ITERATIONS.contains(&iterations) {
        u32::try_from(iterations).map_err(|_| CryptoError::BadIterations(iterations))
    } else {
        Err(CryptoError::BadIterations(iterations))
    }
}

/// The device's key derived from its provisioned secret:
/// `client_key = HMAC(PBKDF2(p, s, n), "keyway-v1 client key")`.
pub fn client_key(secret: &[u8], salt: &Nonce, iterations: u64) -> Result<Secret32, CryptoError> {
    let salted = pbkdf2_sha256(secret, &salt.0, check_iterations(iterations)?);
    Ok(Secret32::new(hmac_sha256(salted.expose(), CLIENT_KEY)))
}

/// What the server stores per account instead of the secret
/// (KW-REG-006): `(salt, iterations, stored_key = H(client_key))`.
#[derive(Clone)]
pub struct Verifier {
    /// PBKDF2 salt.
    pub salt: Nonce,
    /// PBKDF2 iteration count.
    pub iterations: u64,
    /// `H(client_key)`.
    pub stored_key: [u8; 32],
}

/// The stored key is a secret equivalent for the proof check: compared in
/// constant time (KW-CRYPTO-002).
impl PartialEq for Verifier {
    fn eq(&self, other: &Self) -> bool {
        self.salt == other.salt
            && self.iterations == other.iterations
            && super::secret::ct_eq(&self.stored_key, &other.stored_key)
    }
}

impl Eq for Verifier {}

impl core::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Verifier(iterations {}, <redacted>)", self.iterations)
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.stored_key.zeroize();
    }
}

impl Verifier {
    /// The verifier of `secret` under a fresh salt.
    pub fn new(
        secret: &[u8],
        iterations: u64,
        entropy: &mut impl Entropy,
    ) -> Result<Self, CryptoError> {
        Self::with_salt(secret, Nonce(entropy.array()), iterations)
    }

    /// The verifier of `secret` under `salt`.
    pub fn with_salt(secret: &[u8], salt: Nonce, iterations: u64) -> Result<Self, CryptoError> {
        let key = client_key(secret, &salt, iterations)?;
        Ok(Self {
            salt,
            iterations,
            stored_key: sha256(key.expose()),
        })
    }
}

/// `auth_message = cbor(["keyway-v1 auth", nonce, r0])`, where `r0` is the
/// encoding of `register` without its `auth`.
pub fn auth_message(nonce: &Nonce, register: &Register) -> Vec<u8> {
    let r0 = Message::Register(Register {
        auth: None,
        ..register.clone()
    })
    .encode();
    structure(AUTH, &[Part::Bytes(&nonce.0), Part::Bytes(&r0)])
}

/// `mask = HKDF(nonce, z, cbor(["keyway-v1 auth mask", account, epk, E]))`
/// (KW-CRYPTO-021), `z` the X25519 secret of the device's fresh key `epk`
/// and the challenge's key `E`; public so that the vectors can give it as
/// an intermediate.
pub fn auth_mask(
    shared: &Secret32,
    nonce: &Nonce,
    account: &Principal,
    epk: &PublicKey,
    challenge: &PublicKey,
) -> Secret32 {
    let info = structure(
        AUTH_MASK,
        &[
            Part::Text(account.as_str()),
            Part::Bytes(&epk.0),
            Part::Bytes(&challenge.0),
        ],
    );
    hkdf32(&nonce.0, shared.expose(), &info)
}

/// `proof = client_key XOR HMAC(H(client_key), auth_message) XOR mask`
/// (KW-CRYPTO-021). Without the mask, whoever sees a proof and the request
/// it answers could test guesses of the secret offline; with it the proof
/// is a one-time pad under a key only the device's fresh X25519 key and
/// the server's challenge key give (KW-REG-020).
pub fn proof(client_key: &Secret32, auth_message: &[u8], mask: &Secret32) -> Mac32 {
    let signature = hmac_sha256(&sha256(client_key.expose()), auth_message);
    let mut out = [0u8; 32];
    for (((o, k), s), m) in out
        .iter_mut()
        .zip(client_key.expose())
        .zip(signature)
        .zip(mask.expose())
    {
        *o = k ^ s ^ m;
    }
    Mac32(out)
}

/// The device's answer to a challenge whose key is `challenge`, with its
/// fresh key `ephemeral` (KW-CRYPTO-021): the masked proof. Fails when the
/// shared secret is all zeros (KW-CRYPTO-005).
pub fn masked_proof(
    client_key: &Secret32,
    auth_message: &[u8],
    ephemeral: &KxKeyPair,
    challenge: &PublicKey,
    nonce: &Nonce,
    account: &Principal,
) -> Result<Mac32, CryptoError> {
    let shared = ephemeral
        .agree(challenge)
        .map_err(|_| CryptoError::AuthFailed)?;
    let mask = auth_mask(&shared, nonce, account, &ephemeral.public(), challenge);
    Ok(proof(client_key, auth_message, &mask))
}

/// The server's check of a proof (KW-CRYPTO-021), in constant time.
pub fn check_proof(
    verifier: &Verifier,
    auth_message: &[u8],
    mask: &Secret32,
    proof: &Mac32,
) -> Result<(), CryptoError> {
    let signature = hmac_sha256(&verifier.stored_key, auth_message);
    let mut client_key = [0u8; 32];
    for (((c, p), s), m) in client_key
        .iter_mut()
        .zip(proof.0)
        .zip(signature)
        .zip(mask.expose())
    {
        *c = p ^ s ^ m;
    }
    let ok = ct_eq(&sha256(&client_key), &verifier.stored_key);
    client_key.zeroize();
    if ok {
        Ok(())
    } else {
        Err(CryptoError::AuthFailed)
    }
}

/// The signed input of `auth.cert-pop` (KW-CRYPTO-026):
/// `cbor(["keyway-v1 cert-pop", auth_message])`.
pub fn cert_pop_input(auth_message: &[u8]) -> Vec<u8> {
    structure(CERT_POP, &[Part::Bytes(auth_message)])
}

/// The device's proof of possession of its certificate's signing key,
/// bound to the challenge and to every field of the register through
/// `auth_message` (KW-CRYPTO-026).
pub fn cert_pop(key: &SigningKeyPair, auth_message: &[u8]) -> SignatureBytes {
    key.sign(&cert_pop_input(auth_message))
}

/// The server's check of `auth.cert-pop` with the key of the certificate
/// the registration keeps (KW-REG-022): absent or not verifying, the
/// requester has not shown it holds the certificate's key
/// (`signature-invalid`).
pub fn check_cert_pop(
    cert: &Certificate,
    auth_message: &[u8],
    pop: Option<&SignatureBytes>,
) -> Result<(), CryptoError> {
    let pop = pop.ok_or(CryptoError::BadSignature)?;
    verify(&cert.tbs.sig_key, &cert_pop_input(auth_message), pop)
}

/// The signed input of a challenge (KW-CRYPTO-025):
/// `cbor(["keyway-v1 challenge", m])`, `m` the challenge encoded without
/// its `sig` (key 8).
pub fn challenge_signature_input(challenge: &Challenge) -> Vec<u8> {
    let m = Message::Challenge(challenge.clone()).encode_without_signature();
    structure(CHALLENGE, &[Part::Bytes(&m)])
}

/// Signs a challenge with the server's key (KW-CRYPTO-025): whatever `sig`
/// held is replaced.
pub fn sign_challenge(challenge: &mut Challenge, key: &SigningKeyPair) {
    let input = challenge_signature_input(challenge);
    challenge.sig = Signature {
        kid: key.kid(),
        sig: key.sign(&input),
    };
}

/// The device's check that a challenge comes from its server (KW-REG-019,
/// KW-CRYPTO-025), in order: the certificate it carries is valid now for
/// `server` with role server against the device's anchors (KW-CERT-002),
/// then `sig` is that certificate's key's and verifies. Without it, anyone
/// on the path could hand the device a salt and iteration count of its
/// choosing, or a `kx-challenge` whose private key it holds, and so test
/// guesses of the secret against the answer offline.
pub fn check_challenge(
    trust: &TrustStore,
    server: &Principal,
    now: u64,
    challenge: &Challenge,
) -> Result<(), CryptoError> {
    let cert = &challenge.cert;
    trust.check(
        cert,
        Expect {
            subject: server,
            role: Some(Role::Server),
            now,
        },
    )?;
    if key_id(&cert.tbs.sig_key, KeyUse::Signing) != challenge.sig.kid {
        return Err(CryptoError::KeyIdMismatch);
    }
    verify(
        &cert.tbs.sig_key,
        &challenge_signature_input(challenge),
        &challenge.sig.sig,
    )
}

/// The device's check of the verifier a challenge names (KW-REG-021), once
/// the challenge is known to be its server's (KW-REG-019): the iteration
/// count within bounds (`schema`, KW-CRYPTO-020), not below the device's
/// floor `min_iterations`, and, when the device holds a pin — the salt and
/// iteration count of its last registration that passed — the same salt
/// and no fewer iterations (`auth-failed`). A server that changed them
/// (one compromised, or made to re-provision the account) would otherwise
/// make the device's next proof cheaper to attack.
pub fn check_challenge_verifier(
    challenge: &Challenge,
    min_iterations: u64,
    pin: Option<&(Nonce, u64)>,
) -> Result<(), CryptoError> {
    check_iterations(challenge.iterations)?;
    if challenge.iterations < min_iterations {
        return Err(CryptoError::AuthFailed);
    }
    match pin {
        Some((salt, iterations))
            if !ct_eq(&salt.0, &challenge.salt.0) || challenge.iterations < *iterations =>
        {
            Err(CryptoError::AuthFailed)
        }
        _ => Ok(()),
    }
}

/// Issues the certificate of a registration (KW-REG-008): valid from `now`
/// to the end of the granted term, for the keys of a checked `csr`.
pub fn issue_for_registration(
    ca: &CertificateAuthority,
    serial: u64,
    account: &Principal,
    role: Role,
    csr: &CertRequest,
    now: u64,
    granted_secs: u64,
) -> Result<Certificate, CryptoError> {
    check_csr(account, csr)?;
    Ok(ca.issue(&CertProfile {
        serial,
        subject: account.clone(),
        role,
        sig_key: csr.sig_key,
        kx_key: csr.kx_key,
        not_before: now,
        not_after: now.saturating_add(granted_secs),
    }))
}

/// The server's check of a `register` answering the challenge with
/// `nonce` and key pair `challenge` (KW-REG-005, KW-CRYPTO-021): the
/// echoed nonce first, then the mask from the device's `epk`, then the
/// proof. Whether the nonce is still outstanding (unused, unexpired, for
/// this account) is the caller's state to check before.
pub fn check_auth(
    verifier: &Verifier,
    nonce: &Nonce,
    challenge: &KxKeyPair,
    register: &Register,
) -> Result<(), CryptoError> {
    let auth = register.auth.as_ref().ok_or(CryptoError::AuthFailed)?;
    if !ct_eq(&auth.nonce.0, &nonce.0) {
        return Err(CryptoError::StaleNonce);
    }
    // KW-CRYPTO-005: an `epk` of small order gives no mask, and no proof.
    let shared = challenge
        .agree(&auth.epk)
        .map_err(|_| CryptoError::AuthFailed)?;
    let mask = auth_mask(
        &shared,
        nonce,
        &register.from,
        &auth.epk,
        &challenge.public(),
    );
    check_proof(verifier, &auth_message(nonce, register), &mask, &auth.proof)
}

/// The signed input of `csr.pop` (KW-CRYPTO-022).
pub fn csr_signature_input(
    account: &Principal,
    sig_key: &PublicKey,
    kx_key: &PublicKey,
) -> Vec<u8> {
    structure(
        CSR,
        &[
            Part::Text(account.as_str()),
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&sig_key.0),
            Part::Bytes(&kx_key.0),
        ],
    )
}

/// A certificate-issuance request for `identity`.
pub fn make_csr(identity: &Identity) -> CertRequest {
    let sig_key = identity.signing.public();
    let kx_key = identity.kx.public();
    CertRequest {
        suite: Suite::KeywayV1,
        sig_key,
        kx_key,
        pop: identity
            .signing
            .sign(&csr_signature_input(&identity.account, &sig_key, &kx_key)),
        ext: Extensions::new(),
    }
}

/// Checks `csr.pop` (KW-REG-007).
pub fn check_csr(account: &Principal, csr: &CertRequest) -> Result<(), CryptoError> {
    verify(
        &csr.sig_key,
        &csr_signature_input(account, &csr.sig_key, &csr.kx_key),
        &csr.pop,
    )
    .map_err(|_| CryptoError::PopFailed)
}

/// `k = HKDF(nonce, z, cbor(["keyway-v1 kx-pop", account, kx-key, E]))`
/// (KW-CRYPTO-023); public so that the vectors can give it as an
/// intermediate.
pub fn kx_pop_key(
    shared: &Secret32,
    nonce: &Nonce,
    account: &Principal,
    kx_key: &PublicKey,
    challenge: &PublicKey,
) -> Secret32 {
    let info = structure(
        KX_POP,
        &[
            Part::Text(account.as_str()),
            Part::Bytes(&kx_key.0),
            Part::Bytes(&challenge.0),
        ],
    );
    hkdf32(&nonce.0, shared.expose(), &info)
}

/// The device's `kx-proof` (KW-CRYPTO-023).
pub fn kx_proof(
    account: &Principal,
    kx: &KxKeyPair,
    challenge: &PublicKey,
    nonce: &Nonce,
    auth_message: &[u8],
) -> Result<Mac32, CryptoError> {
    let shared = kx.agree(challenge).map_err(|_| CryptoError::PopFailed)?;
    let key = kx_pop_key(&shared, nonce, account, &kx.public(), challenge);
    Ok(Mac32(hmac_sha256(key.expose(), auth_message)))
}

/// The server's check of `kx-proof` with its challenge key `ephemeral`.
pub fn check_kx_proof(
    account: &Principal,
    kx_key: &PublicKey,
    ephemeral: &KxKeyPair,
    nonce: &Nonce,
    auth_message: &[u8],
    proof: &Mac32,
) -> Result<(), CryptoError> {
    let shared = ephemeral
        .agree(kx_key)
        .map_err(|_| CryptoError::PopFailed)?;
    let key = kx_pop_key(&shared, nonce, account, kx_key, &ephemeral.public());
    let expected = hmac_sha256(key.expose(), auth_message);
    if ct_eq(&expected, &proof.0) {
        Ok(())
    } else {
        Err(CryptoError::PopFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;
    use crate::wire::examples;

    /// Verifiers are equal in salt, iterations and stored key alike (the
    /// last compared in constant time).
    #[test]
    fn verifiers_are_equal_in_every_part() {
        let v = Verifier::with_salt(b"secret", Nonce([1; 16]), 4096).unwrap();
        assert_eq!(v, v.clone());
        let other_salt = Verifier {
            salt: Nonce([2; 16]),
            ..v.clone()
        };
        let other_count = Verifier {
            iterations: 4097,
            ..v.clone()
        };
        let other_key = Verifier {
            stored_key: [0; 32],
            ..v.clone()
        };
        for other in [other_salt, other_count, other_key] {
            assert_ne!(v, other);
        }
    }

    fn register() -> Register {
        match examples::all().remove(0) {
            Message::Register(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn kw_crypto_021_a_proof_verifies_once_bound_to_every_field() {
        let mut rng = SeededEntropy::from_label("reg");
        let verifier = Verifier::new(b"correct horse", 4096, &mut rng).unwrap();
        let key = client_key(b"correct horse", &verifier.salt, 4096).unwrap();
        let nonce = Nonce([3; 16]);
        let mask = Secret32::new([7; 32]);
        let r = register();
        let msg = auth_message(&nonce, &r);
        let p = proof(&key, &msg, &mask);
        check_proof(&verifier, &msg, &mask, &p).unwrap();
        // Another nonce, another field, another secret, another mask: all
        // fail.
        assert_eq!(
            check_proof(&verifier, &auth_message(&Nonce([4; 16]), &r), &mask, &p),
            Err(CryptoError::AuthFailed)
        );
        let moved = Register {
            expires: 1,
            ..r.clone()
        };
        assert_eq!(
            check_proof(&verifier, &auth_message(&nonce, &moved), &mask, &p),
            Err(CryptoError::AuthFailed)
        );
        let wrong = client_key(b"battery staple", &verifier.salt, 4096).unwrap();
        assert_eq!(
            check_proof(&verifier, &msg, &mask, &proof(&wrong, &msg, &mask)),
            Err(CryptoError::AuthFailed)
        );
        assert_eq!(
            check_proof(&verifier, &msg, &Secret32::new([8; 32]), &p),
            Err(CryptoError::AuthFailed)
        );
        // The auth field itself is not part of what is proven.
        let with_auth = Register { auth: None, ..r };
        assert_eq!(auth_message(&nonce, &with_auth), msg);
    }

    /// KW-CRYPTO-021, KW-REG-020: the device's masked proof passes the
    /// server's check with the challenge's key pair, and with no other; an
    /// `epk` of small order gives no proof at all (KW-CRYPTO-005).
    #[test]
    fn kw_reg_020_the_proof_is_masked_by_the_challenge_exchange() {
        let mut rng = SeededEntropy::from_label("mask");
        let verifier = Verifier::new(b"correct horse", 4096, &mut rng).unwrap();
        let key = client_key(b"correct horse", &verifier.salt, 4096).unwrap();
        let nonce = Nonce([3; 16]);
        let server = KxKeyPair::generate(&mut rng);
        let device = KxKeyPair::generate(&mut rng);
        let mut r = register();
        r.auth = None;
        let msg = auth_message(&nonce, &r);
        let p = masked_proof(&key, &msg, &device, &server.public(), &nonce, &r.from).unwrap();
        let answer = |epk: PublicKey, proof: Mac32| Register {
            auth: Some(crate::wire::AuthResponse {
                nonce,
                proof,
                kx_proof: None,
                epk,
                cert_pop: None,
                ext: Extensions::new(),
            }),
            ..r.clone()
        };
        check_auth(&verifier, &nonce, &server, &answer(device.public(), p)).unwrap();
        let other = KxKeyPair::generate(&mut rng);
        assert_eq!(
            check_auth(&verifier, &nonce, &other, &answer(device.public(), p)),
            Err(CryptoError::AuthFailed)
        );
        assert_eq!(
            check_auth(&verifier, &nonce, &server, &answer(other.public(), p)),
            Err(CryptoError::AuthFailed)
        );
        // Unmasked, as before the mask: refused.
        let bare = proof(&key, &msg, &Secret32::new([0; 32]));
        assert_eq!(
            check_auth(&verifier, &nonce, &server, &answer(device.public(), bare)),
            Err(CryptoError::AuthFailed)
        );
        assert_eq!(
            check_auth(&verifier, &nonce, &server, &answer(PublicKey([0; 32]), p)),
            Err(CryptoError::AuthFailed)
        );
        assert_eq!(
            masked_proof(&key, &msg, &device, &PublicKey([0; 32]), &nonce, &r.from),
            Err(CryptoError::AuthFailed)
        );
    }

    /// KW-CRYPTO-026: `cert-pop` is the certificate key's signature over
    /// `auth_message`, and no other.
    #[test]
    fn kw_crypto_026_cert_pop_is_the_certificate_keys_over_the_request() {
        let mut rng = SeededEntropy::from_label("cert-pop");
        let ca = CertificateAuthority::new(
            crate::wire::Domain::new("a.example").unwrap(),
            SigningKeyPair::generate(&mut rng),
        );
        let alice = Identity::generate(Principal::new("alice@a.example").unwrap(), &mut rng);
        let cert = issue_for_registration(
            &ca,
            5,
            &alice.account,
            Role::Device,
            &make_csr(&alice),
            0,
            60,
        )
        .unwrap();
        let pop = cert_pop(&alice.signing, b"m");
        check_cert_pop(&cert, b"m", Some(&pop)).unwrap();
        assert_eq!(
            check_cert_pop(&cert, b"n", Some(&pop)),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            check_cert_pop(&cert, b"m", None),
            Err(CryptoError::BadSignature)
        );
        let other = SigningKeyPair::generate(&mut rng);
        assert_eq!(
            check_cert_pop(&cert, b"m", Some(&cert_pop(&other, b"m"))),
            Err(CryptoError::BadSignature)
        );
    }

    /// KW-REG-008: the certificate's term is the registration's.
    #[test]
    fn kw_reg_008_registration_certificates_end_with_the_registration() {
        let mut rng = SeededEntropy::from_label("issue");
        let ca = CertificateAuthority::new(
            crate::wire::Domain::new("a.example").unwrap(),
            crate::crypto::SigningKeyPair::generate(&mut rng),
        );
        let alice = Identity::generate(Principal::new("alice@a.example").unwrap(), &mut rng);
        let csr = make_csr(&alice);
        let cert =
            issue_for_registration(&ca, 5, &alice.account, Role::Device, &csr, 1000, 3600).unwrap();
        assert_eq!((cert.tbs.not_before.0, cert.tbs.not_after.0), (1000, 4600));
        assert_eq!(cert.tbs.kx_key, alice.kx.public());
        let other = Principal::new("mallory@a.example").unwrap();
        assert_eq!(
            issue_for_registration(&ca, 6, &other, Role::Device, &csr, 1000, 3600),
            Err(CryptoError::PopFailed)
        );
    }

    #[test]
    fn iteration_counts_are_bounded() {
        assert_eq!(
            client_key(b"p", &Nonce([0; 16]), 4095),
            Err(CryptoError::BadIterations(4095))
        );
        assert_eq!(
            client_key(b"p", &Nonce([0; 16]), 1_000_001),
            Err(CryptoError::BadIterations(1_000_001))
        );
    }

    #[test]
    fn kw_reg_007_both_keys_are_proven() {
        let mut rng = SeededEntropy::from_label("pop");
        let alice = Identity::generate(Principal::new("alice@a.example").unwrap(), &mut rng);
        let csr = make_csr(&alice);
        check_csr(&alice.account, &csr).unwrap();
        let other = Principal::new("mallory@a.example").unwrap();
        assert_eq!(check_csr(&other, &csr), Err(CryptoError::PopFailed));

        let server_e = KxKeyPair::generate(&mut rng);
        let nonce = Nonce([1; 16]);
        let proof = kx_proof(&alice.account, &alice.kx, &server_e.public(), &nonce, b"m").unwrap();
        check_kx_proof(
            &alice.account,
            &alice.kx.public(),
            &server_e,
            &nonce,
            b"m",
            &proof,
        )
        .unwrap();
        // A key the device does not hold: it cannot make the proof.
        let stranger = KxKeyPair::generate(&mut rng);
        assert_eq!(
            check_kx_proof(
                &alice.account,
                &stranger.public(),
                &server_e,
                &nonce,
                b"m",
                &proof
            ),
            Err(CryptoError::PopFailed)
        );
        // A small-order key yields no proof at all (KW-CRYPTO-005).
        assert_eq!(
            check_kx_proof(
                &alice.account,
                &PublicKey([0; 32]),
                &server_e,
                &nonce,
                b"m",
                &proof
            ),
            Err(CryptoError::PopFailed)
        );
    }
}
