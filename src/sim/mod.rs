//! A deterministic simulation of whole Keyway deployments: servers,
//! devices, firewalls and recorders of several domains, run in memory on a
//! virtual clock over a network that loses, delays, reorders and
//! duplicates datagrams. The same configuration always prints the same
//! report, byte for byte.
//!
//! Layer rule: a driver of `core`, like the server program; nothing in
//! `core` knows about it.
//!
//! Modules, in dependency order — each imports only modules before it:
//! `net` (the network: a time-ordered queue, loss, delay, duplication),
//! `checks` (the report, counters and invariants), `plan` (the clock's
//! landmarks, the policies every party shares, what happens to each device
//! and call) and `adversary` (the kinds of attack, how an injection is
//! judged, what the adversary holds) import no other module of the
//! simulator; `world` (the deployment, how it is built, the run loop,
//! delivering and judging) imports those four; `script` (when each action
//! happens), `attacks` (what the adversary captures, sends and follows)
//! and `outputs` (carrying out what the state machines ask; it imports
//! `attacks`) import `world` and add `impl World` blocks of their own.
//! The run loop calls the methods they add, but `world` imports from
//! none of them, so the constants and plan types both sides need live in
//! `plan`.

mod adversary;
mod attacks;
mod checks;
mod net;
mod outputs;
mod plan;
mod script;
mod world;

pub use checks::Report;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Domains with devices (a transit hub joins them when there are two
    /// or more).
    pub domains: usize,
    /// Devices per domain.
    pub devices: usize,
    /// Calls placed, between random pairs of devices.
    pub calls: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Probability that a datagram is lost (duplication happens at half
    /// this rate).
    pub loss: f64,
    /// Make the last domain's server change bodies it may only read, to
    /// check that destinations always detect it (KW-SEAL-006).
    pub tamper: bool,
    /// Give each domain a recorder; its server records every session,
    /// those of some of its devices, or none, domain by domain.
    pub record: bool,
    /// Attack the deployment (spec/state-machines.md §6): replays,
    /// forged edits and attestations, revoked and expired certificates,
    /// datagrams from outside; each attack must be detected or refused.
    pub adversary: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            domains: 2,
            devices: 4,
            calls: 10,
            seed: 1,
            loss: 0.0,
            tamper: false,
            record: true,
            adversary: false,
        }
    }
}

/// Why a configuration cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A parameter is out of range.
    #[error("{0}")]
    Config(&'static str),
}

/// Runs a simulation to its end and reports what happened.
pub fn run(cfg: &SimConfig) -> Result<Report, SimError> {
    if cfg.domains == 0 || cfg.domains > 200 {
        return Err(SimError::Config("--domains must be 1..=200"));
    }
    if cfg.devices == 0 || cfg.devices > 1000 {
        return Err(SimError::Config("--devices must be 1..=1000 (per domain)"));
    }
    if cfg.domains * cfg.devices < 2 && cfg.calls > 0 {
        return Err(SimError::Config("calls need at least two devices"));
    }
    if cfg.calls > 100_000 {
        return Err(SimError::Config("--calls must be at most 100000"));
    }
    if !(0.0..=0.5).contains(&cfg.loss) {
        return Err(SimError::Config("--loss must be in 0..=0.5"));
    }
    // An attack that cannot act is refused, never silently a no-op.
    if cfg.tamper && cfg.domains < 2 {
        return Err(SimError::Config(
            "--tamper needs two or more domains: the last domain's server changes what \
             passes it between them",
        ));
    }
    if cfg.adversary && cfg.domains < 2 {
        return Err(SimError::Config(
            "--adversary needs two or more domains: it forges attestations of other \
             domains' certificates, and the last domain's server forges edits",
        ));
    }
    if cfg.adversary && cfg.calls == 0 {
        return Err(SimError::Config(
            "--adversary needs calls: most of its attacks are on calls",
        ));
    }
    let mut world = world::World::build(cfg);
    world.run();
    Ok(world.into_report())
}
