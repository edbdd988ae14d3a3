//! What parties keep durably (KW-REG-010, KW-SM-025, KW-REC-005): a
//! server's registrations with their certificates, revocations, serials,
//! the sessions it follows, the sessions that ended, its public address
//! map; a recorder's recordings. A party emits the [`StoreWrite`]s of one
//! input as one group ([`Output::Store`](super::Output::Store)); a
//! [`Store`] commits each group atomically and durably — in memory here,
//! in an embedded database in the server program — and a party restarts
//! from the [`StoreSnapshot`] it loads.

use std::collections::BTreeMap;

use super::Addr;
use super::recorder::{RecordedPacket, StoredRecording};
use super::server::StoredSession;
use crate::wire::{Certificate, Contact, Domain, Nonce, Principal, RecordingId, SessionId, TxnId};

/// One registration: location, certificate and term, stored together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The account.
    pub account: Principal,
    /// Where it is reached.
    pub contact: Contact,
    /// Its certificate (issued with, or confirmed by, the registration).
    pub cert: Certificate,
    /// When the registration ends (wall seconds); the certificate's term
    /// ends no later.
    pub not_after: u64,
    /// The term granted, in seconds (`register-ok`'s `expires`).
    pub granted: u64,
    /// The `register` this registration answered, and where it came from:
    /// a retransmission of it is answered again after a restart
    /// (KW-FRAME-012, KW-SM-025).
    pub answered: Option<(TxnId, Addr)>,
}

/// A session a server followed and that has ended, remembered until its
/// term would have ended (KW-SM-017), with what must be undone again
/// after a restart: its pinholes and its recording (KW-SM-025).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// When its term would have ended (wall milliseconds).
    pub until: u64,
    /// The server's identifiers of its pinholes.
    pub pinholes: Vec<u64>,
    /// Its recording, if it had one.
    pub recording: Option<RecordingId>,
}

/// A live session as a server keeps it in its store: everything needed to
/// go on with it after a restart (KW-SM-025). Opaque to stores, which key
/// it by [`SessionRecord::session`].
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord(pub(crate) Box<StoredSession>);

impl SessionRecord {
    /// The session.
    pub fn session(&self) -> SessionId {
        self.0.session
    }

    /// When its term ends (wall milliseconds).
    pub fn until(&self) -> u64 {
        self.0.until
    }
}

/// A recording as a recorder keeps it in its store, without its packets,
/// which are appended one by one. Opaque to stores, which key it by
/// [`RecordingRecord::recording`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRecord(pub(crate) Box<StoredRecording>);

impl RecordingRecord {
    /// The recording.
    pub fn recording(&self) -> RecordingId {
        self.0.id
    }
}

/// A change to make durable. Registrations travel unboxed: writes are
/// rare next to the allocation a box would add to each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StoreWrite {
    /// Create or replace a registration.
    PutRegistration(Registration),
    /// Remove a registration (de-registration or expiry).
    DeleteRegistration(Principal),
    /// A certificate is revoked (KW-CERT-006).
    Revoke {
        /// Its issuer.
        issuer: Domain,
        /// Its serial.
        serial: u64,
        /// Until when the revocation matters (the certificate's end, wall
        /// seconds).
        until: u64,
    },
    /// The next serial to issue.
    NextSerial(u64),
    /// The next identifier of a pinhole a server asks its firewall for:
    /// never one the firewall may still remember (KW-FW-008), after a
    /// restart too (KW-SM-025).
    NextPinhole(u64),
    /// Create or replace a live session.
    PutSession(SessionRecord),
    /// A session ended: its live record goes, its end is remembered.
    EndSession {
        /// The session.
        session: SessionId,
        /// What is remembered of it.
        ended: EndedSession,
    },
    /// The public address an internal media address is mapped to
    /// (KW-SM-012).
    PutMapping {
        /// The internal address.
        internal: Addr,
        /// Its public address.
        public: Addr,
    },
    /// A mapping is given up.
    DeleteMapping(Addr),
    /// A challenge nonce was spent by a register that passed; it stays
    /// spent until its lifetime would have ended (KW-REG-005, KW-REG-018).
    SpendNonce {
        /// The nonce.
        nonce: Nonce,
        /// The end of its lifetime (wall milliseconds).
        until: u64,
    },
    /// Forget what stopped mattering before `wall` (milliseconds):
    /// revocations of certificates that have ended, ended sessions whose
    /// term is over, and spent nonces whose lifetime is over; so that the store does not grow for ever.
    Prune {
        /// The wall time.
        wall: u64,
    },
    /// Create or replace a recording's record.
    PutRecording(RecordingRecord),
    /// One more packet of a recording.
    AppendPacket {
        /// The recording.
        recording: RecordingId,
        /// The packet.
        packet: RecordedPacket,
    },
    /// A recording and its packets are dropped.
    DeleteRecording(RecordingId),
}

