//! Certificates bound to a session (KW-SM-020): a party's certificate is
//! confirmed when the session is set up, and its in-session signatures
//! (body-form rekeys) are checked with that certificate's key for the rest
//! of the session, as a TLS connection keeps the peer it authenticated.
//! A refresh during the session replaces and revokes that certificate
//! (KW-SM-010), and a long session can outlive its term; neither ends the
//! session, whose own term bounds it (KW-FW-004).

use crate::crypto::CertError;
use crate::wire::{Certificate, Principal, Role};

/// `validate`, except that the certificate bound to the session is taken
/// as confirmed for its subject; every other certificate a body names
/// (editors') is checked by `validate`.
pub(crate) fn bound_or<'a>(
    bound: &'a Certificate,
    validate: impl Fn(&Certificate, &Principal, Option<Role>) -> Result<(), CertError> + 'a,
) -> impl Fn(&Certificate, &Principal, Option<Role>) -> Result<(), CertError> + 'a {
    move |cert, subject, role| {
        if cert == bound && subject == &bound.tbs.subject {
            return match role {
                Some(r) if r != cert.tbs.role => Err(CertError::RoleMismatch),
                _ => Ok(()),
            };
        }
        validate(cert, subject, role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CertProfile, CertificateAuthority, Identity, SeededEntropy};
    use crate::wire::Domain;

    fn cert(ca: &CertificateAuthority, who: &Identity, serial: u64, role: Role) -> Certificate {
        ca.issue(&CertProfile {
            serial,
            subject: who.account.clone(),
            role,
            sig_key: who.signing.public(),
            kx_key: who.kx.public(),
            not_before: 0,
            not_after: 10,
        })
    }

    /// KW-SM-020: the bound certificate stands for its subject only, and
    /// only as itself; any other certificate, its subject's included, is
    /// validated.
    #[test]
    fn kw_sm_020_only_the_bound_certificate_of_its_subject_is_taken_as_confirmed() {
        let mut rng = SeededEntropy::from_label("bound tests");
        let ca = CertificateAuthority::new(
            Domain::new("a.example").unwrap(),
            crate::crypto::SigningKeyPair::generate(&mut rng),
        );
        let principal = |s: &str| Principal::new(s).unwrap();
        let alice = Identity::generate(principal("alice@a.example"), &mut rng);
        let bound = cert(&ca, &alice, 1, Role::Device);
        let other = cert(&ca, &alice, 2, Role::Device);
        let refuse = |_: &Certificate, _: &Principal, _: Option<Role>| Err(CertError::Revoked);
        let check = bound_or(&bound, refuse);
        assert_eq!(check(&bound, &alice.account, None), Ok(()));
        assert_eq!(check(&bound, &alice.account, Some(Role::Device)), Ok(()));
        assert_eq!(
            check(&bound, &alice.account, Some(Role::Server)),
            Err(CertError::RoleMismatch)
        );
        // Another certificate of the same subject, or the bound one for
        // another subject: validated, here refused.
        assert_eq!(check(&other, &alice.account, None), Err(CertError::Revoked));
        assert_eq!(
            check(&bound, &principal("bob@a.example"), None),
            Err(CertError::Revoked)
        );
    }
}
