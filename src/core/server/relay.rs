//! Routing (F8) and certificate queries (F3): next hops, `via` and `hops`,
//! forwarding of requests and the return of their responses.

use super::{Outcome, Pending, Server, ServerEvent};
use crate::core::Addr;
use crate::core::clock::Now;
use crate::core::error::ProtocolError;
use crate::core::request::{error_response, request_txn};
use crate::core::transport::{Proto, ReplyTo, Transmit};
use crate::crypto::{CryptoError, Entropy, Expect, attest};
use crate::wire::{
    CertNotify, CertQuery, ErrorCode, Extensions, Hops, Message, MsgType, Principal, SessionId,
    TxnId, Via,
};

/// What a response to a forwarded request is matched against.
pub(super) struct RelayContext<'a> {
    pub prev: ReplyTo,
    pub re: MsgType,
    pub requester: &'a Principal,
    pub session: Option<SessionId>,
    pub target: Option<&'a Principal>,
}

/// Where a request goes next.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hop {
    pub addr: Addr,
    pub proto: Proto,
    pub via: Option<Via>,
    pub hops: Hops,
}

impl Server {
    fn own_domain(&self) -> &str {
        self.cfg.ca.domain().as_str()
    }

    pub(super) fn is_local(&self, account: &Principal) -> bool {
        account.domain() == self.own_domain()
    }

    /// KW-ROUTE-001..003: loop and hop checks, then the next hop, with this
    /// server appended to `via` and `hops` decremented.
    pub(super) fn next_hop(
        &self,
        now: Now,
        to: &Principal,
        via: Option<&Via>,
        hops: Hops,
    ) -> Result<Hop, ErrorCode> {
        let me = self.account();
        if via.is_some_and(|v| v.iter().any(|p| p == me)) {
            return Err(ErrorCode::LOOP_DETECTED);
        }
        if hops.0 == 0 {
            return Err(ErrorCode::HOP_LIMIT_EXCEEDED);
        }
        let (addr, proto) = if self.is_local(to) {
            // An account this domain does not have is not registered: the
            // answer does not tell which accounts exist (KW-SM-028).
            self.current_registration(to, now)
                .map(|g| (g.contact.addr, Proto::of(g.contact.transport)))
                .ok_or(ErrorCode::NOT_REGISTERED)?
        } else {
            self.cfg
                .directory
                .next_hop(to.domain())
                .map(|r| (r.addr, Proto::of(r.transport)))
                .ok_or(ErrorCode::UNKNOWN_DOMAIN)?
        };
        let mut list: Vec<Principal> = via.map(|v| v.0.clone()).unwrap_or_default();
        list.push(me.clone());
        let via = Via::new(list).ok_or(ErrorCode::HOP_LIMIT_EXCEEDED)?;
        Ok(Hop {
            addr,
            proto,
            via: Some(via),
            hops: Hops::new(hops.0.saturating_sub(1)).unwrap_or_default(),
        })
    }

    /// Sends a request on toward its destination and keeps the transaction
    /// to return the response (KW-ROUTE-004).
    /// The caller has checked [`Server::can_forward`] first.
    pub(super) fn forward(
        &mut self,
        now: Now,
        prev: ReplyTo,
        hop: &Hop,
        message: Message,
        requester: Principal,
        session: Option<SessionId>,
    ) -> Outcome {
        let forwarded = self.start_forward(now, prev, hop, message, requester, session)?;
        self.out.transmit(forwarded);
        Ok(())
    }

