//! The cases: raw primitives, peer constructions and Keyway's own paths,
//! each set up once (keys, caches, payloads) outside the timed region.

use std::hint::black_box;

use aes_kw::KwAes256;
use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes128Siv;
use ed25519_dalek::Signer;
use hpke::Kem as _;
use hpke::aead::AesGcm128;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use keyway::crypto::{
    CertProfile, CertificateAuthority, DirectionKeys, Expect, Identity, KekBinding, KeyCache,
    KxKeyPair, RecipientSpec, SealContext, SealedPayload, SeededEntropy, SigningKeyPair,
    TrustStore, kek_info, open, seal, seal_signature_input, unwrap_full, unwrap_with, wrap_full,
    wrap_with,
};
use keyway::crypto::{Entropy, Secret32};
use keyway::wire::{
    Domain, MsgType, Nonce, Permission, Principal, PublicKey, RecipientKind, Role, Sealed,
    SessionId,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::harness::{Case, FnOp, Op};

/// The first associated-data component of a wrap (spec/crypto.md
/// KW-CRYPTO-033; `WRAP` in the library's structure.rs).
const WRAP_LABEL: &[u8] = b"keyway-v1 wrap";
/// The content identifier of every wrap.
const CID: u64 = 0x0102_0304_0506_0708;
/// Plaintext size of the session-key cases.
const BODY_LEN: usize = 1024;
/// Payloads sealed ahead for `keyway/open-1k`; a fresh receiver takes them
/// again from the first.
const OPEN_POOL: usize = 4096;
/// Recipient entries of `keyway/unwrap-trial-8`.
const TRIAL_ENTRIES: usize = 8;

/// Sizes that tie the raw cases to the Keyway ones.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// HKDF info length of the binding used by the `keyway/*wrap*` cases.
    pub kek_info_len: usize,
    /// Length of the seal signature input of the `keyway/unwrap-trial-8`
    /// body, the message of `raw/ed25519-*`.
    pub seal_sig_input_len: usize,
    /// Associated data of a `keyway/seal-1k` payload (sequence number 0).
    pub message_ad_len: usize,
    /// Associated data of a `keyway/rekey` wrap (epoch 1, sequence 0).
    pub rekey_ad_len: usize,
}

fn principal(s: &str) -> Principal {
    Principal::new(s).expect("a valid account literal")
}

/// Everything the Keyway cases share: one session, its sender (the
/// wrapper) and one destination.
struct World {
    rng: SeededEntropy,
    session: SessionId,
    alice: Identity,
    bob: Identity,
    /// Alice's cache, with her ephemeral key for the session drawn.
    sender_cache: KeyCache,
    epk: PublicKey,
    nonce: Nonce,
    cek: Secret32,
}

impl World {
    fn new() -> Self {
        let mut rng = SeededEntropy::from_label("keyway-bench");
        let session = SessionId(rng.array());
        let alice = Identity::generate(principal("alice@a.example"), &mut rng);
        let bob = Identity::generate(principal("bob@b.example"), &mut rng);
        let mut sender_cache = KeyCache::new(64);
        let epk = sender_cache.ephemeral(&session, &mut rng).public();
        let nonce = Nonce(rng.array());
        let cek = Secret32::new(rng.array());
        Self {
            rng,
            session,
            alice,
            bob,
            sender_cache,
            epk,
            nonce,
            cek,
        }
    }
}

/// The binding of every `keyway/*wrap*` case: alice wraps for bob's
/// destination entry, read-only.
fn binding<'a>(
    session: &'a SessionId,
    wrapper: &'a Principal,
    epk: &'a PublicKey,
    recipient: &'a PublicKey,
) -> KekBinding<'a> {
    KekBinding {
        session,
        wrapper,
        epk,
        recipient,
        kind: RecipientKind::Destination,
        perm: Permission::Read,
    }
}

