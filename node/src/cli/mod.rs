//! The `keyway` command line. Every command exits 0 on success and 1 on any
//! failure. A failure of the input (bad hex, undecodable CBOR or message,
//! oversize input) is one line on standard error with its reason and byte
//! offset; any other failure (unreadable file, unknown example type, failed
//! check) is one line with its reason; bad usage is clap's usage message,
//! also on standard error. README.md states the same for users.

mod input;

use std::io::Write;

use clap::{Parser, Subcommand};
use keyway::cbor::{self, DecodeOptions};
use keyway::wire::{self, ErrorCode, Message, MsgType};

pub use input::{
    HEX_TEXT_FACTOR, InputError, parse_hex, parse_hex_limited, read_hex_limited, read_limited,
};

#[derive(Debug, Parser)]
#[command(
    name = "keyway",
    version,
    about = "Keyway reference implementation and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generic CBOR tools.
    Cbor {
        #[command(subcommand)]
        command: CborCommand,
    },
    /// Decode one Keyway message and print it with field names.
    Decode {
        /// Input is hex text (whitespace ignored) instead of binary.
        #[arg(long)]
        hex: bool,
        /// Print JSON instead of annotated diagnostic notation.
        #[arg(long)]
        json: bool,
        /// Input file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Generate or check the golden test vectors.
    Vectors {
        #[command(subcommand)]
        command: VectorsCommand,
    },
    /// Print the example message of a type (hex), or list the types.
    Example {
        /// Message type name, e.g. `offer`; omit to list them.
        name: Option<String>,
        /// Print binary CBOR instead of hex.
        #[arg(long)]
        binary: bool,
    },
    /// Run a whole deployment in memory on a virtual clock and print what
    /// happened; the same arguments print the same bytes.
    Simulate {
        /// Domains with devices (a transit hub joins two or more).
        #[arg(long, default_value_t = 2)]
        domains: usize,
        /// Devices per domain.
        #[arg(long, default_value_t = 4)]
        devices: usize,
        /// Calls between random pairs of devices.
        #[arg(long, default_value_t = 10)]
        calls: usize,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Probability of losing a datagram (duplicates at half the rate).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// The last domain's server changes bodies it may only read.
        #[arg(long)]
        tamper: bool,
        /// No recorders (otherwise domains record every session, some
        /// devices' sessions, or none, in turn).
        #[arg(long)]
        no_record: bool,
        /// Attack the deployment: replays under fresh transaction ids, old
        /// rekeys, forged and reordered edits, stripped and forged
        /// attestations, revoked and expired certificates, datagrams from
        /// outside. Exit 1 unless every attack is detected or refused.
        #[arg(long)]
        adversary: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit 1 unless at least this fraction of the calls attempted
        /// completed (0 to 1).
        #[arg(long, value_name = "FRACTION")]
        min_completion: Option<f64>,
    },
}

#[derive(Debug, Subcommand)]
enum VectorsCommand {
    /// Write every vector file, deterministically, into a directory.
    Generate {
        /// Output directory (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Check every vector file in a directory; exit 1 on any mismatch.
    Verify {
        /// Directory holding the vector files.
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CborCommand {
    /// Print one CBOR item in diagnostic notation (RFC 8949 §8).
    Diag {
        /// Accept only deterministic encoding (RFC 8949 §4.2.1).
        #[arg(long)]
        deterministic: bool,
        /// Input is hex text (whitespace ignored) instead of binary.
        #[arg(long)]
        hex: bool,
        /// Input file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
    },
}

/// Runs the command line `args` (including the program name) and returns
/// the process exit code.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `--help` and `--version` are not errors (exit 0, standard
            // output); everything else clap rejects exits 1, not clap's 2,
            // so that 0 and 1 are the only exit codes.
            return u8::from(e.use_stderr());
        }
    };
    let result = match cli.command {
        Command::Cbor {
            command:
                CborCommand::Diag {
                    deterministic,
                    hex,
                    file,
                },
        } => cbor_diag(deterministic, hex, &file),
        Command::Decode { hex, json, file } => decode(hex, json, &file),
        Command::Example { name, binary } => example(name.as_deref(), binary),
        Command::Vectors { command } => vectors(command),
        Command::Simulate {
            domains,
            devices,
            calls,
            seed,
            loss,
            tamper,
            no_record,
            adversary,
            json,
            min_completion,
        } => simulate(
            &keyway::sim::SimConfig {
                domains,
                devices,
                calls,
                seed,
                loss,
                tamper,
                record: !no_record,
                adversary,
            },
            json,
            min_completion,
        ),
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {message}");
            1
        }
    }
}

