//! Transactions (transport.md §2): client transactions retransmit over UDP
//! until answered or timed out (KW-FRAME-011); server transactions answer
//! a duplicate request with the response already sent (KW-FRAME-012).

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;

use super::error::{ProtocolError, repeated};
use super::request::request_txn;
use super::{Addr, Millis, Output};
use crate::wire::{ErrorCode, Message, TxnId};

/// Retransmission timing (KW-FRAME-011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// First retransmission after this long.
    pub first: Millis,
    /// Longest interval between retransmissions.
    pub max_interval: Millis,
    /// Give up after this long.
    pub give_up: Millis,
}

impl Default for RetransmitPolicy {
    fn default() -> Self {
        Self {
            first: 500,
            max_interval: 4000,
            give_up: 32_000,
        }
    }
}

struct ClientTxn<C> {
    to: Addr,
    message: Message,
    next: Millis,
    interval: Millis,
    deadline: Millis,
    context: C,
}

/// What came due on a timeout.
pub(crate) struct Due<C> {
    /// Requests to send again.
    pub resend: Vec<(Addr, Message)>,
    /// Requests that timed out, with their context.
    pub timed_out: Vec<(TxnId, C)>,
}

/// Outstanding requests of one party, by transaction.
pub(crate) struct ClientTxns<C> {
    txns: BTreeMap<TxnId, ClientTxn<C>>,
    policy: RetransmitPolicy,
}

impl<C> ClientTxns<C> {
    pub fn new(policy: RetransmitPolicy) -> Self {
        Self {
            txns: BTreeMap::new(),
            policy,
        }
    }

    /// Tracks a request just sent. A transaction already outstanding is
    /// not replaced: the caller must refuse the second request (someone
    /// reused a `txn` to capture another's response).
    pub fn start(
        &mut self,
        now: Millis,
        txn: TxnId,
        to: Addr,
        message: Message,
        context: C,
    ) -> bool {
        if self.txns.contains_key(&txn) {
            return false;
        }
        self.txns.insert(
            txn,
            ClientTxn {
                to,
                message,
                next: now.saturating_add(self.policy.first),
                interval: self.policy.first,
                deadline: now.saturating_add(self.policy.give_up),
                context,
            },
        );
        true
    }

    /// The request answered by a response with `txn` from `from`, if
    /// outstanding: a response counts only from the address the request
    /// went to (KW-FRAME-013).
    pub fn complete(&mut self, txn: &TxnId, from: Addr) -> Option<(Addr, Message, C)> {
        if self.txns.get(txn).is_none_or(|t| t.to != from) {
            return None;
        }
        self.txns.remove(txn).map(|t| (t.to, t.message, t.context))
    }

    /// Whether `txn` is outstanding.
    pub fn contains(&self, txn: &TxnId) -> bool {
        self.txns.contains_key(txn)
    }

    /// How many requests are outstanding.
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    /// The context of an outstanding request.
    pub fn context(&self, txn: &TxnId) -> Option<&C> {
        self.txns.get(txn).map(|t| &t.context)
    }

    /// Retransmissions and timeouts due at `now`.
    pub fn due(&mut self, now: Millis) -> Due<C> {
        let mut resend = Vec::new();
        let expired: Vec<TxnId> = self
            .txns
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut timed_out = Vec::new();
        for txn in expired {
            if let Some(t) = self.txns.remove(&txn) {
                timed_out.push((txn, t.context));
            }
        }
        let max = self.policy.max_interval;
        for t in self.txns.values_mut() {
            if t.next <= now {
                resend.push((t.to, t.message.clone()));
                t.interval = t.interval.saturating_mul(2).min(max);
                t.next = now.saturating_add(t.interval);
            }
        }
        Due { resend, timed_out }
    }

    /// The earliest retransmission or deadline.
    pub fn next_timeout(&self) -> Option<Millis> {
        self.txns.values().map(|t| t.next.min(t.deadline)).min()
    }
}

/// How long an answered request's response is kept for duplicates.
pub(crate) const ANSWERED_KEEP: Millis = 64_000;

