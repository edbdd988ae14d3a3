//! The script: when each device registers, re-registers, de-registers or
//! goes off line; which calls are placed, between whom; and what each
//! party of an established call does. Every choice is a function of the
//! configuration and the seed.
//!
//! The script consults a device's reported state before every command
//! (`call_state`, `certificate`) and skips what the state does not allow —
//! media for a call that ended under loss, say — counting it in
//! `commands_skipped`; so a command the device refuses anyway is an
//! invariant broken (see `World::command`).

use std::collections::BTreeSet;

use super::net::{Action, What};
use super::plan::{
    CALL_SPACING, CALLS_AT, CallKind, FRAMES, KEYS, Lifecycle, T0, give_up, lifecycle_of,
};
use super::world::{CallRecord, World};
use crate::core::{CallState, DeviceCommand, Millis};
use crate::crypto::{Entropy, SeededEntropy};
use crate::wire::SessionId;

/// Room left around a call for its setup (certificate queries, offer and
/// answer, with retransmissions) and its teardown, when choosing parties
/// that are registered throughout.
const CALL_MARGIN: Millis = 5_000;

fn draw(rng: &mut SeededEntropy, n: usize) -> usize {
    (u64::from_le_bytes(rng.array()) % (n.max(1) as u64)) as usize
}

impl World {
    /// Registrations and their lifecycles, then calls between random
    /// pairs of devices that stay registered throughout the call.
    pub(super) fn script(&mut self, rng: &mut SeededEntropy) {
        let n = self.devices.len();
        self.lifecycles = (0..n).map(|d| lifecycle_of(d, n)).collect();
        let mut last = T0;
        for d in 0..n {
            self.net
                .at(T0 + 10 * d as Millis, What::Script(Action::Register(d)));
            match self.lifecycles.get(d).copied() {
                Some(Lifecycle::Leaves { off, on }) => {
                    self.net.at(off, What::Script(Action::Deregister(d)));
                    self.net.at(on, What::Script(Action::Register(d)));
                    last = last.max(on);
                }
                Some(Lifecycle::Outage { off, on }) => {
                    self.net.at(off, What::Script(Action::GoOffline(d)));
                    self.net.at(on, What::Script(Action::ComeBack(d)));
                    self.net.at(on + 10, What::Script(Action::Register(d)));
                    last = last.max(on + 10);
                }
                _ => {}
            }
        }
        let everyone: Vec<usize> = (0..n).collect();
        let mut last_call = T0 + CALLS_AT;
        let mut longest = 0;
        for call in 0..self.cfg.calls {
            let kind = CallKind::of(call);
            let at = T0 + CALLS_AT + CALL_SPACING * call as Millis;
            let until = at + 2 * CALL_MARGIN + kind.hang_up_after();
            let free: Vec<usize> = (0..n)
                .filter(|d| {
                    self.lifecycles
                        .get(*d)
                        .and_then(|l| l.away())
                        .is_none_or(|(from, to)| until < from || at > to)
                })
                .collect();
            let pool = if free.len() >= 2 { &free } else { &everyone };
            let caller = pool.get(draw(rng, pool.len())).copied().unwrap_or(0);
            let others: Vec<usize> = pool.iter().copied().filter(|d| *d != caller).collect();
            let callee = others
                .get(draw(rng, others.len()))
                .copied()
                .unwrap_or(caller);
            self.calls.push(CallRecord {
                caller,
                callee,
                session: None,
                established: false,
                caller_ended: false,
                callee_ended: false,
                hung_up: false,
                callee_established: false,
                kind,
            });
            self.net.at(at, What::Script(Action::Call { call }));
            last_call = at;
            longest = longest.max(kind.hang_up_after());
        }
        // A call is established at most two give-ups after it is placed
        // (certificate queries, then the offer); its hang-up follows, and
        // that `bye`'s retransmissions end within a give-up more. The F2
        // re-registrations come after the first refreshes, long before.
        let give_up = give_up();
        self.script_end = (last_call + 3 * give_up + longest).max(last + 2 * give_up);
    }

    fn call_state(&self, device: usize, session: &SessionId) -> Option<CallState> {
        self.devices
            .get(device)
            .and_then(|d| d.0.call_state(session))
    }

    fn established(&self, device: usize, session: &SessionId) -> bool {
        self.call_state(device, session) == Some(CallState::Established)
    }

    fn skip(&mut self) {
        self.ledger.report.commands_skipped += 1;
    }

    pub(super) fn act(&mut self, action: Action) {
        match action {
            Action::Register(d) => self.command(d, DeviceCommand::Register),
            Action::Confirm(d) => {
                let held = self.devices.get(d).is_some_and(|x| {
                    x.0.certificate().is_some() && x.0.registered_until().is_some()
                });
                if held {
                    self.command(d, DeviceCommand::RegisterWithCertificate);
                } else {
                    self.skip();
                }
            }
            Action::Deregister(d) => self.command(d, DeviceCommand::Deregister),
            Action::GoOffline(d) => {
                if self.offline.insert(d) {
                    self.ledger.report.outages += 1;
                }
            }
            Action::ComeBack(d) => {
                if self.offline.remove(&d) {
                    self.wake(d);
                }
            }
            Action::Call { call } => self.place_call(call),
            Action::Media {
                device,
                session,
                frame,
            } => {
                if !self.established(device, &session) {
                    return self.skip();
                }
                let payload = format!(
                    "frame {frame} of {} from {device}",
                    crate::cbor::hex(&session.0)
                )
                .into_bytes();
                self.pending_frame = Some(payload.clone());
                self.command(device, DeviceCommand::Media(session, payload));
                self.pending_frame = None;
            }
            Action::Info { device, session, n } => {
                if !self.established(device, &session) {
                    return self.skip();
                }
                let text = match n {
                    0 => "hello".to_string(),
                    n => format!("text {n}"),
                };
                self.command(device, DeviceCommand::Info(session, text));
            }
            Action::Rekey {
                device,
                session,
                body,
            } => {
                if !self.established(device, &session) {
                    return self.skip();
                }
                self.commanded_rekey = true;
                self.command(device, DeviceCommand::Rekey(session, body));
                self.commanded_rekey = false;
            }
            Action::HangUp { device, session } => {
                if self.call_state(device, &session).is_none() {
                    return self.skip();
                }
                if let Some(call) = self
                    .call_of
                    .get(&session)
                    .and_then(|c| self.calls.get_mut(*c))
                {
                    call.hung_up = true;
                }
                self.command(device, DeviceCommand::HangUp(session));
            }
        }
    }

