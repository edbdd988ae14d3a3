//! The reading side of F7: an account that may see recordings (a party of
//! them, or an auditor, KW-REC-005) asks a recorder for its listing and
//! its chunks with signed, timed requests (KW-CRYPTO-060, KW-REC-006), and
//! opens the answers, which the recorder sealed for it (KW-REC-011,
//! KW-CRYPTO-071). Sans-IO, as every party: the application carries the
//! datagrams to the recorder's address and hands back what comes from it
//! (KW-FRAME-013), and retransmits a request unanswered with the same
//! bytes (KW-FRAME-011).

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use super::clock::Now;
use crate::crypto::{
    CryptoError, Entropy, Expect, Identity, ReaderBinding, TrustStore, data_ad, listing_ad,
    open_from_recorder, sign_message, unsigned,
};
use crate::wire::{
    Certificate, ErrorCode, Extensions, List, Message, Principal, PublicKey, RecordFetch,
    RecordList, RecordingId, RecordingInfo, Role, SessionId, Time, TxnId, WireError,
    decode_plaintext,
};

/// Most requests waiting for their answers; the oldest is forgotten first.
const WAITING: usize = 64;

/// What an answer of the recorder held, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The recordings the reader may see (`record-listing`).
    Listing(Vec<RecordingInfo>),
    /// One chunk of a recording (`record-data`).
    Chunk {
        /// The recording.
        recording: RecordingId,
        /// The chunk's number.
        index: u64,
        /// Recorded packet `index`: a plaintext frame, or the packet's
        /// ciphertext in ciphertext-and-keys mode.
        data: Vec<u8>,
        /// Whether further chunks follow.
        more: bool,
    },
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No request of this transaction and type is waiting.
    #[error("no request of this transaction is waiting for this answer")]
    Unsolicited,
    /// The recorder refused the request.
    #[error("the recorder refused the request: {0:?}")]
    Refused(ErrorCode),
    /// The answer does not open (KW-CRYPTO-071).
    #[error("the answer does not open: {0}")]
    Crypto(CryptoError),
    /// The opened listing is not a list of recordings.
    #[error("the listing is malformed: {0}")]
    Listing(WireError),
    /// Not an answer to a reader's request.
    #[error("not an answer to a record-list or record-fetch")]
    NotAnAnswer,
}

impl ReadError {
    /// The protocol's code for it, as errors.md lists them.
    pub fn code(&self) -> ErrorCode {
        match self {
            ReadError::Unsolicited | ReadError::NotAnAnswer => ErrorCode::UNKNOWN_MESSAGE_TYPE,
            ReadError::Refused(code) => *code,
            ReadError::Crypto(e) => ErrorCode::from(e),
            ReadError::Listing(e) => ErrorCode::from(e),
        }
    }
}

/// See the module documentation.
pub struct RecordingReader {
    identity: Identity,
    recorder: Principal,
    recorder_kx: PublicKey,
    /// Requests waiting for their answers, with their encoding, which an
    /// answer's key is bound to (KW-CRYPTO-070).
    waiting: BTreeMap<TxnId, Vec<u8>>,
    order: VecDeque<TxnId>,
}

impl core::fmt::Debug for RecordingReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "RecordingReader({} of {}, {} waiting)",
            self.identity.account,
            self.recorder,
            self.waiting.len()
        )
    }
}

impl RecordingReader {
    /// A reader for `identity` of the recorder whose certificate is
    /// `recorder`, which it confirms now with role recorder (KW-CERT-002,
    /// KW-CRYPTO-071): its X25519 key is the one answers are sealed with.
    pub fn new(
        identity: Identity,
        recorder: &Certificate,
        trust: &TrustStore,
        now: Now,
    ) -> Result<Self, CryptoError> {
        let expect = Expect {
            subject: &recorder.tbs.subject,
            role: Some(Role::Recorder),
            now: now.wall_secs(),
        };
        trust.check(recorder, expect).map_err(CryptoError::Cert)?;
        Ok(Self {
            identity,
            recorder: recorder.tbs.subject.clone(),
            recorder_kx: recorder.tbs.kx_key,
            waiting: BTreeMap::new(),
            order: VecDeque::new(),
        })
    }

