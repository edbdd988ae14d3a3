//! Registrar and certificate authority (F1, F2): challenge, proof, issue
//! or confirm, store, answer; de-registration and expiry with revocation.

use super::{Outcome, Server, ServerEvent};
use crate::core::clock::Now;
use crate::core::error::ProtocolError;
use crate::core::store::{Registration, StoreWrite};
use crate::core::transport::ReplyTo;
use crate::crypto::primitives::{hkdf32, hmac_sha256};
use crate::crypto::{CryptoError, Entropy, Expect, KxKeyPair, ct_eq, register};
use crate::wire::{
    Certificate, Challenge, ErrorCode, ErrorResponse, Extensions, Message, MsgType, Nonce,
    Principal, Register, RegisterOk, Role, Time, TxnId,
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
        now: Now,
        from: ReplyTo,
        r: Register,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let reject = |this: &mut Self, code: ErrorCode| {
            this.reject(now, from, r.txn, MsgType::Register, code)
        };
        if r.from.domain() != self.cfg.ca.domain().as_str() {
            return reject(self, ErrorCode::FORBIDDEN);
        }
        // KW-REG-017: a contact only at the address the request came from,
        // so that no device points what others send at a third host.
        if r.contact.addr.ip() != from.peer.ip() {
            return reject(self, ErrorCode::FORBIDDEN);
        }
        // KW-REG-013: checked before any work, with the minimum to retry with.
        if r.expires != 0 && r.expires < self.cfg.policy.min_expires {
            self.event(ServerEvent::Rejected(
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
        // KW-REG-005, KW-REG-018: a nonce this server issued to this
        // account, within its lifetime, not yet spent by a register that
        // passed.
        let issued = self
            .nonce_issued(&auth.nonce, &r.from, now)
            .filter(|_| !self.spent.contains_key(&auth.nonce));
        if issued.is_none() {
            return reject(self, ErrorCode::STALE_NONCE);
        }
        let Some(verifier) = self.cfg.accounts.get(&r.from) else {
            // Decoy challenge of an unknown account: no proof can pass.
            return reject(self, ErrorCode::AUTH_FAILED);
        };
        // KW-CRYPTO-021, KW-REG-020: the proof is masked by the exchange of
        // the device's `epk` with the challenge's key, recomputed from the
        // nonce (KW-CRYPTO-024).
        let kx = self.nonce_kx(&auth.nonce);
        if let Err(e) = register::check_auth(verifier, &auth.nonce, &kx, &r) {
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
                    not_after: Time(now.wall_secs()),
                    ext: Extensions::new(),
                })
            }
            Kind::Issue => self.issue(now, from, &r, &kx, &auth.nonce),
            Kind::Confirm(cert) => self.confirm(now, from, &r, cert, &auth.nonce),
            Kind::Refresh => match self.registrations.get(&r.from).map(|g| g.cert.clone()) {
                Some(cert) => self.confirm(now, from, &r, &cert, &auth.nonce),
                None => Err(ErrorCode::CERT_NOT_FOUND),
            },
        };
        match outcome {
            Ok(ok) => {
                // Spent only now: a register that fails changes nothing
                // (KW-ERR-004), and only one that passed can be replayed.
                self.spend_nonce(now, auth.nonce);
                self.respond(now, from, r.txn, Message::RegisterOk(ok));
                Ok(())
            }
            Err(code) => reject(self, code),
        }
    }

    /// A challenge nonce (KW-REG-018): the second it was issued at (4
    /// bytes), 4 random bytes, and 8 bytes of a MAC of both and the
    /// account under a key only this server holds; nothing is kept until
    /// it is answered.
    fn make_nonce(&self, account: &Principal, issued: u32, random: [u8; 4]) -> Nonce {
        let mut head = [0u8; 8];
        for (slot, byte) in head
            .iter_mut()
            .zip(issued.to_be_bytes().into_iter().chain(random))
        {
            *slot = byte;
        }
        let mac = self.nonce_mac(account, &head);
        let mut nonce = [0u8; 16];
        for (slot, byte) in nonce.iter_mut().zip(head.into_iter().chain(mac)) {
            *slot = byte;
        }
        Nonce(nonce)
    }

    fn nonce_mac(&self, account: &Principal, head: &[u8; 8]) -> [u8; 8] {
        let mut input = Vec::with_capacity(32 + account.as_str().len());
        input.extend_from_slice(b"keyway-v1 nonce");
        input.extend_from_slice(head);
        input.extend_from_slice(account.as_str().as_bytes());
        let full = hmac_sha256(self.nonce_key.expose(), &input);
        let mut mac = [0u8; 8];
        for (slot, byte) in mac.iter_mut().zip(full) {
            *slot = byte;
        }
        mac
    }

    /// When a nonce echoed for `account` was issued, if this server issued
    /// it to that account and its lifetime has not ended.
    fn nonce_issued(&self, nonce: &Nonce, account: &Principal, now: Now) -> Option<u32> {
        let mut head = [0u8; 8];
        for (slot, byte) in head.iter_mut().zip(nonce.0) {
            *slot = byte;
        }
        let mac = self.nonce_mac(account, &head);
        let echoed = nonce.0.get(8..).unwrap_or_default();
        if !ct_eq(&mac, echoed) {
            return None;
        }
        let mut issued = [0u8; 4];
        for (slot, byte) in issued.iter_mut().zip(head) {
            *slot = byte;
        }
        let issued = u32::from_be_bytes(issued);
        let age = now.wall_secs().checked_sub(u64::from(issued))?;
        (age < self.cfg.policy.challenge_secs).then_some(issued)
    }

    /// The X25519 key pair of a challenge's `kx-challenge`, derived from
    /// its nonce, so that nothing is kept for it either (KW-REG-007).
    fn nonce_kx(&self, nonce: &Nonce) -> KxKeyPair {
        KxKeyPair::from_secret(&hkdf32(
            self.nonce_key.expose(),
            &nonce.0,
            b"keyway-v1 challenge kx",
        ))
    }

    /// Spends the nonce of a register that passed, until its lifetime
    /// would have ended, durably (KW-REG-005, KW-SM-025).
    fn spend_nonce(&mut self, now: Now, nonce: Nonce) {
        let lifetime = self.cfg.policy.challenge_secs.saturating_mul(1000);
        let until = now.wall.saturating_add(lifetime);
        self.spent.insert(nonce, until);
        self.spent_ends
            .set(nonce, now.mono.saturating_add(lifetime));
        self.store(StoreWrite::SpendNonce { nonce, until });
    }

    /// KW-REG-004: a challenge with a fresh nonce, the challenge's X25519
    /// key, the server's certificate and signature; a decoy salt for an
    /// account that does not exist, so the answer is the same (KW-SM-008).
    fn challenge(&mut self, now: Now, from: ReplyTo, r: &Register, rng: &mut impl Entropy) {
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
        let wall = u32::try_from(now.wall_secs()).unwrap_or(u32::MAX);
        let nonce = self.make_nonce(&r.from, wall, rng.array());
        // KW-CRYPTO-023: every challenge carries its X25519 key, which keys
        // the mask of the proof (KW-CRYPTO-021) as well as a csr's proof.
        let kx_challenge = self.nonce_kx(&nonce).public();
        let lifetime = self.cfg.policy.challenge_secs;
        let mut challenge = Challenge {
            txn: r.txn,
            to: r.from.clone(),
            sig: crate::crypto::unsigned(),
            expires: lifetime,
            cert: self.cfg.cert.clone(),
            nonce,
            salt,
            iterations,
            kx_challenge,
            ext: Extensions::new(),
        };
        // KW-REG-019, KW-CRYPTO-025: signed, so that the device answers
        // only its server, and no one else chooses its salt, iterations
        // or challenge key.
        register::sign_challenge(&mut challenge, &self.cfg.identity.signing);
        let challenge = Message::Challenge(challenge);
        // Not kept for duplicates: a retransmitted `register` gets a fresh
        // challenge, and only the nonce answered counts (KW-SM-003).
        self.server.abandon(r.txn, from.peer);
        self.out.reply(from, challenge);
    }

    /// F1: check both proofs of possession, issue, store, answer
    /// (KW-REG-007, KW-REG-008, KW-REG-010).
    fn issue(
        &mut self,
        now: Now,
        from: ReplyTo,
        r: &Register,
        kx: &KxKeyPair,
        nonce: &Nonce,
    ) -> Result<RegisterOk, ErrorCode> {
        let csr = r.csr.as_ref().ok_or(ErrorCode::SCHEMA)?;
        register::check_csr(&r.from, csr).map_err(|e| ErrorCode::from(&e))?;
        let Some(proof) = r.auth.as_ref().and_then(|a| a.kx_proof.as_ref()) else {
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
            now.wall_secs(),
            granted,
        )
        .map_err(|e| ErrorCode::from(&e))?;
        self.event(ServerEvent::CertificateIssued {
            account: r.from.clone(),
            serial,
            not_before: cert.tbs.not_before.0,
            not_after: cert.tbs.not_after.0,
        });
        self.next_serial = serial.saturating_add(1);
        self.store(StoreWrite::NextSerial(self.next_serial));
        // The registration replaced ends, and the certificate issued with it.
        if let Some(old) = self.registrations.get(&r.from).map(|g| g.cert.clone()) {
            self.revoke(now, &old);
        }
        self.put_registration(now, from, r, cert, granted)
    }

    /// F2 and refresh: the certificate held must be valid and ours; the
    /// registration ends exactly when it does (KW-REG-009), whatever term
    /// was asked for. A certificate is its registration's (the mission's
    /// rule, KW-REG-008): peers that cached it judge it by its `not-after`
    /// alone, and a revocation reaches only those that ask this server
    /// (KW-CERT-006), so a registration shorter than its certificate would
    /// leave the certificate accepted after the registration ended.
    fn confirm(
        &mut self,
        now: Now,
        from: ReplyTo,
        r: &Register,
        cert: &Certificate,
        nonce: &Nonce,
    ) -> Result<RegisterOk, ErrorCode> {
        let expect = Expect {
            subject: &r.from,
            role: Some(Role::Device),
            now: now.wall_secs(),
        };
        if cert.tbs.issuer.as_str() != self.cfg.ca.domain().as_str() {
            return Err(ErrorCode::CERT_INVALID);
        }
        self.trust
            .check(cert, expect)
            .map_err(|e| ErrorCode::from(&CryptoError::Cert(e)))?;
        // KW-REG-022, KW-CRYPTO-026: whoever keeps a certificate proves it
        // holds its signing key, for this challenge and this request: the
        // account's secret alone does not make a certificate one's own.
        let cert_pop = r.auth.as_ref().and_then(|a| a.cert_pop.as_ref());
        register::check_cert_pop(cert, &register::auth_message(nonce, r), cert_pop)
            .map_err(|e| ErrorCode::from(&e))?;
        // KW-REG-009: the term is the certificate's remaining term, which
        // its issuance bounded (KW-REG-013); too little left to register
        // with is `cert-expired`, and the device asks for a new one (F1).
        let remaining = cert.tbs.not_after.0.saturating_sub(now.wall_secs());
        if remaining < self.cfg.policy.min_expires {
            return Err(ErrorCode::CERT_EXPIRED);
        }
        self.put_registration(now, from, r, cert.clone(), remaining)
    }

    fn put_registration(
        &mut self,
        now: Now,
        from: ReplyTo,
        r: &Register,
        cert: Certificate,
        granted: u64,
    ) -> Result<RegisterOk, ErrorCode> {
        let not_after = now.wall_secs().saturating_add(granted);
        let serial = cert.tbs.serial;
        // KW-REG-010: one write with location, certificate and term, in the
        // group committed before the answer (KW-SM-024).
        self.store(StoreWrite::PutRegistration(Registration {
            account: r.from.clone(),
            contact: r.contact,
            cert: cert.clone(),
            not_after,
            granted,
            answered: Some((r.txn, from.peer)),
        }));
        self.registration_ends
            .set(r.from.clone(), registration_end(now, not_after));
        self.event(ServerEvent::Registered {
            account: r.from.clone(),
            serial,
            not_after,
        });
        Ok(register_ok(
            r.txn, &r.from, r.contact, granted, cert, not_after,
        ))
    }

    /// Revokes a certificate that is still valid (KW-CERT-006), until its
    /// end, after which it is refused as expired and the revocation is
    /// forgotten (in memory and in the store).
    fn revoke(&mut self, now: Now, cert: &Certificate) -> Option<u64> {
        if cert.tbs.not_after.0 < now.wall_secs() {
            return None;
        }
        let issuer = cert.tbs.issuer.clone();
        let serial = cert.tbs.serial;
        let until = cert.tbs.not_after.0;
        self.trust.revoke(issuer.clone(), serial);
        self.revoked.insert((issuer.clone(), serial), until);
        self.revocation_ends
            .set((issuer.clone(), serial), registration_end(now, until));
        self.store(StoreWrite::Revoke {
            issuer,
            serial,
            until,
        });
        Some(serial)
    }

    /// KW-REG-015.
    fn deregister(&mut self, now: Now, account: &Principal) {
        let Some(cert) = self.registrations.get(account).map(|g| g.cert.clone()) else {
            return;
        };
        self.store(StoreWrite::DeleteRegistration(account.clone()));
        self.registration_ends.remove(account);
        let revoked = self.revoke(now, &cert);
        self.event(ServerEvent::Unregistered {
            account: account.clone(),
            revoked,
        });
    }

    /// KW-REG-016: registrations whose term has ended, as their deadlines
    /// say; one whose term the wall clock has not reached after all (it
    /// was stepped back) waits again.
    pub(super) fn expire_registrations(&mut self, now: Now) {
        for account in self.registration_ends.take_due(now.mono) {
            let Some(not_after) = self.registrations.get(&account).map(|g| g.not_after) else {
                continue;
            };
            if not_after < now.wall_secs() {
                self.deregister(now, &account);
            } else {
                self.registration_ends
                    .set(account, registration_end(now, not_after));
            }
        }
    }

    /// The registration of a local account, if current.
    pub(super) fn current_registration(
        &self,
        account: &Principal,
        now: Now,
    ) -> Option<&Registration> {
        self.registrations
            .get(account)
            .filter(|g| g.not_after >= now.wall_secs())
    }
}

/// The monotonic deadline after the last second of a term in wall
/// seconds (terms include their last second, KW-CERT-003).
pub(super) fn registration_end(now: Now, not_after: u64) -> u64 {
    now.mono_at_wall(not_after.saturating_add(1).saturating_mul(1000))
}

/// The `register-ok` of a registration.
pub(super) fn register_ok(
    txn: TxnId,
    account: &Principal,
    contact: crate::wire::Contact,
    granted: u64,
    cert: Certificate,
    not_after: u64,
) -> RegisterOk {
    RegisterOk {
        txn,
        to: account.clone(),
        contact,
        expires: granted,
        cert: Some(cert),
        not_after: Time(not_after),
        ext: Extensions::new(),
    }
}
