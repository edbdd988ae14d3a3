//! Registration proofs (KW-CRYPTO-020 to KW-CRYPTO-023, KW-REG-005 to
//! KW-REG-007).

use serde::{Deserialize, Serialize};

use super::common::{Failure, Hex, Meta, VectorFile, entropy_for, same, verify_file};
use crate::crypto::register::{
    Verifier, auth_mask, auth_message, cert_pop, cert_pop_input, check_auth, check_cert_pop,
    check_csr, check_kx_proof, client_key, csr_signature_input, kx_pop_key, kx_proof, make_csr,
    masked_proof, proof,
};
use crate::crypto::{
    CertProfile, CertificateAuthority, Entropy, Identity, KxKeyPair, Secret32, SigningKeyPair,
    primitives,
};
use crate::wire::{
    CertRequest, Certificate, Domain, Mac32, Message, Nonce, Principal, PublicKey, Register, Role,
    decode_plaintext, encode_plaintext, examples,
};

const NOTES: &[(&str, &str)] = &[
    ("WrongSecret", "The device used another provisioned secret."),
    (
        "Replay",
        "A proof made for one challenge nonce presented with another (KW-REG-005).",
    ),
    (
        "Moved",
        "A proof made for one request presented with a changed request.",
    ),
    ("Bounds", "An iteration count outside 4096..=1000000."),
    (
        "LowOrderPoint",
        "An X25519 key of small order (KW-CRYPTO-005).",
    ),
    ("WrongAccount", "A proof checked for another account."),
    (
        "Unmasked",
        "A proof without the mask of the challenge's X25519 exchange (KW-CRYPTO-021).",
    ),
    (
        "NoPossession",
        "A registration that keeps a certificate without proving its signing key (KW-REG-022).",
    ),
    (
        "Substituted",
        "An X25519 key of the answer replaced on the way by an attacker's.",
    ),
];

/// A verifier derived from a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifierTest {
    #[serde(flatten)]
    meta: Meta,
    secret: Hex,
    salt: Hex,
    iterations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salted: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key: Option<Hex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored_key: Option<Hex>,
}

pub fn generate_verifier() -> String {
    let make = |tc: &str, secret: &[u8], iterations: u64, flags: &[&str], comment: &str| {
        let salt: [u8; 16] = entropy_for(tc).array();
        let reqs = ["KW-CRYPTO-020", "KW-REG-006"];
        let t = VerifierTest {
            meta: Meta::valid(tc, comment, &reqs, flags),
            secret: Hex(secret.to_vec()),
            salt: Hex(salt.to_vec()),
            iterations,
            salted: None,
            client_key: None,
            stored_key: None,
        };
        complete_verifier(&(), &t).unwrap_or(t)
    };
    let good = "the stored verifier of a provisioned secret";
    let bounds = "an iteration count out of bounds";
    let tests = vec![
        make(
            "register-verifier/4096",
            b"correct horse battery staple",
            4096,
            &[],
            good,
        ),
        make(
            "register-verifier/10000",
            b"\x00\xff provisioned",
            10_000,
            &[],
            good,
        ),
        make(
            "register-verifier/too-few-iterations",
            b"secret",
            4095,
            &["Bounds"],
            bounds,
        ),
        make(
            "register-verifier/too-many-iterations",
            b"secret",
            1_000_001,
            &["Bounds"],
            bounds,
        ),
    ];
    let recipe = "salted = PBKDF2-HMAC-SHA256(secret, salt, iterations, 32); client_key = HMAC-SHA256(salted, \"keyway-v1 client key\"); stored_key = SHA-256(client_key). Iterations outside 4096..=1000000 are rejected.";
    VectorFile::new(
        "register-verifier",
        "spec/crypto.md §3",
        recipe,
        NOTES,
        (),
        tests,
    )
    .to_json()
}