    /// The recorder it reads from.
    pub fn recorder(&self) -> &Principal {
        &self.recorder
    }

    /// A signed `record-list`, optionally of one session's recordings.
    pub fn list(
        &mut self,
        now: Now,
        session: Option<SessionId>,
        rng: &mut impl Entropy,
    ) -> Message {
        let message = Message::RecordList(RecordList {
            txn: TxnId(rng.array()),
            from: self.identity.account.clone(),
            session,
            sig: unsigned(),
            time: Time(now.wall_secs()),
            ext: Extensions::new(),
        });
        self.sign_and_wait(message)
    }

    /// A signed `record-fetch` of chunk `index` of `recording`.
    pub fn fetch(
        &mut self,
        now: Now,
        recording: RecordingId,
        index: u64,
        rng: &mut impl Entropy,
    ) -> Message {
        let message = Message::RecordFetch(RecordFetch {
            txn: TxnId(rng.array()),
            from: self.identity.account.clone(),
            sig: unsigned(),
            time: Time(now.wall_secs()),
            recording,
            index,
            ext: Extensions::new(),
        });
        self.sign_and_wait(message)
    }

    fn sign_and_wait(&mut self, mut message: Message) -> Message {
        // KW-CRYPTO-060: a `record-*` request always has a `sig` to fill.
        let _ = sign_message(&mut message, &self.identity.signing);
        let txn = match &message {
            Message::RecordList(m) => m.txn,
            Message::RecordFetch(m) => m.txn,
            _ => return message,
        };
        if self.order.len() >= WAITING
            && let Some(oldest) = self.order.pop_front()
        {
            self.waiting.remove(&oldest);
        }
        self.waiting.insert(txn, message.encode());
        self.order.push_back(txn);
        message
    }

    /// Opens the recorder's answer to a request waiting for it
    /// (KW-CRYPTO-071); the request no longer waits, whatever the answer.
    /// An answer that does not open leaves it waiting, so that a forged
    /// one cannot take the place of the recorder's.
    pub fn open(&mut self, answer: &Message) -> Result<Read, ReadError> {
        let txn = match answer {
            Message::RecordListing(m) => m.txn,
            Message::RecordData(m) => m.txn,
            Message::Error(e) => e.txn.ok_or(ReadError::NotAnAnswer)?,
            _ => return Err(ReadError::NotAnAnswer),
        };
        let request = self.waiting.get(&txn).ok_or(ReadError::Unsolicited)?;
        let binding = ReaderBinding {
            recorder: &self.recorder,
            recorder_kx: &self.recorder_kx,
            requester: &self.identity.account,
            requester_kx: &self.identity.kx.public(),
            request,
        };
        let read = match answer {
            Message::RecordListing(m) => {
                let plaintext = open_from_recorder(
                    &binding,
                    &self.identity.kx,
                    &m.epk,
                    &listing_ad(&m.txn),
                    &m.recordings.0,
                )
                .map_err(ReadError::Crypto)?;
                let list: List<RecordingInfo, 0, 64> =
                    decode_plaintext(&plaintext).map_err(ReadError::Listing)?;
                Read::Listing(list.iter().cloned().collect())
            }
            Message::RecordData(m) => {
                let ad = data_ad(&m.txn, &m.recording, m.index, m.more);
                let data = open_from_recorder(&binding, &self.identity.kx, &m.epk, &ad, &m.chunk.0)
                    .map_err(ReadError::Crypto)?;
                Read::Chunk {
                    recording: m.recording,
                    index: m.index,
                    data,
                    more: m.more,
                }
            }
            // An unsigned error cannot be told from a forged one
            // (KW-FRAME-014): it ends the wait for this request only.
            Message::Error(e) => {
                self.forget(&txn);
                return Err(ReadError::Refused(e.code));
            }
            _ => return Err(ReadError::NotAnAnswer),
        };
        self.forget(&txn);
        Ok(read)
    }

    fn forget(&mut self, txn: &TxnId) {
        self.waiting.remove(txn);
        self.order.retain(|t| t != txn);
    }
}
