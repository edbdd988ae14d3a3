//! A model-based test of the registrar (the server side of F1 and F2):
//! random sequences of `register`s — with and without `auth`, for
//! accounts that exist, one that does not and one of another domain,
//! echoing held, altered or made-up nonces, with good and wrong proofs,
//! terms below the minimum and above the maximum, issuing, confirming,
//! refreshing and ending registrations — interleaved with retransmissions
//! of the last datagram, time passing and restarts from the store, are
//! played against a real server in the lab and checked, after every step,
//! against a small reference model of what spec/flows.md (KW-REG-*) and
//! spec/state-machines.md §4 say: which accounts are registered with
//! which certificate until when, which nonces were handed out to whom
//! and when, which were spent, which serials are revoked until when.
//!
//! After each step the server's answer (challenge, `register-ok` with its
//! term and certificate, or the `error` code and `min-expires`), its
//! refusal, the registrations, revocations, spent nonces and next serial
//! in its store and in its memory, and its registration events must be
//! what the model predicts. A failure shrinks to a minimal sequence;
//! the seed and the number of cases are fixed, so a run is reproducible.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;

use keyway::core::{Addr, ProtocolError, ServerEvent, ServerPolicy, Store};
use keyway::crypto::{
    CertProfile, CertificateAuthority, Identity, KxKeyPair, Secret32, SeededEntropy,
    SigningKeyPair, register,
};
use keyway::testkit::{Lab, LabOptions, Step, T0, principal};
use keyway::wire::{
    AuthResponse, Certificate, Challenge, Contact, Domain, ErrorCode, Extensions, Mac32, Message,
    MsgType, Nonce, Register, Role, Transport, TxnId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

// ------------------------------------------------------------ the deployment

/// The registrar's terms (KW-REG-013) and the nonces' lifetime
/// (KW-REG-005): small enough that time passing reaches every end.
const MIN: u64 = 60;
const MAX: u64 = 600;
const NONCE_SECS: u64 = 30;
/// How long an answer is kept for a retransmission (KW-FRAME-012).
const ANSWER_KEEP: u64 = 64;
/// PBKDF2 iterations a challenge announces, for accounts that exist
/// and, as a decoy, for those that do not (KW-SM-008).
const ITERATIONS: u64 = 4096;

/// The accounts a step may name: two of the server's domain, one its
/// domain does not have, one of another domain.
const ACCOUNTS: [&str; 4] = [
    "u1@a.example",
    "u2@a.example",
    "x9@a.example",
    "u1@b.example",
];
const UNKNOWN: usize = 2;
const FOREIGN: usize = 3;

fn exists(account: usize) -> bool {
    account < UNKNOWN
}

// ------------------------------------------------------------ the model

/// A challenge the model has seen the server hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Issued {
    account: usize,
    /// When (seconds from the start).
    at: u64,
}

/// A certificate the server issued, as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cert {
    account: usize,
    serial: u64,
    not_after: u64,
}

/// A registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reg {
    /// Its certificate (an index into `Model::certs`).
    cert: usize,
    not_after: u64,
    granted: u64,
    /// The `register` it answered (KW-SM-025).
    txn: u64,
}

/// The nonce a `register` with `auth` echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonceRef {
    /// One the server handed out (an index into `Model::issued`).
    Held(usize),
    /// One the server handed out, with a bit of its MAC changed.
    Altered(usize),
    /// Sixteen bytes the server never made.
    MadeUp,
}

/// What an authenticated `register` asks for (KW-REG-003).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// F1: with a `csr`.
    Issue,
    /// F2: with a certificate (an index into `Model::certs`; `None`: one
    /// another domain issued).
    Confirm(Option<usize>),
    /// Neither: a refresh of the registration's location.
    Refresh,
    /// `expires` 0.
    Deregister,
}

/// How the proofs in `auth` are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Good,
    /// The secret's proof with a bit changed (KW-CRYPTO-021).
    Wrong,
    /// The `kx-proof` with a bit changed (KW-REG-007).
    WrongKx,
}

/// A `register` as the model resolves a step into one: what the system
/// under test sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    /// Without `auth`.
    Challenge {
        account: usize,
        csr: bool,
        expires: u64,
        /// The contact is not at the address it comes from (KW-REG-017).
        elsewhere: bool,
        txn: u64,
    },
    /// With `auth`.
    Answer {
        account: usize,
        nonce: NonceRef,
        ask: Ask,
        expires: u64,
        proof: Proof,
        txn: u64,
    },
}