    fn place_call(&mut self, call: usize) {
        let Some(record) = self.calls.get(call) else {
            return;
        };
        let (caller, callee) = (record.caller, record.callee);
        let Some(to) = self.devices.get(callee).map(|d| d.0.account().clone()) else {
            return;
        };
        self.ledger.report.calls_attempted += 1;
        // A device without a certificate cannot call (its registration
        // failed under loss): the attempt fails here.
        if self
            .devices
            .get(caller)
            .is_none_or(|d| d.0.certificate().is_none())
        {
            return self.skip();
        }
        let before: BTreeSet<SessionId> = self
            .devices
            .get(caller)
            .map(|d| d.0.sessions().into_iter().collect())
            .unwrap_or_default();
        self.issue(caller, DeviceCommand::Call(to));
        let after: Vec<SessionId> = self
            .devices
            .get(caller)
            .map(|d| d.0.sessions())
            .unwrap_or_default();
        if let Some(session) = after.into_iter().find(|s| !before.contains(s)) {
            self.call_of.insert(session, call);
            if let Some(record) = self.calls.get_mut(call) {
                record.session = Some(session);
            }
        }
        self.drain(crate::sim::net::Node::Device(caller));
    }

    fn media_at(&mut self, at: Millis, device: usize, session: SessionId, frames: [u64; 2]) {
        for (i, frame) in (frames[0]..frames[1]).enumerate() {
            self.net.at(
                at + 20 * i as Millis,
                What::Script(Action::Media {
                    device,
                    session,
                    frame,
                }),
            );
        }
    }

    /// The caller's part, from its seeing the call established.
    pub(super) fn schedule_caller(&mut self, call: usize) {
        let Some(record) = self.calls.get(call) else {
            return;
        };
        let Some(session) = record.session else {
            return;
        };
        let (caller, kind) = (record.caller, record.kind);
        let t = self.now;
        self.media_at(t + 100, caller, session, [0, FRAMES]);
        match kind {
            CallKind::Short | CallKind::Chatty | CallKind::OverLong => {
                // Body-form and wrapped in turn; an over-long call's is
                // wrapped, followed by servers that still hold the key.
                let body = kind != CallKind::OverLong && call % 2 == 1;
                self.net.at(
                    t + 300,
                    What::Script(Action::Rekey {
                        device: caller,
                        session,
                        body,
                    }),
                );
                self.media_at(t + 900, caller, session, [FRAMES, 2 * FRAMES]);
            }
            CallKind::Long => {
                for k in 1..=3u64 {
                    let first = 2 * FRAMES + 2 * k;
                    self.media_at(t + 10_000 * k, caller, session, [first, first + 2]);
                }
                self.net.at(
                    t + 25_000,
                    What::Script(Action::Rekey {
                        device: caller,
                        session,
                        body: true,
                    }),
                );
            }
        }
        self.net.at(
            t + kind.hang_up_after(),
            What::Script(Action::HangUp {
                device: caller,
                session,
            }),
        );
    }

    /// The callee's part, from its seeing the call established (the `ack`
    /// arrived): media before that would be refused, as the callee is
    /// still waiting for the `ack` (`ApiMisuse::NotEstablished`).
    pub(super) fn schedule_callee(&mut self, call: usize) {
        let Some(record) = self.calls.get(call) else {
            return;
        };
        let Some(session) = record.session else {
            return;
        };
        let (callee, kind) = (record.callee, record.kind);
        let t = self.now;
        self.media_at(t + 100, callee, session, [0, FRAMES]);
        self.net.at(
            t + 150,
            What::Script(Action::Info {
                device: callee,
                session,
                n: 0,
            }),
        );
        self.media_at(t + 900, callee, session, [FRAMES, 2 * FRAMES]);
        match kind {
            CallKind::Chatty => {
                // With the greeting, the count is reached (KW-KEY-003).
                for n in 1..KEYS.rekey_after_messages {
                    self.net.at(
                        t + 400 + 40 * n,
                        What::Script(Action::Info {
                            device: callee,
                            session,
                            n,
                        }),
                    );
                }
            }
            CallKind::Long => {
                for k in 1..=3u64 {
                    let first = 2 * FRAMES + 2 * k;
                    self.media_at(t + 10_000 * k, callee, session, [first, first + 2]);
                }
            }
            CallKind::Short | CallKind::OverLong => {}
        }
    }

    /// A device of lifecycle `Confirms` re-registers with its certificate
    /// (F2) two seconds after its first refresh.
    pub(super) fn after_refresh(&mut self, device: usize) {
        let confirms = self.lifecycles.get(device) == Some(&Lifecycle::Confirms);
        if confirms && self.confirming.insert(device) {
            self.net
                .at(self.now + 2_000, What::Script(Action::Confirm(device)));
        }
    }
}
