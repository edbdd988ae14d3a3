//! The two clocks a party is given (spec/state-machines.md §1): a
//! monotonic one that every timer is set on, and the wall clock that
//! certificate and registration terms are judged by. Kept apart, as rustls
//! keeps its time provider apart from timers, so that a step of the wall
//! clock neither stalls nor bunches retransmissions, while terms that are
//! written in certificates stay in real time.

use super::Millis;

/// The current time, as the driver reads its two clocks for one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    /// Milliseconds on a monotonic clock, from an origin of the driver's
    /// choosing: every deadline a party asks for (`poll_timeout`) is on it.
    pub mono: Millis,
    /// Milliseconds since 1970-01-01T00:00:00Z (KW-WIRE-030), not counting
    /// leap seconds: what certificate and registration terms are judged by.
    pub wall: Millis,
}

impl Now {
    /// Both clocks at `ms`: a simulation's single virtual clock.
    pub const fn at(ms: Millis) -> Self {
        Self { mono: ms, wall: ms }
    }

    /// Whole seconds of wall time, as protocol fields carry them.
    pub const fn wall_secs(&self) -> u64 {
        self.wall / 1000
    }

    /// Whole seconds of monotonic time, for durations a party measures
    /// itself (key epochs, grace periods).
    pub const fn mono_secs(&self) -> u64 {
        self.mono / 1000
    }

    /// Both clocks `ms` later.
    pub const fn later(&self, ms: Millis) -> Self {
        Self {
            mono: self.mono.saturating_add(ms),
            wall: self.wall.saturating_add(ms),
        }
    }

    /// The monotonic deadline at which the wall clock, running on as now,
    /// reads `wall` (now, if it already has).
    pub const fn mono_at_wall(&self, wall: Millis) -> Millis {
        self.mono.saturating_add(wall.saturating_sub(self.wall))
    }

    /// The wall time a monotonic deadline falls at, the wall clock running
    /// on as now: how a deadline is written to a store, which outlives the
    /// monotonic clock's origin.
    pub const fn wall_at_mono(&self, mono: Millis) -> Millis {
        if mono >= self.mono {
            self.wall.saturating_add(mono - self.mono)
        } else {
            self.wall.saturating_sub(self.mono - mono)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_between_the_clocks() {
        let now = Now {
            mono: 5_000,
            wall: 1_800_000_000_000,
        };
        assert_eq!(now.mono_at_wall(1_800_000_060_000), 65_000);
        assert_eq!(now.mono_at_wall(1_700_000_000_000), 5_000);
        assert_eq!(now.wall_at_mono(65_000), 1_800_000_060_000);
        assert_eq!(now.wall_at_mono(4_000), 1_799_999_999_000);
        assert_eq!(now.wall_secs(), 1_800_000_000);
        assert_eq!(Now::at(7).later(3), Now::at(10));
    }
}
