//! The `keyway` command line as a user runs it: exit 0 with output on
//! success, exit 1 otherwise, never another code, never a panic. A failed
//! command prints one line on standard error (with a byte offset when the
//! input is at fault); bad usage prints clap's usage there instead.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::process::{Command, Stdio};

// The RFC 8949 data the protocol crate's tests read too.
#[path = "../../tests/support/rfc8949.rs"]
#[allow(dead_code)]
mod rfc8949;

use keyway::wire::{Sample, Source, examples};
use rfc8949::{APPENDIX_A, APPENDIX_F, data_lines};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn keyway(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Written from another thread so a full stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let run = Run {
        code: out.status.code().expect("killed by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "panic: {}", run.stderr);
    run
}

fn failed_with_one_line(run: &Run) {
    assert_eq!(run.code, 1, "stdout {:?}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(run.stderr.starts_with("error: "), "{:?}", run.stderr);
}

#[test]
fn cbor_diag_prints_every_appendix_a_example() {
    for line in data_lines(APPENDIX_A) {
        let (hex, diag) = line.split_once('\t').unwrap();
        let run = keyway(&["cbor", "diag", "--hex"], hex.as_bytes());
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, format!("{diag}\n").as_str()),
            "{hex}"
        );
    }
}

#[test]
fn cbor_diag_rejects_every_appendix_f_example_with_exit_1() {
    for hex in data_lines(APPENDIX_F) {
        for extra in [&[][..], &["--deterministic"]] {
            let mut args = vec!["cbor", "diag", "--hex"];
            args.extend_from_slice(extra);
            let run = keyway(&args, hex.as_bytes());
            failed_with_one_line(&run);
            assert!(run.stderr.contains(" at byte "), "{hex}: {}", run.stderr);
        }
    }
}

#[test]
fn cbor_diag_reads_binary_from_stdin_and_files() {
    let run = keyway(&["cbor", "diag"], &[0x83, 0x01, 0x02, 0x03]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "[1, 2, 3]\n"));
    let path = std::env::temp_dir().join(format!("keyway-cli-{}.cbor", std::process::id()));
    std::fs::write(&path, [0xa1, 0x61, 0x61, 0xf5]).unwrap();
    let run = keyway(&["cbor", "diag", path.to_str().unwrap()], b"");
    assert_eq!((run.code, run.stdout.as_str()), (0, "{\"a\": true}\n"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn cbor_diag_deterministic_rejects_what_plain_diag_accepts() {
    let run = keyway(&["cbor", "diag", "--hex"], b"1817");
    assert_eq!((run.code, run.stdout.as_str()), (0, "23\n"));
    let run = keyway(&["cbor", "diag", "--hex", "--deterministic"], b"1817");
    failed_with_one_line(&run);
    assert_eq!(
        run.stderr,
        "error: argument not in its shortest form at byte 0\n"
    );
}

#[test]
fn bad_input_files_and_usage_exit_1() {
    failed_with_one_line(&keyway(&["cbor", "diag", "--hex"], b"0"));
    failed_with_one_line(&keyway(&["cbor", "diag", "--hex"], b"zz"));
    failed_with_one_line(&keyway(&["cbor", "diag"], b""));
    failed_with_one_line(&keyway(&["decode", "--hex"], b""));
    failed_with_one_line(&keyway(&["example", "no-such-type"], b""));
}

/// RFC 8949 §8.1: `(_ )` would not say which kind of string has no chunks.
#[test]
fn cbor_diag_tells_empty_indefinite_strings_apart() {
    for (hex, diag) in [
        ("5fff", "''_"),
        ("7fff", "\"\"_"),
        ("5f40ff", "(_ h'')"),
        ("5f4201024103ff", "(_ h'0102', h'03')"),
        ("7f626162616360ff", "(_ \"ab\", \"c\", \"\")"),
        ("a15fff7fff", "{''_: \"\"_}"),
    ] {
        let run = keyway(&["cbor", "diag", "--hex"], format!("{hex}\n").as_bytes());
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, format!("{diag}\n").as_str()),
            "{hex}: {}",
            run.stderr
        );
    }
}

/// Hex errors name the offending byte as a number and give its byte offset
/// in the text, not a character index.
#[test]
fn hex_errors_give_the_byte_and_its_offset() {
    for (text, error) in [
        (
            &b"123\n"[..],
            "odd number of hex digits (3): the last, at byte 2 of the hex text, has no pair",
        ),
        (
            "\u{e9}".as_bytes(),
            "invalid hex digit 0xc3 at byte 0 of the hex text",
        ),
        (
            "a0 \u{e9}".as_bytes(),
            "invalid hex digit 0xc3 at byte 3 of the hex text",
        ),
        (b"\xa0", "invalid hex digit 0xa0 at byte 0 of the hex text"),
        (
            b"0g",
            "invalid hex digit 0x67 ('g') at byte 1 of the hex text",
        ),
    ] {
        for command in [&["cbor", "diag", "--hex"][..], &["decode", "--hex"]] {
            let run = keyway(command, text);
            failed_with_one_line(&run);
            assert_eq!(run.stderr, format!("error: {error}\n"), "{command:?}");
        }
    }
}

/// KW-LIMIT-001: `decode` reports an oversize message as it reports other
/// decode failures, with code 106 too-large and the offset of the first
/// byte too many; 16384 bytes are read and decoded.
#[test]
fn oversize_input_is_reported_with_its_offset_and_code() {
    let too_large = "error: input exceeds the limit of 16384 bytes at byte 16384 \
                     (code 106 too-large)\n";
    let run = keyway(&["decode"], &[0; 16385]);
    failed_with_one_line(&run);
    assert_eq!(run.stderr, too_large);
    let run = keyway(&["decode", "/dev/zero"], b"");
    failed_with_one_line(&run);
    assert_eq!(run.stderr, too_large);
    let run = keyway(&["decode", "--hex"], "00".repeat(16385).as_bytes());
    failed_with_one_line(&run);
    assert_eq!(run.stderr, too_large);
    // At the limit the message is decoded, and fails for what it is.
    let run = keyway(&["decode"], &[0; 16384]);
    failed_with_one_line(&run);
    assert_eq!(
        run.stderr,
        "error: trailing bytes after the data item at byte 1 (code 100 malformed)\n"
    );

    // Generic CBOR has no protocol codes; its limit is 1 MiB of data.
    let over = "error: input exceeds the limit of 1048576 bytes at byte 1048576\n";
    let run = keyway(&["cbor", "diag"], &vec![0x40u8; (1 << 20) + 1]);
    failed_with_one_line(&run);
    assert_eq!(run.stderr, over);
    let run = keyway(
        &["cbor", "diag", "--hex"],
        "40".repeat((1 << 20) + 1).as_bytes(),
    );
    failed_with_one_line(&run);
    assert_eq!(run.stderr, over);
    // Hex text is bounded too (four bytes of text per byte of data), and a
    // bad digit within it is reported first.
    let spaces = vec![b' '; (4 << 20) + 1];
    let run = keyway(&["cbor", "diag", "--hex"], &spaces);
    failed_with_one_line(&run);
    assert_eq!(
        run.stderr,
        "error: hex text exceeds the limit of 4194304 bytes at byte 4194304 of the hex text\n"
    );
    let mut bad = spaces;
    bad[100] = b'x';
    let run = keyway(&["cbor", "diag", "--hex"], &bad);
    failed_with_one_line(&run);
    assert_eq!(
        run.stderr,
        "error: invalid hex digit 0x78 ('x') at byte 100 of the hex text\n"
    );
}

/// A file that cannot be read is one line naming it, without an offset.
#[test]
fn unreadable_files_are_one_line_without_an_offset() {
    for (path, why) in [
        ("/nonexistent/keyway", "No such file or directory"),
        ("/", "Is a directory"),
    ] {
        for command in ["cbor diag", "cbor diag --hex", "decode", "decode --json"] {
            let mut args: Vec<&str> = command.split(' ').collect();
            args.push(path);
            let run = keyway(&args, b"");
            failed_with_one_line(&run);
            assert!(
                run.stderr
                    .starts_with(&format!("error: cannot read {path}: {why}")),
                "{args:?}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains(" at byte "), "{}", run.stderr);
        }
    }
}

/// Bad usage prints clap's usage (several lines) on standard error and
/// exits 1, not clap's usual 2; help and version are exit 0 on stdout.
#[test]
fn usage_errors_exit_1_with_usage_on_stderr() {
    for args in [
        &["cbor", "diag", "a", "b"][..],
        &["cbor", "diag", "--bogus"],
        &["decode", "--binary"],
        &["frobnicate"],
        &["cbor"],
        &[],
    ] {
        let run = keyway(args, b"");
        assert_eq!(run.code, 1, "{args:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(
            run.stderr.contains("Usage: keyway"),
            "{args:?}: {}",
            run.stderr
        );
    }
    for args in [&["--help"][..], &["cbor", "diag", "--help"], &["--version"]] {
        let run = keyway(args, b"");
        assert_eq!(run.code, 0, "{args:?}");
        assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
        assert!(!run.stdout.is_empty(), "{args:?}");
    }
}

/// The commands README.md shows exist, with the options it gives them.
#[test]
fn readme_commands_match_the_cli() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut checked = 0;
    for line in readme.lines() {
        let Some(rest) = line.strip_prefix("keyway ") else {
            continue;
        };
        let usage = rest.split('#').next().unwrap().trim_end();
        let words: Vec<&str> = usage.split_whitespace().collect();
        // The subcommand path: leading lower-case words.
        let path: Vec<&str> = words
            .iter()
            .copied()
            .take_while(|w| w.bytes().all(|b| b.is_ascii_lowercase()))
            .collect();
        let mut args = path.clone();
        args.push("--help");
        let help = keyway(&args, b"");
        assert_eq!(help.code, 0, "README: keyway {usage}: {}", help.stderr);
        for word in &words {
            let flag: String = word
                .trim_start_matches('[')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if flag.starts_with("--") {
                assert!(
                    help.stdout.contains(&format!("{flag} "))
                        || help.stdout.contains(&format!("{flag}\n")),
                    "README: keyway {usage}: `keyway {}` has no {flag}",
                    path.join(" ")
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} README commands found");
}

#[test]
fn decode_prints_every_example_with_field_names() {
    for message in examples::all() {
        let name = message.msg_type().name();
        let hex = keyway::cbor::hex(&message.encode());
        let run = keyway(&["decode", "--hex"], hex.as_bytes());
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert!(run.stdout.contains(&format!(
            "1 / type /: {} / {name} /",
            message.msg_type().code()
        )));
        assert_eq!(run.stdout, message.describe().to_annotated_diag() + "\n");

        let run = keyway(&["decode", "--json"], &message.encode());
        assert_eq!(run.code, 0);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["type"], name);
    }
}

#[test]
fn example_prints_what_decode_reads() {
    let list = keyway(&["example"], b"");
    assert_eq!(list.code, 0);
    assert_eq!(list.stdout.lines().count(), examples::all().len());
    let hex = keyway(&["example", "offer"], b"");
    let run = keyway(&["decode", "--hex"], hex.stdout.as_bytes());
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn decode_reports_the_error_code() {
    let run = keyway(&["decode", "--hex"], b"a1 00 02");
    failed_with_one_line(&run);
    assert_eq!(
        run.stderr,
        "error: unsupported protocol version 2 at byte 2 (code 105 unsupported-version)\n"
    );
}

/// No input makes either command panic, hang or exit with another code.
#[test]
fn arbitrary_input_exits_0_or_1() {
    let mut src = Source::new(7);
    for i in 0..150u64 {
        let mut bytes = keyway::wire::Message::sample(&mut src).encode();
        let len = bytes.len();
        bytes[(src.next_u64() as usize) % len] ^= 1 << (i % 8);
        if i % 3 == 0 {
            let n = 1 + (src.next_u64() % 64) as usize;
            bytes = src.bytes(n);
        }
        for args in [
            &["cbor", "diag"][..],
            &["cbor", "diag", "--deterministic"],
            &["decode"],
            &["decode", "--json"],
        ] {
            let run = keyway(args, &bytes);
            assert!(run.code == 0 || run.code == 1, "{args:?} exit {}", run.code);
            if run.code == 1 {
                failed_with_one_line(&run);
            }
        }
    }
}

/// `simulate --adversary` refuses a configuration it cannot attack, with
/// a reason, rather than running without attacks; a run it can attack
/// accounts for every attack in its JSON.
#[test]
fn simulate_adversary_is_refused_where_it_cannot_act_and_accounts_for_its_attacks() {
    let one = keyway(&["simulate", "--domains", "1", "--adversary"], b"");
    assert_eq!(one.code, 1);
    assert!(
        one.stderr.contains("--adversary needs two or more domains"),
        "{}",
        one.stderr
    );
    let none = keyway(&["simulate", "--calls", "0", "--adversary"], b"");
    assert_eq!(none.code, 1);
    assert!(
        none.stderr.contains("--adversary needs calls"),
        "{}",
        none.stderr
    );
    let run = keyway(
        &[
            "simulate",
            "--domains",
            "2",
            "--devices",
            "3",
            "--calls",
            "8",
            "--loss",
            "0.1",
            "--adversary",
            "--json",
        ],
        b"",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(report["attacks_injected"].as_u64().unwrap() > 0);
    assert_eq!(report["attacks_unaccounted"], 0);
    for (kind, f) in report["attacks"].as_object().unwrap() {
        let n = |k: &str| f[k].as_u64().unwrap();
        assert_eq!(n("injected"), n("detected") + n("refused"), "{kind}");
        assert_eq!(n("accepted"), 0, "{kind}");
    }
}
