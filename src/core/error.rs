//! Errors of the core: why a state machine refused an input
//! ([`ProtocolError`]), and what an application asked of a device that it
//! cannot do ([`ApiMisuse`]).
//!
//! A refused input changes no state (KW-ERR-004); where the protocol has an answer,
//! the `error` response is already among the outputs when the error is
//! returned, so the caller drains `poll_output` either way.

use thiserror::Error;

use crate::wire::{ErrorCode, Message, MsgType, SessionId, WireError};

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The datagram is not a Keyway message (encoding.md); answered with
    /// an `error` within the rate limit (KW-ERR-003, KW-ERR-005).
    #[error("undecodable datagram: {0}")]
    Undecodable(WireError),
    /// A request this party did not carry out, answered with an `error`
    /// of `code` (KW-ERR-001).
    #[error("{re:?} refused: {}", CodeName(*code))]
    Refused {
        /// The request's type.
        re: MsgType,
        /// The code of the `error` sent.
        code: ErrorCode,
    },
    /// A response that matches no request outstanding to its sender: late,
    /// duplicated, misrouted or forged (KW-FRAME-013). Nothing answers it
    /// (KW-ERR-001).
    #[error("{0:?} matches no request outstanding to its sender")]
    Unsolicited(MsgType),
    /// A response to an outstanding request that fails its checks: the
    /// request has failed with `code`.
    #[error("{re:?} unusable: {}", CodeName(*code))]
    BadResponse {
        /// The response's type.
        re: MsgType,
        /// Why.
        code: ErrorCode,
    },
    /// A message that has no response (`media`, `record-data`) that fails
    /// its checks; or a `challenge` that does not come from the device's
    /// server (KW-REG-019), dropped so that the request it claims to answer
    /// stays outstanding.
    #[error("{re:?} dropped: {}", CodeName(*code))]
    Dropped {
        /// The message's type.
        re: MsgType,
        /// Why.
        code: ErrorCode,
    },
}

impl ProtocolError {
    /// The protocol error code of the refusal: the code of the `error`
    /// sent, or the one that would describe it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Undecodable(e) => ErrorCode::from(e),
            Self::Refused { code, .. }
            | Self::BadResponse { code, .. }
            | Self::Dropped { code, .. } => *code,
            Self::Unsolicited(_) => ErrorCode::BAD_STATE,
        }
    }
}

/// The outcome of a duplicate request answered again from the
/// transaction cache (KW-FRAME-012): refused again if its answer was an
/// `error`.
pub(crate) fn repeated(re: MsgType, answer: &Message) -> Result<(), ProtocolError> {
    match answer {
        Message::Error(e) => Err(ProtocolError::Refused { re, code: e.code }),
        _ => Ok(()),
    }
}

/// What an application asked of a device that it cannot do now; the
/// device is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// No call with this session.
    #[error("no call {0:?}")]
    UnknownSession(SessionId),
    /// The call is not established yet, or is ending.
    #[error("call {0:?} is not established")]
    NotEstablished(SessionId),
    /// The device holds no registration and certificate.
    #[error("not registered")]
    NotRegistered,
    /// Too many certificate queries are outstanding (KW-SM-019).
    #[error("too many certificate queries outstanding")]
    TooManyQueries,
}

/// An error code with its spec name, for messages.
struct CodeName(ErrorCode);

impl core::fmt::Display for CodeName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0.name() {
            Some(name) => write!(f, "{} {name}", self.0.0),
            None => write!(f, "{}", self.0.0),
        }
    }
}