/// `keyway simulate`: the report on standard output; exit 1 when an
/// invariant broke.
fn simulate(
    cfg: &keyway::sim::SimConfig,
    json: bool,
    min_completion: Option<f64>,
) -> Result<(), String> {
    if min_completion.is_some_and(|f| !(0.0..=1.0).contains(&f)) {
        return Err("--min-completion must be in 0..=1".into());
    }
    let report = keyway::sim::run(cfg).map_err(|e| e.to_string())?;
    let text = if json {
        let mut t = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        t.push('\n');
        t
    } else {
        report.to_text()
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    if !report.invariant_violations.is_empty() {
        return Err(format!(
            "{} invariant violations",
            report.invariant_violations.len()
        ));
    }
    if let Some(fraction) = min_completion {
        let needed = fraction * report.calls_attempted as f64;
        if (report.calls_completed as f64) < needed {
            return Err(format!(
                "{} of {} calls completed, below --min-completion {fraction}",
                report.calls_completed, report.calls_attempted
            ));
        }
    }
    Ok(())
}

fn read_input(file: &str, hex: bool, limit: usize) -> Result<Vec<u8>, InputError> {
    if hex {
        read_hex_limited(file, limit)
    } else {
        read_limited(file, limit)
    }
}

/// A decode failure as `keyway decode` prints it: the reason and offset,
/// then the protocol error code a receiver would answer with (KW-ERR-003).
fn with_code(failure: &dyn std::fmt::Display, code: ErrorCode) -> String {
    format!(
        "{failure} (code {} {})",
        code.0,
        code.name().unwrap_or("unknown")
    )
}

/// Output goes to a pipe that may close early: a failed write is not a crash.
fn print(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn cbor_diag(deterministic: bool, hex: bool, file: &str) -> Result<(), String> {
    let options = if deterministic {
        DecodeOptions::DETERMINISTIC
    } else {
        DecodeOptions::WELL_FORMED
    };
    let bytes = read_input(file, hex, options.max_input).map_err(|e| e.to_string())?;
    let item = cbor::decode(&bytes, &options).map_err(|e| e.to_string())?;
    print(&cbor::to_diag(&item));
    Ok(())
}

fn decode(hex: bool, json: bool, file: &str) -> Result<(), String> {
    let bytes = read_input(file, hex, wire::MAX_MESSAGE_SIZE).map_err(|e| match e {
        // KW-LIMIT-001: a message beyond the size limit is `too-large`. The
        // input is read only up to the limit, so this, not Message::decode,
        // is where a long one is caught; it is reported as decode failures are.
        InputError::TooLarge { .. } => with_code(&e, ErrorCode::TOO_LARGE),
        _ => e.to_string(),
    })?;
    let message = Message::decode(&bytes).map_err(|e| with_code(&e, ErrorCode::from(&e)))?;
    let node = message.describe();
    if json {
        let text = serde_json::to_string_pretty(&node.to_json()).map_err(|e| e.to_string())?;
        print(&text);
    } else {
        print(&node.to_annotated_diag());
    }
    Ok(())
}

fn vectors(command: VectorsCommand) -> Result<(), String> {
    match command {
        VectorsCommand::Generate { out } => {
            let n = crate::vectors_dir::write_all(&out)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            print(&format!("wrote {n} vector files to {}", out.display()));
            Ok(())
        }
        VectorsCommand::Verify { dir } => {
            let report = crate::vectors_dir::verify_dir(&dir);
            for (file, n) in &report.checked {
                print(&format!("ok   {file}: {n} tests"));
            }
            for failure in &report.failures {
                print(&format!("FAIL {failure}"));
            }
            if report.failures.is_empty() {
                Ok(())
            } else {
                Err(format!("{} vector failures", report.failures.len()))
            }
        }
    }
}

fn example(name: Option<&str>, binary: bool) -> Result<(), String> {
    let examples = wire::examples::all();
    let Some(name) = name else {
        for m in &examples {
            print(m.msg_type().name());
        }
        return Ok(());
    };
    let message = examples
        .into_iter()
        .find(|m| m.msg_type().name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = MsgType::ALL.iter().map(|t| t.name()).collect();
            format!("no message type {name:?}; types: {}", names.join(", "))
        })?;
    let bytes = message.encode();
    if binary {
        let _ = std::io::stdout().lock().write_all(&bytes);
    } else {
        print(&cbor::hex(&bytes));
    }
    Ok(())
}
