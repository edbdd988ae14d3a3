//! The error code registry (spec/errors.md) and the one mapping from
//! decode errors to codes.

use super::error::{WireError, WireErrorKind};
use super::types::ErrorCode;
use crate::cbor::CborErrorClass;

macro_rules! error_codes {
    ($($(#[$meta:meta])* $name:ident = $code:literal => $spec:literal;)*) => {
        impl ErrorCode {
            $($(#[$meta])* pub const $name: ErrorCode = ErrorCode($code);)*

            /// Every code the spec defines.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The spec name of a defined code.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($code => Some($spec),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// Not well-formed CBOR.
    MALFORMED = 100 => "malformed";
    /// Well-formed but not deterministically encoded.
    NOT_DETERMINISTIC = 101 => "not-deterministic";
    /// Does not match the message schema.
    SCHEMA = 102 => "schema";
    /// A non-negative key the receiver does not know.
    UNKNOWN_CRITICAL_FIELD = 103 => "unknown-critical-field";
    /// A message type the receiver does not know.
    UNKNOWN_MESSAGE_TYPE = 104 => "unknown-message-type";
    /// A protocol version the receiver does not speak.
    UNSUPPORTED_VERSION = 105 => "unsupported-version";
    /// Larger than a size, depth or count limit.
    TOO_LARGE = 106 => "too-large";

    /// The challenge response did not prove the account.
    AUTH_FAILED = 201 => "auth-failed";
    /// The challenge nonce is unknown, expired or used.
    STALE_NONCE = 202 => "stale-nonce";
    /// Proof of possession of a private key failed.
    POP_FAILED = 203 => "pop-failed";
    /// The requested registration term is below the minimum.
    INTERVAL_TOO_BRIEF = 204 => "interval-too-brief";
    /// The target account has no current registration.
    NOT_REGISTERED = 205 => "not-registered";
    /// The account may not do this.
    FORBIDDEN = 206 => "forbidden";

    /// A certificate's signature, issuer or encoding is wrong.
    CERT_INVALID = 300 => "cert-invalid";
    /// A certificate's term has ended.
    CERT_EXPIRED = 301 => "cert-expired";
    /// A certificate's term has not begun.
    CERT_NOT_YET_VALID = 302 => "cert-not-yet-valid";
    /// A certificate has been revoked.
    CERT_REVOKED = 303 => "cert-revoked";
    /// A certificate's subject is not the account it is used for.
    CERT_SUBJECT_MISMATCH = 304 => "cert-subject-mismatch";
    /// No certificate is held for the account.
    CERT_NOT_FOUND = 305 => "cert-not-found";

    /// No such account in the domain.
    UNKNOWN_ACCOUNT = 400 => "unknown-account";
    /// No route to the domain.
    UNKNOWN_DOMAIN = 401 => "unknown-domain";
    /// The message has already passed this server.
    LOOP_DETECTED = 402 => "loop-detected";
    /// The hop limit reached zero.
    HOP_LIMIT_EXCEEDED = 403 => "hop-limit-exceeded";
    /// The next hop did not answer.
    UNREACHABLE = 404 => "unreachable";
    /// Policy forbids this route.
    ROUTE_FORBIDDEN = 405 => "route-forbidden";

    /// No such session.
    UNKNOWN_SESSION = 500 => "unknown-session";
    /// The message is not valid in the session's state.
    BAD_STATE = 501 => "bad-state";
    /// A wrapped key or ciphertext did not decrypt.
    DECRYPT_FAILED = 502 => "decrypt-failed";
    /// A signature did not verify.
    SIGNATURE_INVALID = 503 => "signature-invalid";
    /// A change by a hop without modify permission.
    PERMISSION_DENIED = 504 => "permission-denied";
    /// A sequence number already seen.
    REPLAY = 505 => "replay";
    /// A key epoch that is retired or unknown.
    STALE_EPOCH = 506 => "stale-epoch";
    /// A recipient entry that policy requires is missing.
    RECIPIENT_MISSING = 507 => "recipient-missing";

    /// The firewall could not apply a change.
    FIREWALL_FAILURE = 600 => "firewall-failure";
    /// No such pinhole.
    UNKNOWN_PINHOLE = 601 => "unknown-pinhole";
    /// The requester may not list or fetch this recording.
    RECORDING_FORBIDDEN = 602 => "recording-forbidden";
    /// No such recording.
    UNKNOWN_RECORDING = 603 => "unknown-recording";
    /// A signed request whose `time` is outside the receiver's window
    /// (KW-FW-007): stale, replayed, or from a clock far off.
    STALE_REQUEST = 604 => "stale-request";

    /// The server failed.
    INTERNAL = 900 => "internal";
    /// The server is overloaded; retry after the given time.
    BUSY = 901 => "busy";
    /// A transaction timed out.
    TIMEOUT = 902 => "timeout";
}

impl ErrorCode {
    /// The class: the first digit (1 wire, 2 registration, 3 certificates,
    /// 4 routing, 5 sessions, 6 middleboxes, 9 server).
    pub fn class(self) -> u16 {
        self.0 / 100
    }

    /// The code as a receiver acts on it (KW-ERR-002): a defined code is
    /// itself; an unknown one is the first defined code of its class, or
    /// `internal` when its class has none.
    pub fn understood(self) -> ErrorCode {
        if self.name().is_some() {
            return self;
        }
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| c.class() == self.class())
            .min_by_key(|c| c.0)
            .unwrap_or(ErrorCode::INTERNAL)
    }
}

impl From<&WireError> for ErrorCode {
    /// The code a receiver sends when a message fails to decode
    /// (KW-ERR-003).
    fn from(e: &WireError) -> Self {
        match &e.kind {
            WireErrorKind::Cbor(kind) => match kind.class() {
                CborErrorClass::Malformed => ErrorCode::MALFORMED,
                CborErrorClass::NotDeterministic => ErrorCode::NOT_DETERMINISTIC,
                CborErrorClass::Limit => ErrorCode::TOO_LARGE,
                CborErrorClass::Type => ErrorCode::SCHEMA,
            },
            WireErrorKind::MessageTooLarge { .. } => ErrorCode::TOO_LARGE,
            WireErrorKind::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            WireErrorKind::UnknownMessageType(_) => ErrorCode::UNKNOWN_MESSAGE_TYPE,
            WireErrorKind::UnknownCriticalField(_) => ErrorCode::UNKNOWN_CRITICAL_FIELD,
            WireErrorKind::MissingField { .. }
            | WireErrorKind::BadLength { .. }
            | WireErrorKind::OutOfRange { .. }
            | WireErrorKind::UnknownEnumValue { .. }
            | WireErrorKind::InvalidSyntax { .. }
            | WireErrorKind::FieldCombination(_) => ErrorCode::SCHEMA,
        }
    }
}
