//! What a server keeps durably (KW-REG-010): registrations with their
//! certificates, revocations, and the next certificate serial. The core
//! emits [`StoreWrite`]s; a [`Store`] applies them, in memory here or in an
//! embedded database in the server program, and rebuilds the core's state
//! from a [`StoreSnapshot`] after a restart.

use std::collections::BTreeMap;

use crate::wire::{Certificate, Contact, Domain, Principal};

/// One registration: location, certificate and term, stored together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The account.
    pub account: Principal,
    /// Where it is reached.
    pub contact: Contact,
    /// Its certificate (issued with, or confirmed by, the registration).
    pub cert: Certificate,
    /// When the registration ends (seconds); the certificate's term ends no
    /// later.
    pub not_after: u64,
}

/// A change to make durable. Registrations travel unboxed: writes are
/// rare next to the allocation a box would add to each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
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
        /// Until when the revocation matters (the certificate's end).
        until: u64,
    },
    /// The next serial to issue.
    NextSerial(u64),
}

/// Everything a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Registrations by account.
    pub registrations: BTreeMap<Principal, Registration>,
    /// Revoked (issuer, serial) with the time they stop mattering.
    pub revoked: BTreeMap<(Domain, u64), u64>,
    /// The next serial.
    pub next_serial: u64,
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
        }
    }
}

/// A store failed to make a write durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Durable storage of a server's state.
pub trait Store {
    /// Makes `write` durable; returns only once it is.
    fn apply(&mut self, write: &StoreWrite) -> Result<(), StoreError>;
    /// Everything stored.
    fn snapshot(&self) -> Result<StoreSnapshot, StoreError>;
}

/// A store in memory: durable for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: StoreSnapshot,
    /// Writes applied, for tests and statistics.
    pub writes: u64,
}

impl Store for MemoryStore {
    fn apply(&mut self, write: &StoreWrite) -> Result<(), StoreError> {
        self.state.apply(write);
        self.writes += 1;
        Ok(())
    }

    fn snapshot(&self) -> Result<StoreSnapshot, StoreError> {
        Ok(self.state.clone())
    }
}
