//! Registrar and certificate authority (F1, F2): challenge, proof, issue
//! or confirm, store, answer; de-registration and expiry with revocation.

use super::{NONCES, NONCES_PER_ACCOUNT, Outcome, OutstandingNonce, Server, ServerEvent};
use crate::core::error::ProtocolError;
use crate::core::store::{Registration, StoreWrite};
use crate::core::{Addr, Millis, secs};
use crate::crypto::primitives::hkdf32;
use crate::crypto::{CryptoError, Entropy, Expect, KxKeyPair, register};
use crate::wire::{
    Certificate, Challenge, ErrorCode, ErrorResponse, Extensions, Message, MsgType, Nonce,
    Principal, Register, RegisterOk, Role, Time,
};

/// What an authenticated `register` asks for (KW-REG-003).
enum Kind<'a> {
    Issue,
    Confirm(&'a Certificate),
    Refresh,
    Deregister,
}

impl Server {
    pub(super) fn on_register(
        &mut self,
        now: Millis,
        from: Addr,
        r: Register,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let reject = |this: &mut Self, code: ErrorCode| {
            this.reject(now, from, r.txn, MsgType::Register, code)
        };
        if r.from.domain() != self.cfg.ca.domain().as_str() {
            return reject(self, ErrorCode::FORBIDDEN);
        }
        // KW-REG-013: checked before any work, with the minimum to retry with.
        if r.expires != 0 && r.expires < self.cfg.policy.min_expires {
            self.emit(ServerEvent::Rejected(
                MsgType::Register,
                ErrorCode::INTERVAL_TOO_BRIEF,
            ));
            let response = Message::Error(ErrorResponse {
                txn: Some(r.txn),
                re: Some(MsgType::Register),
                code: ErrorCode::INTERVAL_TOO_BRIEF,
                reason: None,
                offset: None,
                min_expires: Some(self.cfg.policy.min_expires),
                retry_after: None,
                ext: Extensions::new(),
            });
            self.respond(now, from, r.txn, response);
            return Err(ProtocolError::Refused {
                re: MsgType::Register,
                code: ErrorCode::INTERVAL_TOO_BRIEF,
            });
        }
        let Some(auth) = r.auth.as_ref() else {
            self.challenge(now, from, &r, rng);
            return Ok(());
        };
        // KW-REG-005: the nonce is spent by this answer whatever happens next.
        let outstanding = self.nonces.remove(&auth.nonce);
        let Some(outstanding) = outstanding.filter(|n| n.account == r.from && n.expires_at > now)
        else {
            return reject(self, ErrorCode::STALE_NONCE);
        };
        let Some(verifier) = self.cfg.accounts.get(&r.from) else {
            // Decoy challenge of an unknown account: no proof can pass.
            return reject(self, ErrorCode::AUTH_FAILED);
        };
        if let Err(e) = register::check_auth(verifier, &auth.nonce, &r) {
            return reject(self, ErrorCode::from(&e));
        }
        let kind = match (&r.csr, &r.cert, r.expires) {
            (_, _, 0) => Kind::Deregister,
            (Some(_), _, _) => Kind::Issue,
            (None, Some(cert), _) => Kind::Confirm(cert),
            (None, None, _) => Kind::Refresh,
        };
        let outcome = match kind {
            Kind::Deregister => {
                self.deregister(now, &r.from);
                Ok(RegisterOk {
                    txn: r.txn,
                    to: r.from.clone(),
                    contact: r.contact,
                    expires: 0,
                    cert: None,
                    not_after: Time(secs(now)),
                    ext: Extensions::new(),
                })
            }
            Kind::Issue => self.issue(now, &r, outstanding.kx.as_ref(), &auth.nonce),
            Kind::Confirm(cert) => self.confirm(now, &r, cert),
            Kind::Refresh => match self.registrations.get(&r.from).map(|g| g.cert.clone()) {
                Some(cert) => self.confirm(now, &r, &cert),
                None => Err(ErrorCode::CERT_NOT_FOUND),
            },
        };
        match outcome {
            Ok(ok) => {
                self.respond(now, from, r.txn, Message::RegisterOk(ok));
                Ok(())
            }
            Err(code) => reject(self, code),
        }
    }

