//! What a server writes of a session it follows, and how it goes on from
//! its store after a restart (KW-SM-025). In memory a session's deadlines
//! are on the monotonic clock; in the store, which outlives that clock's
//! origin, they are wall times.

use std::collections::BTreeMap;

use super::firewall::FwOp;
use super::registrar::{register_ok, registration_end};
use super::session::{Deferred, Pinhole, ServerSession, Setup};
use super::{Pending, Server, ServerEvent, SessionTimer};
use crate::core::clock::Now;
use crate::core::store::{SessionRecord, StoreSnapshot};
use crate::core::transact::ANSWERED_KEEP;
use crate::core::{Addr, Millis};
use crate::crypto::{DirectionKeys, DirectionState, Entropy, Secret32, SessionKeys};
use crate::wire::{Certificate, Message, MsgType, Principal, RecordingId, SessionDesc, SessionId};

/// A live session as written to the store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredSession {
    pub session: SessionId,
    /// The end of its term (wall milliseconds).
    pub until: u64,
    /// When the `ack` is due, if awaited (wall milliseconds).
    pub ack_by: Option<u64>,
    caller: Principal,
    callee: Principal,
    cek: Option<Secret32>,
    offer_key: Option<Secret32>,
    descs: BTreeMap<(Principal, u64), SessionDesc>,
    internal: BTreeMap<Principal, Vec<Addr>>,
    mapped: Vec<Addr>,
    /// Both directions, their times in wall seconds.
    keys: Option<(DirectionState, DirectionState)>,
    pinholes: BTreeMap<u64, Pinhole>,
    recording: Option<RecordingId>,
    next_cid: u64,
    deferred: Vec<Deferred>,
    certs: BTreeMap<Principal, Certificate>,
    setup: Setup,
}

/// Seconds from the monotonic clock to the wall clock.
fn wall_minus_mono(now: Now) -> i128 {
    i128::from(now.wall_secs()) - i128::from(now.mono_secs())
}

impl Server {
    /// The record of a live session, as of now.
    pub(super) fn session_record(&self, id: SessionId, now: Now) -> Option<SessionRecord> {
        let s = self.sessions.get(&id)?;
        let delta = wall_minus_mono(now);
        let keys = s.keys.as_ref().map(|k| {
            let mut send = k.send.state();
            let mut recv = k.recv.state();
            send.shift(delta);
            recv.shift(delta);
            (send, recv)
        });
        let ack_by = self
            .session_timers
            .get(&(id, SessionTimer::Ack))
            .map(|t| now.wall_at_mono(t));
        Some(SessionRecord(Box::new(StoredSession {
            session: id,
            until: now.wall_at_mono(s.expires_at),
            ack_by,
            caller: s.caller.clone(),
            callee: s.callee.clone(),
            cek: s.cek.clone(),
            offer_key: s.offer_key.clone(),
            descs: s.descs.clone(),
            internal: s.internal.clone(),
            mapped: s.mapped.clone(),
            keys,
            pinholes: s.pinholes.clone(),
            recording: s.recording,
            next_cid: s.next_cid,
            deferred: s.deferred.clone(),
            certs: s.certs.clone(),
            setup: s.setup.clone(),
        })))
    }

