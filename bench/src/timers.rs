//! `--timers`: what one input costs a server holding 10³, 10⁵ and 10⁶ live
//! registrations. Every deadline a server keeps is in an index, so the
//! cost of an input should not grow with what it holds; the old
//! `poll_timeout` looked at every registration, which `scan` measures for
//! comparison.
//!
//! For each size the server is restored from a store holding that many
//! registrations (the certificate of most is one shared copy: a check
//! reads only the one queried), then each case is timed on its own:
//! - `poll-timeout`: the driver asks for the next deadline;
//! - `timeout-idle`: woken with nothing due;
//! - `register-challenge`: a `register` without `auth`, answered with a
//!   challenge (no crypto but a key pair for the proof of possession);
//! - `cert-query`: a query for a local account, answered with its
//!   certificate (one Ed25519 verification);
//! - `timeout-expiry`: woken when one registration's term ends: it is
//!   deleted, its certificate revoked, both written to the store;
//! - `scan`: one pass over every registration for the earliest end, what
//!   `poll_timeout` cost before the index.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use keyway::core::{Now, Output, Party, Receive, Registration, Server, StoreSnapshot};
use keyway::crypto::register::Verifier;
use keyway::crypto::{CertProfile, Entropy, SeededEntropy};
use keyway::testkit::Plan;
use keyway::wire::{
    CertQuery, Certificate, Contact, Extensions, Message, Principal, Register, Role, Transport,
    TxnId, UpTo,
};
use serde_json::{Value, json};

/// How many probe accounts have certificates of their own.
const PROBES: usize = 1024;
/// How many registrations end one per second, for `timeout-expiry`.
const EXPIRIES: usize = 500;

struct Bed {
    server: Server,
    rng: SeededEntropy,
    now: Now,
    server_addr: SocketAddr,
    probes: Vec<Principal>,
    /// The terms' ends, in order, for `timeout-expiry`.
    ends: Vec<u64>,
    /// The registrations as the server holds them, for `scan`.
    held: BTreeMap<Principal, Registration>,
}

fn account(k: usize) -> Principal {
    Principal::new(&format!("u{k}@a.example")).unwrap_or_else(|e| panic!("{k}: {e}"))
}

fn bed(n: usize) -> (Bed, f64) {
    let deployment = Plan {
        label: "keyway timers".into(),
        domains: vec!["a.example".into()],
        devices: 0,
        hub: false,
        ..Plan::default()
    }
    .provision();
    let kit = &deployment.domains[0];
    let mut cfg = kit.server.clone();
    let mut rng = SeededEntropy::from_label("keyway timers");
    let verifier = Verifier::new(b"timers", 4096, &mut rng).unwrap_or_else(|e| panic!("{e}"));
    let t0 = 1_800_000_000u64;
    let identity = keyway::crypto::Identity::generate(account(0), &mut rng);
    let issue = |subject: Principal| -> Certificate {
        kit.ca.issue(&CertProfile {
            serial: 1,
            subject,
            role: Role::Device,
            sig_key: identity.signing.public(),
            kx_key: identity.kx.public(),
            not_before: t0 - 10,
            not_after: t0 + 7200,
        })
    };
    let shared = issue(account(usize::MAX));
    let mut snapshot = StoreSnapshot {
        next_serial: 2,
        ..StoreSnapshot::default()
    };
    let mut probes = Vec::new();
    let mut ends = Vec::new();
    for k in 0..n {
        let who = account(k);
        let cert = if k < PROBES {
            probes.push(who.clone());
            issue(who.clone())
        } else {
            shared.clone()
        };
        // The first terms end a second apart after the first minute, so
        // that `timeout-expiry` times one expiry per wake-up; the rest are
        // spread over the following hour. None is due during the steady
        // cases.
        let not_after = if k < EXPIRIES {
            t0 + 60 + k as u64
        } else {
            t0 + 60 + EXPIRIES as u64 + (k as u64 * 3600) / n as u64
        };
        ends.push(not_after);
        cfg.accounts.insert(who.clone(), verifier.clone());
        let host = std::net::Ipv4Addr::from(0x0a00_0000u32 + k as u32);
        snapshot.registrations.insert(
            who.clone(),
            Registration {
                account: who,
                contact: Contact {
                    transport: Transport::Udp,
                    addr: SocketAddr::new(host.into(), 5060),
                },
                cert,
                not_after,
                granted: 3600,
                answered: None,
            },
        );
    }
    ends.sort_unstable();
    let held = snapshot.registrations.clone();
    let now = Now::at(t0 * 1000);
    let server_addr = cfg.addr;
    let started = Instant::now();
    let mut server = Server::restore(cfg, snapshot, now, &mut rng);
    let restore_ms = started.elapsed().as_secs_f64() * 1e3;
    while server.poll_output().is_some() {}
    (
        Bed {
            server,
            rng,
            now,
            server_addr,
            probes,
            ends,
            held,
        },
        restore_ms,
    )
}