/// The server's answer, as far as the spec fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Challenge {
        account: usize,
        expires: u64,
        iterations: u64,
    },
    Ok {
        expires: u64,
        not_after: u64,
        /// The certificate's serial and end (none for a de-registration).
        cert: Option<(u64, u64)>,
    },
    Error {
        code: ErrorCode,
        min_expires: Option<u64>,
    },
}

/// A registration event of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Issued {
        account: usize,
        serial: u64,
        not_after: u64,
    },
    Registered {
        account: usize,
        serial: u64,
        not_after: u64,
    },
    Unregistered {
        account: usize,
        revoked: Option<u64>,
    },
}

/// The reference model.
#[derive(Debug, Clone, Default)]
struct Model {
    /// Seconds since the start.
    now: u64,
    issued: Vec<Issued>,
    /// Spent nonces (indices into `issued`), with when they were spent.
    spent: BTreeMap<usize, u64>,
    certs: Vec<Cert>,
    regs: BTreeMap<usize, Reg>,
    /// Revoked serials, until the end of their certificate.
    revoked: BTreeMap<u64, u64>,
    next_serial: u64,
    /// Answers kept for retransmissions: by `txn`, with when they go.
    kept: BTreeMap<u64, (Answer, u64)>,
    next_txn: u64,
    /// The last request sent, which a retransmission repeats.
    last: Option<Req>,
    /// What the last step must have brought about.
    answer: Option<Answer>,
    events: Vec<Event>,
}

impl Model {
    fn new() -> Self {
        Self {
            next_serial: 1,
            ..Self::default()
        }
    }

    fn revoke(&mut self, cert: usize, at: u64) -> Option<u64> {
        let c = self.certs[cert];
        // A certificate already over needs no revocation (KW-CERT-006).
        (c.not_after >= at).then(|| {
            self.revoked.insert(c.serial, c.not_after);
            c.serial
        })
    }

    /// Time passes: registrations end at their term (KW-REG-016), which
    /// is their certificate's end on every path (KW-REG-009), so the
    /// revocation the server would make for a certificate outliving its
    /// registration never happens here; revocations are forgotten once
    /// their certificate ends, spent nonces once their lifetime does,
    /// kept answers after `ANSWER_KEEP`.
    fn advance(&mut self, secs: u64) {
        let end = self.now + secs;
        let mut lapsing: Vec<(u64, usize)> = self
            .regs
            .iter()
            .filter(|(_, r)| r.not_after < end)
            .map(|(a, r)| (r.not_after + 1, *a))
            .collect();
        lapsing.sort();
        for (at, account) in lapsing {
            let reg = self.regs.remove(&account).unwrap();
            let revoked = self.revoke(reg.cert, at);
            self.events.push(Event::Unregistered { account, revoked });
        }
        self.now = end;
        let now = self.now;
        self.revoked.retain(|_, until| *until >= now);
        self.spent.retain(|_, at| *at + NONCE_SECS > now);
        self.kept.retain(|_, (_, until)| *until > now);
    }

    /// Whether the nonce of `r` is one the server issued to `account`,
    /// alive and not spent (KW-REG-005, KW-REG-018).
    fn nonce_ok(&self, nonce: NonceRef, account: usize) -> bool {
        match nonce {
            NonceRef::Held(i) => {
                let n = self.issued[i];
                n.account == account && self.now < n.at + NONCE_SECS && !self.spent.contains_key(&i)
            }
            NonceRef::Altered(_) | NonceRef::MadeUp => false,
        }
    }