/// The test recomputed from its inputs (`secret`, `salt`, `iterations`).
fn complete_verifier(_: &(), t: &VerifierTest) -> Result<VerifierTest, String> {
    let salt = Nonce(t.salt.array()?);
    let (meta, key) = t
        .meta
        .judged(client_key(&t.secret.0, &salt, t.iterations).map_err(Failure::from))?;
    let salted = key.as_ref().map(|_| {
        let n = u32::try_from(t.iterations).unwrap_or(u32::MAX);
        Hex(primitives::pbkdf2_sha256(&t.secret.0, &salt.0, n)
            .expose()
            .to_vec())
    });
    Ok(VerifierTest {
        meta,
        salted,
        client_key: key.as_ref().map(|k| Hex(k.expose().to_vec())),
        stored_key: key.map(|k| Hex(primitives::sha256(k.expose()).to_vec())),
        ..t.clone()
    })
}

pub fn verify_verifier_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(
        text,
        "register-verifier",
        |t: &VerifierTest| &t.meta,
        complete_verifier,
    )
}

/// A proof checked by the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofTest {
    #[serde(flatten)]
    meta: Meta,
    /// The verifier the server holds.
    stored_key: Hex,
    /// The nonce the server issued.
    nonce: Hex,
    /// The private key of the challenge's `kx-challenge` (the reference
    /// derives it from the nonce, KW-CRYPTO-024).
    challenge_private: Hex,
    /// The `register` as received, with `auth`.
    register: Hex,
    /// For valid tests: the device's client key, to recompute the proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key: Option<Hex>,
    /// For valid tests: the private key of `auth.epk`, the device's key of
    /// this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epk_private: Option<Hex>,
    /// For valid tests with `cert`: the Ed25519 seed of the certificate's
    /// key, to recompute `auth.cert-pop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_seed: Option<Hex>,
    auth_message: Hex,
    /// `kx-challenge`, the public key of `challenge_private`.
    challenge: Hex,
    /// The server's `z = X25519(challenge_private, auth.epk)`, unless it is
    /// all zeros (KW-CRYPTO-005).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_secret: Option<Hex>,
    /// `mask = HKDF(nonce, z, cbor(["keyway-v1 auth mask", from, epk, challenge]))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mask: Option<Hex>,
    /// `cbor(["keyway-v1 cert-pop", auth_message])`, when the register
    /// carries `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert_pop_input: Option<Hex>,
}

/// One coherent F1 exchange: alice's keys and csr, her register, the
/// server's challenge, and her answer to it.
struct Exchange {
    alice: Identity,
    register: Register,
    salt: Nonce,
    nonce: Nonce,
    server: KxKeyPair,
    /// Alice's key of her answer (`auth.epk`).
    device: KxKeyPair,
    client_key: Secret32,
    stored_key: [u8; 32],
    auth_message: Vec<u8>,
    mask: Secret32,
    answered: Register,
    /// Her register with that certificate (F2), unanswered.
    f2: Register,
    /// Its `auth_message` under the exchange's nonce.
    f2_message: Vec<u8>,
    /// Her answer to the same challenge with it.
    f2_answered: Register,
}

const SECRET: &[u8] = b"correct horse battery staple";

