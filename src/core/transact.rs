//! Transactions (transport.md §2): client transactions retransmit over UDP
//! until answered or timed out (KW-FRAME-011); server transactions answer
//! a duplicate request with the response already sent (KW-FRAME-012).
//! Every deadline is indexed, so that the cost of an input does not grow
//! with the number of transactions open.

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;

use super::deadlines::Deadlines;
use super::error::{ProtocolError, repeated};
use super::party::Outbox;
use super::request::{error_response, request_txn};
use super::transport::{ReplyTo, Transmit};
use super::{Addr, Millis};
use crate::wire::{ErrorCode, Message, MsgType, TxnId};

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
    transmit: Transmit,
    /// The next retransmission; `None` over a reliable transport, which is
    /// not retransmitted (KW-FRAME-011).
    next: Option<Millis>,
    interval: Millis,
    deadline: Millis,
    context: C,
}

impl<C> ClientTxn<C> {
    fn wake_at(&self) -> Millis {
        self.next.map_or(self.deadline, |n| n.min(self.deadline))
    }
}

/// What came due on a timeout.
pub(crate) struct Due<C> {
    /// Requests to send again.
    pub resend: Vec<Transmit>,
    /// Requests that timed out, with their context.
    pub timed_out: Vec<(TxnId, C)>,
}

/// Outstanding requests of one party, by transaction.
pub(crate) struct ClientTxns<C> {
    txns: BTreeMap<TxnId, ClientTxn<C>>,
    timers: Deadlines<TxnId>,
    policy: RetransmitPolicy,
}

impl<C> ClientTxns<C> {
    pub fn new(policy: RetransmitPolicy) -> Self {
        Self {
            txns: BTreeMap::new(),
            timers: Deadlines::default(),
            policy,
        }
    }

    /// Tracks a request just sent. A transaction already outstanding is
    /// not replaced: the caller must refuse the second request (someone
    /// reused a `txn` to capture another's response).
    pub fn start(&mut self, now: Millis, txn: TxnId, transmit: Transmit, context: C) -> bool {
        if self.txns.contains_key(&txn) {
            return false;
        }
        let first = self.policy.first;
        let t = ClientTxn {
            next: (!transmit.proto.is_reliable()).then(|| now.saturating_add(first)),
            transmit,
            interval: first,
            deadline: now.saturating_add(self.policy.give_up),
            context,
        };
        self.timers.set(txn, t.wake_at());
        self.txns.insert(txn, t);
        true
    }

    /// The request answered by a response with `txn` from `from`, if
    /// outstanding: a response counts only from the address the request
    /// went to (KW-FRAME-013).
    pub fn complete(&mut self, txn: &TxnId, from: Addr) -> Option<(Transmit, C)> {
        if self
            .txns
            .get(txn)
            .is_none_or(|t| t.transmit.destination != from)
        {
            return None;
        }
        self.timers.remove(txn);
        self.txns.remove(txn).map(|t| (t.transmit, t.context))
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
        let mut due = Due {
            resend: Vec::new(),
            timed_out: Vec::new(),
        };
        let max = self.policy.max_interval;
        for txn in self.timers.take_due(now) {
            let Some(t) = self.txns.get_mut(&txn) else {
                continue;
            };
            if t.deadline <= now {
                if let Some(t) = self.txns.remove(&txn) {
                    due.timed_out.push((txn, t.context));
                }
                continue;
            }
            if t.next.is_some_and(|n| n <= now) {
                due.resend.push(t.transmit.clone());
                t.interval = t.interval.saturating_mul(2).min(max);
                t.next = Some(now.saturating_add(t.interval));
            }
            self.timers.set(txn, t.wake_at());
        }
        due
    }

    /// The earliest retransmission or deadline.
    pub fn next_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }
}

/// How long an answered request's response is kept for duplicates.
pub(crate) const ANSWERED_KEEP: Millis = 64_000;

type TxnKey = (TxnId, Addr);

