//! A three-domain fixture: a.example (caller, trusted server with
//! read-modify), b.example (callee, trusted server with read), c.example
//! (untrusted transit). Deterministic from fixed labels.

use keyway::crypto::{
    CertProfile, CertificateAuthority, Identity, SeededEntropy, SigningKeyPair, TrustStore,
};
use keyway::wire::{Certificate, Domain, Principal, Role};

pub const NOW: u64 = 1_767_225_600;

pub struct Party {
    pub id: Identity,
    pub cert: Certificate,
}

pub struct Pki {
    pub cas: Vec<CertificateAuthority>,
    pub alice: Party,
    pub bob: Party,
    pub sc_a: Party,
    pub sc_b: Party,
    pub sc_c: Party,
    /// Every domain's anchor (what a federating server holds).
    pub trust: TrustStore,
}

fn party(
    ca: &CertificateAuthority,
    account: &str,
    role: Role,
    serial: u64,
    rng: &mut SeededEntropy,
) -> Party {
    let id = Identity::generate(Principal::new(account).unwrap(), rng);
    let cert = ca.issue(&CertProfile {
        serial,
        subject: id.account.clone(),
        role,
        sig_key: id.signing.public(),
        kx_key: id.kx.public(),
        not_before: NOW,
        not_after: NOW + 3600,
    });
    Party { id, cert }
}

pub fn pki() -> Pki {
    let mut rng = SeededEntropy::from_label("keyway test pki");
    let ca = |d: &str, rng: &mut SeededEntropy| {
        CertificateAuthority::new(Domain::new(d).unwrap(), SigningKeyPair::generate(rng))
    };
    let ca_a = ca("a.example", &mut rng);
    let ca_b = ca("b.example", &mut rng);
    let ca_c = ca("c.example", &mut rng);
    let alice = party(&ca_a, "alice@a.example", Role::Device, 1, &mut rng);
    let sc_a = party(&ca_a, "sc@a.example", Role::Server, 2, &mut rng);
    let bob = party(&ca_b, "bob@b.example", Role::Device, 1, &mut rng);
    let sc_b = party(&ca_b, "sc@b.example", Role::Server, 2, &mut rng);
    let sc_c = party(&ca_c, "sc@c.example", Role::Server, 1, &mut rng);
    let trust = TrustStore::new(vec![ca_a.anchor(), ca_b.anchor(), ca_c.anchor()]);
    Pki {
        cas: vec![ca_a, ca_b, ca_c],
        alice,
        bob,
        sc_a,
        sc_b,
        sc_c,
        trust,
    }
}