fn exchange() -> Exchange {
    let mut rng = entropy_for("register/exchange");
    let alice = Identity::generate(Principal("alice@a.example".into()), &mut rng);
    let mut register = match examples::all().into_iter().next() {
        Some(Message::Register(r)) => r,
        _ => Register {
            txn: crate::wire::TxnId([1; 8]),
            from: alice.account.clone(),
            contact: crate::wire::Contact {
                transport: crate::wire::Transport::Udp,
                addr: std::net::SocketAddr::from(([192, 0, 2, 10], 5070)),
            },
            expires: 3600,
            csr: None,
            cert: None,
            auth: None,
            ext: crate::wire::Extensions::new(),
        },
    };
    register.from = alice.account.clone();
    register.csr = Some(make_csr(&alice));
    register.auth = None;
    let salt = Nonce(rng.array());
    let nonce = Nonce(rng.array());
    let server = KxKeyPair::generate(&mut rng);
    let device = KxKeyPair::generate(&mut rng);
    let client_key = client_key(SECRET, &salt, 4096).unwrap_or_else(|_| Secret32::new([0; 32]));
    let stored_key = primitives::sha256(client_key.expose());
    let msg = auth_message(&nonce, &register);
    let kx = kx_proof(&alice.account, &alice.kx, &server.public(), &nonce, &msg).ok();
    let mask = device
        .agree(&server.public())
        .map(|z| {
            auth_mask(
                &z,
                &nonce,
                &alice.account,
                &device.public(),
                &server.public(),
            )
        })
        .unwrap_or_else(|_| Secret32::new([0; 32]));
    let answered = Register {
        auth: Some(crate::wire::AuthResponse {
            nonce,
            proof: proof(&client_key, &msg, &mask),
            kx_proof: kx,
            epk: device.public(),
            cert_pop: None,
            ext: crate::wire::Extensions::new(),
        }),
        ..register.clone()
    };
    // The same challenge answered with the certificate alice holds (F2):
    // the same mask, which binds no field of the register, and her proof
    // of possession of the certificate's key.
    let ca = CertificateAuthority::new(
        Domain("a.example".into()),
        SigningKeyPair::generate(&mut rng),
    );
    let cert: Certificate = ca.issue(&CertProfile {
        serial: 1,
        subject: alice.account.clone(),
        role: Role::Device,
        sig_key: alice.signing.public(),
        kx_key: alice.kx.public(),
        not_before: 1_767_225_600,
        not_after: 1_767_225_600 + 3600,
    });
    let f2 = Register {
        csr: None,
        cert: Some(cert),
        ..register.clone()
    };
    let f2_message = auth_message(&nonce, &f2);
    let f2_answered = Register {
        auth: Some(crate::wire::AuthResponse {
            nonce,
            proof: proof(&client_key, &f2_message, &mask),
            kx_proof: None,
            epk: device.public(),
            cert_pop: Some(cert_pop(&alice.signing, &f2_message)),
            ext: crate::wire::Extensions::new(),
        }),
        ..f2.clone()
    };
    Exchange {
        alice,
        register,
        salt,
        nonce,
        server,
        device,
        client_key,
        stored_key,
        auth_message: msg,
        mask,
        answered,
        f2,
        f2_message,
        f2_answered,
    }
}

/// `register` with its `auth` changed by `edit`, the rest kept.
fn with_auth(register: &Register, edit: impl FnOnce(&mut crate::wire::AuthResponse)) -> Register {
    let mut r = register.clone();
    if let Some(auth) = r.auth.as_mut() {
        edit(auth);
    }
    r
}