    /// [`Server::forward`] without the transmit: the transaction is kept
    /// (its place among those outstanding taken) and what to send
    /// returned, for a caller that has more to do first.
    pub(super) fn start_forward(
        &mut self,
        now: Now,
        prev: ReplyTo,
        hop: &Hop,
        message: Message,
        requester: Principal,
        session: Option<SessionId>,
    ) -> Result<Transmit, ProtocolError> {
        let re = message.msg_type();
        let Some(txn) = request_txn(&message) else {
            return Err(ProtocolError::Unsolicited(re));
        };
        let target = match &message {
            Message::CertQuery(q) => Some(q.target.clone()),
            _ => None,
        };
        let pending = Pending::Relay {
            prev,
            re,
            requester,
            session,
            target,
        };
        let transmit = self.transmit_to(hop.proto, hop.addr, message);
        if !self.start_request(now, txn, transmit.clone(), pending) {
            self.reject(now, prev, txn, re, ErrorCode::BUSY)?;
        }
        Ok(transmit)
    }

    /// A message from this server's address.
    pub(super) fn transmit_to(&self, proto: Proto, to: Addr, message: Message) -> Transmit {
        Transmit {
            proto,
            source: self.cfg.addr,
            destination: to,
            message,
        }
    }

    /// KW-QUERY-002..005.
    pub(super) fn on_cert_query(&mut self, now: Now, from: ReplyTo, q: CertQuery) -> Outcome {
        let reject = |this: &mut Self, code: ErrorCode| {
            this.reject(now, from, q.txn, MsgType::CertQuery, code)
        };
        if !self.is_local(&q.target) {
            // KW-QUERY-004: forward to the target's domain.
            return match self
                .next_hop(now, &q.target, q.via.as_ref(), q.hops)
                .and_then(|hop| self.can_forward(&q.txn).map(|()| hop))
            {
                Ok(hop) => {
                    let forwarded = Message::CertQuery(CertQuery {
                        via: hop.via.clone(),
                        hops: hop.hops,
                        ..q.clone()
                    });
                    self.forward(now, from, &hop, forwarded, q.from.clone(), None)
                }
                Err(code) => reject(self, code),
            };
        }
        // KW-QUERY-003: own domain.
        match self.local_certificate(now, &q.target) {
            Ok(cert) => {
                // KW-QUERY-007: attested for a device of this domain, which
                // cannot tell a revoked certificate from its anchor alone;
                // another domain's server attests it for its own device.
                let attestation = self.is_local(&q.from).then(|| {
                    attest(
                        self.account(),
                        &self.cfg.identity.signing,
                        &self.cfg.cert,
                        &cert,
                        &q.from,
                        now.wall_secs(),
                    )
                });
                self.event(ServerEvent::CertificateServed {
                    account: q.target.clone(),
                    attested: attestation.is_some(),
                });
                let notify = Message::CertNotify(CertNotify {
                    txn: q.txn,
                    to: q.from.clone(),
                    cert,
                    target: q.target.clone(),
                    attestation,
                    ext: Extensions::new(),
                });
                self.respond(now, from, q.txn, notify);
                Ok(())
            }
            Err(code) => reject(self, code),
        }
    }

    /// The certificate of an account of this domain, confirmed valid now.
    fn local_certificate(
        &self,
        now: Now,
        target: &Principal,
    ) -> Result<crate::wire::Certificate, ErrorCode> {
        if target == self.account() {
            return Ok(self.cfg.cert.clone());
        }
        // An account this domain does not have has no certificate either:
        // one answer for both, so that a query does not tell which
        // accounts exist (KW-QUERY-005, KW-SM-028).
        let registration = self
            .current_registration(target, now)
            .ok_or(ErrorCode::CERT_NOT_FOUND)?;
        let cert = registration.cert.clone();
        self.trust
            .check(
                &cert,
                Expect {
                    subject: target,
                    role: None,
                    now: now.wall_secs(),
                },
            )
            .map_err(|e| ErrorCode::from(&CryptoError::Cert(e)))?;
        Ok(cert)
    }

