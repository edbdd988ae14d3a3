//! The adversary (`--adversary`): what it injects and how each injection
//! is judged. It works on typed messages only — captured datagrams are
//! decoded, changed field by field (a fresh `txn`, another certificate, no
//! attestation) and encoded again — and its forgeries of edits are a
//! misbehaving server's (`Faults`), made with the public crypto API; so
//! nothing here depends on how a message is laid out in bytes.
//!
//! Every injected datagram carries an identifier through the network
//! (`What::Deliver`), and is judged by what its target's
//! `handle_receive` returned; a forged edit is judged by what its
//! destination (or a server on the way) did with the body. Each attack is
//! detected (refused with the error its kind expects, or reported as
//! tampering), refused for another stated reason, or accepted — an
//! invariant broken, as is one left without a verdict.
//!
//! This module imports no other module of the simulator.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::core::{Addr, ProtocolError};
use crate::crypto::{Entropy, SeededEntropy, SigningKeyPair};
use crate::wire::{Certificate, ErrorCode, MsgType, Principal, Sealed, SessionId, TxnId};

/// Where datagrams from outside the deployment come from (TEST-NET-3):
/// no party is configured with it.
pub(super) fn outsider() -> Addr {
    Addr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 5060)
}

/// One eligible datagram in `RATE` is attacked (rekeys, rarer, every
/// one): enough of each kind in a run, and calls enough left to attack.
pub(super) const RATE: u64 = 4;

/// The kinds of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Attack {
    /// A request its target accepted, again under a fresh `txn`: an
    /// in-session request or an offer at a device, a `register` or an
    /// offer at a server.
    ReplayedRequest,
    /// A wrapped rekey its target accepted, again under a fresh `txn`:
    /// as it was, or moved to the next epoch with a fresh sequence
    /// number.
    ReplayedRekeyWrapped,
    /// The same with a body-form rekey (KW-CRYPTO-042, KW-SM-016).
    ReplayedRekeyBody,
    /// A server without read-modify permission signs an edit.
    ForgedEdit,
    /// A server forwards a body's edits out of order.
    ReorderedEdits,
    /// A `cert-notify` of another domain's certificate without its
    /// attestation (KW-CERT-005).
    StrippedAttestation,
    /// A `cert-notify` whose attestation another domain's server made,
    /// or whose signature no longer covers it (KW-CRYPTO-012).
    ForgedAttestation,
    /// An offer presenting the caller's certificate that its issuer has
    /// revoked (KW-CERT-006).
    RevokedCertificate,
    /// An offer presenting the caller's certificate whose term has ended
    /// (KW-CERT-002), or a `cert-notify` of an account of the device's
    /// own domain carrying one.
    ExpiredCertificate,
    /// A `cert-notify` of an account of the device's own domain carrying
    /// a certificate of that account its issuer has revoked, under the
    /// attestation of the current one (KW-QUERY-007).
    RevokedOwnCertificate,
    /// A datagram from an address outside the deployment: a response (it
    /// matches no request sent there, KW-FRAME-013), or a copy of a
    /// firewall or recorder command, as it was or under a fresh `txn`.
    UnauthorisedSource,
}

impl Attack {
    /// The name the report uses.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::ReplayedRequest => "replayed-request",
            Self::ReplayedRekeyWrapped => "replayed-rekey-wrapped",
            Self::ReplayedRekeyBody => "replayed-rekey-body",
            Self::ForgedEdit => "forged-edit",
            Self::ReorderedEdits => "reordered-edits",
            Self::StrippedAttestation => "stripped-attestation",
            Self::ForgedAttestation => "forged-attestation",
            Self::RevokedCertificate => "revoked-certificate",
            Self::ExpiredCertificate => "expired-certificate",
            Self::RevokedOwnCertificate => "revoked-own-certificate",
            Self::UnauthorisedSource => "unauthorised-source",
        }
    }

    /// The refusals that show the target saw the attack for what it is.
    pub(super) fn expected(self, re: MsgType) -> &'static [ErrorCode] {
        match self {
            Self::ReplayedRequest => match re {
                // KW-CRYPTO-044: the sequence number was accepted.
                MsgType::Info => &[ErrorCode::REPLAY, ErrorCode::STALE_EPOCH],
                // The bye ended the call (KW-SM-029).
                MsgType::Bye => &[
                    ErrorCode::UNKNOWN_SESSION,
                    ErrorCode::REPLAY,
                    ErrorCode::STALE_EPOCH,
                ],
                // KW-SM-017: a session is offered once.
                MsgType::Offer => &[ErrorCode::BAD_STATE],
                // KW-SM-007: the nonce is spent; KW-CRYPTO-021: the proof
                // covers the txn.
                MsgType::Register => &[ErrorCode::STALE_NONCE, ErrorCode::AUTH_FAILED],
                _ => &[],
            },
            // KW-CRYPTO-044, KW-CRYPTO-042, KW-SM-016.
            Self::ReplayedRekeyWrapped | Self::ReplayedRekeyBody => &[
                ErrorCode::STALE_EPOCH,
                ErrorCode::REPLAY,
                ErrorCode::DECRYPT_FAILED,
                ErrorCode::SIGNATURE_INVALID,
                ErrorCode::PERMISSION_DENIED,
            ],
            // KW-CRYPTO-036 step 3.
            Self::ForgedEdit | Self::ReorderedEdits => {
                &[ErrorCode::PERMISSION_DENIED, ErrorCode::SIGNATURE_INVALID]
            }
            // KW-CRYPTO-012, KW-CERT-005.
            Self::StrippedAttestation | Self::ForgedAttestation => &[
                ErrorCode::CERT_INVALID,
                ErrorCode::CERT_NOT_FOUND,
                ErrorCode::SIGNATURE_INVALID,
            ],
            Self::RevokedCertificate => &[ErrorCode::CERT_REVOKED],
            // KW-QUERY-007: a notified certificate in place of the one
            // its server attested fails the attestation's signature.
            Self::RevokedOwnCertificate => &[ErrorCode::SIGNATURE_INVALID],
            Self::ExpiredCertificate if re == MsgType::CertNotify => {
                &[ErrorCode::SIGNATURE_INVALID]
            }
            Self::ExpiredCertificate => &[ErrorCode::CERT_EXPIRED],
            // KW-FW-005, KW-FW-007, KW-CRYPTO-060.
            Self::UnauthorisedSource => &[
                ErrorCode::SIGNATURE_INVALID,
                ErrorCode::FORBIDDEN,
                ErrorCode::STALE_REQUEST,
            ],
        }
    }
}

