//! Key identifiers (KW-CRYPTO-010).

use serde::{Deserialize, Serialize};

use super::common::{Hex, Meta, VectorFile, entropy_for, verify_file};
use crate::crypto::{KeyUse, KxKeyPair, SigningKeyPair, key_id};
use crate::wire::PublicKey;

/// One key identifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KidTest {
    #[serde(flatten)]
    meta: Meta,
    /// 0: Ed25519, 1: X25519.
    #[serde(rename = "use")]
    key_use: u64,
    public: Hex,
    kid: Hex,
}

const RECIPE: &str =
    "kid = SHA-256(cbor([\"keyway-v1 kid\", use, public]))[0..8]; compare with kid.";

pub fn generate() -> String {
    let mut tests = Vec::new();
    for (tc, key_use) in [
        ("kid/ed25519", KeyUse::Signing),
        ("kid/x25519", KeyUse::KeyAgreement),
    ] {
        let mut rng = entropy_for(tc);
        let public = match key_use {
            KeyUse::Signing => SigningKeyPair::generate(&mut rng).public(),
            KeyUse::KeyAgreement => KxKeyPair::generate(&mut rng).public(),
        };
        let t = KidTest {
            meta: Meta::valid(
                tc,
                "key identifier of a public key",
                &["KW-CRYPTO-010"],
                &[],
            ),
            key_use: key_use as u64,
            public: Hex(public.0.to_vec()),
            kid: Hex::default(),
        };
        tests.push(complete(&(), &t).unwrap_or(t));
    }
    VectorFile::new("kid", "spec/crypto.md §2", RECIPE, &[], (), tests).to_json()
}

/// The test recomputed from its inputs (`use`, `public`).
fn complete(_: &(), t: &KidTest) -> Result<KidTest, String> {
    let key_use = match t.key_use {
        0 => KeyUse::Signing,
        1 => KeyUse::KeyAgreement,
        other => return Err(format!("use {other}")),
    };
    let kid = key_id(&PublicKey(t.public.array()?), key_use);
    let (meta, _) = t.meta.judged::<()>(Ok(()))?;
    Ok(KidTest {
        meta,
        kid: Hex(kid.0.to_vec()),
        ..t.clone()
    })
}

pub fn verify_json(text: &str) -> Result<usize, Vec<String>> {
    verify_file(text, "kid", |t: &KidTest| &t.meta, complete)
}