pub fn generate_proof() -> String {
    let x = exchange();
    let reqs = ["KW-CRYPTO-021", "KW-REG-005", "KW-REG-020"];
    let f2_reqs = ["KW-CRYPTO-026", "KW-REG-022", "KW-CRYPTO-021"];
    let make = |tc: &str,
                comment: &str,
                flags: &[&str],
                nonce: &Nonce,
                register: &Register,
                with_key: bool| {
        let f2 = register.cert.is_some();
        let t = ProofTest {
            meta: Meta::valid(tc, comment, if f2 { &f2_reqs } else { &reqs }, flags),
            stored_key: Hex(x.stored_key.to_vec()),
            nonce: Hex(nonce.0.to_vec()),
            challenge_private: Hex(x.server.secret().expose().to_vec()),
            register: Hex(Message::Register(register.clone()).encode()),
            client_key: with_key.then(|| Hex(x.client_key.expose().to_vec())),
            epk_private: with_key.then(|| Hex(x.device.secret().expose().to_vec())),
            sig_seed: (with_key && f2).then(|| Hex(x.alice.signing.seed().expose().to_vec())),
            auth_message: Hex::default(),
            challenge: Hex::default(),
            shared_secret: None,
            mask: None,
            cert_pop_input: None,
        };
        complete_proof(&(), &t).unwrap_or(t)
    };
    let other_nonce = Nonce(entropy_for("register-proof/other-nonce").array());
    let moved = Register {
        expires: 86_400,
        ..x.answered.clone()
    };
    let wrong_key =
        client_key(b"Tr0ub4dor&3", &x.salt, 4096).unwrap_or_else(|_| Secret32::new([0; 32]));
    let wrong = with_auth(&x.answered, |a| {
        a.proof = proof(&wrong_key, &x.auth_message, &x.mask);
    });
    let unmasked = with_auth(&x.answered, |a| {
        a.proof = proof(&x.client_key, &x.auth_message, &Secret32::new([0; 32]));
    });
    let mallory = KxKeyPair::generate(&mut entropy_for("register-proof/other-epk")).public();
    let other_epk = with_auth(&x.answered, |a| a.epk = mallory);
    let low_order = with_auth(&x.answered, |a| a.epk = PublicKey(ORDER_8));
    // F2 (KW-REG-022): one who knows the secret but not the certificate's
    // key answers with alice's certificate.
    let stranger = SigningKeyPair::generate(&mut entropy_for("register-proof/f2-stranger"));
    let no_pop = with_auth(&x.f2_answered, |a| a.cert_pop = None);
    let other_key = with_auth(&x.f2_answered, |a| {
        a.cert_pop = Some(cert_pop(&stranger, &x.f2_message));
    });
    // Her cert-pop of an earlier challenge, replayed with a fresh answer.
    let replayed_pop = with_auth(&x.f2_answered, |a| {
        a.cert_pop = Some(cert_pop(
            &x.alice.signing,
            &auth_message(&other_nonce, &x.f2),
        ));
    });
    // Her cert-pop moved to a register of the attacker's, which points her
    // location elsewhere: a fresh, valid proof of the secret, her cert-pop.
    let elsewhere = Register {
        contact: crate::wire::Contact {
            transport: crate::wire::Transport::Udp,
            addr: std::net::SocketAddr::from(([203, 0, 113, 9], 5060)),
        },
        ..x.f2.clone()
    };
    let elsewhere_message = auth_message(&x.nonce, &elsewhere);
    let moved_pop = Register {
        auth: Some(crate::wire::AuthResponse {
            nonce: x.nonce,
            proof: proof(&x.client_key, &elsewhere_message, &x.mask),
            kx_proof: None,
            epk: x.device.public(),
            cert_pop: Some(cert_pop(&x.alice.signing, &x.f2_message)),
            ext: crate::wire::Extensions::new(),
        }),
        ..elsewhere
    };
    let tests = vec![
        make(
            "register-proof/valid",
            "alice answers the challenge: the proof binds the nonce and every field of her register, csr included, and is masked by the exchange of her epk with the challenge's key",
            &[],
            &x.nonce,
            &x.answered,
            true,
        ),
        make(
            "register-proof/replayed",
            "her whole answer replayed against a later challenge: the echoed nonce is not outstanding",
            &["Replay"],
            &other_nonce,
            &x.answered,
            false,
        ),
        make(
            "register-proof/proof-for-other-nonce",
            "the later challenge's nonce echoed, with the proof made for the earlier one",
            &["Replay"],
            &other_nonce,
            &echoing(&x.answered, other_nonce),
            false,
        ),
        make(
            "register-proof/moved",
            "her proof presented with a longer term",
            &["Moved"],
            &x.nonce,
            &moved,
            false,
        ),
        make(
            "register-proof/wrong-secret",
            "a proof from another secret",
            &["WrongSecret"],
            &x.nonce,
            &wrong,
            false,
        ),
        make(
            "register-proof/unmasked",
            "the proof without its mask, as an answer that anyone who saw it could test guesses of the secret against",
            &["Unmasked"],
            &x.nonce,
            &unmasked,
            false,
        ),
        make(
            "register-proof/other-epk",
            "her answer with its epk replaced by an attacker's key: the server's mask is another",
            &["Substituted"],
            &x.nonce,
            &other_epk,
            false,
        ),
        make(
            "register-proof/low-order-epk",
            "an epk of order 8: the server's shared secret is all zeros, and there is no mask",
            &["LowOrderPoint"],
            &x.nonce,
            &low_order,
            false,
        ),
        make(
            "register-proof/f2-valid",
            "alice registers the certificate she holds (F2): her proof, and her cert-pop over auth_message by the certificate's key",
            &[],
            &x.nonce,
            &x.f2_answered,
            true,
        ),
        make(
            "register-proof/f2-no-cert-pop",
            "her certificate with a valid proof of the secret, but no cert-pop",
            &["NoPossession"],
            &x.nonce,
            &no_pop,
            false,
        ),
        make(
            "register-proof/f2-cert-pop-other-key",
            "her certificate, the cert-pop signed by a key other than the certificate's",
            &["NoPossession"],
            &x.nonce,
            &other_key,
            false,
        ),
        make(
            "register-proof/f2-cert-pop-replayed",
            "her cert-pop of an earlier challenge (another nonce) with a fresh answer",
            &["Replay"],
            &x.nonce,
            &replayed_pop,
            false,
        ),
        make(
            "register-proof/f2-cert-pop-moved",
            "her cert-pop moved to a register that points her location elsewhere, with a valid proof of the secret",
            &["Moved"],
            &x.nonce,
            &moved_pop,
            false,
        ),
    ];
    let recipe = "Decode register; its auth.nonce must equal nonce (the outstanding challenge's), else stale-nonce; r0 = its encoding without auth; auth_message = cbor([\"keyway-v1 auth\", nonce, r0]) (compare); \
challenge = the X25519 public key of challenge_private; z = X25519(challenge_private, auth.epk) = shared_secret (all zeros: auth-failed); mask = HKDF-SHA256(salt = nonce, ikm = z, info = cbor([\"keyway-v1 auth mask\", from, auth.epk, challenge])); \
client_key' = auth.proof XOR HMAC-SHA256(stored_key, auth_message) XOR mask; accept iff SHA-256(client_key') == stored_key, else auth-failed. \
With client_key and epk_private given: epk_private is auth.epk's private key, X25519(epk_private, challenge) = shared_secret, and proof = client_key XOR HMAC-SHA256(SHA-256(client_key), auth_message) XOR mask equals auth.proof. \
The register of register-proof/valid is a complete F1 request: its csr's pop and its auth's kx-proof (with challenge_private, see kx-pop) verify. \
A register with cert (F2) then needs auth.cert-pop: cert_pop_input = cbor([\"keyway-v1 cert-pop\", auth_message]) (compare); cert-pop must be present and verify (Ed25519, strictly) with the certificate's sig-key, else signature-invalid (the certificate's own validity is cert.json's). With sig_seed given (the certificate's key), signing reproduces cert-pop.";
    VectorFile::new(
        "register-proof",
        "spec/crypto.md §3",
        recipe,
        NOTES,
        (),
        tests,
    )
    .to_json()
}

