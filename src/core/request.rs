//! What every party that answers requests (device, server, recorder) does
//! the same way: finding a request's transaction, and the `error` that
//! refuses one (KW-ERR-001). The check of a request against those received
//! before is `ServerTxns::admit` (transact.rs), the decoding of a datagram
//! `DecodeRejects::decode` (reject.rs).

use crate::wire::{ErrorCode, ErrorResponse, Extensions, Message, MsgType, TxnId};

/// The transaction of a request.
pub(crate) fn request_txn(m: &Message) -> Option<TxnId> {
    match m {
        Message::Register(r) => Some(r.txn),
        Message::CertQuery(r) => Some(r.txn),
        Message::Offer(r) => Some(r.txn),
        Message::Ack(r) => Some(r.txn),
        Message::Info(r) => Some(r.txn),
        Message::Rekey(r) => Some(r.txn),
        Message::Bye(r) => Some(r.txn),
        Message::PinholeOpen(r) => Some(r.txn),
        Message::PinholeNarrow(r) => Some(r.txn),
        Message::PinholeClose(r) => Some(r.txn),
        Message::MediaCopy(r) => Some(r.txn),
        Message::RecordStart(r) => Some(r.txn),
        Message::RecordKey(r) => Some(r.txn),
        Message::RecordStop(r) => Some(r.txn),
        Message::RecordList(r) => Some(r.txn),
        Message::RecordFetch(r) => Some(r.txn),
        _ => None,
    }
}

/// An `error` answering a request.
pub(crate) fn error_response(txn: TxnId, re: MsgType, code: ErrorCode) -> Message {
    Message::Error(ErrorResponse {
        txn: Some(txn),
        re: Some(re),
        code,
        reason: None,
        offset: None,
        min_expires: None,
        retry_after: None,
        ext: Extensions::new(),
    })
}