/// Everything a store holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreSnapshot {
    /// Registrations by account.
    pub registrations: BTreeMap<Principal, Registration>,
    /// Revoked (issuer, serial) with the time they stop mattering.
    pub revoked: BTreeMap<(Domain, u64), u64>,
    /// The next serial.
    pub next_serial: u64,
    /// The next pinhole identifier.
    pub next_pinhole: u64,
    /// Live sessions.
    pub sessions: BTreeMap<SessionId, SessionRecord>,
    /// Ended sessions, until their term would have ended.
    pub ended: BTreeMap<SessionId, EndedSession>,
    /// Public addresses by internal address.
    pub mappings: BTreeMap<Addr, Addr>,
    /// Spent challenge nonces, until their lifetime ends (wall ms).
    pub spent: BTreeMap<Nonce, u64>,
    /// Recordings with their packets, in the order appended.
    pub recordings: BTreeMap<RecordingId, (RecordingRecord, Vec<RecordedPacket>)>,
}

impl StoreSnapshot {
    /// Applies one write.
    pub fn apply(&mut self, write: &StoreWrite) {
        match write {
            StoreWrite::PutRegistration(r) => {
                self.registrations.insert(r.account.clone(), r.clone());
            }
            StoreWrite::DeleteRegistration(a) => {
                self.registrations.remove(a);
            }
            StoreWrite::Revoke {
                issuer,
                serial,
                until,
            } => {
                self.revoked.insert((issuer.clone(), *serial), *until);
            }
            StoreWrite::NextSerial(n) => self.next_serial = *n,
            StoreWrite::NextPinhole(n) => self.next_pinhole = *n,
            StoreWrite::PutSession(record) => {
                self.sessions.insert(record.session(), record.clone());
            }
            StoreWrite::EndSession { session, ended } => {
                self.sessions.remove(session);
                self.ended.insert(*session, ended.clone());
            }
            StoreWrite::PutMapping { internal, public } => {
                self.mappings.insert(*internal, *public);
            }
            StoreWrite::DeleteMapping(internal) => {
                self.mappings.remove(internal);
            }
            StoreWrite::SpendNonce { nonce, until } => {
                self.spent.insert(*nonce, *until);
            }
            StoreWrite::Prune { wall } => {
                self.revoked
                    .retain(|_, until| until.saturating_add(1).saturating_mul(1000) > *wall);
                self.ended.retain(|_, e| e.until > *wall);
                self.spent.retain(|_, until| *until > *wall);
            }
            StoreWrite::PutRecording(record) => {
                let entry = self
                    .recordings
                    .entry(record.recording())
                    .or_insert_with(|| (record.clone(), Vec::new()));
                entry.0 = record.clone();
            }
            StoreWrite::AppendPacket { recording, packet } => {
                if let Some((_, packets)) = self.recordings.get_mut(recording) {
                    packets.push(packet.clone());
                }
            }
            StoreWrite::DeleteRecording(id) => {
                self.recordings.remove(id);
            }
        }
    }
}

/// Why a store could not commit or load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be written or read now: an I/O error, a lock, a
    /// device gone.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// No space is left for the write.
    #[error("store full")]
    Full,
    /// What the store holds cannot be read back.
    #[error("store corrupt: {0}")]
    Corrupt(String),
}

/// Durable storage of a party's state.
pub trait Store {
    /// Makes `group` durable, all of it or none of it; returns only once it
    /// is (KW-SM-024).
    fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError>;
    /// Everything stored.
    fn load(&self) -> Result<StoreSnapshot, StoreError>;
}

/// A store in memory: durable for the life of the process. It can be told
/// to fail, to test what a party does when its store fails.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: StoreSnapshot,
    /// Groups committed.
    pub commits: u64,
    /// Writes committed.
    pub writes: u64,
    /// How many more commits succeed before every commit fails; `None`:
    /// all succeed.
    pub fail_after: Option<u64>,
}

impl Store for MemoryStore {
    fn commit(&mut self, group: &[StoreWrite]) -> Result<(), StoreError> {
        if let Some(left) = self.fail_after.as_mut() {
            if *left == 0 {
                return Err(StoreError::Unavailable("injected failure".into()));
            }
            *left -= 1;
        }
        for write in group {
            self.state.apply(write);
        }
        self.commits += 1;
        self.writes += group.len() as u64;
        Ok(())
    }

    fn load(&self) -> Result<StoreSnapshot, StoreError> {
        Ok(self.state.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// KW-SM-024: a store told to fail after `n` commits takes exactly `n`
    /// groups, then refuses every one, changing nothing.
    #[test]
    fn a_memory_store_fails_after_the_commits_it_was_told() {
        let mut store = MemoryStore {
            fail_after: Some(2),
            ..MemoryStore::default()
        };
        assert_eq!(store.commit(&[StoreWrite::NextSerial(2)]), Ok(()));
        assert_eq!(store.commit(&[StoreWrite::NextSerial(3)]), Ok(()));
        for n in [4, 5] {
            assert!(matches!(
                store.commit(&[StoreWrite::NextSerial(n)]),
                Err(StoreError::Unavailable(_))
            ));
        }
        assert_eq!(store.load().unwrap().next_serial, 3);
        assert_eq!((store.commits, store.writes), (2, 2));
    }
}
