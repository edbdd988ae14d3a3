//! The one contract every party keeps with its driver (spec/state-machines.md
//! §1), and the one loop that carries out what a party asks.
//!
//! A party — [`Device`](super::Device), [`Server`](super::Server),
//! [`Recorder`](super::Recorder), [`FirewallAgent`](super::FirewallAgent) —
//! is a value with no clock, socket, store or generator of its own (after
//! str0m and quinn-proto). Its driver feeds it one input at a time:
//! [`Party::handle_receive`] for a message, [`Party::handle_timeout`] when
//! the deadline [`Party::poll_timeout`] gave has come, [`Party::command`]
//! for the application; each with the time ([`Now`]) and a source of
//! randomness. After every input the driver takes [`Party::poll_output`]
//! until it returns `None` and carries the outputs out in order — [`carry`]
//! does it — then waits for the next input or the next deadline.
//!
//! What the run loop must do with outputs:
//! - [`Output::Transmit`]: send the message on the transport, from the
//!   address, to the address it names (KW-FRAME-004);
//! - [`Output::Store`]: one input's writes, one atomic group: commit it,
//!   durably, before carrying out any output after it — those outputs
//!   acknowledge it. If the commit fails, carry out none of them and
//!   restart the party from its store (KW-SM-024, fail-stop): a party's
//!   memory is never ahead of what its store holds in anything a peer
//!   has been told;
//! - [`Output::Event`]: tell the application.
//!
//! An input that is refused returns why ([`ProtocolError`]); an `error`
//! answering it, where the protocol has one, is among the outputs all the
//! same. A command a party cannot carry out returns [`ApiMisuse`] and
//! leaves no output.

use std::collections::VecDeque;

use super::Millis;
use super::clock::Now;
use super::error::{ApiMisuse, ProtocolError};
use super::store::{StoreError, StoreWrite};
use super::transport::{Receive, ReplyTo, Transmit};
use crate::crypto::Entropy;
use crate::wire::Message;

/// What a party asks its driver to do. Messages travel unboxed: each
/// output is moved through a queue once, and most are messages.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output<E> {
    /// Send a message.
    Transmit(Transmit),
    /// Commit these writes, all or none, before carrying out any output
    /// after them (KW-SM-024).
    Store(Vec<StoreWrite>),
    /// Tell the application.
    Event(E),
}

/// A party's side of the run-loop contract (see the module documentation).
pub trait Party {
    /// What the party tells its application.
    type Event;
    /// What its application may ask of it.
    type Command;

    /// A message arrived. `Err` says why it was refused; an `error`
    /// answering it, if the protocol has one, is among the outputs.
    fn handle_receive(
        &mut self,
        now: Now,
        receive: Receive<'_>,
        rng: &mut impl Entropy,
    ) -> Result<(), ProtocolError>;

    /// The deadline [`Party::poll_timeout`] gave has come (calling it
    /// earlier, or more often, does no harm).
    fn handle_timeout(&mut self, now: Now, rng: &mut impl Entropy);

    /// The application asks for something. `Err` says why it cannot be
    /// done now; the party is then unchanged and has no output.
    fn command(
        &mut self,
        now: Now,
        command: Self::Command,
        rng: &mut impl Entropy,
    ) -> Result<(), ApiMisuse>;

    /// The next thing to do, in order; `None` when there is nothing.
    #[must_use = "every output must be carried out, in order"]
    fn poll_output(&mut self) -> Option<Output<Self::Event>>;

    /// When [`Party::handle_timeout`] must next be called, on the
    /// monotonic clock ([`Now::mono`]); `None`: only on an input.
    #[must_use = "the party must be woken at its deadline"]
    fn poll_timeout(&self) -> Option<Millis>;
}

/// A party that has no application commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCommand {}

/// What a driver does with each kind of output.
pub trait Driver<E> {
    /// Sends a message.
    fn transmit(&mut self, transmit: Transmit);
    /// Commits one group of writes, all or none, durably.
    fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError>;
    /// Tells the application.
    fn event(&mut self, event: E);
}

/// Carries out `outputs` in order. A group is committed before anything
/// after it is carried out; when a commit fails, nothing after it is, and
/// the error says that the party must be restarted from its store
/// (KW-SM-024).
pub fn carry<E>(
    outputs: impl IntoIterator<Item = Output<E>>,
    driver: &mut impl Driver<E>,
) -> Result<(), StoreError> {
    for output in outputs {
        match output {
            Output::Transmit(t) => driver.transmit(t),
            Output::Store(group) => driver.commit(&group)?,
            Output::Event(e) => driver.event(e),
        }
    }
    Ok(())
}

/// Takes every output of `party` and [`carry`]s it out.
pub fn drain<P: Party + ?Sized>(
    party: &mut P,
    driver: &mut impl Driver<P::Event>,
) -> Result<(), StoreError> {
    carry(core::iter::from_fn(|| party.poll_output()), driver)
}