/// Requests received: answered ones with their response, and those in
/// progress (forwarded, or waiting on something).
pub(crate) struct ServerTxns {
    answered: BTreeMap<(TxnId, Addr), (Message, Millis)>,
    in_progress: BTreeMap<(TxnId, Addr), Millis>,
    capacity: usize,
}

/// What to do with a request received.
#[allow(clippy::large_enum_variant)] // built and consumed at once
pub(crate) enum Seen {
    /// First time: process it.
    New,
    /// A duplicate of one answered: send this response again.
    Answered(Message),
    /// A duplicate of one in progress: ignore it.
    InProgress,
}

impl ServerTxns {
    pub fn new(capacity: usize) -> Self {
        Self {
            answered: BTreeMap::new(),
            in_progress: BTreeMap::new(),
            capacity,
        }
    }

    /// Classifies a request; a new one is marked in progress.
    pub fn seen(&mut self, now: Millis, txn: TxnId, from: Addr) -> Seen {
        let key = (txn, from);
        if let Some((response, _)) = self.answered.get(&key) {
            return Seen::Answered(response.clone());
        }
        if self.in_progress.contains_key(&key) {
            return Seen::InProgress;
        }
        if self.in_progress.len() >= self.capacity {
            // Bounded: the oldest entry goes first.
            if let Some(oldest) = self
                .in_progress
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| *k)
            {
                self.in_progress.remove(&oldest);
            }
        }
        self.in_progress.insert(key, now);
        Seen::New
    }

    /// The check every party makes of a request received from `from`
    /// before reading it: `Continue` with its transaction when it is new
    /// (now in progress); otherwise `Break` with what handling it comes to.
    /// A message without a transaction is a response the party never waits
    /// for (KW-ERR-001): the application is told by `event`, and it is
    /// refused as unsolicited. A duplicate of a request answered is
    /// answered again with the same response (KW-FRAME-012), and refused
    /// again if that was an `error`; a duplicate of one in progress is
    /// ignored.
    pub fn admit<E>(
        &mut self,
        now: Millis,
        from: Addr,
        request: &Message,
        outputs: &mut VecDeque<Output<E>>,
        event: impl FnOnce(ErrorCode) -> E,
    ) -> ControlFlow<Result<(), ProtocolError>, TxnId> {
        let re = request.msg_type();
        let Some(txn) = request_txn(request) else {
            outputs.push_back(Output::Event(event(ErrorCode::UNKNOWN_MESSAGE_TYPE)));
            return ControlFlow::Break(Err(ProtocolError::Unsolicited(re)));
        };
        match self.seen(now, txn, from) {
            Seen::Answered(response) => {
                let outcome = repeated(re, &response);
                outputs.push_back(Output::Transmit {
                    to: from,
                    message: response,
                });
                ControlFlow::Break(outcome)
            }
            Seen::InProgress => ControlFlow::Break(Ok(())),
            Seen::New => ControlFlow::Continue(txn),
        }
    }

    /// Records the response to a request.
    pub fn answer(&mut self, now: Millis, txn: TxnId, from: Addr, response: Message) {
        let key = (txn, from);
        self.in_progress.remove(&key);
        if self.answered.len() >= self.capacity {
            if let Some(oldest) = self
                .answered
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.answered.remove(&oldest);
            }
        }
        self.answered
            .insert(key, (response, now.saturating_add(ANSWERED_KEEP)));
    }

    /// Forgets a request in progress that will not be answered.
    pub fn abandon(&mut self, txn: TxnId, from: Addr) {
        self.in_progress.remove(&(txn, from));
    }

    /// Drops responses kept long enough, and stale requests in progress.
    pub fn expire(&mut self, now: Millis) {
        self.answered.retain(|_, (_, until)| *until > now);
        self.in_progress
            .retain(|_, since| now.saturating_sub(*since) < ANSWERED_KEEP);
    }

    /// When the next kept response expires.
    pub fn next_timeout(&self) -> Option<Millis> {
        self.answered.values().map(|(_, until)| *until).min()
    }
}