/// The raw AES-SIV wrap of 32 bytes with Keyway's three headers, as the
/// library's `siv_wrap32` does it.
fn raw_siv_wrap(
    cipher: &mut Aes128Siv,
    nonce: &[u8; 16],
    cid: &[u8; 8],
    key: &[u8; 32],
) -> [u8; 48] {
    let mut out = [0u8; 48];
    let (tag_out, body) = out.split_at_mut(16);
    body.copy_from_slice(key);
    let headers: [&[u8]; 3] = [WRAP_LABEL, nonce, cid];
    if let Ok(tag) = cipher.encrypt_inout_detached(headers.iter().copied(), body.into()) {
        tag_out.copy_from_slice(&tag);
    }
    out
}

/// The raw AES-SIV unwrap of 32 bytes with Keyway's three headers.
fn raw_siv_unwrap(
    cipher: &mut Aes128Siv,
    nonce: &[u8; 16],
    cid: &[u8; 8],
    wrapped: &[u8; 48],
) -> Option<[u8; 32]> {
    let (tag, body) = wrapped.split_at(16);
    let mut key: [u8; 32] = body.try_into().ok()?;
    let tag = aes_siv::Tag::try_from(tag).ok()?;
    let headers: [&[u8]; 3] = [WRAP_LABEL, nonce, cid];
    cipher
        .decrypt_inout_detached(headers.iter().copied(), key.as_mut_slice().into(), &tag)
        .ok()?;
    Some(key)
}

/// `keyway/open-1k`: a receiver and payloads sealed ahead (distinct
/// sequence numbers); a fresh receiver, untimed, whenever the rest of the
/// pool is shorter than the next batch, so the replay window never rejects.
struct OpenOp {
    make_receiver: Box<dyn Fn() -> DirectionKeys>,
    receiver: DirectionKeys,
    sender: DirectionKeys,
    body: Vec<u8>,
    payloads: Vec<SealedPayload>,
    next: usize,
}

impl Op for OpenOp {
    fn prepare(&mut self, n: u64) {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        while self.payloads.len() < n {
            let p = self.sender.seal(MsgType::Info, &self.body);
            self.payloads.push(p.expect("seal ahead"));
        }
        if self.next.saturating_add(n) > self.payloads.len() {
            self.receiver = (self.make_receiver)();
            self.next = 0;
        }
    }

    #[inline(always)]
    fn run(&mut self) {
        if let Some(p) = self.payloads.get(self.next) {
            let out = self
                .receiver
                .open(MsgType::Info, p.epoch, p.seq, &p.payload, 0);
            black_box(out.expect("open-1k: a fresh payload opens"));
        }
        self.next += 1;
    }
}