    /// The server's handling of a `register` (state-machines.md §4).
    fn handle(&mut self, req: Req) -> Answer {
        let error = |code| Answer::Error {
            code,
            min_expires: None,
        };
        let (account, expires, elsewhere) = match req {
            Req::Challenge {
                account,
                expires,
                elsewhere,
                ..
            } => (account, expires, elsewhere),
            Req::Answer {
                account, expires, ..
            } => (account, expires, false),
        };
        // Only accounts of its domain, registered where the register came
        // from (KW-REG-017), before any challenge.
        if account == FOREIGN || elsewhere {
            return error(ErrorCode::FORBIDDEN);
        }
        // KW-REG-013: below the minimum, with the minimum to retry with.
        if expires != 0 && expires < MIN {
            return Answer::Error {
                code: ErrorCode::INTERVAL_TOO_BRIEF,
                min_expires: Some(MIN),
            };
        }
        let (nonce, ask, proof, txn) = match req {
            Req::Challenge { .. } => {
                // KW-REG-004, KW-SM-008: a challenge, for an account that
                // does not exist as for one that does; nothing kept. Every
                // challenge carries its kx-challenge and is signed
                // (KW-CRYPTO-023, KW-CRYPTO-025).
                self.issued.push(Issued {
                    account,
                    at: self.now,
                });
                return Answer::Challenge {
                    account,
                    expires: NONCE_SECS,
                    iterations: ITERATIONS,
                };
            }
            Req::Answer {
                nonce,
                ask,
                proof,
                txn,
                ..
            } => (nonce, ask, proof, txn),
        };
        if !self.nonce_ok(nonce, account) {
            return error(ErrorCode::STALE_NONCE);
        }
        if !exists(account) || proof == Proof::Wrong {
            return error(ErrorCode::AUTH_FAILED);
        }
        let now = self.now;
        let answer = match ask {
            Ask::Deregister => {
                // KW-REG-015: the registration goes, its certificate is
                // revoked.
                if let Some(reg) = self.regs.remove(&account) {
                    let revoked = self.revoke(reg.cert, now);
                    self.events.push(Event::Unregistered { account, revoked });
                }
                Answer::Ok {
                    expires: 0,
                    not_after: now,
                    cert: None,
                }
            }
            Ask::Issue => {
                // KW-REG-007: both proofs of possession.
                if proof == Proof::WrongKx {
                    return error(ErrorCode::POP_FAILED);
                }
                // KW-REG-008, KW-REG-013, KW-SM-009.
                let granted = expires.min(MAX);
                let serial = self.next_serial;
                self.next_serial += 1;
                self.certs.push(Cert {
                    account,
                    serial,
                    not_after: now + granted,
                });
                self.events.push(Event::Issued {
                    account,
                    serial,
                    not_after: now + granted,
                });
                if let Some(old) = self.regs.get(&account).copied() {
                    self.revoke(old.cert, now);
                }
                self.register(account, self.certs.len() - 1, granted, txn)
            }
            Ask::Confirm(None) => return error(ErrorCode::CERT_INVALID),
            Ask::Confirm(Some(cert)) => match self.confirm(account, cert, txn) {
                Ok(answer) => answer,
                Err(code) => return error(code),
            },
            Ask::Refresh => {
                let Some(reg) = self.regs.get(&account).copied() else {
                    return error(ErrorCode::CERT_NOT_FOUND);
                };
                match self.confirm(account, reg.cert, txn) {
                    Ok(answer) => answer,
                    Err(code) => return error(code),
                }
            }
        };
        // KW-SM-007: spent only by a register that passed.
        if let NonceRef::Held(i) = nonce {
            self.spent.insert(i, now);
        }
        answer
    }

    /// KW-REG-009, KW-CERT-002: the certificate held, checked in order.
    fn confirm(&mut self, account: usize, cert: usize, txn: u64) -> Result<Answer, ErrorCode> {
        let c = self.certs[cert];
        if c.account != account {
            return Err(ErrorCode::CERT_SUBJECT_MISMATCH);
        }
        if self.now > c.not_after {
            return Err(ErrorCode::CERT_EXPIRED);
        }
        if self.revoked.contains_key(&c.serial) {
            return Err(ErrorCode::CERT_REVOKED);
        }
        // KW-REG-009: the certificate's remaining term, whatever was
        // asked, and none below the minimum.
        let granted = c.not_after - self.now;
        if granted < MIN {
            return Err(ErrorCode::CERT_EXPIRED);
        }
        Ok(self.register(account, cert, granted, txn))
    }

    /// KW-REG-010, KW-REG-011: stored, then answered.
    fn register(&mut self, account: usize, cert: usize, granted: u64, txn: u64) -> Answer {
        let not_after = self.now + granted;
        self.regs.insert(
            account,
            Reg {
                cert,
                not_after,
                granted,
                txn,
            },
        );
        let c = self.certs[cert];
        self.events.push(Event::Registered {
            account,
            serial: c.serial,
            not_after,
        });
        Answer::Ok {
            expires: granted,
            not_after,
            cert: Some((c.serial, c.not_after)),
        }
    }

    /// A request arrives: a retransmission of one answered in the last
    /// `ANSWER_KEEP` seconds gets the same answer and changes nothing
    /// (KW-FRAME-012); a challenge is never kept, so a retransmitted
    /// `register` without `auth` gets a new one (KW-SM-003).
    fn receive(&mut self, req: Req) {
        let txn = match req {
            Req::Challenge { txn, .. } | Req::Answer { txn, .. } => txn,
        };
        if let Some((answer, _)) = self.kept.get(&txn) {
            self.answer = Some(*answer);
            return;
        }
        let answer = self.handle(req);
        if !matches!(answer, Answer::Challenge { .. }) {
            self.kept.insert(txn, (answer, self.now + ANSWER_KEEP));
        }
        self.answer = Some(answer);
    }