/// The output queue every party keeps: transmits, events and one input's
/// store writes, which it hands out as one group placed before everything
/// that input asked for, so that nothing acknowledges a write before the
/// write is durable (KW-SM-001, KW-SM-024).
#[derive(Debug)]
pub(crate) struct Outbox<E> {
    queue: VecDeque<Output<E>>,
    group: Vec<StoreWrite>,
    /// Where the current input's outputs begin in the queue.
    mark: usize,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            group: Vec::new(),
            mark: 0,
        }
    }
}

impl<E> Outbox<E> {
    /// An input begins: its store writes will be committed before any of
    /// its outputs.
    pub fn begin(&mut self) {
        self.mark = self.queue.len();
    }

    /// The input is handled: its writes, if any, become one group ahead
    /// of its other outputs.
    pub fn end(&mut self) {
        if !self.group.is_empty() {
            let group = core::mem::take(&mut self.group);
            let at = self.mark.min(self.queue.len());
            self.queue.insert(at, Output::Store(group));
        }
    }

    /// A write of the current input.
    pub fn store(&mut self, write: StoreWrite) {
        self.group.push(write);
    }

    /// Sends `message`.
    pub fn transmit(&mut self, transmit: Transmit) {
        self.queue.push_back(Output::Transmit(transmit));
    }

    /// Answers a request the way it came.
    pub fn reply(&mut self, to: ReplyTo, message: Message) {
        self.transmit(Transmit::reply(to, message));
    }

    /// Tells the application.
    pub fn event(&mut self, event: E) {
        self.queue.push_back(Output::Event(event));
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<Output<E>> {
        let output = self.queue.pop_front();
        self.mark = self.mark.saturating_sub(usize::from(output.is_some()));
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::StoreWrite;

    #[test]
    fn an_inputs_writes_come_before_its_other_outputs() {
        let mut out: Outbox<u8> = Outbox::default();
        out.begin();
        out.event(1);
        out.end();
        out.begin();
        out.event(2);
        out.store(StoreWrite::NextSerial(5));
        out.event(3);
        out.end();
        let got: Vec<_> = core::iter::from_fn(|| out.poll()).collect();
        assert_eq!(
            got,
            vec![
                Output::Event(1),
                Output::Store(vec![StoreWrite::NextSerial(5)]),
                Output::Event(2),
                Output::Event(3)
            ]
        );
    }

    struct Failing(Vec<String>);
    impl Driver<u8> for Failing {
        fn transmit(&mut self, _: Transmit) {}
        fn commit(&mut self, _: &[StoreWrite]) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("disk full".into()))
        }
        fn event(&mut self, e: u8) {
            self.0.push(format!("event {e}"));
        }
    }

    /// KW-SM-024: nothing after a failed commit is carried out.
    #[test]
    fn kw_sm_024_nothing_after_a_failed_commit_is_carried_out() {
        let outputs = vec![
            Output::Event(1),
            Output::Store(vec![StoreWrite::NextSerial(2)]),
            Output::Event(2),
        ];
        let mut driver = Failing(Vec::new());
        assert!(carry(outputs, &mut driver).is_err());
        assert_eq!(driver.0, vec!["event 1".to_string()]);
    }

    /// A party whose every timeout tells its application the time.
    struct Clockwork(Outbox<u8>);
    impl Party for Clockwork {
        type Event = u8;
        type Command = NoCommand;
        fn handle_receive(
            &mut self,
            _: Now,
            _: Receive<'_>,
            _: &mut impl Entropy,
        ) -> Result<(), ProtocolError> {
            Ok(())
        }
        fn handle_timeout(&mut self, now: Now, _: &mut impl Entropy) {
            self.0.begin();
            self.0.event(u8::try_from(now.mono).unwrap_or(u8::MAX));
            self.0.end();
        }
        fn command(&mut self, _: Now, c: NoCommand, _: &mut impl Entropy) -> Result<(), ApiMisuse> {
            match c {}
        }
        fn poll_output(&mut self) -> Option<Output<u8>> {
            self.0.poll()
        }
        fn poll_timeout(&self) -> Option<Millis> {
            None
        }
    }

    /// `drain` carries out every output of a party, in order, and leaves
    /// none.
    #[test]
    fn drain_carries_out_every_output() {
        let mut party = Clockwork(Outbox::default());
        let mut rng = crate::crypto::SeededEntropy::from_label("drain");
        for t in [1, 2] {
            party.handle_timeout(Now::at(t), &mut rng);
        }
        let mut driver = Failing(Vec::new());
        assert_eq!(drain(&mut party, &mut driver), Ok(()));
        assert_eq!(driver.0, ["event 1", "event 2"]);
        assert!(party.poll_output().is_none());
    }
}