/// Median and 99th percentile, in nanoseconds.
fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

/// Times `op` `n` times, one call per sample (each over a microsecond),
/// or `batch` calls per sample for the fast ones.
fn time(n: usize, batch: usize, mut op: impl FnMut(usize)) -> (f64, f64) {
    let samples = (0..n)
        .map(|i| {
            let t = Instant::now();
            for j in 0..batch {
                op(i * batch + j);
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    summary(samples)
}

fn drain(server: &mut Server) {
    while let Some(output) = server.poll_output() {
        black_box(&output);
        if let Output::Store(group) = output {
            black_box(group);
        }
    }
}

fn measure(n: usize, samples: usize) -> Value {
    eprintln!("timers: {n} registrations");
    let (mut b, restore_ms) = bed(n);
    let mut cases = serde_json::Map::new();
    let mut put = |name: &str, (p50, p99): (f64, f64)| {
        eprintln!("  {name:<20} p50 {p50:>10.0} ns  p99 {p99:>10.0} ns");
        cases.insert(name.into(), json!({"p50_ns": p50, "p99_ns": p99}));
    };

    put(
        "poll-timeout",
        time(samples, 100, |_| {
            black_box(b.server.poll_timeout());
        }),
    );

    let idle = b.now;
    put(
        "timeout-idle",
        time(samples, 10, |_| {
            b.server.handle_timeout(idle, &mut b.rng);
            drain(&mut b.server);
        }),
    );

    let device = SocketAddr::from(([10, 9, 9, 9], 5060));
    put(
        "register-challenge",
        time(samples, 1, |i| {
            let who = b.probes[i % b.probes.len()].clone();
            let register = Message::Register(Register {
                txn: TxnId(b.rng.array()),
                from: who,
                contact: Contact {
                    transport: Transport::Udp,
                    addr: device,
                },
                expires: 3600,
                csr: None,
                cert: None,
                auth: None,
                ext: Extensions::new(),
            })
            .encode();
            let receive = Receive::udp(device, b.server_addr, &register);
            let _ = b.server.handle_receive(idle, receive, &mut b.rng);
            drain(&mut b.server);
        }),
    );

    put(
        "cert-query",
        time(samples, 1, |i| {
            let query = Message::CertQuery(CertQuery {
                txn: TxnId(b.rng.array()),
                from: b.probes[0].clone(),
                hops: UpTo::new(8).unwrap_or_default(),
                via: None,
                target: b.probes[(i + 1) % b.probes.len()].clone(),
                ext: Extensions::new(),
            })
            .encode();
            let receive = Receive::udp(device, b.server_addr, &query);
            let _ = b.server.handle_receive(idle, receive, &mut b.rng);
            drain(&mut b.server);
        }),
    );

    // One registration's end at a time: the wake-up the index gives.
    let ends = b.ends.clone();
    put(
        "timeout-expiry",
        time(samples.min(EXPIRIES), 1, |i| {
            let at = Now::at((ends[i] + 1) * 1000);
            b.server.handle_timeout(at, &mut b.rng);
            drain(&mut b.server);
        }),
    );

    // What `poll_timeout` did before the index: every registration's end.
    let held = &b.held;
    put(
        "scan",
        time(samples.min(50), 1, |_| {
            black_box(
                held.values()
                    .map(|r| r.not_after.saturating_add(1).saturating_mul(1000))
                    .min(),
            );
        }),
    );

    json!({
        "registrations": n,
        "restore_ms": restore_ms,
        "cases": cases,
    })
}

/// Runs the timer benchmark; `quick` stops at 10⁵ registrations.
pub fn run(quick: bool) -> Value {
    let sizes: &[usize] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let results: Vec<Value> = sizes.iter().map(|&n| measure(n, 2_000)).collect();
    json!({ "sizes": results })
}