    /// A restart from the store (KW-SM-025): the registrations,
    /// revocations, spent nonces and serials are the store's, so nothing
    /// the model holds changes, and a nonce issued before the restart is
    /// still accepted (KW-REG-018). Of the answers kept for
    /// retransmissions, the store holds those of the `register`s that
    /// made the current registrations, registered less than
    /// `ANSWER_KEEP` ago; they are kept from the restart on. An `error`
    /// is not stored (KW-ERR-004), nor the answer to a de-registration
    /// or to a `register` another replaced: a retransmission of one is
    /// handled again (a spent nonce: `stale-nonce`). This is narrower
    /// than KW-SM-025's text ("answers a retransmitted `register` ... it
    /// had answered with the same answer"), which KW-ERR-004 does not
    /// allow for errors; the difference is reported, not settled here.
    fn restart(&mut self) {
        let now = self.now;
        let mut kept = BTreeMap::new();
        for reg in self.regs.values() {
            if now - (reg.not_after - reg.granted) < ANSWER_KEEP {
                if let Some((answer, _)) = self.kept.get(&reg.txn) {
                    kept.insert(reg.txn, (*answer, now + ANSWER_KEEP));
                }
            }
        }
        self.kept = kept;
    }
}

/// A step of a test.
#[derive(Debug, Clone)]
enum Transition {
    /// A `register` without `auth`.
    Challenge {
        account: usize,
        csr: bool,
        expires: u64,
        elsewhere: bool,
    },
    /// A `register` with `auth`: `chal` picks a challenge handed out
    /// (0 the most recent, modulo their number); `who` registers with it,
    /// if not its own account.
    Answer {
        chal: usize,
        altered: bool,
        who: Option<usize>,
        ask: AskPick,
        expires: u64,
        proof: Proof,
    },
    /// The last datagram sent, again, byte for byte.
    Retransmit,
    /// Seconds pass.
    Advance(u64),
    /// The server restarts from its store.
    Restart,
}

/// What an answer asks for, before it is resolved against the model.
#[derive(Debug, Clone, Copy)]
enum AskPick {
    Issue,
    Confirm(usize),
    ConfirmForeign,
    Refresh,
    Deregister,
}

struct RegistrarModel;

/// Terms a `register` asks for: within the bounds, at the minimum, above
/// the maximum, below the minimum.
fn terms() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(120),
        2 => Just(MIN),
        2 => Just(5000),
        1 => Just(30),
        1 => Just(MIN + 1),
    ]
}