/// Every case, in the order they are reported, and the sizes that tie
/// them together; with `diag`, also the `diag/*` cases that locate costs
/// found in the library.
pub fn all(diag: bool) -> (Vec<Case>, Params) {
    let mut w = World::new();
    let bob_kx = w.bob.kx.public();

    // What the Keyway wrap binds: its HKDF info length sizes raw/hkdf.
    let kek_info_len = kek_info(&binding(&w.session, &w.alice.account, &w.epk, &bob_kx)).len();

    // Alice's cached wrap for bob, warm; and the entry it makes.
    let wrapped = w
        .sender_cache
        .wrap(
            &binding(&w.session, &w.alice.account, &w.epk, &bob_kx),
            &w.nonce,
            CID,
            &w.cek,
        )
        .expect("wrap for bob");
    // Bob's cache, warm with that entry's key.
    let mut receiver_cache = KeyCache::new(64);
    let got = receiver_cache
        .unwrap(
            &binding(&w.session, &w.alice.account, &w.epk, &bob_kx),
            &w.bob.kx,
            &w.nonce,
            CID,
            &wrapped,
        )
        .expect("bob unwraps his entry");
    assert!(got == w.cek, "the unwrapped key is the content key");

    // The sealed body of keyway/unwrap-trial-8: eight anonymous entries
    // for distinct recipients, ours (bob's) last. Kinds and permissions as
    // on a path of servers: five read-only servers, one read-modify
    // server, two destinations.
    let others: Vec<Identity> = (0..TRIAL_ENTRIES - 1)
        .map(|i| Identity::generate(principal(&format!("r{i}@c.example")), &mut w.rng))
        .collect();
    let mut specs: Vec<RecipientSpec> = others
        .iter()
        .enumerate()
        .map(|(i, id)| RecipientSpec {
            id: id.account.clone(),
            kx_key: id.kx.public(),
            kind: if i < 6 {
                RecipientKind::Server
            } else {
                RecipientKind::Destination
            },
            perm: if i == 5 {
                Permission::ReadModify
            } else {
                Permission::Read
            },
            anonymous: true,
        })
        .collect();
    specs.push(RecipientSpec {
        id: w.bob.account.clone(),
        kx_key: bob_kx,
        kind: RecipientKind::Destination,
        perm: Permission::Read,
        anonymous: true,
    });
    let ctx = SealContext {
        session: &w.session,
        cid: CID,
        re: keyway::wire::MsgType::Offer,
        to: None,
    };
    let control: Vec<u8> = (0..400u32).map(|i| (i % 251) as u8).collect();
    let (sealed, _) = seal(
        ctx,
        &w.alice,
        &specs,
        &control,
        None,
        &mut KeyCache::new(64),
        &mut w.rng,
    )
    .expect("seal for eight recipients");
    let seal_sig_input_len = sig_input_len(&sealed, &w.session);
    let opened = open(&sealed, &w.session, &w.bob, &mut KeyCache::new(16)).expect("bob opens");
    assert_eq!(opened.entry, TRIAL_ENTRIES - 1, "bob's entry is the last");

    let message_ad_len = keyway::crypto::message_ad(
        &w.session,
        &w.alice.account,
        &w.bob.account,
        MsgType::Info,
        0,
        0,
    )
    .len();
    let rekey_ad_len =
        keyway::crypto::rekey_ad(&w.session, &w.alice.account, &w.bob.account, 1, 0).len();
    let params = Params {
        kek_info_len,
        seal_sig_input_len,
        message_ad_len,
        rekey_ad_len,
    };

    let mut cases = Vec::new();
    raw_cases(&mut cases, &w, &params);
    peer_cases(&mut cases, &mut w);
    let mut diags = Vec::new();
    if diag {
        diag_cases(&mut diags, &mut w, &sealed, &specs, &control);
    }
    keyway_cases(&mut cases, w, wrapped, receiver_cache, sealed);
    cases.append(&mut diags);
    (cases, params)
}

fn sig_input_len(sealed: &Sealed, session: &SessionId) -> usize {
    let map = keyway::crypto::permission_map(&sealed.recipients);
    let ctx = SealContext {
        session,
        cid: sealed.cid,
        re: keyway::wire::MsgType::Offer,
        to: None,
    };
    seal_signature_input(ctx, &sealed.sender, &sealed.hash, &map).len()
}