/// Requests received: answered ones with their response, and those in
/// progress (forwarded, or waiting on something). Both are kept a fixed
/// time, so each is ordered by when it was entered (a queue) and expires
/// from its front.
pub(crate) struct ServerTxns {
    answered: BTreeMap<TxnKey, (Message, Millis)>,
    /// (until, key), in the order entered; an entry whose `until` no longer
    /// matches `answered` was replaced and is skipped.
    answered_order: VecDeque<(Millis, TxnKey)>,
    in_progress: BTreeMap<TxnKey, Millis>,
    progress_order: VecDeque<(Millis, TxnKey)>,
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
            answered_order: VecDeque::new(),
            in_progress: BTreeMap::new(),
            progress_order: VecDeque::new(),
            capacity: capacity.max(1),
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
        self.mark_in_progress(now, key);
        Seen::New
    }

    /// Marks a request in progress (a new one, or one a restarted party
    /// goes on with).
    pub fn mark_in_progress(&mut self, now: Millis, key: TxnKey) {
        while self.in_progress.len() >= self.capacity {
            // Bounded: the oldest entry goes first.
            let Some((since, oldest)) = self.progress_order.pop_front() else {
                break;
            };
            if self.in_progress.get(&oldest) == Some(&since) {
                self.in_progress.remove(&oldest);
            }
        }
        self.in_progress.insert(key, now);
        self.progress_order.push_back((now, key));
    }

    /// The check every party makes of a request received before reading
    /// it: `Continue` with its transaction when it is new (now in
    /// progress); otherwise `Break` with what handling it comes to. A
    /// message without a transaction is a response the party never waits
    /// for (KW-ERR-001): the application is told by `event`, and it is
    /// refused as unsolicited. A duplicate of a request answered is
    /// answered again with the same response, the way it came
    /// (KW-FRAME-012, KW-FRAME-004), and refused again if that was an
    /// `error`; a duplicate of one in progress is ignored.
    pub fn admit<E>(
        &mut self,
        now: Millis,
        from: ReplyTo,
        request: &Message,
        out: &mut Outbox<E>,
        event: impl FnOnce(ErrorCode) -> E,
    ) -> ControlFlow<Result<(), ProtocolError>, TxnId> {
        let re = request.msg_type();
        let Some(txn) = request_txn(request) else {
            out.event(event(ErrorCode::UNKNOWN_MESSAGE_TYPE));
            return ControlFlow::Break(Err(ProtocolError::Unsolicited(re)));
        };
        match self.seen(now, txn, from.peer) {
            Seen::Answered(response) => {
                let outcome = repeated(re, &response);
                out.reply(from, response);
                ControlFlow::Break(outcome)
            }
            Seen::InProgress => ControlFlow::Break(Ok(())),
            Seen::New => ControlFlow::Continue(txn),
        }
    }

    /// Answers a request the way it came (KW-FRAME-004) and keeps the
    /// answer for its duplicates (KW-FRAME-012).
    pub fn respond<E>(
        &mut self,
        now: Millis,
        to: ReplyTo,
        txn: TxnId,
        response: Message,
        out: &mut Outbox<E>,
    ) {
        self.answer(now, txn, to.peer, response.clone());
        out.reply(to, response);
    }

    /// Refuses a request with `code`: `event` told, the `error` answered
    /// and kept for duplicates (KW-ERR-001), and the refusal returned.
    #[allow(clippy::too_many_arguments)]
    pub fn refuse<E>(
        &mut self,
        now: Millis,
        to: ReplyTo,
        txn: TxnId,
        re: MsgType,
        code: ErrorCode,
        out: &mut Outbox<E>,
        event: E,
    ) -> Result<(), ProtocolError> {
        out.event(event);
        self.respond(now, to, txn, error_response(txn, re, code), out);
        Err(ProtocolError::Refused { re, code })
    }

    /// Records the response to a request.
    pub fn answer(&mut self, now: Millis, txn: TxnId, from: Addr, response: Message) {
        let key = (txn, from);
        self.in_progress.remove(&key);
        while self.answered.len() >= self.capacity && !self.answered.contains_key(&key) {
            let Some((until, oldest)) = self.answered_order.pop_front() else {
                break;
            };
            if self.answered.get(&oldest).is_some_and(|(_, u)| *u == until) {
                self.answered.remove(&oldest);
            }
        }
        let until = now.saturating_add(ANSWERED_KEEP);
        self.answered.insert(key, (response, until));
        self.answered_order.push_back((until, key));
    }

    /// Forgets a request in progress that will not be answered.
    pub fn abandon(&mut self, txn: TxnId, from: Addr) {
        self.in_progress.remove(&(txn, from));
    }

    /// Drops responses kept long enough, and stale requests in progress.
    pub fn expire(&mut self, now: Millis) {
        while let Some((until, key)) = self.answered_order.front().copied() {
            if until > now {
                break;
            }
            self.answered_order.pop_front();
            if self.answered.get(&key).is_some_and(|(_, u)| *u == until) {
                self.answered.remove(&key);
            }
        }
        while let Some((since, key)) = self.progress_order.front().copied() {
            if now.saturating_sub(since) < ANSWERED_KEEP {
                break;
            }
            self.progress_order.pop_front();
            if self.in_progress.get(&key) == Some(&since) {
                self.in_progress.remove(&key);
            }
        }
    }

    /// When the next kept response or request in progress expires.
    pub fn next_timeout(&self) -> Option<Millis> {
        let answered = self.answered_order.front().map(|(until, _)| *until);
        let progress = self
            .progress_order
            .front()
            .map(|(since, _)| since.saturating_add(ANSWERED_KEEP));
        [answered, progress].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KW-SM-019: the requests a party holds in progress are bounded; at
    /// the bound the oldest is forgotten first.
    #[test]
    fn requests_in_progress_are_bounded_oldest_first() {
        let mut txns = ServerTxns::new(2);
        let from = Addr::new([192, 0, 2, 9].into(), 5060);
        for n in 1..=3u8 {
            assert!(matches!(
                txns.seen(u64::from(n), TxnId([n; 8]), from),
                Seen::New
            ));
        }
        assert!(matches!(
            txns.seen(4, TxnId([3; 8]), from),
            Seen::InProgress
        ));
        assert!(matches!(txns.seen(5, TxnId([1; 8]), from), Seen::New));
        assert!(matches!(txns.seen(6, TxnId([2; 8]), from), Seen::New));
    }

    /// A request in progress that was never answered is forgotten once
    /// the cache's time has passed: the same request is then new.
    #[test]
    fn a_request_in_progress_is_forgotten_after_the_cache_time() {
        let mut txns = ServerTxns::new(8);
        let from = Addr::new([192, 0, 2, 9].into(), 5060);
        assert!(matches!(txns.seen(0, TxnId([1; 8]), from), Seen::New));
        txns.expire(ANSWERED_KEEP - 1);
        assert!(matches!(
            txns.seen(1, TxnId([1; 8]), from),
            Seen::InProgress
        ));
        txns.expire(ANSWERED_KEEP);
        assert!(matches!(
            txns.seen(ANSWERED_KEEP, TxnId([1; 8]), from),
            Seen::New
        ));
    }

    /// KW-SM-019, KW-FRAME-012: the answers a party keeps for
    /// retransmissions are bounded; at the bound the oldest is forgotten
    /// first, and the one answered again keeps its place.
    #[test]
    fn answers_kept_are_bounded_oldest_first() {
        let mut txns = ServerTxns::new(2);
        let from = Addr::new([192, 0, 2, 9].into(), 5060);
        let ok = |n: u8| {
            Message::Ok(crate::wire::OkResponse {
                txn: TxnId([n; 8]),
                session: None,
                epoch: None,
                re: MsgType::Info,
                pinhole: None,
                recording: None,
                ext: crate::wire::Extensions::new(),
            })
        };
        for n in 1..=3u8 {
            txns.answer(u64::from(n), TxnId([n; 8]), from, ok(n));
        }
        assert!(matches!(
            txns.seen(4, TxnId([3; 8]), from),
            Seen::Answered(_)
        ));
        assert!(matches!(
            txns.seen(5, TxnId([2; 8]), from),
            Seen::Answered(_)
        ));
        assert!(matches!(txns.seen(6, TxnId([1; 8]), from), Seen::New));
    }
}