impl ReferenceStateMachine for RegistrarModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        // A device answers the challenge it was just given: while the
        // latest one can pass, answers are likelier.
        let answerable = state.issued.len().checked_sub(1).is_some_and(|i| {
            let n = state.issued[i];
            !state.spent.contains_key(&i) && state.now < n.at + NONCE_SECS
        });
        let (challenges, answers) = if answerable { (1, 6) } else { (5, 2) };
        let account = prop_oneof![10 => 0..2usize, 1 => Just(UNKNOWN), 1 => Just(FOREIGN)];
        let challenge = (
            account.clone(),
            prop::bool::weighted(0.7),
            prop_oneof![5 => terms(), 1 => Just(0)],
            prop::bool::weighted(0.05),
        )
            .prop_map(|(account, csr, expires, elsewhere)| Transition::Challenge {
                account,
                csr,
                expires,
                elsewhere,
            });
        let ask = prop_oneof![
            4 => Just(AskPick::Issue),
            2 => (0..8usize).prop_map(AskPick::Confirm),
            1 => Just(AskPick::ConfirmForeign),
            2 => Just(AskPick::Refresh),
            2 => Just(AskPick::Deregister),
        ];
        let answer = (
            prop_oneof![6 => Just(0usize), 2 => 0..8usize],
            prop::bool::weighted(0.05),
            prop::option::weighted(0.1, account),
            ask,
            terms(),
            prop_oneof![8 => Just(Proof::Good), 1 => Just(Proof::Wrong), 1 => Just(Proof::WrongKx)],
        )
            .prop_map(
                |(chal, altered, who, ask, expires, proof)| Transition::Answer {
                    chal,
                    altered,
                    who,
                    ask,
                    expires,
                    proof,
                },
            );
        let advance = prop_oneof![
            Just(1u64),
            Just(9),
            Just(NONCE_SECS - 1),
            Just(NONCE_SECS),
            Just(59),
            Just(ANSWER_KEEP),
            Just(200),
            Just(MAX),
        ]
        .prop_map(Transition::Advance);
        prop_oneof![
            challenges => challenge,
            answers => answer,
            2 => Just(Transition::Retransmit),
            2 => advance,
            1 => Just(Transition::Restart),
        ]
        .boxed()
    }

    fn apply(mut state: Model, transition: &Transition) -> Model {
        state.answer = None;
        state.events.clear();
        match transition {
            Transition::Challenge {
                account,
                csr,
                expires,
                elsewhere,
            } => {
                let req = Req::Challenge {
                    account: *account,
                    csr: *csr,
                    expires: *expires,
                    elsewhere: *elsewhere,
                    txn: state.next_txn,
                };
                state.next_txn += 1;
                state.last = Some(req);
                state.receive(req);
            }
            Transition::Answer {
                chal,
                altered,
                who,
                ask,
                expires,
                proof,
            } => {
                let (nonce, own) = match state.issued.len() {
                    0 => (NonceRef::MadeUp, 0),
                    n => {
                        // The most recent first: what a device answers.
                        let i = n - 1 - chal % n;
                        let r = if *altered {
                            NonceRef::Altered(i)
                        } else {
                            NonceRef::Held(i)
                        };
                        (r, state.issued[i].account)
                    }
                };
                let ask = match ask {
                    AskPick::Issue => Ask::Issue,
                    AskPick::Confirm(k) if !state.certs.is_empty() => {
                        Ask::Confirm(Some(k % state.certs.len()))
                    }
                    AskPick::Confirm(_) | AskPick::ConfirmForeign => Ask::Confirm(None),
                    AskPick::Refresh => Ask::Refresh,
                    AskPick::Deregister => Ask::Deregister,
                };
                let req = Req::Answer {
                    account: who.unwrap_or(own),
                    nonce,
                    ask,
                    expires: if ask == Ask::Deregister { 0 } else { *expires },
                    proof: *proof,
                    txn: state.next_txn,
                };
                state.next_txn += 1;
                state.last = Some(req);
                state.receive(req);
            }
            Transition::Retransmit => {
                if let Some(req) = state.last {
                    state.receive(req);
                }
            }
            Transition::Advance(secs) => state.advance(*secs),
            Transition::Restart => state.restart(),
        }
        state
    }
}

// ------------------------------------------------------------ the system under test

struct Registrar {
    lab: Lab,
    /// The challenges the server handed out, as `Model::issued`.
    challenges: Vec<Challenge>,
    /// The certificates it issued, as `Model::certs`.
    certs: Vec<Certificate>,
    /// One issued by another domain's authority.
    foreign_cert: Certificate,
    identities: Vec<Identity>,
    /// Client keys by account and salt (KW-CRYPTO-020).
    client_keys: BTreeMap<(usize, [u8; 16]), Secret32>,
    /// The last datagram sent and where from.
    last: Option<(Addr, Vec<u8>)>,
}

const SERVER: &str = "sc@a.example";

fn source(account: usize) -> Addr {
    let text = match account {
        0 => "10.1.0.1:5060",
        1 => "10.1.0.2:5060",
        2 => "10.1.0.99:5060",
        _ => "10.2.0.1:5060",
    };
    text.parse().unwrap()
}

fn txn_id(n: u64) -> TxnId {
    TxnId(n.wrapping_add(0x4b57_0000_0000_0000).to_be_bytes())
}

impl Registrar {
    fn new() -> Self {
        let lab = Lab::new(LabOptions {
            domains: vec!["a.example"],
            hub: false,
            server_policy: ServerPolicy {
                min_expires: MIN,
                max_expires: MAX,
                challenge_secs: NONCE_SECS,
                ..ServerPolicy::default()
            },
            ..LabOptions::default()
        });
        assert_eq!(lab.now, T0);
        let mut rng = SeededEntropy::from_label("model registrar identities");
        let identities: Vec<Identity> = ACCOUNTS
            .iter()
            .map(|a| Identity::generate(principal(a), &mut rng))
            .collect();
        let other_ca = CertificateAuthority::new(
            Domain::new("b.example").unwrap(),
            SigningKeyPair::generate(&mut rng),
        );
        let foreign_cert = other_ca.issue(&CertProfile {
            serial: 7,
            subject: principal(ACCOUNTS[0]),
            role: Role::Device,
            sig_key: identities[0].signing.public(),
            kx_key: identities[0].kx.public(),
            not_before: T0 / 1000,
            not_after: T0 / 1000 + 100_000,
        });
        Self {
            lab,
            challenges: Vec::new(),
            certs: Vec::new(),
            foreign_cert,
            identities,
            client_keys: BTreeMap::new(),
            last: None,
        }
    }