    /// KW-REG-004: a challenge with a fresh nonce; a decoy salt for an
    /// account that does not exist, so the answer is the same.
    fn challenge(&mut self, now: Millis, from: Addr, r: &Register, rng: &mut impl Entropy) {
        let (salt, iterations) = match self.cfg.accounts.get(&r.from) {
            Some(v) => (v.salt, v.iterations),
            None => {
                let decoy = hkdf32(
                    self.cfg.decoy_secret.expose(),
                    r.from.as_str().as_bytes(),
                    b"keyway-v1 decoy salt",
                );
                let mut salt = [0u8; 16];
                salt.copy_from_slice(decoy.expose().get(..16).unwrap_or(&[0; 16]));
                (Nonce(salt), self.cfg.policy.decoy_iterations)
            }
        };
        let nonce = Nonce(rng.array());
        let kx = r.csr.as_ref().map(|_| KxKeyPair::generate(rng));
        let kx_challenge = kx.as_ref().map(KxKeyPair::public);
        // Bounded per account, so one account's requests cannot push out
        // every other's, and in all.
        let mine: Vec<(Millis, Nonce)> = self
            .nonces
            .iter()
            .filter(|(_, n)| n.account == r.from)
            .map(|(k, n)| (n.expires_at, *k))
            .collect();
        if mine.len() >= NONCES_PER_ACCOUNT {
            if let Some((_, oldest)) = mine.iter().min() {
                self.nonces.remove(oldest);
            }
        }
        if self.nonces.len() >= NONCES {
            if let Some(oldest) = self
                .nonces
                .iter()
                .min_by_key(|(_, n)| n.expires_at)
                .map(|(k, _)| *k)
            {
                self.nonces.remove(&oldest);
            }
        }
        let lifetime = self.cfg.policy.challenge_secs;
        self.nonces.insert(
            nonce,
            OutstandingNonce {
                account: r.from.clone(),
                expires_at: now.saturating_add(lifetime.saturating_mul(1000)),
                kx,
            },
        );
        let challenge = Message::Challenge(Challenge {
            txn: r.txn,
            to: r.from.clone(),
            expires: lifetime,
            nonce,
            salt,
            iterations,
            kx_challenge,
            ext: Extensions::new(),
        });
        // Not kept for duplicates: a retransmitted `register` gets a fresh
        // challenge, and only the nonce answered counts.
        self.server.abandon(r.txn, from);
        self.send(from, challenge);
    }

    /// F1: check both proofs of possession, issue, store, answer
    /// (KW-REG-007, KW-REG-008, KW-REG-010).
    fn issue(
        &mut self,
        now: Millis,
        r: &Register,
        kx: Option<&KxKeyPair>,
        nonce: &Nonce,
    ) -> Result<RegisterOk, ErrorCode> {
        let csr = r.csr.as_ref().ok_or(ErrorCode::SCHEMA)?;
        register::check_csr(&r.from, csr).map_err(|e| ErrorCode::from(&e))?;
        let (Some(kx), Some(proof)) = (kx, r.auth.as_ref().and_then(|a| a.kx_proof.as_ref()))
        else {
            return Err(ErrorCode::from(&CryptoError::PopFailed));
        };
        let message = register::auth_message(nonce, r);
        register::check_kx_proof(&r.from, &csr.kx_key, kx, nonce, &message, proof)
            .map_err(|e| ErrorCode::from(&e))?;
        let granted = r.expires.min(self.cfg.policy.max_expires);
        let serial = self.next_serial;
        let cert = register::issue_for_registration(
            &self.cfg.ca,
            serial,
            &r.from,
            Role::Device,
            csr,
            secs(now),
            granted,
        )
        .map_err(|e| ErrorCode::from(&e))?;
        self.emit(ServerEvent::CertificateIssued {
            account: r.from.clone(),
            serial,
            not_before: cert.tbs.not_before.0,
            not_after: cert.tbs.not_after.0,
        });
        self.store(StoreWrite::NextSerial(serial.saturating_add(1)));
        // The registration replaced ends, and the certificate issued with it.
        if let Some(old) = self.registrations.get(&r.from).map(|g| g.cert.clone()) {
            self.revoke(now, &old);
        }
        self.put_registration(r, cert, granted, now)
    }