/// `register` with its `auth.nonce` replaced by `nonce`, the proof kept.
fn echoing(register: &Register, nonce: Nonce) -> Register {
    with_auth(register, |a| a.nonce = nonce)
}

fn run_proof(t: &ProofTest) -> Result<(), Failure> {
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let Message::Register(r) = Message::decode(&t.register.0)? else {
        return Err(bad("not a register".into()));
    };
    let verifier = Verifier {
        salt: Nonce([0; 16]),
        iterations: 4096,
        stored_key: t.stored_key.array().map_err(bad)?,
    };
    let server = KxKeyPair::from_secret(&Secret32::new(t.challenge_private.array().map_err(bad)?));
    let nonce = Nonce(t.nonce.array().map_err(bad)?);
    check_auth(&verifier, &nonce, &server, &r)?;
    if let Some(cert) = &r.cert {
        let pop = r.auth.as_ref().and_then(|a| a.cert_pop.as_ref());
        check_cert_pop(cert, &auth_message(&nonce, &r), pop)?;
    }
    Ok(())
}

/// The test recomputed from its inputs (`stored_key`, `nonce`,
/// `challenge_private`, `register`, and `client_key` and `epk_private`
/// where given): `auth_message`, the challenge key, the server's shared
/// secret and mask, and its verdict. With `client_key`, it must be the
/// stored key's and, with `epk_private` (the key of `auth.epk`), reproduce
/// the proof.
fn complete_proof(_: &(), t: &ProofTest) -> Result<ProofTest, String> {
    let (meta, _) = t.meta.judged(run_proof(t))?;
    let Message::Register(r) = Message::decode(&t.register.0).map_err(|e| e.to_string())? else {
        return Err("not a register".into());
    };
    let nonce = Nonce(t.nonce.array()?);
    let server = KxKeyPair::from_secret(&Secret32::new(t.challenge_private.array()?));
    let msg = auth_message(&nonce, &r);
    let auth = r.auth.as_ref().ok_or("no auth")?;
    let shared = server.agree(&auth.epk).ok();
    let mask = shared
        .as_ref()
        .map(|z| auth_mask(z, &nonce, &r.from, &auth.epk, &server.public()));
    if let Some(key) = &t.client_key {
        same(
            "stored_key of client_key",
            &t.stored_key.0,
            &primitives::sha256(&key.0),
        )?;
        let private = t
            .epk_private
            .as_ref()
            .ok_or("client_key without epk_private")?;
        let device = KxKeyPair::from_secret(&Secret32::new(private.array()?));
        same("epk of epk_private", &auth.epk.0, &device.public().0)?;
        let p: Mac32 = masked_proof(
            &Secret32::new(key.array()?),
            &msg,
            &device,
            &server.public(),
            &nonce,
            &r.from,
        )
        .map_err(|e| e.to_string())?;
        same("proof", &auth.proof.0, &p.0)?;
    } else if t.epk_private.is_some() {
        return Err("epk_private without client_key".into());
    }
    if let Some(seed) = &t.sig_seed {
        let cert = r.cert.as_ref().ok_or("sig_seed without cert")?;
        let key = SigningKeyPair::from_seed(&Secret32::new(seed.array()?));
        same("sig-key of sig_seed", &cert.tbs.sig_key.0, &key.public().0)?;
        let pop = auth.cert_pop.as_ref().ok_or("sig_seed without cert-pop")?;
        same("cert-pop", &pop.0, &cert_pop(&key, &msg).0)?;
    }
    let pop_input = r.cert.as_ref().map(|_| Hex(cert_pop_input(&msg)));
    Ok(ProofTest {
        meta,
        auth_message: Hex(msg),
        challenge: Hex(server.public().0.to_vec()),
        shared_secret: shared.map(|z| Hex(z.expose().to_vec())),
        mask: mask.map(|m| Hex(m.expose().to_vec())),
        cert_pop_input: pop_input,
        ..t.clone()
    })
}

