//! `keyway-bench`: latency and throughput of Keyway's crypto hot paths,
//! beside the raw primitives they are built from and the constructions a
//! user would pick instead, measured in one process.
//!
//! `cargo run --release -p keyway-bench -- [--quick] --json FILE`

mod alloc;
mod cases;
mod harness;
mod timers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};

use harness::{Case, clock_overhead_ns, median};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Benchmarks of Keyway's crypto beside raw primitives and peers.
#[derive(Debug, Parser)]
#[command(name = "keyway-bench", version)]
struct Args {
    /// A short run (under a minute): fewer rounds, shorter slices.
    #[arg(long)]
    quick: bool,
    /// Writes the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Rounds over the whole set (default 9, or 3 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Also runs the `diag/*` cases, which locate costs in the library.
    #[arg(long)]
    diag: bool,
    /// Runs only the timer benchmark: one input's cost at 10³, 10⁵ and
    /// 10⁶ live registrations (10⁵ at most with --quick).
    #[arg(long)]
    timers: bool,
}

/// How long each part of a run takes.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rounds: usize,
    /// Slices per case per round, interleaved with the group's other cases.
    slices: usize,
    slice: Duration,
    warmup: Duration,
    /// Least duration of one timed batch.
    min_batch: Duration,
}

impl Plan {
    fn new(quick: bool, rounds: Option<usize>) -> Self {
        let base = if quick {
            Plan {
                rounds: 3,
                slices: 3,
                slice: Duration::from_millis(25),
                warmup: Duration::from_millis(60),
                min_batch: Duration::from_micros(2),
            }
        } else {
            Plan {
                rounds: 9,
                slices: 8,
                slice: Duration::from_millis(40),
                warmup: Duration::from_millis(300),
                min_batch: Duration::from_micros(2),
            }
        };
        Plan {
            rounds: rounds.unwrap_or(base.rounds).max(1),
            ..base
        }
    }
}

/// Cases compared with each other run in one group, their slices
/// interleaved (A B C A B C …) so they share the machine's state.
const GROUPS: &[&[&str]] = &[
    &[
        "raw/aes-siv-wrap-32",
        "keyway/wrap-cached",
        "peer/aes-kw-wrap-32",
    ],
    &[
        "raw/aes-siv-unwrap-32",
        "keyway/unwrap-cached",
        "peer/aes-kw-unwrap-32",
    ],
    &[
        "raw/x25519",
        "raw/hkdf-sha256",
        "keyway/wrap-full",
        "keyway/unwrap-full",
    ],
    &[
        "keyway/ephemeral-keygen",
        "keyway/unwrap-trial-8",
        "peer/hpke-seal-32",
        "peer/hpke-open-32",
    ],
    &["keyway/seal-1k", "keyway/open-1k", "keyway/rekey"],
    &[
        "raw/ed25519-sign",
        "raw/ed25519-verify",
        "keyway/cert-issue",
        "keyway/cert-verify",
    ],
];

/// The `diag/*` cases (with `--diag`), each beside what it explains.
const DIAG_GROUPS: &[&[&str]] = &[
    &["keyway/unwrap-trial-8", "diag/unwrap-trial-8-ours-first"],
    &["raw/hkdf-sha256", "diag/kek-info"],
    &[
        "raw/aes-siv-wrap-32",
        "keyway/wrap-cached",
        "diag/wrap-with",
        "diag/cache-lookup-siphash",
        "diag/cache-lookup-fxhash",
    ],
    &[
        "raw/aes-siv-unwrap-32",
        "keyway/unwrap-cached",
        "diag/unwrap-with",
    ],
    &["raw/ed25519-verify", "diag/ed25519-verify-parse-key"],
];

/// Operations for the dedicated allocation count of the cached paths.
const ALLOC_CHECK_OPS: u64 = 10_000;

fn index_of(cases: &[Case], name: &str) -> usize {
    cases
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case named {name}"))
}

fn case<'a>(cases: &'a [Case], name: &str) -> &'a Case {
    &cases[index_of(cases, name)]
}