    fn server_addr(&self) -> Addr {
        self.lab.servers[0].addr
    }

    fn client_key(&mut self, account: usize, challenge: &Challenge) -> Secret32 {
        let secret = self
            .lab
            .secrets
            .get(&principal(ACCOUNTS[account]))
            .cloned()
            .unwrap_or_else(|| b"no such account".to_vec());
        self.client_keys
            .entry((account, challenge.salt.0))
            .or_insert_with(|| {
                register::client_key(&secret, &challenge.salt, challenge.iterations).unwrap()
            })
            .clone()
    }

    /// The datagram of a request the model resolved.
    fn build(&mut self, req: Req) -> (Addr, Vec<u8>) {
        match req {
            Req::Challenge {
                account,
                csr,
                expires,
                elsewhere,
                txn,
            } => {
                let from = source(account);
                let contact = if elsewhere {
                    "203.0.113.7:5060".parse().unwrap()
                } else {
                    from
                };
                let r = Register {
                    txn: txn_id(txn),
                    from: principal(ACCOUNTS[account]),
                    contact: Contact {
                        transport: Transport::Udp,
                        addr: contact,
                    },
                    expires,
                    csr: csr.then(|| register::make_csr(&self.identities[account])),
                    cert: None,
                    auth: None,
                    ext: Extensions::new(),
                };
                (from, Message::Register(r).encode())
            }
            Req::Answer {
                account,
                nonce,
                ask,
                expires,
                proof,
                txn,
            } => {
                let from = source(account);
                let challenge = match nonce {
                    NonceRef::Held(i) | NonceRef::Altered(i) => Some(self.challenges[i].clone()),
                    NonceRef::MadeUp => None,
                };
                let echoed = match (nonce, &challenge) {
                    (NonceRef::Altered(_), Some(c)) => {
                        let mut n = c.nonce;
                        n.0[12] ^= 1;
                        n
                    }
                    (_, Some(c)) => c.nonce,
                    (_, None) => Nonce([0x5a; 16]),
                };
                let mut r = Register {
                    txn: txn_id(txn),
                    from: principal(ACCOUNTS[account]),
                    contact: Contact {
                        transport: Transport::Udp,
                        addr: from,
                    },
                    expires,
                    csr: None,
                    cert: None,
                    auth: None,
                    ext: Extensions::new(),
                };
                match ask {
                    Ask::Issue => r.csr = Some(register::make_csr(&self.identities[account])),
                    Ask::Confirm(Some(k)) => r.cert = Some(self.certs[k].clone()),
                    Ask::Confirm(None) => r.cert = Some(self.foreign_cert.clone()),
                    Ask::Refresh | Ask::Deregister => {}
                }
                let message = register::auth_message(&echoed, &r);
                // KW-CRYPTO-021: the proof masked with a fresh key's
                // exchange with the challenge's key.
                let ephemeral = KxKeyPair::generate(&mut SeededEntropy::from_label("model epk"));
                let mut mac = match &challenge {
                    Some(c) => {
                        let key = self.client_key(account, c);
                        register::masked_proof(
                            &key,
                            &message,
                            &ephemeral,
                            &c.kx_challenge,
                            &echoed,
                            &principal(ACCOUNTS[account]),
                        )
                        .unwrap()
                    }
                    None => Mac32([0x11; 32]),
                };
                if proof == Proof::Wrong {
                    mac.0[0] ^= 1;
                }
                let kx_proof = match (&r.csr, challenge.as_ref().map(|c| c.kx_challenge)) {
                    (Some(_), Some(e)) => {
                        let id = &self.identities[account];
                        let mut p =
                            register::kx_proof(&id.account, &id.kx, &e, &echoed, &message).unwrap();
                        if proof == Proof::WrongKx {
                            p.0[0] ^= 1;
                        }
                        Some(p)
                    }
                    _ => None,
                };
                // KW-REG-022: a register keeping a certificate proves its
                // key (the account's one identity holds every certificate
                // issued to it).
                let cert_pop = (r.csr.is_none() && r.expires > 0)
                    .then(|| register::cert_pop(&self.identities[account].signing, &message));
                r.auth = Some(AuthResponse {
                    nonce: echoed,
                    proof: mac,
                    kx_proof,
                    epk: ephemeral.public(),
                    cert_pop,
                    ext: Extensions::new(),
                });
                (from, Message::Register(r).encode())
            }
        }
    }