pub fn verify_proof_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(
        text,
        "register-proof",
        |t: &ProofTest| &t.meta,
        complete_proof,
    )
}

/// A certificate-issuance request's proof of possession.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsrTest {
    #[serde(flatten)]
    meta: Meta,
    account: String,
    /// The device's Ed25519 seed, for valid tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_seed: Option<Hex>,
    csr: Hex,
    signature_input: Hex,
}

pub fn generate_csr() -> String {
    let mut rng = entropy_for("csr/alice");
    let alice = Identity::generate(Principal("alice@a.example".into()), &mut rng);
    let csr = make_csr(&alice);
    let reqs = ["KW-CRYPTO-022", "KW-REG-007"];
    let make =
        |tc: &str, comment: &str, flags: &[&str], account: &str, csr: &CertRequest, seed: bool| {
            let t = CsrTest {
                meta: Meta::valid(tc, comment, &reqs, flags),
                account: account.into(),
                sig_seed: seed.then(|| Hex(alice.signing.seed().expose().to_vec())),
                csr: Hex(encode_plaintext(csr)),
                signature_input: Hex::default(),
            };
            complete_csr(&(), &t).unwrap_or(t)
        };
    let mut swapped = csr.clone();
    swapped.kx_key = KxKeyPair::generate(&mut rng).public();
    let tests = vec![
        make(
            "csr/valid",
            "proof of possession of the signing key, binding both keys and the account",
            &[],
            "alice@a.example",
            &csr,
            true,
        ),
        make(
            "csr/other-account",
            "the request presented for another account",
            &["WrongAccount"],
            "mallory@a.example",
            &csr,
            false,
        ),
        make(
            "csr/swapped-kx-key",
            "the X25519 key replaced after signing",
            &["Moved"],
            "alice@a.example",
            &swapped,
            false,
        ),
    ];
    let recipe = "Decode csr; Ed25519-verify (strictly) pop with sig-key over signature_input = cbor([\"keyway-v1 csr\", account, 1, sig-key, kx-key]). With sig_seed given, the signature is reproducible (Ed25519 is deterministic).";
    VectorFile::new("csr", "spec/crypto.md §3", recipe, NOTES, (), tests).to_json()
}

fn run_csr(t: &CsrTest) -> Result<(), Failure> {
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let csr: CertRequest = decode_plaintext(&t.csr.0)?;
    let account = Principal::new(&t.account).map_err(|e| bad(e.to_string()))?;
    check_csr(&account, &csr)?;
    Ok(())
}

