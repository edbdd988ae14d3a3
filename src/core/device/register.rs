//! Registration (F1, F2): a `register` with a new key pair's certificate
//! request or with the certificate held, the answer to the server's
//! challenge (proof of the provisioned secret, and of the key-exchange key
//! for a new certificate), and the checks of `register-ok`: the
//! certificate is the device's, from its anchor, for the term granted
//! (KW-REG-008, KW-REG-009, KW-REG-012). A refresh that fails is tried
//! again before the term ends (KW-SM-021); a term that ends without one
//! lapses (KW-REG-016).

use super::{Device, DeviceEvent, Outcome, Pending};
use crate::core::error::ProtocolError;
use crate::core::{Millis, Now};
use crate::crypto::{Entropy, Expect, Identity, KxKeyPair, register};
use crate::wire::{
    AuthResponse, CertRequest, Certificate, ErrorCode, Extensions, Message, MsgType, Register,
    Role, TxnId,
};

/// Registration progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RegState {
    Idle,
    /// A first registration in progress.
    Pending,
    Registered {
        not_after: u64,
    },
    /// Registered, with a refresh or de-registration in progress.
    Renewing {
        not_after: u64,
    },
}

/// Bounds of the wait before a failed refresh is tried again (KW-SM-021).
const REFRESH_RETRY_MIN: Millis = 1_000;
const REFRESH_RETRY_MAX: Millis = 60_000;

impl Device {
    pub(super) fn register(&mut self, now: Now, with_cert: bool, rng: &mut impl Entropy) {
        // KW-REG-001: the key pairs are made here, once.
        let identity = match &self.identity {
            Some(i) => i.clone(),
            None => {
                let i = Identity::generate(self.cfg.account.clone(), rng);
                self.identity = Some(i.clone());
                i
            }
        };
        let (csr, cert): (Option<CertRequest>, Option<Certificate>) = match (&self.cert, with_cert)
        {
            (Some(c), true) => (None, Some(c.clone())),
            _ => (Some(register::make_csr(&identity)), None),
        };
        let request = Register {
            txn: TxnId(rng.array()),
            from: self.cfg.account.clone(),
            contact: self.cfg.contact,
            expires: self.cfg.expires,
            csr,
            cert,
            auth: None,
            ext: Extensions::new(),
        };
        self.send_register(now, request);
    }

    pub(super) fn deregister(&mut self, now: Now, rng: &mut impl Entropy) {
        let request = Register {
            txn: TxnId(rng.array()),
            from: self.cfg.account.clone(),
            contact: self.cfg.contact,
            expires: 0,
            csr: None,
            cert: None,
            auth: None,
            ext: Extensions::new(),
        };
        self.send_register(now, request);
    }

    pub(super) fn send_register(&mut self, now: Now, request: Register) {
        self.send_register_again(now, request, false);
    }

    /// Sends a `register`; `started_over` when it starts an attempt over
    /// after its challenge's nonce was lost (a server restart, KW-SM-025).
    pub(super) fn send_register_again(&mut self, now: Now, request: Register, started_over: bool) {
        self.reg = match self.reg {
            RegState::Registered { not_after } | RegState::Renewing { not_after } => {
                RegState::Renewing { not_after }
            }
            RegState::Idle | RegState::Pending => RegState::Pending,
        };
        self.refresh_at = None;
        let txn = request.txn;
        let pending = Pending::Register {
            request: Box::new(request.clone()),
            started_over,
            verifier: None,
        };
        self.request(now, txn, Message::Register(request), pending);
    }

    /// A registration attempt failed. A refresh that fails leaves the
    /// registration as it was and is tried again before the term ends
    /// (KW-SM-021); a failed de-registration leaves it to lapse.
    pub(super) fn registration_failed(&mut self, now: Now, code: ErrorCode, deregistering: bool) {
        self.emit(DeviceEvent::RegistrationFailed(code));
        match self.reg {
            RegState::Renewing { not_after } if now.wall_secs() <= not_after => {
                self.reg = RegState::Registered { not_after };
                if !deregistering {
                    let left = not_after.saturating_mul(1000).saturating_sub(now.wall);
                    let wait = (left / 4).clamp(REFRESH_RETRY_MIN, REFRESH_RETRY_MAX);
                    self.refresh_at = Some(now.mono.saturating_add(wait));
                }
            }
            RegState::Renewing { .. } | RegState::Pending => {
                self.reg = RegState::Idle;
                self.cert = None;
                self.lapse_at = None;
            }
            RegState::Idle | RegState::Registered { .. } => {}
        }
    }