fn run(cases: &mut [Case], plan: &Plan, diag: bool) {
    let groups: Vec<Vec<usize>> = GROUPS
        .iter()
        .chain(if diag { DIAG_GROUPS } else { &[] })
        .map(|g| g.iter().map(|n| index_of(cases, n)).collect())
        .collect();
    let mut grouped: Vec<usize> = groups.iter().flatten().copied().collect();
    grouped.sort_unstable();
    grouped.dedup();
    assert_eq!(grouped.len(), cases.len(), "every case is in a group");

    for c in cases.iter_mut() {
        c.calibrate(plan.warmup, plan.min_batch);
        eprintln!("calibrated {:<26} batch {}", c.name, c.batch);
    }
    for round in 0..plan.rounds {
        let t = Instant::now();
        for group in &groups {
            for _ in 0..plan.slices {
                for &i in group {
                    cases[i].run_slice(plan.slice, round);
                }
            }
        }
        eprintln!(
            "round {}/{} done in {:.1} s",
            round + 1,
            plan.rounds,
            t.elapsed().as_secs_f64()
        );
        if round == 0 {
            for c in cases.iter_mut() {
                let before = c.batch;
                c.recalibrate(plan.min_batch);
                if c.batch != before {
                    eprintln!("recalibrated {:<24} batch {before} -> {}", c.name, c.batch);
                }
            }
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn print_table(cases: &[Case]) {
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "case", "ops/s", "p50", "p99", "p99.9", "allocs/op"
    );
    for c in cases {
        println!(
            "{:<26} {:>10} {:>10} {:>10} {:>10} {:>9.2}",
            c.name,
            fmt_rate(c.ops_per_sec()),
            fmt_ns(c.quantile(0.5) as f64),
            fmt_ns(c.quantile(0.99) as f64),
            fmt_ns(c.quantile(0.999) as f64),
            c.allocs_per_op(),
        );
    }
}

/// A throughput check: `subject` at least `threshold` × `baseline`.
fn rate_check(cases: &[Case], subject: &str, baseline: &str, threshold: f64) -> Value {
    let s = case(cases, subject);
    let b = case(cases, baseline);
    let ratio = s.ops_per_sec() / b.ops_per_sec();
    // The same ratio round by round (the cases ran interleaved, so a
    // round's pair saw the same machine), as a cross-check.
    let paired: Vec<f64> = s
        .round_rates()
        .iter()
        .zip(b.round_rates())
        .map(|(x, y)| x / y)
        .collect();
    json!({
        "subject": subject,
        "baseline": baseline,
        "subject_ops_per_sec": s.ops_per_sec(),
        "baseline_ops_per_sec": b.ops_per_sec(),
        "ratio": ratio,
        "paired_round_median_ratio": median(&paired),
        "threshold": threshold,
        "pass": ratio >= threshold,
    })
}

fn checks(cases: &mut [Case]) -> (Value, bool) {
    let wrap = rate_check(
        cases,
        "keyway/wrap-cached",
        "raw/aes-siv-wrap-32",
        2.0 / 3.0,
    );
    let unwrap = rate_check(
        cases,
        "keyway/unwrap-cached",
        "raw/aes-siv-unwrap-32",
        2.0 / 3.0,
    );

    let parts = ["raw/x25519", "raw/hkdf-sha256", "raw/aes-siv-wrap-32"];
    let part_p50: Vec<f64> = parts
        .iter()
        .map(|n| case(cases, n).quantile(0.5) as f64)
        .collect();
    let sum_ns: f64 = part_p50.iter().sum();
    let implied = 1e9 / sum_ns;
    let full = case(cases, "keyway/wrap-full");
    let full_ratio = full.ops_per_sec() / implied;
    let full_check = json!({
        "subject": "keyway/wrap-full",
        "subject_ops_per_sec": full.ops_per_sec(),
        "baseline": "1 / (p50 raw/x25519 + p50 raw/hkdf-sha256 + p50 raw/aes-siv-wrap-32)",
        "baseline_parts_p50_ns": {
            "raw/x25519": part_p50.first(),
            "raw/hkdf-sha256": part_p50.get(1),
            "raw/aes-siv-wrap-32": part_p50.get(2),
        },
        "baseline_ops_per_sec": implied,
        "ratio": full_ratio,
        // Like with like, as cross-checks: p50 against p50, and mean
        // against mean (1 / ops_per_sec of each part).
        "p50_ratio": sum_ns / full.quantile(0.5) as f64,
        "mean_ratio": parts
            .iter()
            .map(|n| 1.0 / case(cases, n).ops_per_sec())
            .sum::<f64>()
            * full.ops_per_sec(),
        "threshold": 0.8,
        "pass": full_ratio >= 0.8,
    });

    // A dedicated count, beside the timed batches' count.
    let mut allocs = serde_json::Map::new();
    let mut no_alloc = true;
    for name in ["keyway/wrap-cached", "keyway/unwrap-cached"] {
        let i = index_of(cases, name);
        let c = &mut cases[i];
        let b = c.op.batch(ALLOC_CHECK_OPS);
        let per_op = b.allocs as f64 / ALLOC_CHECK_OPS as f64;
        no_alloc &= b.allocs == 0 && c.allocs == 0;
        allocs.insert(
            name.to_owned(),
            json!({
                "allocs_per_op": per_op,
                "allocs_in_dedicated_run": b.allocs,
                "dedicated_run_ops": ALLOC_CHECK_OPS,
                "allocs_per_op_in_timed_batches": c.allocs_per_op(),
            }),
        );
    }
    allocs.insert("pass".to_owned(), json!(no_alloc));

    let pass = [&wrap, &unwrap, &full_check]
        .iter()
        .all(|c| c["pass"] == json!(true))
        && no_alloc;
    let value = json!({
        "wrap_cached_vs_raw_siv": wrap,
        "unwrap_cached_vs_raw_siv": unwrap,
        "wrap_full_vs_primitives": full_check,
        "no_alloc_cached": Value::Object(allocs),
        "all_pass": pass,
    });
    (value, pass)
}

fn print_checks(checks: &Value) {
    println!();
    for (key, label) in [
        (
            "wrap_cached_vs_raw_siv",
            "wrap-cached / raw siv wrap   (≥ 0.667)",
        ),
        (
            "unwrap_cached_vs_raw_siv",
            "unwrap-cached / raw siv unwrap (≥ 0.667)",
        ),
        (
            "wrap_full_vs_primitives",
            "wrap-full / (x25519+hkdf+siv) (≥ 0.8)",
        ),
    ] {
        let c = &checks[key];
        println!(
            "check {label}: {:.3}  {}",
            c["ratio"].as_f64().unwrap_or(f64::NAN),
            if c["pass"] == json!(true) {
                "PASS"
            } else {
                "FAIL"
            }
        );
    }
    let a = &checks["no_alloc_cached"];
    println!(
        "check no allocation on cached paths: wrap {} / unwrap {} allocs per op  {}",
        a["keyway/wrap-cached"]["allocs_per_op"],
        a["keyway/unwrap-cached"]["allocs_per_op"],
        if a["pass"] == json!(true) {
            "PASS"
        } else {
            "FAIL"
        }
    );
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (Howard Hinnant's civil-from-days).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.timers {
        let out = timers::run(args.quick);
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&out).unwrap_or_default();
            if let Err(e) = std::fs::write(path, text + "\n") {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let plan = Plan::new(args.quick, args.rounds);
    let started = Instant::now();
    let date = utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()));
    let (mut cases, params) = cases::all(args.diag);
    let clock_ns = clock_overhead_ns();
    run(&mut cases, &plan, args.diag);
    let (checks, pass) = checks(&mut cases);

    print_table(&cases);
    print_checks(&checks);

    let out = json!({
        "meta": {
            "date": date,
            "mode": if args.quick { "quick" } else { "full" },
            "diag": args.diag,
            "rounds": plan.rounds,
            "slices_per_round": plan.slices,
            "slice_ms": plan.slice.as_millis() as u64,
            "warmup_ms": plan.warmup.as_millis() as u64,
            "min_batch_ns": plan.min_batch.as_nanos() as u64,
            "clock_read_ns": clock_ns,
            "kek_info_len": params.kek_info_len,
            "seal_sig_input_len": params.seal_sig_input_len,
            "message_ad_len": params.message_ad_len,
            "rekey_ad_len": params.rekey_ad_len,
            "wall_s": started.elapsed().as_secs_f64(),
            "ops_per_sec": "median over rounds of (operations / time in timed batches)",
            "latency": "hdrhistogram (3 significant figures) of batch time / batch size, all rounds",
        },
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "ops_per_sec": c.ops_per_sec(),
            "p50_ns": c.quantile(0.5),
            "p99_ns": c.quantile(0.99),
            "p999_ns": c.quantile(0.999),
            "mean_ns": 1e9 / c.ops_per_sec(),
            "allocs_per_op": c.allocs_per_op(),
            "batch": c.batch,
            "samples": c.hist.len(),
            "round_ops_per_sec": c.round_rates(),
        })).collect::<Vec<_>>(),
        "checks": checks,
    });
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&out).expect("JSON of plain values");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    eprintln!("wall time {:.1} s", started.elapsed().as_secs_f64());
    if pass {
        ExitCode::SUCCESS
    } else {
        eprintln!("a check failed");
        ExitCode::FAILURE
    }
}