/// The test recomputed from its inputs (`account`, `csr`, and `sig_seed`
/// where given, which must be the csr's key and reproduce `pop`).
fn complete_csr(_: &(), t: &CsrTest) -> Result<CsrTest, String> {
    let (meta, _) = t.meta.judged(run_csr(t))?;
    let csr: CertRequest = decode_plaintext(&t.csr.0).map_err(|e| e.to_string())?;
    let account = Principal::new(&t.account).map_err(|e| e.to_string())?;
    let input = csr_signature_input(&account, &csr.sig_key, &csr.kx_key);
    if let Some(seed) = &t.sig_seed {
        let key = SigningKeyPair::from_seed(&Secret32::new(seed.array()?));
        same("sig-key of sig_seed", &csr.sig_key.0, &key.public().0)?;
        same("pop", &csr.pop.0, &key.sign(&input).0)?;
    }
    Ok(CsrTest {
        meta,
        signature_input: Hex(input),
        ..t.clone()
    })
}

pub fn verify_csr_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "csr", |t: &CsrTest| &t.meta, complete_csr)
}

/// The X25519 proof of possession.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KxPopTest {
    #[serde(flatten)]
    meta: Meta,
    account: String,
    kx_key: Hex,
    /// The device's private key, when it can make the proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kx_private: Option<Hex>,
    /// The server's challenge key pair.
    challenge_private: Hex,
    challenge: Hex,
    nonce: Hex,
    auth_message: Hex,
    /// The server's `z = X25519(challenge_private, kx_key)`, unless it is
    /// all zeros (KW-CRYPTO-005).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shared_secret: Option<Hex>,
    /// `k = HKDF(nonce, z, cbor(["keyway-v1 kx-pop", account, kx_key, challenge]))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pop_key: Option<Hex>,
    kx_proof: Hex,
}

/// A point of order 8 on Curve25519 (RFC 7748 §6.1's small-subgroup
/// points; with `wrap`'s, the two of order 8).
const ORDER_8: [u8; 32] = [
    0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
    0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
];

pub fn generate_kx_pop() -> String {
    let x = exchange();
    let reqs = ["KW-CRYPTO-023", "KW-REG-007"];
    // The register of the exchange with its csr naming `kx_key` (the csr's
    // pop re-signed by alice, so only the X25519 proof is at stake), and
    // alice's kx-proof over it, made with the key she holds.
    let case = |kx_key: PublicKey, nonce: &Nonce| {
        let mut r = x.register.clone();
        if let Some(csr) = r.csr.as_mut() {
            csr.kx_key = kx_key;
            csr.pop = x.alice.signing.sign(&csr_signature_input(
                &x.alice.account,
                &csr.sig_key,
                &kx_key,
            ));
        }
        let msg = auth_message(nonce, &r);
        let proof = kx_proof(
            &x.alice.account,
            &x.alice.kx,
            &x.server.public(),
            &x.nonce,
            &auth_message(&x.nonce, &r),
        )
        .map_or([0; 32], |m| m.0);
        (msg, proof)
    };
    let make = |tc: &str,
                comment: &str,
                flags: &[&str],
                kx_key: PublicKey,
                private: Option<&KxKeyPair>,
                nonce: &Nonce| {
        let (msg, proof) = case(kx_key, nonce);
        let t = KxPopTest {
            meta: Meta::valid(tc, comment, &reqs, flags),
            account: x.alice.account.as_str().into(),
            kx_key: Hex(kx_key.0.to_vec()),
            kx_private: private.map(|k| Hex(k.secret().expose().to_vec())),
            challenge_private: Hex(x.server.secret().expose().to_vec()),
            challenge: Hex::default(),
            nonce: Hex(nonce.0.to_vec()),
            auth_message: Hex(msg),
            shared_secret: None,
            pop_key: None,
            kx_proof: Hex(proof.to_vec()),
        };
        complete_kx_pop(&(), &t).unwrap_or(t)
    };
    let stranger = KxKeyPair::generate(&mut entropy_for("kx-pop/stranger")).public();
    let other_nonce = Nonce(entropy_for("kx-pop/other-nonce").array());
    let tests = vec![
        make(
            "kx-pop/valid",
            "alice proves the X25519 key of her csr, in the exchange of register-proof/valid",
            &[],
            x.alice.kx.public(),
            Some(&x.alice.kx),
            &x.nonce,
        ),
        make(
            "kx-pop/other-key",
            "a csr naming someone else's X25519 key: the proof, made with alice's own key, fails",
            &["Moved"],
            stranger,
            None,
            &x.nonce,
        ),
        make(
            "kx-pop/zero-key",
            "a csr naming an all-zero X25519 key",
            &["LowOrderPoint"],
            PublicKey([0; 32]),
            None,
            &x.nonce,
        ),
        make(
            "kx-pop/replayed-nonce",
            "her proof checked under another challenge (its nonce salts the key and enters auth_message)",
            &["Replay"],
            x.alice.kx.public(),
            None,
            &other_nonce,
        ),
        make(
            "kx-pop/low-order-key",
            "a csr naming an X25519 key of order 8: the server's shared secret is all zeros",
            &["LowOrderPoint"],
            PublicKey(ORDER_8),
            None,
            &x.nonce,
        ),
    ];
    let recipe = "auth_message is the register's (its csr's kx-key is kx_key); challenge = the public key of challenge_private; z = X25519(challenge_private, kx_key) (reject all-zero) = shared_secret; pop_key = k = HKDF-SHA256(salt = nonce, ikm = z, info = cbor([\"keyway-v1 kx-pop\", account, kx_key, challenge])); \
accept iff HMAC-SHA256(k, auth_message) == kx_proof (constant time). With kx_private given, it is kx_key's private key, X25519(kx_private, challenge) = shared_secret and the device's proof equals kx_proof.";
    VectorFile::new("kx-pop", "spec/crypto.md §3", recipe, NOTES, (), tests).to_json()
}

