//! The plan of a run: the clock's landmarks, the timing and rekey policy
//! every party shares, and what happens to each device and call — its
//! registration's lifecycle, its trust policy, the kind of each call. All
//! are functions of indices and constants: the world reads them to build
//! the parties, the script to schedule what they do. This module imports
//! no other module of the simulator.

use std::collections::BTreeSet;

use crate::core::{DevicePolicy, Millis, RecordPolicy, RetransmitPolicy};
use crate::crypto::KeyPolicy;
use crate::wire::{Permission, Principal};

/// The virtual clock starts here (2027-01-15), so certificate times look
/// like real ones.
pub(super) const T0: Millis = 1_800_000_000_000;
/// When calls start: after every device has registered.
pub(super) const CALLS_AT: Millis = 10_000;
/// Time between call attempts.
pub(super) const CALL_SPACING: Millis = 250;
/// Media frames each party sends per call, before and after the rekey.
pub(super) const FRAMES: u64 = 6;
/// The servers' session term (KW-SM-013): the calls of kind `OverLong`
/// outlast it, so some sessions end by their term rather than by `bye`.
pub(super) const SESSION_SECS: u64 = 60;
/// Rekey policy of every party (KW-KEY-003, KW-SM-006): low enough that
/// long calls rekey by time and chatty ones by message count.
pub(super) const KEYS: KeyPolicy = KeyPolicy {
    rekey_after_secs: 15,
    rekey_after_messages: 5,
    grace_secs: 30,
};
/// When every party gives a request up (the default, KW-FRAME-011): what
/// the script and the end-of-run phase wait for.
pub(super) fn give_up() -> Millis {
    RetransmitPolicy::default().give_up
}

/// How long a device that de-registers stays away before registering anew.
const AWAY: Millis = 8_000;
/// How long a device is off line: longer than any registration term, so
/// that its registration lapses at its server (KW-REG-016) and its
/// certificate expires unrevoked.
const OUTAGE: Millis = 60_000;
/// A long call lasts longer than `rekey_after_secs` twice over, so that
/// both directions rekey by time (KW-SM-006).
const LONG_CALL: Millis = 40_000;

/// What happens to a device's registration in a run besides its refreshes
/// (KW-REG-014), which every device makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Registers once and refreshes.
    Steady,
    /// Also re-registers with the certificate it holds (F2) shortly after
    /// its first refresh, while that certificate has most of its term left
    /// (KW-REG-009).
    Confirms,
    /// De-registers at `off` (KW-REG-015: its certificate is revoked) and
    /// registers anew (F1) at `on`.
    Leaves { off: Millis, on: Millis },
    /// Off line from `off` to `on`: its refresh never happens, its
    /// registration lapses at its server (KW-REG-016); it registers anew
    /// when back.
    Outage { off: Millis, on: Millis },
}

impl Lifecycle {
    /// When the device cannot take part in calls, if ever.
    pub(super) fn away(self) -> Option<(Millis, Millis)> {
        match self {
            Self::Leaves { off, on } | Self::Outage { off, on } => {
                Some((off.saturating_sub(1000), on.saturating_add(3000)))
            }
            Self::Steady | Self::Confirms => None,
        }
    }
}

/// The lifecycle of device `index` of `total`. Devices that leave or go
/// off line need others to call meanwhile, so only with four or more.
pub(super) fn lifecycle_of(index: usize, total: usize) -> Lifecycle {
    let slot = (index / 6 % 8) as Millis * 700;
    match index % 6 {
        2 if total >= 4 => {
            let off = T0 + CALLS_AT + 4_000 + slot;
            Lifecycle::Leaves {
                off,
                on: off + AWAY,
            }
        }
        5 if total >= 4 => {
            let off = T0 + CALLS_AT + 2_000 + slot;
            Lifecycle::Outage {
                off,
                on: off + OUTAGE,
            }
        }
        0 | 3 => Lifecycle::Confirms,
        _ => Lifecycle::Steady,
    }
}

/// The trust policy of device `index` (KW-POLICY-001): the default;
/// server entries sealed anonymously (found by trial); no entry for the
/// peer's server; or the peer's server may modify, so that it re-keys the
/// offer (claim 39, KW-SM-011). Which servers an offer must have made
/// recipients follows from it.
pub(super) fn policy_of(index: usize) -> DevicePolicy {
    match index % 4 {
        1 => DevicePolicy {
            anonymous_servers: true,
            ..DevicePolicy::default()
        },
        2 => DevicePolicy {
            peer_server: None,
            ..DevicePolicy::default()
        },
        3 => DevicePolicy {
            peer_server: Some(Permission::ReadModify),
            ..DevicePolicy::default()
        },
        _ => DevicePolicy::default(),
    }
}

/// Which sessions the server of domain `d` (named `name`, with
/// `devices` devices) records, when domains record (KW-REC-001): in
/// turn every session, those of its odd-numbered devices (`u1`, `u3`, …),
/// none.
pub(super) fn record_policy_of(d: usize, name: &str, devices: usize) -> RecordPolicy {
    match d % 3 {
        0 => RecordPolicy::Everything,
        1 => RecordPolicy::Accounts(
            (1..=devices)
                .step_by(2)
                .filter_map(|k| Principal::new(&format!("u{k}@{name}")).ok())
                .collect::<BTreeSet<_>>(),
        ),
        _ => RecordPolicy::Nothing,
    }
}

/// What the parties of a call do once it is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    /// Media both ways, text, a commanded rekey (body-form and wrapped in
    /// turn), more media, hang-up after 2 s.
    Short,
    /// As `Short`, and the callee sends `rekey_after_messages` texts, so
    /// that it rekeys by message count.
    Chatty,
    /// 40 s, media every 10 s: both directions rekey by time; the caller's
    /// body-form rekey late in the call is likely signed after a refresh
    /// replaced the certificate confirmed at setup (KW-SM-020).
    Long,
    /// Outlasts the servers' session term: the servers end the session at
    /// its term and close its pinholes (KW-SM-013); the `bye` after it
    /// goes through servers that no longer follow it.
    OverLong,
}

impl CallKind {
    /// In eight calls: four short, two chatty, one long, one over-long;
    /// the first five calls have every kind.
    pub(super) fn of(call: usize) -> Self {
        match call % 8 {
            1 | 6 => Self::Chatty,
            2 => Self::Long,
            4 => Self::OverLong,
            _ => Self::Short,
        }
    }

    /// From the caller's seeing the call established to its hang-up.
    pub(super) fn hang_up_after(self) -> Millis {
        match self {
            Self::Short | Self::Chatty => 2_000,
            Self::Long => LONG_CALL,
            Self::OverLong => SESSION_SECS * 1000 + 5_000,
        }
    }
}