fn raw_cases(cases: &mut Vec<Case>, w: &World, params: &Params) {
    let kek = [0x4bu8; 32];
    let nonce = w.nonce.0;
    let cid = CID.to_be_bytes();
    let cek = *w.cek.expose();

    let mut cipher = Aes128Siv::new(&kek.into());
    cases.push(Case::new(
        "raw/aes-siv-wrap-32",
        FnOp(move || {
            black_box(raw_siv_wrap(
                &mut cipher,
                black_box(&nonce),
                black_box(&cid),
                black_box(&cek),
            ));
        }),
    ));

    let mut cipher = Aes128Siv::new(&kek.into());
    let wrapped = raw_siv_wrap(&mut cipher, &nonce, &cid, &cek);
    assert_eq!(
        raw_siv_unwrap(&mut cipher, &nonce, &cid, &wrapped),
        Some(cek)
    );
    cases.push(Case::new(
        "raw/aes-siv-unwrap-32",
        FnOp(move || {
            black_box(raw_siv_unwrap(
                &mut cipher,
                black_box(&nonce),
                black_box(&cid),
                black_box(&wrapped),
            ));
        }),
    ));

    let secret = x25519_dalek::StaticSecret::from([0x11u8; 32]);
    let peer = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([0x22u8; 32]));
    cases.push(Case::new(
        "raw/x25519",
        FnOp(move || {
            black_box(black_box(&secret).diffie_hellman(black_box(&peer)));
        }),
    ));

    let salt = w.session.0;
    let ikm = [0x33u8; 32];
    let info = vec![0x44u8; params.kek_info_len];
    cases.push(Case::new(
        "raw/hkdf-sha256",
        FnOp(move || {
            let mut okm = [0u8; 32];
            let r = hkdf::Hkdf::<sha2::Sha256>::new(Some(black_box(&salt)), black_box(&ikm))
                .expand(black_box(&info), &mut okm);
            black_box((r.is_ok(), okm));
        }),
    ));

    let signing = ed25519_dalek::SigningKey::from_bytes(&[0x55u8; 32]);
    let verifying = signing.verifying_key();
    let message = vec![0x66u8; params.seal_sig_input_len];
    let signature = signing.sign(&message);
    assert!(verifying.verify_strict(&message, &signature).is_ok());
    let sign_message = message.clone();
    cases.push(Case::new(
        "raw/ed25519-sign",
        FnOp(move || {
            black_box(black_box(&signing).sign(black_box(&sign_message)));
        }),
    ));
    cases.push(Case::new(
        "raw/ed25519-verify",
        FnOp(move || {
            black_box(
                black_box(&verifying)
                    .verify_strict(black_box(&message), black_box(&signature))
                    .is_ok(),
            );
        }),
    ));
}

fn peer_cases(cases: &mut Vec<Case>, w: &mut World) {
    let kek = [0x77u8; 32];
    let cek = *w.cek.expose();
    let kw = KwAes256::new_from_slice(&kek).expect("a 256-bit KEK");
    let mut buf = [0u8; 40];
    let wrapped: [u8; 40] = kw
        .wrap_key(&cek, &mut buf)
        .expect("aes-kw wraps 32 bytes")
        .try_into()
        .expect("40 bytes");
    let kw2 = kw.clone();
    cases.push(Case::new(
        "peer/aes-kw-wrap-32",
        FnOp(move || {
            let mut out = [0u8; 40];
            black_box(kw.wrap_key(black_box(&cek), &mut out).is_ok());
            black_box(out);
        }),
    ));
    cases.push(Case::new(
        "peer/aes-kw-unwrap-32",
        FnOp(move || {
            let mut out = [0u8; 32];
            black_box(kw2.unwrap_key(black_box(&wrapped), &mut out).is_ok());
            black_box(out);
        }),
    ));

    let mut rng = ChaCha20Rng::from_seed(w.rng.array());
    let (sk, pk) = X25519HkdfSha256::gen_keypair_with_rng(&mut rng);
    let plaintext = *w.cek.expose();
    let (enc, ct) = hpke::single_shot_seal_with_rng::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
        &hpke::OpModeS::Base,
        &pk,
        b"",
        &plaintext,
        b"",
        &mut rng,
    )
    .expect("hpke seal");
    cases.push(Case::new(
        "peer/hpke-seal-32",
        FnOp(move || {
            let r = hpke::single_shot_seal_with_rng::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
                &hpke::OpModeS::Base,
                black_box(&pk),
                b"",
                black_box(&plaintext),
                b"",
                &mut rng,
            );
            black_box(r.expect("hpke seals"));
        }),
    ));
    cases.push(Case::new(
        "peer/hpke-open-32",
        FnOp(move || {
            let r = hpke::single_shot_open::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
                &hpke::OpModeR::Base,
                black_box(&sk),
                black_box(&enc),
                b"",
                black_box(&ct),
                b"",
            );
            black_box(r.expect("hpke opens its own ciphertext"));
        }),
    ));
}

