//! The `keyway` command line as a user runs it: exit 0 with output on
//! success, exit 1 with one line on standard error otherwise, never another
//! code, never a panic.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::process::{Command, Stdio};

mod support;

use keyway::wire::{Sample, Source, examples};
use support::rfc8949::{APPENDIX_A, APPENDIX_F, data_lines};

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
    failed_with_one_line(&keyway(&["cbor", "diag", "/nonexistent/keyway"], b""));
    failed_with_one_line(&keyway(&["cbor", "diag"], b""));
    failed_with_one_line(&keyway(&["decode", "--hex"], b""));
    failed_with_one_line(&keyway(&["example", "no-such-type"], b""));
    // More than 1 MiB.
    let big = vec![0x40u8; (1 << 20) + 1];
    let run = keyway(&["cbor", "diag"], &big);
    failed_with_one_line(&run);
    assert!(run.stderr.contains("exceeds"), "{}", run.stderr);
    // Bad usage is exit 1 too; help is exit 0.
    assert_eq!(keyway(&["cbor", "diag", "--bogus"], b"").code, 1);
    assert_eq!(keyway(&["frobnicate"], b"").code, 1);
    assert_eq!(keyway(&["--help"], b"").code, 0);
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
