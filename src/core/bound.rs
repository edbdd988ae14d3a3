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