    /// F2 and refresh: the certificate held must be valid and ours; the
    /// term ends no later than it (KW-REG-009).
    fn confirm(
        &mut self,
        now: Millis,
        r: &Register,
        cert: &Certificate,
    ) -> Result<RegisterOk, ErrorCode> {
        let expect = Expect {
            subject: &r.from,
            role: Some(Role::Device),
            now: secs(now),
        };
        if cert.tbs.issuer.as_str() != self.cfg.ca.domain().as_str() {
            return Err(ErrorCode::CERT_INVALID);
        }
        self.trust
            .check(cert, expect)
            .map_err(|e| ErrorCode::from(&CryptoError::Cert(e)))?;
        let remaining = cert.tbs.not_after.0.saturating_sub(secs(now));
        let granted = r.expires.min(self.cfg.policy.max_expires).min(remaining);
        if granted < self.cfg.policy.min_expires {
            return Err(ErrorCode::CERT_EXPIRED);
        }
        self.put_registration(r, cert.clone(), granted, now)
    }

    fn put_registration(
        &mut self,
        r: &Register,
        cert: Certificate,
        granted: u64,
        now: Millis,
    ) -> Result<RegisterOk, ErrorCode> {
        let not_after = secs(now).saturating_add(granted);
        let serial = cert.tbs.serial;
        // KW-REG-010: one write with location, certificate and term, before
        // the answer.
        self.store(StoreWrite::PutRegistration(Registration {
            account: r.from.clone(),
            contact: r.contact,
            cert: cert.clone(),
            not_after,
        }));
        self.emit(ServerEvent::Registered {
            account: r.from.clone(),
            serial,
            not_after,
        });
        Ok(RegisterOk {
            txn: r.txn,
            to: r.from.clone(),
            contact: r.contact,
            expires: granted,
            cert: Some(cert),
            not_after: crate::wire::Time(not_after),
            ext: Extensions::new(),
        })
    }

    /// Revokes a certificate that is still valid (KW-CERT-006).
    fn revoke(&mut self, now: Millis, cert: &Certificate) -> Option<u64> {
        if cert.tbs.not_after.0 < secs(now) {
            return None;
        }
        let issuer = cert.tbs.issuer.clone();
        let serial = cert.tbs.serial;
        self.trust.revoke(issuer.clone(), serial);
        self.store(StoreWrite::Revoke {
            issuer,
            serial,
            until: cert.tbs.not_after.0,
        });
        Some(serial)
    }

    /// KW-REG-015.
    fn deregister(&mut self, now: Millis, account: &Principal) {
        let Some(cert) = self.registrations.get(account).map(|g| g.cert.clone()) else {
            return;
        };
        self.store(StoreWrite::DeleteRegistration(account.clone()));
        let revoked = self.revoke(now, &cert);
        self.emit(ServerEvent::Unregistered {
            account: account.clone(),
            revoked,
        });
    }

    /// KW-REG-016: registrations whose term has ended.
    pub(super) fn expire_registrations(&mut self, now: Millis) {
        let ended: Vec<Principal> = self
            .registrations
            .values()
            .filter(|g| g.not_after < secs(now))
            .map(|g| g.account.clone())
            .collect();
        for account in ended {
            self.deregister(now, &account);
        }
        self.revoked.retain(|_, until| *until >= secs(now));
    }

    /// The registration of a local account, if current.
    pub(super) fn current_registration(
        &self,
        account: &Principal,
        now: Millis,
    ) -> Option<&Registration> {
        self.registrations
            .get(account)
            .filter(|g| g.not_after >= secs(now))
    }
}