    /// A response to a request this server forwarded: processed where the
    /// server has a part in it, then sent to the hop before (KW-ROUTE-004).
    pub(super) fn relay_response(
        &mut self,
        now: Now,
        ctx: RelayContext<'_>,
        response: Message,
        rng: &mut impl Entropy,
    ) -> Outcome {
        let RelayContext {
            prev,
            re,
            requester,
            session,
            target,
        } = ctx;
        let Some(txn) = match_txn_opt(&response) else {
            return Err(ProtocolError::Unsolicited(response.msg_type()));
        };
        let mut outcome = Ok(());
        let refused_answer = match &response {
            Message::Answer(a) => self.own_certificate_refused(now, a.cert.as_ref(), &a.from),
            _ => None,
        };
        let response = match response {
            Message::CertNotify(n) => match self.attest_for(now, requester, target, n) {
                Ok(n) => Message::CertNotify(n),
                Err(code) => {
                    // The requester learns the query failed (KW-QUERY-004).
                    self.event(ServerEvent::Rejected(re, code));
                    outcome = Err(ProtocolError::BadResponse {
                        re: MsgType::CertNotify,
                        code,
                    });
                    error_response(txn, re, code)
                }
            },
            // KW-CERT-006: a certificate of this domain this server has
            // revoked is not carried on: the offer fails with its code.
            Message::Answer(_) if refused_answer.is_some() => {
                let code = refused_answer.unwrap_or(ErrorCode::CERT_INVALID);
                if let Some(s) = session {
                    self.end_session(now, s, super::SessionEnd::Failed, rng);
                }
                self.event(ServerEvent::Rejected(MsgType::Answer, code));
                outcome = Err(ProtocolError::BadResponse {
                    re: MsgType::Answer,
                    code,
                });
                error_response(txn, re, code)
            }
            // Read only if it answers the session the offer was for; the
            // server relays it itself, once its firewall is ready
            // (KW-SM-026).
            Message::Answer(a) => match session {
                Some(s) if s == a.session && self.sessions.contains_key(&s) => {
                    self.on_answer(now, prev, a, rng);
                    return outcome;
                }
                _ => Message::Answer(self.sign_unfollowed(now, a, rng)),
            },
            Message::Error(e) => {
                if let (MsgType::Offer, Some(s)) = (re, session) {
                    self.end_session(now, s, super::SessionEnd::Failed, rng);
                }
                Message::Error(e)
            }
            other => other,
        };
        self.respond(now, prev, txn, response);
        outcome
    }

    /// KW-QUERY-004, KW-CERT-005: a certificate from another domain,
    /// confirmed with this server's anchors and attested for a device of
    /// its own domain; relayed unchanged to another server.
    fn attest_for(
        &mut self,
        now: Now,
        requester: &Principal,
        target: Option<&Principal>,
        n: CertNotify,
    ) -> Result<CertNotify, ErrorCode> {
        if !self.is_local(requester) {
            return Ok(n);
        }
        // The certificate of the account asked for, and of no other.
        if Some(&n.target) != target || n.cert.tbs.subject != n.target {
            return Err(ErrorCode::CERT_SUBJECT_MISMATCH);
        }
        self.trust
            .check(
                &n.cert,
                Expect {
                    subject: &n.target,
                    role: None,
                    now: now.wall_secs(),
                },
            )
            .map_err(|e| ErrorCode::from(&CryptoError::Cert(e)))?;
        let attestation = attest(
            self.account(),
            &self.cfg.identity.signing,
            &self.cfg.cert,
            &n.cert,
            requester,
            now.wall_secs(),
        );
        self.event(ServerEvent::CertificateServed {
            account: n.target.clone(),
            attested: true,
        });
        Ok(CertNotify {
            attestation: Some(attestation),
            ..n
        })
    }
}

/// The transaction of a response.
pub(super) fn match_txn_opt(m: &Message) -> Option<TxnId> {
    match m {
        Message::Answer(r) => Some(r.txn),
        Message::Ok(r) => Some(r.txn),
        Message::Error(r) => r.txn,
        Message::CertNotify(r) => Some(r.txn),
        _ => None,
    }
}
