//! Timing: batches of operations between two clock reads, per-operation
//! latency (batch time / batch size) in an HDR histogram, and a schedule
//! that interleaves the cases of a group in short slices, round after
//! round, so that cases compared with each other see the same machine.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::alloc::allocations;

/// One benchmarked operation.
pub trait Op {
    /// Makes `n` operations possible, outside the timed region (e.g.
    /// fresh receivers or payloads). Most cases need nothing.
    fn prepare(&mut self, _n: u64) {}

    /// One operation.
    fn run(&mut self);
}

/// An operation that needs no preparation.
pub struct FnOp<F>(pub F);

impl<F: FnMut()> Op for FnOp<F> {
    #[inline(always)]
    fn run(&mut self) {
        (self.0)();
    }
}

/// What one timed batch measured.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Wall time of the batch, nanoseconds.
    pub nanos: u64,
    /// Allocation calls made during the batch.
    pub allocs: u64,
}

/// A timed batch, with the operation loop monomorphised for each case (one
/// virtual call per batch, none per operation).
pub trait Timed {
    /// Runs `n` operations between two clock reads.
    fn batch(&mut self, n: u64) -> Batch;
}

impl<T: Op> Timed for T {
    #[inline(never)]
    fn batch(&mut self, n: u64) -> Batch {
        self.prepare(n);
        let a0 = allocations();
        let t0 = Instant::now();
        for _ in 0..n {
            self.run();
        }
        let t1 = Instant::now();
        let a1 = allocations();
        Batch {
            nanos: u64::try_from(t1.duration_since(t0).as_nanos()).unwrap_or(u64::MAX),
            allocs: a1.saturating_sub(a0),
        }
    }
}

/// A named case.
pub struct Case {
    /// The case's name, e.g. `raw/x25519`.
    pub name: &'static str,
    /// Its operation.
    pub op: Box<dyn Timed>,
    /// Operations per timed batch, fixed by calibration.
    pub batch: u64,
    /// Latency of one operation (batch time / batch size), nanoseconds.
    pub hist: Histogram<u64>,
    /// Per round: (operations, nanoseconds).
    pub rounds: Vec<(u64, u64)>,
    /// Allocation calls during timed batches.
    pub allocs: u64,
    /// Operations in timed batches.
    pub ops: u64,
}

impl Case {
    /// A case around `op`.
    pub fn new(name: &'static str, op: impl Timed + 'static) -> Self {
        Self {
            name,
            op: Box::new(op),
            batch: 1,
            hist: Histogram::new(3).expect("a histogram with 3 significant figures"),
            rounds: Vec::new(),
            allocs: 0,
            ops: 0,
        }
    }

    /// Runs the operation for about `warmup`, then fixes the batch size so
    /// that one batch takes at least `min_batch`.
    pub fn calibrate(&mut self, warmup: Duration, min_batch: Duration) {
        let start = Instant::now();
        let mut n = 1u64;
        let mut ops = 0u64;
        while start.elapsed() < warmup || ops < 3 {
            let b = self.op.batch(n);
            ops += n;
            if b.nanos < 1_000_000 {
                n = n.saturating_mul(2).min(1 << 20);
            }
        }
        let m = (n / 8).max(1);
        // The fastest of a few warm batches: a batch stays at least
        // `min_batch` long even when the machine is at its quietest.
        let per_op = (0..15)
            .map(|_| self.op.batch(m).nanos as f64 / m as f64)
            .fold(f64::INFINITY, f64::min)
            .max(1.0);
        self.batch = ((min_batch.as_nanos() as f64 / per_op).ceil() as u64).max(1);
    }

    /// Raises the batch size if the fastest 1% of the batches so far were
    /// shorter than `min_batch` (the calibration ran while the machine was
    /// slow).
    pub fn recalibrate(&mut self, min_batch: Duration) {
        let per_op = self.hist.value_at_quantile(0.01).max(1) as f64;
        let batch = (min_batch.as_nanos() as f64 / per_op).ceil() as u64;
        self.batch = self.batch.max(batch);
    }

    /// Runs batches for about `slice`, recording them in `round`.
    pub fn run_slice(&mut self, slice: Duration, round: usize) {
        while self.rounds.len() <= round {
            self.rounds.push((0, 0));
        }
        let start = Instant::now();
        let mut ops = 0u64;
        let mut nanos = 0u64;
        loop {
            let b = self.op.batch(self.batch);
            ops += self.batch;
            nanos += b.nanos;
            self.allocs += b.allocs;
            let per_op = (b.nanos / self.batch).max(1);
            // The histogram resizes itself; a record cannot fail.
            let _ = self.hist.record(per_op);
            if start.elapsed() >= slice {
                break;
            }
        }
        self.ops += ops;
        if let Some(r) = self.rounds.get_mut(round) {
            r.0 += ops;
            r.1 += nanos;
        }
    }

    /// Operations per second of each round.
    pub fn round_rates(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .filter(|(_, nanos)| *nanos > 0)
            .map(|(ops, nanos)| *ops as f64 * 1e9 / *nanos as f64)
            .collect()
    }

    /// The median over rounds of operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        median(&self.round_rates())
    }

    /// A latency quantile, nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    /// Allocation calls per operation in the timed batches.
    pub fn allocs_per_op(&self) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            self.allocs as f64 / self.ops as f64
        }
    }
}

/// The median (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match (v.get(n / 2), n.checked_sub(1).and_then(|m| v.get(m / 2))) {
        (Some(hi), Some(lo)) if n % 2 == 0 => (hi + lo) / 2.0,
        (Some(mid), _) => *mid,
        _ => 0.0,
    }
}

/// Nanoseconds of two back-to-back clock reads (the fixed cost in every
/// batch), as the median of many.
pub fn clock_overhead_ns() -> f64 {
    let mut samples = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t0 = Instant::now();
        let t1 = Instant::now();
        samples.push(t1.duration_since(t0).as_nanos() as f64);
    }
    median(&samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0, 10.0]), 4.0);
    }
}