/// The name of an error code.
pub(super) fn code_name(code: ErrorCode) -> String {
    code.name()
        .map_or_else(|| code.0.to_string(), str::to_string)
}

/// What became of an attack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Refused with an error its kind expects.
    Detected(String),
    /// Refused for another reason.
    Refused(String),
    /// Taken.
    Accepted,
}

/// Judges what the target of an injected datagram of `kind` (a message of
/// type `re`) returned.
pub(super) fn judge(kind: Attack, re: MsgType, outcome: &Result<(), ProtocolError>) -> Verdict {
    match outcome {
        Ok(()) => Verdict::Accepted,
        // KW-FRAME-013: a response is taken only from where its request
        // went.
        Err(ProtocolError::Unsolicited(t)) if kind == Attack::UnauthorisedSource => {
            Verdict::Detected(format!("unsolicited {t:?}"))
        }
        Err(ProtocolError::Unsolicited(t)) => {
            Verdict::Refused(format!("{t:?} matched no request outstanding"))
        }
        Err(e) if kind.expected(re).contains(&e.code()) => Verdict::Detected(code_name(e.code())),
        Err(e) => Verdict::Refused(format!("{re:?} refused: {}", code_name(e.code()))),
    }
}

/// An injected datagram on its way.
#[derive(Debug, Clone)]
pub(super) struct Injected {
    pub(super) kind: Attack,
    pub(super) re: MsgType,
    /// Whether a refusal may change its target: a response that fails its
    /// checks fails the request it answers. A refused request changes
    /// nothing (KW-ERR-004).
    pub(super) may_change: bool,
    /// A copy of a command its target carried out, as it was: carrying it
    /// out again is idempotent (KW-FW-008), if it changes nothing.
    pub(super) verbatim: bool,
}

/// A body a misbehaving server forged, on its way to its destination.
#[derive(Debug, Clone)]
pub(super) struct Forged {
    pub(super) kind: Attack,
    /// The device the body is for.
    pub(super) destination: usize,
    /// The body, once the server sent it.
    pub(super) body: Option<Sealed>,
    /// The `txn` of the message that brought it to its destination.
    pub(super) delivered: Option<TxnId>,
    pub(super) resolved: bool,
}

/// Another domain's server, whose attestations no device may take.
#[derive(Clone)]
pub(super) struct Stranger {
    pub(super) account: Principal,
    pub(super) key: SigningKeyPair,
    pub(super) cert: Certificate,
}

/// The adversary's state.
pub(super) struct Adversary {
    rng: SeededEntropy,
    next: u64,
    turn: u64,
    /// Injected datagrams not yet delivered, by identifier.
    pub(super) injected: BTreeMap<u64, Injected>,
    /// Forged bodies, by session.
    pub(super) forged: BTreeMap<SessionId, Forged>,
    /// Every certificate issued to each account, from `register-ok`s.
    pub(super) certs: BTreeMap<Principal, Vec<Certificate>>,
    pub(super) stranger: Option<Stranger>,
    /// The server that forges edits.
    pub(super) forger: Option<usize>,
    /// The receiving epoch of each device's calls, as its events tell.
    pub(super) recv_epochs: BTreeMap<(usize, SessionId), u64>,
}

impl Adversary {
    pub(super) fn new(seed: u64, stranger: Option<Stranger>, forger: Option<usize>) -> Self {
        Self {
            rng: SeededEntropy::from_label(&format!("keyway sim adversary {seed}")),
            next: 0,
            turn: 0,
            injected: BTreeMap::new(),
            forged: BTreeMap::new(),
            certs: BTreeMap::new(),
            stranger,
            forger,
            recv_epochs: BTreeMap::new(),
        }
    }

    /// Whether to attack an eligible datagram: one in `n`.
    pub(super) fn one_in(&mut self, n: u64) -> bool {
        u64::from_le_bytes(self.rng.array()) % n.max(1) == 0
    }

    /// A uniform integer in `0..n`.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        u64::from_le_bytes(self.rng.array()) % n.max(1)
    }

    /// Alternates between variants: 0, 1, 0, 1, …
    pub(super) fn alternate(&mut self) -> u64 {
        self.turn = self.turn.wrapping_add(1);
        self.turn % 2
    }

    pub(super) fn fresh_txn(&mut self) -> TxnId {
        TxnId(self.rng.array())
    }

    /// Records an injection; its identifier.
    pub(super) fn inject(&mut self, injected: Injected) -> u64 {
        self.next += 1;
        self.injected.insert(self.next, injected);
        self.next
    }

    /// Keeps a certificate issued to its subject.
    pub(super) fn issued(&mut self, cert: &Certificate) {
        let held = self.certs.entry(cert.tbs.subject.clone()).or_default();
        if !held.iter().any(|c| c.tbs.serial == cert.tbs.serial) {
            held.push(cert.clone());
        }
    }
}