fn keyway_cases(
    cases: &mut Vec<Case>,
    w: World,
    wrapped: [u8; 48],
    mut receiver_cache: KeyCache,
    sealed: Sealed,
) {
    let World {
        mut rng,
        session,
        alice,
        bob,
        mut sender_cache,
        epk,
        nonce,
        cek,
    } = w;
    let bob_kx = bob.kx.public();
    let wrapper = alice.account.clone();

    {
        let (wrapper, cek) = (wrapper.clone(), cek.clone());
        cases.push(Case::new(
            "keyway/wrap-cached",
            FnOp(move || {
                let b = binding(&session, &wrapper, &epk, &bob_kx);
                let r = sender_cache.wrap(black_box(&b), black_box(&nonce), CID, black_box(&cek));
                black_box(r.expect("cached wrap"));
            }),
        ));
    }
    {
        let (wrapper, me) = (wrapper.clone(), bob.kx.clone());
        cases.push(Case::new(
            "keyway/unwrap-cached",
            FnOp(move || {
                let b = binding(&session, &wrapper, &epk, &bob_kx);
                let r = receiver_cache.unwrap(
                    black_box(&b),
                    &me,
                    black_box(&nonce),
                    CID,
                    black_box(&wrapped),
                );
                black_box(r.expect("cached unwrap"));
            }),
        ));
    }
    {
        // The per-session ephemeral key, drawn once.
        let ephemeral = KxKeyPair::generate(&mut rng);
        let epk = ephemeral.public();
        let (wrapper, cek) = (wrapper.clone(), cek.clone());
        cases.push(Case::new(
            "keyway/wrap-full",
            FnOp(move || {
                let b = binding(&session, &wrapper, &epk, &bob_kx);
                let r = wrap_full(&ephemeral, black_box(&b), black_box(&nonce), CID, &cek);
                black_box(r.expect("full wrap"));
            }),
        ));
    }
    {
        let (wrapper, me) = (wrapper.clone(), bob.kx.clone());
        cases.push(Case::new(
            "keyway/unwrap-full",
            FnOp(move || {
                let b = binding(&session, &wrapper, &epk, &bob_kx);
                let r = unwrap_full(&me, black_box(&b), black_box(&nonce), CID, &wrapped);
                black_box(r.expect("full unwrap"));
            }),
        ));
    }
    {
        let mut entropy = SeededEntropy::from_label("keyway-bench ephemeral");
        cases.push(Case::new(
            "keyway/ephemeral-keygen",
            FnOp(move || {
                black_box(KxKeyPair::generate(&mut entropy));
            }),
        ));
    }
    {
        let me = bob.clone();
        cases.push(Case::new(
            "keyway/unwrap-trial-8",
            FnOp(move || {
                // First contact: nothing cached.
                let mut cache = KeyCache::new(16);
                let r = open(black_box(&sealed), &session, &me, &mut cache);
                black_box(r.expect("trial open"));
            }),
        ));
    }

    // Session keys: one direction alice -> bob, epoch 0 keyed with `cek`.
    let body: Vec<u8> = (0..BODY_LEN).map(|i| (i % 253) as u8).collect();
    let direction = {
        let (from, to, key) = (alice.account.clone(), bob.account.clone(), cek.clone());
        move || DirectionKeys::new(session, from.clone(), to.clone(), key.clone(), 0)
    };
    {
        let mut sender = direction();
        let body = body.clone();
        cases.push(Case::new(
            "keyway/seal-1k",
            FnOp(move || {
                let r = sender.seal(MsgType::Info, black_box(&body));
                black_box(r.expect("seal-1k"));
            }),
        ));
    }
    {
        let mut sender = direction();
        let payloads: Vec<SealedPayload> = (0..OPEN_POOL)
            .map(|_| sender.seal(MsgType::Info, &body).expect("seal ahead"))
            .collect();
        cases.push(Case::new(
            "keyway/open-1k",
            OpenOp {
                receiver: direction(),
                make_receiver: Box::new(direction.clone()),
                sender,
                body: body.clone(),
                payloads,
                next: 0,
            },
        ));
    }
    {
        let mut sender = direction();
        let mut entropy = SeededEntropy::from_label("keyway-bench rekey");
        cases.push(Case::new(
            "keyway/rekey",
            FnOp(move || {
                let r = sender.rekey_wrapped(0, &mut entropy);
                black_box(r.expect("rekey"));
            }),
        ));
    }

    // Certificates: a domain's authority issues alice's device certificate;
    // a store trusting that authority checks it.
    let ca = CertificateAuthority::new(
        Domain::new("a.example").expect("a valid domain literal"),
        SigningKeyPair::generate(&mut rng),
    );
    let profile = CertProfile {
        serial: 7,
        subject: alice.account.clone(),
        role: Role::Device,
        sig_key: alice.signing.public(),
        kx_key: alice.kx.public(),
        not_before: 1_000,
        not_after: 1_000_000,
    };
    let cert = ca.issue(&profile);
    let trust = TrustStore::new(vec![ca.anchor()]);
    let expect_subject = alice.account.clone();
    trust
        .check(
            &cert,
            Expect {
                subject: &expect_subject,
                role: Some(Role::Device),
                now: 500_000,
            },
        )
        .expect("the certificate is valid");
    cases.push(Case::new(
        "keyway/cert-issue",
        FnOp(move || {
            black_box(ca.issue(black_box(&profile)));
        }),
    ));
    cases.push(Case::new(
        "keyway/cert-verify",
        FnOp(move || {
            let e = Expect {
                subject: &expect_subject,
                role: Some(Role::Device),
                now: 500_000,
            };
            black_box(trust.check(black_box(&cert), e)).expect("valid certificate");
        }),
    ));
}