    /// Goes on from a snapshot (see [`Server::restore`]).
    pub(super) fn restore_from(
        &mut self,
        snapshot: StoreSnapshot,
        now: Now,
        rng: &mut impl Entropy,
    ) {
        self.next_serial = snapshot.next_serial.max(1);
        for (account, registration) in snapshot.registrations {
            self.registration_ends.set(
                account.clone(),
                registration_end(now, registration.not_after),
            );
            // A `register` answered less than the cache's time ago is
            // answered again if it comes again (KW-FRAME-012).
            let registered_at = registration.not_after.saturating_sub(registration.granted);
            let recent = now.wall_secs().saturating_sub(registered_at) < ANSWERED_KEEP / 1000;
            if let (true, Some((txn, peer))) = (recent, registration.answered) {
                let ok = register_ok(
                    txn,
                    &account,
                    registration.contact,
                    registration.granted,
                    registration.cert.clone(),
                    registration.not_after,
                );
                self.server
                    .answer(now.mono, txn, peer, Message::RegisterOk(ok));
            }
            self.registrations.insert(account, registration);
        }
        for ((issuer, serial), until) in snapshot.revoked {
            if until < now.wall_secs() {
                continue;
            }
            self.trust.revoke(issuer.clone(), serial);
            self.revocation_ends
                .set((issuer.clone(), serial), registration_end(now, until));
            self.revoked.insert((issuer, serial), until);
        }
        for (internal, public) in snapshot.mappings {
            self.ports.restore(internal, public);
        }
        let delta = wall_minus_mono(now);
        let mut highest_pinhole = 0;
        for (id, record) in snapshot.sessions {
            let stored = *record.0;
            highest_pinhole =
                highest_pinhole.max(stored.pinholes.keys().max().copied().unwrap_or(0));
            let expires_at = now.mono_at_wall(stored.until);
            self.session_timers
                .set((id, SessionTimer::Term), expires_at);
            if let Some(ack_by) = stored.ack_by {
                self.session_timers
                    .set((id, SessionTimer::Ack), now.mono_at_wall(ack_by));
            }
            for internal in &stored.mapped {
                self.ports.acquire(*internal);
            }
            let keys = stored.keys.map(|(mut send, mut recv)| {
                send.shift(-delta);
                recv.shift(-delta);
                SessionKeys {
                    send: DirectionKeys::from_state(send),
                    recv: DirectionKeys::from_state(recv),
                }
            });
            self.sessions.insert(
                id,
                ServerSession {
                    caller: stored.caller,
                    callee: stored.callee,
                    cek: stored.cek,
                    offer_key: stored.offer_key,
                    descs: stored.descs,
                    internal: stored.internal,
                    mapped: stored.mapped,
                    keys,
                    pinholes: stored.pinholes,
                    recording: stored.recording,
                    next_cid: stored.next_cid,
                    deferred: stored.deferred,
                    certs: stored.certs,
                    expires_at,
                    setup: stored.setup,
                },
            );
        }
        for (id, ended) in snapshot.ended {
            highest_pinhole =
                highest_pinhole.max(ended.pinholes.iter().max().copied().unwrap_or(0));
            if ended.until > now.wall {
                let until: Millis = now.mono_at_wall(ended.until);
                self.remember_ended(id, ended, until);
            }
        }
        for (nonce, until) in snapshot.spent {
            if until > now.wall {
                self.spent.insert(nonce, until);
                self.spent_ends.set(nonce, now.mono_at_wall(until));
            }
        }
        // Never an identifier the firewall may still remember (KW-FW-008).
        self.next_pinhole = highest_pinhole
            .saturating_add(1)
            .max(snapshot.next_pinhole)
            .max(self.next_pinhole);
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in &ids {
            self.resume_session(now, *id, rng);
        }
        let ended: Vec<(SessionId, Vec<u64>, Option<RecordingId>)> = self
            .ended
            .iter()
            .map(|(id, e)| (*id, e.pinholes.clone(), e.recording))
            .collect();
        for (id, pinholes, recording) in ended {
            for pinhole in pinholes {
                self.firewall_request(now, id, pinhole, FwOp::Close, rng);
            }
            if let Some(recording) = recording {
                self.record_stop(now, id, recording, rng);
            }
        }
        self.event(ServerEvent::Restored {
            registrations: self.registrations.len(),
            sessions: ids.len(),
        });
    }

    /// Asks again for what a restored session needs of the firewall and
    /// the recorder (the requests are idempotent, KW-FW-008), and takes up
    /// its offer's transaction where it stood.
    fn resume_session(&mut self, now: Now, id: SessionId, rng: &mut impl Entropy) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let pinholes: Vec<(u64, Pinhole)> =
            s.pinholes.iter().map(|(k, p)| (*k, p.clone())).collect();
        let recorder = self.cfg.recorder.as_ref().map(|r| r.addr);
        let mut opened = std::collections::BTreeSet::new();
        for (pinhole, wanted) in pinholes {
            let copy = wanted.copy;
            if let Some(txn) = self.firewall_request(now, id, pinhole, FwOp::Open(wanted), rng) {
                opened.insert(txn);
            }
            if let (true, Some(sink)) = (copy, recorder) {
                self.firewall_request(now, id, pinhole, FwOp::Copy { sink, on: true }, rng);
            }
        }
        let setup = self.sessions.get(&id).map(|s| s.setup.clone());
        match setup {
            Some(Setup::Opening { .. } | Setup::Answering { .. }) => {
                // The offer is still being carried out: its requester's
                // retransmissions are ignored until it is answered.
                if let Some((txn, prev)) = setup.as_ref().and_then(offer_txn) {
                    self.server.mark_in_progress(now.mono, (txn, prev.peer));
                }
                let none = opened.is_empty();
                if let Some(waiting) = self.session_mut(&id).and_then(|s| s.waiting_mut()) {
                    *waiting = opened;
                }
                if none {
                    self.setup_ready(now, id, rng);
                }
            }
            Some(Setup::Offered { offer, hop, prev }) => {
                // The offer goes on being retransmitted, and its own
                // retransmissions are ignored until it is answered.
                let txn = offer.txn;
                let caller = offer.from.clone();
                let transmit = self.transmit_to(hop.proto, hop.addr, Message::Offer(*offer));
                let pending = Pending::Relay {
                    prev,
                    re: MsgType::Offer,
                    requester: caller,
                    session: Some(id),
                    target: None,
                };
                if self.request(now, transmit, txn, pending) {
                    self.server.mark_in_progress(now.mono, (txn, prev.peer));
                }
            }
            Some(Setup::Answered { answer, prev }) => {
                let txn = answer.txn;
                self.server
                    .answer(now.mono, txn, prev.peer, Message::Answer(*answer));
            }
            Some(Setup::Established) | None => {}
        }
        if self
            .sessions
            .get(&id)
            .is_some_and(|s| s.recording.is_some())
        {
            self.record_start(now, id, rng);
        }
    }
}

/// The transaction of the offer a session's set-up is carrying out, and
/// the hop it came from.
fn offer_txn(setup: &Setup) -> Option<(crate::wire::TxnId, crate::core::ReplyTo)> {
    match setup {
        Setup::Opening { offer, prev, .. } | Setup::Offered { offer, prev, .. } => {
            Some((offer.txn, *prev))
        }
        Setup::Answering { answer, prev, .. } | Setup::Answered { answer, prev } => {
            Some((answer.txn, *prev))
        }
        Setup::Established => None,
    }
}