    /// The registration's term ended without a refresh (KW-REG-016). The
    /// timer is on the monotonic clock; the term is judged by the wall
    /// clock, and one stepped back is waited for again.
    pub(super) fn lapse(&mut self, now: Now) {
        let not_after = match self.reg {
            RegState::Registered { not_after } | RegState::Renewing { not_after } => not_after,
            RegState::Idle | RegState::Pending => return,
        };
        if now.wall_secs() <= not_after {
            if self.lapse_at.is_some_and(|t| t <= now.mono) {
                self.lapse_at = Some(term_end(now, not_after));
            }
            return;
        }
        self.reg = RegState::Idle;
        self.cert = None;
        self.refresh_at = None;
        self.lapse_at = None;
        self.emit(DeviceEvent::RegistrationExpired);
    }

    pub(super) fn on_challenge(
        &mut self,
        now: Now,
        challenge: crate::wire::Challenge,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let Some(Pending::Register { .. }) = self.client.context(&challenge.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::Challenge));
        };
        // A challenge for another account answers no register of ours.
        if challenge.to != self.cfg.account {
            return Err(ProtocolError::Unsolicited(MsgType::Challenge));
        }
        // KW-REG-019, KW-CRYPTO-025: only a challenge its server signed is
        // answered. One that fails is dropped, not taken as the server's
        // answer: the register stays outstanding (and is retransmitted),
        // so that a forged challenge neither gets an answer nor ends the
        // attempt, and the server's own challenge is still answered.
        if let Err(e) = register::check_challenge(
            &self.trust,
            &self.cfg.server_account,
            now.wall_secs(),
            &challenge,
        ) {
            let code = ErrorCode::from(&e);
            self.emit(DeviceEvent::Rejected(code));
            return Err(ProtocolError::Dropped {
                re: MsgType::Challenge,
                code,
            });
        }
        let Some((
            _,
            Pending::Register {
                request,
                started_over,
                ..
            },
        )) = self.client.complete(&challenge.txn, self.cfg.server)
        else {
            return Err(ProtocolError::Unsolicited(MsgType::Challenge));
        };
        // Its server's answer, but one the device does not answer: the
        // attempt fails (a refresh leaves the registration as it was,
        // KW-SM-021), and nothing is sent.
        let refuse = |this: &mut Self, e: crate::crypto::CryptoError| {
            let code = ErrorCode::from(&e);
            this.registration_failed(now, code, request.expires == 0);
            Err(ProtocolError::BadResponse {
                re: MsgType::Challenge,
                code,
            })
        };
        // KW-CRYPTO-020, KW-REG-021: iterations within bounds, not below
        // the device's floor, and the salt and iterations it pinned.
        if let Err(e) = register::check_challenge_verifier(
            &challenge,
            self.cfg.policy.min_iterations,
            self.pin.as_ref(),
        ) {
            return refuse(self, e);
        }
        let key = match &self.client_key {
            Some((salt, n, key)) if *salt == challenge.salt && *n == challenge.iterations => {
                key.clone()
            }
            _ => {
                match register::client_key(&self.cfg.secret, &challenge.salt, challenge.iterations)
                {
                    Ok(key) => {
                        self.client_key = Some((challenge.salt, challenge.iterations, key.clone()));
                        key
                    }
                    Err(e) => return refuse(self, e),
                }
            }
        };
        let mut answer = Register {
            txn: TxnId(rng.array()),
            auth: None,
            ..*request
        };
        let message = register::auth_message(&challenge.nonce, &answer);
        // KW-CRYPTO-021, KW-REG-020: a fresh key per answer, whose exchange
        // with the challenge's key masks the proof, so that no one without
        // either private key can test a guess of the secret against it.
        let ephemeral = KxKeyPair::generate(rng);
        let proof = match register::masked_proof(
            &key,
            &message,
            &ephemeral,
            &challenge.kx_challenge,
            &challenge.nonce,
            &self.cfg.account,
        ) {
            Ok(proof) => proof,
            Err(e) => return refuse(self, e),
        };
        let kx_proof = match (&answer.csr, &self.identity) {
            (Some(_), Some(identity)) => register::kx_proof(
                &self.cfg.account,
                &identity.kx,
                &challenge.kx_challenge,
                &challenge.nonce,
                &message,
            )
            .ok(),
            _ => None,
        };
        // KW-REG-022, KW-CRYPTO-026: a registration that keeps a
        // certificate (F2, refresh) proves its signing key.
        let cert_pop = match (&answer.csr, answer.expires, &self.identity) {
            (None, 1.., Some(identity)) => Some(register::cert_pop(&identity.signing, &message)),
            _ => None,
        };
        answer.auth = Some(AuthResponse {
            nonce: challenge.nonce,
            proof,
            kx_proof,
            epk: ephemeral.public(),
            cert_pop,
            ext: Extensions::new(),
        });
        let txn = answer.txn;
        let pending = Pending::Register {
            request: Box::new(answer.clone()),
            started_over,
            verifier: Some((challenge.salt, challenge.iterations)),
        };
        self.request(now, txn, Message::Register(answer), pending);
        Ok(())
    }

    pub(super) fn on_register_ok(&mut self, now: Now, ok: crate::wire::RegisterOk) -> Outcome {
        let unusable = |this: &mut Self, code: ErrorCode| {
            this.registration_failed(now, code, false);
            Err(ProtocolError::BadResponse {
                re: MsgType::RegisterOk,
                code,
            })
        };
        let Some(Pending::Register { .. }) = self.client.context(&ok.txn) else {
            return Err(ProtocolError::Unsolicited(MsgType::RegisterOk));
        };
        let Some((
            _,
            Pending::Register {
                request, verifier, ..
            },
        )) = self.client.complete(&ok.txn, self.cfg.server)
        else {
            return Err(ProtocolError::Unsolicited(MsgType::RegisterOk));
        };
        // KW-REG-021: the server accepted the proof made under this salt and
        // iteration count; later challenges must name the same.
        if verifier.is_some() {
            self.pin = verifier;
        }
        if request.expires == 0 {
            self.reg = RegState::Idle;
            self.cert = None;
            self.lapse_at = None;
            self.emit(DeviceEvent::Deregistered);
            return Ok(());
        }
        let Some(cert) = ok.cert.clone() else {
            return unusable(self, ErrorCode::CERT_NOT_FOUND);
        };
        let identity_matches = self.identity.as_ref().is_some_and(|i| {
            cert.tbs.kx_key == i.kx.public() && cert.tbs.sig_key == i.signing.public()
        });
        let checked = self.trust.check(
            &cert,
            Expect {
                subject: &self.cfg.account,
                role: Some(Role::Device),
                now: now.wall_secs(),
            },
        );
        // KW-REG-008, KW-REG-009, KW-REG-012, KW-SM-009: a registration
        // ends with its certificate, issued now (F1) or confirmed (F2).
        let term_ok = cert.tbs.not_after.0 == ok.not_after.0;
        if checked.is_err() || !identity_matches || !term_ok {
            return unusable(self, ErrorCode::CERT_INVALID);
        }
        let issued = request.csr.is_some();
        self.emit(DeviceEvent::Registered {
            not_after: ok.not_after.0,
            serial: cert.tbs.serial,
            issued,
        });
        self.cert = Some(cert);
        self.reg = RegState::Registered {
            not_after: ok.not_after.0,
        };
        self.lapse_at = Some(term_end(now, ok.not_after.0));
        // KW-REG-014: refresh before the term ends.
        let term_ms = ok.expires.saturating_mul(1000);
        self.refresh_at = Some(
            now.mono
                .saturating_add(term_ms.saturating_mul(self.cfg.policy.refresh_percent) / 100),
        );
        Ok(())
    }
}

/// The monotonic deadline just after a term's last second (in wall
/// seconds).
fn term_end(now: Now, not_after: u64) -> Millis {
    now.mono_at_wall(not_after.saturating_add(1).saturating_mul(1000))
}