    /// Sends a datagram to the server; its answer and its refusal.
    fn send(&mut self, from: Addr, bytes: &[u8]) -> (Option<Message>, Vec<ProtocolError>) {
        let mark = self.lab.trace.len();
        let to = self.server_addr();
        self.lab.inject(to, from, bytes);
        // The answers go to no one: the test plays the devices.
        self.lab.queue.clear();
        let answers: Vec<Message> = self.lab.trace[mark..]
            .iter()
            .filter_map(|s| match s {
                Step::Sent { from, message, .. } if from == SERVER => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert!(answers.len() <= 1, "one answer per request: {answers:?}");
        (answers.into_iter().next(), self.lab.refusals(mark, SERVER))
    }

    fn events_since(&self, mark: usize) -> Vec<Event> {
        let account = |p: &keyway::wire::Principal| {
            ACCOUNTS
                .iter()
                .position(|a| principal(a) == *p)
                .expect("an account of the test")
        };
        let base = T0 / 1000;
        self.lab.trace[mark..]
            .iter()
            .filter_map(|s| match s {
                Step::Server { server, event } if server == SERVER => Some(event),
                _ => None,
            })
            .filter_map(|e| match e {
                ServerEvent::CertificateIssued {
                    account: a,
                    serial,
                    not_after,
                    ..
                } => Some(Event::Issued {
                    account: account(a),
                    serial: *serial,
                    not_after: not_after - base,
                }),
                ServerEvent::Registered {
                    account: a,
                    serial,
                    not_after,
                } => Some(Event::Registered {
                    account: account(a),
                    serial: *serial,
                    not_after: not_after - base,
                }),
                ServerEvent::Unregistered {
                    account: a,
                    revoked,
                } => Some(Event::Unregistered {
                    account: account(a),
                    revoked: *revoked,
                }),
                _ => None,
            })
            .collect()
    }
}

/// The server's answer as the model describes answers.
fn observed(message: &Message, challenges: &[Challenge]) -> Answer {
    let base = T0 / 1000;
    match message {
        Message::Challenge(c) => Answer::Challenge {
            account: ACCOUNTS
                .iter()
                .position(|a| principal(a) == c.to)
                .expect("a challenge to an account of the test"),
            expires: c.expires,
            iterations: c.iterations,
        },
        Message::RegisterOk(ok) => Answer::Ok {
            expires: ok.expires,
            not_after: ok.not_after.0 - base,
            cert: ok
                .cert
                .as_ref()
                .map(|c| (c.tbs.serial, c.tbs.not_after.0 - base)),
        },
        Message::Error(e) => Answer::Error {
            code: e.code,
            min_expires: e.min_expires,
        },
        other => panic!(
            "the registrar answered {:?} ({} challenges so far)",
            other.msg_type(),
            challenges.len()
        ),
    }
}

struct RegistrarTest;

impl StateMachineTest for RegistrarTest {
    type SystemUnderTest = Registrar;
    type Reference = RegistrarModel;

    fn init_test(_ref_state: &Model) -> Registrar {
        Registrar::new()
    }

    fn apply(mut sut: Registrar, model: &Model, transition: Transition) -> Registrar {
        let mark = sut.lab.trace.len();
        let sent = match transition {
            Transition::Challenge { .. } | Transition::Answer { .. } => {
                let req = model.last.expect("the model resolved the request");
                let (from, bytes) = sut.build(req);
                sut.last = Some((from, bytes.clone()));
                Some(sut.send(from, &bytes))
            }
            Transition::Retransmit => sut.last.clone().map(|(from, bytes)| sut.send(from, &bytes)),
            Transition::Advance(secs) => {
                sut.lab.advance(secs * 1000);
                None
            }
            Transition::Restart => {
                sut.lab.restart_server(0);
                sut.lab.queue.clear();
                None
            }
        };
        let (answer, refusals) = sent.unwrap_or((None, Vec::new()));
        let got = answer.as_ref().map(|m| observed(m, &sut.challenges));
        assert_eq!(got, model.answer, "the server's answer");
        // A refused request is refused with the code it is answered with.
        let refused = match model.answer {
            Some(Answer::Error { code, .. }) => vec![ProtocolError::Refused {
                re: MsgType::Register,
                code,
            }],
            _ => Vec::new(),
        };
        assert_eq!(refusals, refused, "the server's refusal");
        if let Some(Message::Challenge(c)) = &answer {
            sut.challenges.push(c.clone());
        }
        if let Some(Message::RegisterOk(ok)) = &answer {
            if let Some(cert) = &ok.cert {
                if !sut.certs.iter().any(|c| c.tbs.serial == cert.tbs.serial) {
                    sut.certs.push(cert.clone());
                }
            }
        }
        assert_eq!(sut.challenges.len(), model.issued.len());
        assert_eq!(sut.certs.len(), model.certs.len());
        assert_eq!(sut.events_since(mark), model.events, "registration events");
        sut
    }

    fn check_invariants(sut: &Registrar, model: &Model) {
        let base = T0 / 1000;
        assert_eq!(sut.lab.now, T0 + model.now * 1000);
        let store = sut.lab.servers[0].store.load().unwrap();
        let server = sut.lab.server(0);
        // KW-REG-010, KW-SM-025: each registration, in the store and in
        // memory alike.
        let expected: BTreeMap<String, (u64, u64, u64)> = model
            .regs
            .iter()
            .map(|(a, r)| {
                let serial = model.certs[r.cert].serial;
                (
                    ACCOUNTS[*a].to_string(),
                    (serial, r.not_after + base, r.granted),
                )
            })
            .collect();
        let stored: BTreeMap<String, (u64, u64, u64)> = store
            .registrations
            .values()
            .map(|g| {
                (
                    g.account.to_string(),
                    (g.cert.tbs.serial, g.not_after, g.granted),
                )
            })
            .collect();
        assert_eq!(stored, expected, "registrations in the store");
        assert_eq!(server.registration_count(), model.regs.len());
        for (account, g) in &store.registrations {
            assert_eq!(server.registration(account), Some(g));
        }
        // KW-CERT-006: revocations until the certificate's end.
        let revoked: BTreeMap<u64, u64> = store
            .revoked
            .iter()
            .map(|((issuer, serial), until)| {
                assert_eq!(issuer.as_str(), "a.example");
                (*serial, *until - base)
            })
            .collect();
        assert_eq!(revoked, model.revoked, "revocations in the store");
        // KW-SM-007, KW-REG-018: spent nonces, until their lifetime ends.
        let spent: Vec<Nonce> = store.spent.keys().copied().collect();
        let mut expected: Vec<Nonce> = model
            .spent
            .keys()
            .map(|i| sut.challenges[*i].nonce)
            .collect();
        expected.sort();
        assert_eq!(spent, expected, "spent nonces in the store");
        assert_eq!(store.next_serial.max(1), model.next_serial, "next serial");
    }
}

/// The runner's configuration: `cases` sequences drawn from a fixed
/// seed, so that a run is reproducible. `KEYWAY_MODEL_CASES` and
/// `KEYWAY_MODEL_SEED` override both, to search further by hand.
fn config(cases: u32) -> Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: env("KEYWAY_MODEL_CASES").map_or(cases, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        rng_seed: RngSeed::Fixed(env("KEYWAY_MODEL_SEED").unwrap_or(0x4b57_5245_4721)),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// Runs `cases` random sequences of up to `steps` steps.
fn run(cases: u32, steps: usize) {
    let config = config(cases);
    let mut runner = TestRunner::new(config.clone());
    let result = runner.run(
        &RegistrarModel::sequential_strategy(1..steps),
        |(initial, transitions, seen)| {
            RegistrarTest::test_sequential(config.clone(), initial, transitions, seen);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// KW-REG-003, KW-REG-004, KW-REG-005, KW-REG-007, KW-REG-008,
/// KW-REG-009, KW-REG-010, KW-REG-011, KW-REG-013, KW-REG-015,
/// KW-REG-016, KW-REG-017, KW-REG-018, KW-SM-003, KW-SM-007, KW-SM-008,
/// KW-SM-009, KW-SM-025, KW-CERT-002, KW-CERT-006, KW-ERR-004,
/// KW-FRAME-012, KW-CRYPTO-021, KW-CRYPTO-024: random sequences of
/// registers, retransmissions, time passing and restarts, checked step by
/// step against the model.
#[test]
fn registrar_follows_the_model() {
    run(96, 48);
}

/// KW-REG-018, KW-SM-019, KW-SM-025: the first sequence the model
/// found failing. A spent nonce was forgotten in memory at the end of
/// its lifetime but stayed in the store — for ever, unless a revocation
/// or an ended session happened to be pruned at the same time — so the
/// store grew by one nonce per `register` that passed.
#[test]
fn regression_spent_nonces_leave_the_store_when_their_lifetime_ends() {
    let steps = vec![
        Transition::Challenge {
            account: 0,
            csr: false,
            expires: 120,
            elsewhere: false,
        },
        Transition::Answer {
            chal: 0,
            altered: false,
            who: None,
            ask: AskPick::Deregister,
            expires: 120,
            proof: Proof::Good,
        },
        Transition::Advance(NONCE_SECS),
    ];
    RegistrarTest::test_sequential(config(1), Model::new(), steps, None);
}