fn run_kx_pop(t: &KxPopTest) -> Result<(), Failure> {
    let bad = |e: String| Failure {
        code: "vector".into(),
        detail: e,
    };
    let account = Principal::new(&t.account).map_err(|e| bad(e.to_string()))?;
    let server = KxKeyPair::from_secret(&Secret32::new(t.challenge_private.array().map_err(bad)?));
    check_kx_proof(
        &account,
        &PublicKey(t.kx_key.array().map_err(bad)?),
        &server,
        &Nonce(t.nonce.array().map_err(bad)?),
        &t.auth_message.0,
        &Mac32(t.kx_proof.array().map_err(bad)?),
    )?;
    Ok(())
}

/// The test recomputed from its inputs (`account`, `kx_key`,
/// `challenge_private`, `nonce`, `auth_message`, `kx_proof`, and
/// `kx_private` where given): the challenge key, the server's shared secret
/// and key, and its verdict; with `kx_private`, the device's side too.
fn complete_kx_pop(_: &(), t: &KxPopTest) -> Result<KxPopTest, String> {
    let (meta, _) = t.meta.judged(run_kx_pop(t))?;
    let server = KxKeyPair::from_secret(&Secret32::new(t.challenge_private.array()?));
    let account = Principal::new(&t.account).map_err(|e| e.to_string())?;
    let kx_key = PublicKey(t.kx_key.array()?);
    let nonce = Nonce(t.nonce.array()?);
    let shared = server.agree(&kx_key).ok();
    let key = shared
        .as_ref()
        .map(|z| kx_pop_key(z, &nonce, &account, &kx_key, &server.public()));
    if let Some(private) = &t.kx_private {
        let device = KxKeyPair::from_secret(&Secret32::new(private.array()?));
        same("kx_key of kx_private", &t.kx_key.0, &device.public().0)?;
        let z = device.agree(&server.public()).map_err(|e| e.to_string())?;
        same(
            "device shared secret",
            z.expose(),
            shared
                .as_ref()
                .map(|s| s.expose().as_slice())
                .unwrap_or_default(),
        )?;
        let p = kx_proof(
            &account,
            &device,
            &server.public(),
            &nonce,
            &t.auth_message.0,
        )
        .map_err(|e| e.to_string())?;
        same("kx_proof", &t.kx_proof.0, &p.0)?;
    }
    Ok(KxPopTest {
        meta,
        challenge: Hex(server.public().0.to_vec()),
        shared_secret: shared.map(|s| Hex(s.expose().to_vec())),
        pop_key: key.map(|k| Hex(k.expose().to_vec())),
        ..t.clone()
    })
}

pub fn verify_kx_pop_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "kx-pop", |t: &KxPopTest| &t.meta, complete_kx_pop)
}
