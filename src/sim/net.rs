//! The simulated network: a time-ordered queue of deliveries, timers and
//! scripted actions, and the random choices of loss, delay and
//! duplication.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::core::{Addr, Millis};
use crate::crypto::{Entropy, SeededEntropy};
use crate::wire::SessionId;

/// A party of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Server(usize),
    Device(usize),
    Recorder(usize),
    /// A firewall agent.
    Agent(usize),
}

/// A scripted application action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Register with a new certificate (F1).
    Register(usize),
    /// Register again with the certificate held (F2).
    Confirm(usize),
    /// End the registration (KW-REG-015).
    Deregister(usize),
    /// The device stops: it neither receives nor runs its timers, and so
    /// neither refreshes nor de-registers (KW-REG-016 ends its
    /// registration at the server).
    GoOffline(usize),
    /// The device runs again.
    ComeBack(usize),
    Call {
        call: usize,
    },
    Media {
        device: usize,
        session: SessionId,
        frame: u64,
    },
    /// Text number `n` (0 is the greeting).
    Info {
        device: usize,
        session: SessionId,
        n: u64,
    },
    Rekey {
        device: usize,
        session: SessionId,
        body: bool,
    },
    HangUp {
        device: usize,
        session: SessionId,
    },
}

/// What happens at a moment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum What {
    Deliver {
        to: Node,
        from: Addr,
        bytes: Vec<u8>,
        /// The adversary's identifier of an injected datagram.
        attack: Option<u64>,
    },
    Timer(Node),
    Script(Action),
}

/// The queue and the network's randomness.
pub struct Net {
    queue: BinaryHeap<Reverse<(Millis, u64, What)>>,
    order: u64,
    rng: SeededEntropy,
    loss: f64,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
}

impl Net {
    pub fn new(seed: u64, loss: f64) -> Self {
        Self {
            queue: BinaryHeap::new(),
            order: 0,
            rng: SeededEntropy::from_label(&format!("keyway sim network {seed}")),
            loss,
            sent: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        let x = u64::from_le_bytes(self.rng.array());
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        u64::from_le_bytes(self.rng.array()) % n
    }

    pub fn at(&mut self, at: Millis, what: What) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, what)));
    }

    /// When the next thing happens.
    pub fn peek(&self) -> Option<Millis> {
        self.queue.peek().map(|Reverse((at, ..))| *at)
    }

    pub fn pop(&mut self) -> Option<(Millis, What)> {
        self.queue.pop().map(|Reverse((at, _, what))| (at, what))
    }

    /// Sends a datagram: lost, delivered once after 5–40 ms (so datagrams
    /// overtake each other), or delivered twice.
    pub fn datagram(&mut self, now: Millis, to: Node, from: Addr, bytes: Vec<u8>) {
        self.sent += 1;
        if self.unit() < self.loss {
            self.lost += 1;
            return;
        }
        if self.unit() < self.loss / 2.0 {
            self.duplicated += 1;
            let delay = 5 + self.below(60);
            self.at(
                now + delay,
                What::Deliver {
                    to,
                    from,
                    bytes: bytes.clone(),
                    attack: None,
                },
            );
        }
        let delay = 5 + self.below(36);
        self.at(
            now + delay,
            What::Deliver {
                to,
                from,
                bytes,
                attack: None,
            },
        );
    }

    /// Delivers the adversary's datagram `attack` at `at`, neither lost
    /// nor duplicated: each is judged once.
    pub fn inject(&mut self, at: Millis, to: Node, from: Addr, bytes: Vec<u8>, attack: u64) {
        self.at(
            at,
            What::Deliver {
                to,
                from,
                bytes,
                attack: Some(attack),
            },
        );
    }
}