/// A replica of the library's private KEK-cache key (`Slot` in
/// src/crypto/kek.rs), to time its hashing with the default hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SlotReplica {
    direction: DirectionReplica,
    session: [u8; 16],
    epk: [u8; 32],
    recipient: [u8; 32],
    kind: u8,
    perm: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DirectionReplica {
    Wrap,
}

fn slot_of(session: &SessionId, epk: &PublicKey, recipient: &PublicKey) -> SlotReplica {
    SlotReplica {
        direction: DirectionReplica::Wrap,
        session: session.0,
        epk: epk.0,
        recipient: recipient.0,
        kind: RecipientKind::Destination.code() as u8,
        perm: Permission::Read.code() as u8,
    }
}

/// A replica of the library's cache entry (`Cached` in kek.rs).
struct CachedReplica {
    wrapper: Principal,
    cipher: Aes128Siv,
}

/// The multiply-rotate hash of rustc-hash (Fx), for comparison only.
#[derive(Default)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = std::hash::BuildHasherDefault<Fx>;

/// Cases that locate costs: not part of the checks.
fn diag_cases(
    cases: &mut Vec<Case>,
    w: &mut World,
    sealed: &Sealed,
    specs: &[RecipientSpec],
    control: &[u8],
) {
    // The same eight entries with ours FIRST: the difference from
    // keyway/unwrap-trial-8 is the cost of the seven failed trials.
    let mut first = specs.to_vec();
    first.rotate_right(1);
    let ctx = SealContext {
        session: &w.session,
        cid: CID,
        re: keyway::wire::MsgType::Offer,
        to: None,
    };
    let (sealed_first, _) = seal(
        ctx,
        &w.alice,
        &first,
        control,
        None,
        &mut KeyCache::new(64),
        &mut w.rng,
    )
    .expect("seal, ours first");
    let (session, me) = (w.session, w.bob.clone());
    cases.push(Case::new(
        "diag/unwrap-trial-8-ours-first",
        FnOp(move || {
            let mut cache = KeyCache::new(16);
            let r = open(black_box(&sealed_first), &session, &me, &mut cache);
            black_box(r.expect("trial open, ours first"));
        }),
    ));

    // The library's wrap and unwrap under a given cipher, without the
    // cache: KeyCache::wrap/unwrap minus the lookup.
    let kek = [0x4bu8; 32];
    let (nonce, cek) = (w.nonce, w.cek.clone());
    let mut cipher = Aes128Siv::new(&kek.into());
    cases.push(Case::new(
        "diag/wrap-with",
        FnOp(move || {
            black_box(wrap_with(
                &mut cipher,
                black_box(&nonce),
                CID,
                black_box(&cek),
            ));
        }),
    ));
    let mut cipher = Aes128Siv::new(&kek.into());
    let wrapped = wrap_with(&mut cipher, &nonce, CID, &w.cek);
    cases.push(Case::new(
        "diag/unwrap-with",
        FnOp(move || {
            let r = unwrap_with(&mut cipher, black_box(&nonce), CID, black_box(&wrapped));
            black_box(r.expect("unwrap_with"));
        }),
    ));

    // The HKDF info of one binding (a `structure` Vec).
    let (alice, epk, bob_kx) = (w.alice.account.clone(), w.epk, w.bob.kx.public());
    cases.push(Case::new(
        "diag/kek-info",
        FnOp(move || {
            let b = binding(&session, &alice, &epk, &bob_kx);
            black_box(kek_info(black_box(&b)));
        }),
    ));

    // KeyCache's cached-path lookup, replicated: the slot built from the
    // binding, a HashMap lookup with the default SipHash-1-3, the wrapper
    // compared; then the same with a multiply-rotate (Fx) hasher.
    let cached = || CachedReplica {
        wrapper: w.alice.account.clone(),
        cipher: Aes128Siv::new(&[0x4bu8; 32].into()),
    };
    let mut sip = std::collections::HashMap::new();
    sip.insert(slot_of(&w.session, &w.epk, &w.bob.kx.public()), cached());
    let mut fx: std::collections::HashMap<SlotReplica, CachedReplica, FxBuild> =
        std::collections::HashMap::default();
    fx.insert(slot_of(&w.session, &w.epk, &w.bob.kx.public()), cached());
    let (alice, epk, bob_kx) = (w.alice.account.clone(), w.epk, w.bob.kx.public());
    let alice2 = alice.clone();
    cases.push(Case::new(
        "diag/cache-lookup-siphash",
        FnOp(move || {
            let b = binding(&session, &alice, &epk, &bob_kx);
            let b = black_box(&b);
            let slot = slot_of(b.session, b.epk, b.recipient);
            let hit = sip
                .get_mut(&slot)
                .filter(|c| &c.wrapper == b.wrapper)
                .map(|c| &mut c.cipher);
            black_box(hit.is_some());
        }),
    ));
    cases.push(Case::new(
        "diag/cache-lookup-fxhash",
        FnOp(move || {
            let b = binding(&session, &alice2, &epk, &bob_kx);
            let b = black_box(&b);
            let slot = slot_of(b.session, b.epk, b.recipient);
            let hit = fx
                .get_mut(&slot)
                .filter(|c| &c.wrapper == b.wrapper)
                .map(|c| &mut c.cipher);
            black_box(hit.is_some());
        }),
    ));

    // Ed25519 verify with the public key parsed (decompressed) each time,
    // as keyway::crypto::verify does.
    let signing = ed25519_dalek::SigningKey::from_bytes(&[0x55u8; 32]);
    let public = signing.verifying_key().to_bytes();
    let message = vec![0x66u8; sig_input_len(sealed, &w.session)];
    let signature = signing.sign(&message).to_bytes();
    cases.push(Case::new(
        "diag/ed25519-verify-parse-key",
        FnOp(move || {
            let ok = ed25519_dalek::VerifyingKey::from_bytes(black_box(&public)).is_ok_and(|k| {
                k.verify_strict(
                    black_box(&message),
                    &ed25519_dalek::Signature::from_bytes(&signature),
                )
                .is_ok()
            });
            black_box(ok);
        }),
    ));
}
