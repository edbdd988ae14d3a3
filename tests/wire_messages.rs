//! Every message type, and each decoding rule of spec/encoding.md and
//! spec/messages.md as a named test with a positive control.

// Tests may panic on unexpected input: that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use keyway::cbor::{self, CborErrorClass, CborErrorKind, DecodeOptions, Item};
use keyway::wire::{
    self, ErrorCode, Message, MsgType, Sample, Source, WireError, WireErrorKind, examples,
};
use quickcheck::{QuickCheck, TestResult};
use support::edit::{bytes_of, find, get, item_of, remove, set};

fn example(t: MsgType) -> Message {
    examples::all()
        .into_iter()
        .find(|m| m.msg_type() == t)
        .unwrap()
}

fn example_item(t: MsgType) -> Item<'static> {
    item_of(&example(t).encode())
}

fn reject(bytes: &[u8]) -> WireError {
    match Message::decode(bytes) {
        Ok(m) => panic!("accepted {:?}", m.msg_type()),
        Err(e) => {
            assert!(e.offset <= bytes.len(), "offset {} beyond input", e.offset);
            e
        }
    }
}

fn cbor_kind(e: &WireError) -> CborErrorKind {
    match e.kind {
        WireErrorKind::Cbor(kind) => kind,
        ref other => panic!("expected a CBOR error, got {other}"),
    }
}

/// A map encoded with its entries in the given order, not sorted.
fn raw_map(entries: &[(Item<'_>, Item<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    cbor::write_map_header(&mut out, entries.len() as u64);
    for (k, v) in entries {
        cbor::encode_into(&mut out, k).unwrap();
        cbor::encode_into(&mut out, v).unwrap();
    }
    out
}

fn map_entries(item: Item<'static>) -> Vec<(Item<'static>, Item<'static>)> {
    match item {
        Item::Map { entries, .. } => entries,
        _ => panic!("not a map"),
    }
}

#[test]
fn every_message_type_has_an_example() {
    let types: Vec<MsgType> = examples::all().iter().map(Message::msg_type).collect();
    assert_eq!(types, MsgType::ALL);
}

/// KW-WIRE-002, KW-CBOR-010: encode(decode(b)) == b and the encoding is
/// deterministic CBOR.
#[test]
fn examples_roundtrip_byte_for_byte() {
    for message in examples::all() {
        let bytes = message.encode();
        let decoded =
            Message::decode(&bytes).unwrap_or_else(|e| panic!("{:?}: {e}", message.msg_type()));
        assert_eq!(decoded, message);
        assert_eq!(decoded.encode(), bytes);
        cbor::decode(&bytes, &DecodeOptions::DETERMINISTIC).unwrap();
    }
}

/// KW-REG-002: the combined request with an existing certificate (F2), and
/// de-registration with neither credential.
#[test]
fn register_with_existing_certificate() {
    let Message::Register(mut register) = example(MsgType::Register) else {
        unreachable!()
    };
    register.csr = None;
    register.cert = Some(examples::certificate(
        register.from.clone(),
        "a.example",
        wire::Role::Device,
    ));
    let message = Message::Register(register.clone());
    assert_eq!(Message::decode(&message.encode()).unwrap(), message);

    register.cert = None;
    register.expires = 0;
    let message = Message::Register(register);
    assert_eq!(Message::decode(&message.encode()).unwrap(), message);
}

/// KW-WIRE-001, KW-WIRE-004, KW-REG-003: the type is read first and decides
/// the schema.
#[test]
fn message_type_is_determined_first() {
    let mut item = example_item(MsgType::Ack);
    set(&mut item, 1, Item::Unsigned(99));
    let e = reject(&bytes_of(&item));
    // map head, key 0, version, key 1: the type value is at byte 4.
    assert_eq!(
        e,
        WireError {
            offset: 4,
            kind: WireErrorKind::UnknownMessageType(99)
        }
    );
    assert_eq!(ErrorCode::from(&e), ErrorCode::UNKNOWN_MESSAGE_TYPE);

    // An ack's fields read as a bye lack the epoch.
    set(&mut item, 1, Item::Unsigned(MsgType::Bye.code()));
    let e = reject(&bytes_of(&item));
    assert_eq!(
        e.kind,
        WireErrorKind::MissingField {
            key: 23,
            name: "epoch"
        }
    );
}

/// KW-WIRE-003: the version is checked before anything else.
#[test]
fn unsupported_version_is_rejected_before_the_type() {
    let mut item = example_item(MsgType::Ack);
    set(&mut item, 0, Item::Unsigned(2));
    set(&mut item, 1, Item::Unsigned(99));
    let e = reject(&bytes_of(&item));
    assert_eq!(
        e,
        WireError {
            offset: 2,
            kind: WireErrorKind::UnsupportedVersion(2)
        }
    );
    assert_eq!(ErrorCode::from(&e), ErrorCode::UNSUPPORTED_VERSION);
}

/// KW-SEAL-003: anonymous recipient entries (no id, no kid) are valid.
#[test]
fn anonymous_recipient_entries_decode() {
    let Message::Offer(mut offer) = example(MsgType::Offer) else {
        unreachable!()
    };
    let mut recipients = offer.body.recipients.clone().into_vec();
    for r in &mut recipients {
        r.id = None;
        r.kid = None;
    }
    offer.body.recipients = wire::List::new(recipients).unwrap();
    let message = Message::Offer(offer);
    assert_eq!(Message::decode(&message.encode()).unwrap(), message);
}

/// KW-WIRE-051, KW-WIRE-014.
#[test]
fn rekey_carries_exactly_one_key() {
    let valid = example_item(MsgType::Rekey);
    Message::decode(&bytes_of(&valid)).unwrap();

    let mut both = valid.clone();
    let sealed = get(&mut example_item(MsgType::Offer), 22).clone();
    set(&mut both, 22, sealed);
    let e = reject(&bytes_of(&both));
    assert!(matches!(e.kind, WireErrorKind::FieldCombination(_)), "{e}");
    assert_eq!(e.offset, 0);
    assert_eq!(ErrorCode::from(&e), ErrorCode::SCHEMA);

    let mut neither = valid;
    remove(&mut neither, 26);
    let e = reject(&bytes_of(&neither));
    assert!(matches!(e.kind, WireErrorKind::FieldCombination(_)), "{e}");
}

/// KW-WIRE-050, KW-WIRE-014.
#[test]
fn register_with_csr_and_cert_is_rejected() {
    let mut item = example_item(MsgType::Register);
    let cert = get(&mut example_item(MsgType::RegisterOk), 13).clone();
    set(&mut item, 13, cert);
    let e = reject(&bytes_of(&item));
    assert!(matches!(e.kind, WireErrorKind::FieldCombination(_)), "{e}");
}

/// KW-WIRE-011: an unknown non-negative key is rejected at the key, in any
/// message and in nested structures.
#[test]
fn unknown_critical_fields_are_rejected_at_their_key() {
    for message in examples::all() {
        for key in [27i64, 60, 1000] {
            let mut item = item_of(&message.encode());
            set(&mut item, key, Item::Unsigned(0));
            let bytes = bytes_of(&item);
            let e = reject(&bytes);
            assert_eq!(
                e.kind,
                WireErrorKind::UnknownCriticalField(key as u64),
                "{:?} key {key}",
                message.msg_type()
            );
            let mut key_bytes = Vec::new();
            cbor::write_uint(&mut key_bytes, key as u64);
            assert_eq!(
                &bytes[e.offset..e.offset + key_bytes.len()],
                key_bytes.as_slice()
            );
            assert_eq!(ErrorCode::from(&e), ErrorCode::UNKNOWN_CRITICAL_FIELD);
        }
    }
    // Inside the sealed body of an offer.
    let mut item = example_item(MsgType::Offer);
    set(get(&mut item, 22), 11, Item::Unsigned(0));
    let e = reject(&bytes_of(&item));
    assert_eq!(e.kind, WireErrorKind::UnknownCriticalField(11));
}

/// KW-WIRE-012: extension fields (negative keys) are accepted, kept, and
/// re-encoded byte for byte, at message level and nested.
#[test]
fn extension_fields_are_kept_and_reencoded() {
    let ext_value = || {
        Item::array(vec![
            Item::Unsigned(1),
            Item::map(vec![(
                Item::text("x"),
                Item::Tag(32, Box::new(Item::text("u"))),
            )]),
        ])
    };
    for message in examples::all() {
        let mut item = item_of(&message.encode());
        set(&mut item, -1, ext_value());
        set(&mut item, -25, Item::bytes(vec![0u8]));
        let bytes = bytes_of(&item);
        let decoded = Message::decode(&bytes).unwrap();
        assert_eq!(decoded.encode(), bytes, "{:?}", message.msg_type());
        assert_ne!(decoded, message, "extensions are part of the value");
    }
    let mut item = example_item(MsgType::Offer);
    let recipients = get(get(&mut item, 22), 5);
    let Item::Array { items, .. } = recipients else {
        unreachable!()
    };
    set(&mut items[0], -3, ext_value());
    let bytes = bytes_of(&item);
    let Message::Offer(offer) = Message::decode(&bytes).unwrap() else {
        unreachable!()
    };
    let ext: Vec<(u64, &[u8])> = offer.body.recipients[0].ext.iter().collect();
    assert_eq!(ext, vec![(2, bytes_of(&ext_value()).as_slice())]);
    assert_eq!(Message::Offer(offer).encode(), bytes);
}

/// KW-WIRE-012: an extension value must itself be deterministic.
#[test]
fn extension_values_must_be_deterministic() {
    let mut bytes = example(MsgType::Ack).encode();
    bytes[0] += 1; // one more entry
    bytes.extend_from_slice(&[0x20, 0x18, 0x01]); // -1: 1 in two bytes
    let e = reject(&bytes);
    assert_eq!(cbor_kind(&e), CborErrorKind::NonShortestArgument);
    assert_eq!(e.offset, bytes.len() - 2);
}

/// KW-WIRE-010: map keys are integers.
#[test]
fn non_integer_map_keys_are_schema_errors() {
    let mut entries = map_entries(example_item(MsgType::Ack));
    entries.push((Item::text("x"), Item::Unsigned(1)));
    let e = reject(&bytes_of(&Item::map(entries)));
    assert!(matches!(
        cbor_kind(&e),
        CborErrorKind::UnexpectedType { .. }
    ));
    assert_eq!(ErrorCode::from(&e), ErrorCode::SCHEMA);
}

/// KW-WIRE-013: a missing required field is named, at the map's offset.
#[test]
fn missing_required_fields_are_named() {
    let mut item = example_item(MsgType::Offer);
    remove(&mut item, 2);
    let e = reject(&bytes_of(&item));
    assert_eq!(
        e,
        WireError {
            offset: 0,
            kind: WireErrorKind::MissingField {
                key: 2,
                name: "txn"
            }
        }
    );

    let mut item = example_item(MsgType::Offer);
    remove(get(&mut item, 22), 9);
    let bytes = bytes_of(&item);
    let e = reject(&bytes);
    assert_eq!(
        e.kind,
        WireErrorKind::MissingField {
            key: 9,
            name: "sig"
        }
    );
    // The sealed map follows key 22 (0x16 in one byte).
    assert_eq!(e.offset, find(&bytes, &[0x16, 0xaa]) + 1);
}

fn field_error(t: MsgType, path: &[i64], value: Item<'static>) -> WireError {
    let mut item = example_item(t);
    let (last, parents) = path.split_last().unwrap();
    let mut target = &mut item;
    for key in parents {
        target = get(target, *key);
    }
    set(target, *last, value);
    reject(&bytes_of(&item))
}

/// KW-WIRE-013, KW-WIRE-032, KW-LIMIT-004: values must match their type and
/// constraints.
#[test]
fn field_values_must_match_their_type_and_bounds() {
    use WireErrorKind::*;
    let bad_length = |actual, min, max| BadLength { actual, min, max };
    let cases: Vec<(MsgType, Vec<i64>, Item<'static>, WireErrorKind)> = vec![
        (
            MsgType::Ack,
            vec![2],
            Item::bytes(vec![0u8; 7]),
            bad_length(7, 8, 8),
        ),
        (
            MsgType::Ack,
            vec![6],
            Item::Unsigned(17),
            OutOfRange { value: 17, max: 16 },
        ),
        (
            MsgType::Register,
            vec![10],
            Item::array(vec![
                Item::Unsigned(0),
                Item::bytes(vec![1u8, 2, 3, 4]),
                Item::Unsigned(65536),
            ]),
            OutOfRange {
                value: 65536,
                max: 65535,
            },
        ),
        (
            MsgType::Register,
            vec![10],
            Item::array(vec![
                Item::Unsigned(0),
                Item::bytes(vec![1u8; 5]),
                Item::Unsigned(1),
            ]),
            bad_length(5, 4, 16),
        ),
        (
            MsgType::Register,
            vec![10],
            Item::array(vec![
                Item::Unsigned(2),
                Item::bytes(vec![1u8; 4]),
                Item::Unsigned(1),
            ]),
            UnknownEnumValue {
                what: "transport",
                value: 2,
            },
        ),
        (
            MsgType::Register,
            vec![10],
            Item::array(vec![Item::Unsigned(0), Item::bytes(vec![1u8; 4])]),
            bad_length(2, 3, 3),
        ),
        (
            MsgType::Error,
            vec![29],
            Item::Unsigned(99),
            OutOfRange {
                value: 99,
                max: 999,
            },
        ),
        (
            MsgType::Error,
            vec![30],
            Item::text("r".repeat(257)),
            bad_length(257, 0, 256),
        ),
        (
            MsgType::Offer,
            vec![22, 0],
            Item::Unsigned(2),
            UnknownEnumValue {
                what: "suite",
                value: 2,
            },
        ),
        (
            MsgType::Offer,
            vec![22, 7],
            Item::bytes(vec![0u8; 15]),
            bad_length(15, 16, 8192),
        ),
        (
            MsgType::Ok,
            vec![28],
            Item::Unsigned(14),
            UnknownEnumValue {
                what: "message type",
                value: 14,
            },
        ),
        // KW-WIRE-040: identifier sizes.
        (
            MsgType::Ack,
            vec![5],
            Item::bytes(vec![0u8; 15]),
            bad_length(15, 16, 16),
        ),
        (
            MsgType::Ok,
            vec![50],
            Item::bytes(vec![0u8; 17]),
            bad_length(17, 16, 16),
        ),
        // KW-WIRE-041: key, nonce, key-id and signature sizes.
        (
            MsgType::Offer,
            vec![22, 3],
            Item::bytes(vec![0u8; 9]),
            bad_length(9, 8, 8),
        ),
        (
            MsgType::Offer,
            vec![22, 4],
            Item::bytes(vec![0u8; 31]),
            bad_length(31, 32, 32),
        ),
        (
            MsgType::Offer,
            vec![22, 6],
            Item::bytes(vec![0u8; 17]),
            bad_length(17, 16, 16),
        ),
        (
            MsgType::Offer,
            vec![22, 9],
            Item::bytes(vec![0u8; 63]),
            bad_length(63, 64, 64),
        ),
        (
            MsgType::Offer,
            vec![22, 8],
            Item::bytes(vec![0u8; 33]),
            bad_length(33, 32, 32),
        ),
    ];
    for (t, path, value, expected) in cases {
        let e = field_error(t, &path, value);
        assert_eq!(e.kind, expected, "{t:?} {path:?}");
        assert_eq!(ErrorCode::from(&e), ErrorCode::SCHEMA);
    }

    // 17 recipients: within the CBOR count limit, beyond the field's bound.
    let mut item = example_item(MsgType::Offer);
    let recipients = get(get(&mut item, 22), 5);
    let Item::Array { items, .. } = recipients else {
        unreachable!()
    };
    let one = items[0].clone();
    items.resize(17, one);
    let e = reject(&bytes_of(&item));
    assert_eq!(e.kind, bad_length(17, 1, 16));

    // A byte string where an unsigned integer belongs.
    let e = field_error(MsgType::Ack, &[6], Item::bytes(vec![1u8]));
    assert!(matches!(
        cbor_kind(&e),
        CborErrorKind::UnexpectedType { .. }
    ));
}

/// KW-WIRE-030: times are unsigned seconds since the epoch.
#[test]
fn times_are_unsigned_seconds() {
    let e = field_error(MsgType::RegisterOk, &[19], Item::Negative(0));
    assert!(matches!(
        cbor_kind(&e),
        CborErrorKind::UnexpectedType { .. }
    ));
    let Message::RegisterOk(ok) = example(MsgType::RegisterOk) else {
        unreachable!()
    };
    assert_eq!(ok.not_after, wire::Time(1_767_229_200));
    let diag = Message::RegisterOk(ok).describe().to_annotated_diag();
    assert!(
        diag.contains("19 / not-after /: 1767229200 / 2026-01-01T01:00:00Z /"),
        "{diag}"
    );
}

/// KW-WIRE-031: one spelling per account.
#[test]
fn accounts_must_be_canonical() {
    let local64 = "l".repeat(64);
    let long_domain = format!("{}.example", "d".repeat(63));
    for valid in [
        "a@b".to_string(),
        "a.b_c-d+e@x-1.example".to_string(),
        format!("{local64}@a.example"),
        format!("a@{long_domain}"),
    ] {
        wire::Principal::new(&valid).unwrap_or_else(|e| panic!("{valid}: {e}"));
    }
    for invalid in [
        "Alice@a.example".to_string(),
        "alice".to_string(),
        "a@b@c".to_string(),
        "@a.example".to_string(),
        "alice@".to_string(),
        ".alice@a.example".to_string(),
        "alice@-a.example".to_string(),
        "alice@a..example".to_string(),
        "ali ce@a.example".to_string(),
        "al\u{e9}@a.example".to_string(),
        format!("{local64}l@a.example"),
        format!("a@{}", "d".repeat(64)),
        format!(
            "a@{}",
            [
                "d".repeat(63),
                "d".repeat(63),
                "d".repeat(63),
                "d".repeat(63)
            ]
            .join(".")
        ),
    ] {
        assert!(wire::Principal::new(&invalid).is_err(), "{invalid}");
        let e = field_error(MsgType::Ack, &[3], Item::text(invalid.clone()));
        assert!(
            matches!(e.kind, WireErrorKind::InvalidSyntax { .. }),
            "{invalid}: {e}"
        );
    }
}

/// KW-CBOR-010, KW-CBOR-011: non-shortest arguments are rejected.
#[test]
fn non_shortest_arguments_are_rejected() {
    let bytes = example(MsgType::Ack).encode();
    let at = find(&bytes, &[0x06, 0x08]); // hops: 8
    let mut wide = bytes[..at + 1].to_vec();
    wide.extend_from_slice(&[0x18, 0x08]);
    wide.extend_from_slice(&bytes[at + 2..]);
    let e = reject(&wide);
    assert_eq!(e.offset, at + 1);
    assert_eq!(cbor_kind(&e), CborErrorKind::NonShortestArgument);
    assert_eq!(ErrorCode::from(&e), ErrorCode::NOT_DETERMINISTIC);
}

/// KW-CBOR-012: indefinite lengths are rejected.
#[test]
fn indefinite_lengths_are_rejected() {
    let bytes = example(MsgType::Ack).encode();
    let mut indefinite = vec![0xbf];
    indefinite.extend_from_slice(&bytes[1..]);
    indefinite.push(0xff);
    let e = reject(&indefinite);
    assert_eq!(
        (e.offset, cbor_kind(&e)),
        (0, CborErrorKind::IndefiniteLength)
    );
}

/// KW-CBOR-013, KW-CBOR-014: keys in bytewise order of their encodings,
/// unique; length-first order (RFC 8949 §4.2.3) is rejected.
#[test]
fn map_keys_must_be_in_bytewise_order_and_unique() {
    let mut entries = map_entries(example_item(MsgType::Ack));
    entries.swap(2, 3);
    let e = reject(&raw_map(&entries));
    assert_eq!(cbor_kind(&e), CborErrorKind::UnsortedMapKeys);

    let mut entries = map_entries(example_item(MsgType::Ack));
    let dup = entries[2].clone();
    entries.insert(3, dup);
    let e = reject(&raw_map(&entries));
    assert_eq!(cbor_kind(&e), CborErrorKind::DuplicateMapKey);

    // error: keys 28.. take two bytes, -1 one byte. Bytewise: 28 first.
    let mut entries = map_entries(example_item(MsgType::Error));
    entries.push((Item::Negative(0), Item::Unsigned(0)));
    let bytewise = raw_map(&entries);
    Message::decode(&bytewise).unwrap();
    let last = entries.pop().unwrap();
    entries.insert(3, last); // after v, type, txn: before the 2-byte keys
    let length_first = raw_map(&entries);
    let e = reject(&length_first);
    assert_eq!(cbor_kind(&e), CborErrorKind::UnsortedMapKeys);
}

/// KW-CBOR-003, KW-FRAME-001: exactly one item.
#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = example(MsgType::Ack).encode();
    let end = bytes.len();
    bytes.push(0x00);
    let e = reject(&bytes);
    assert_eq!(
        (e.offset, cbor_kind(&e)),
        (end, CborErrorKind::TrailingBytes)
    );
    assert_eq!(ErrorCode::from(&e), ErrorCode::MALFORMED);
}

/// An ack with one extension field holding a byte string of `len` bytes.
fn ack_with_padding(len: usize) -> Vec<u8> {
    let mut item = example_item(MsgType::Ack);
    set(&mut item, -1, Item::bytes(vec![0u8; len]));
    bytes_of(&item)
}

/// KW-LIMIT-001: 16384 bytes is the largest message.
#[test]
fn messages_are_at_most_16384_bytes() {
    let base = ack_with_padding(1000).len() - 1000;
    let at_limit = ack_with_padding(wire::MAX_MESSAGE_SIZE - base);
    assert_eq!(at_limit.len(), wire::MAX_MESSAGE_SIZE);
    Message::decode(&at_limit).unwrap();
    let over = ack_with_padding(wire::MAX_MESSAGE_SIZE - base + 1);
    let e = reject(&over);
    assert_eq!(
        e,
        WireError {
            offset: wire::MAX_MESSAGE_SIZE,
            kind: WireErrorKind::MessageTooLarge {
                size: over.len(),
                limit: wire::MAX_MESSAGE_SIZE
            }
        }
    );
    assert_eq!(ErrorCode::from(&e), ErrorCode::TOO_LARGE);
}

fn nested_arrays(depth: usize) -> Item<'static> {
    (0..depth).fold(Item::Unsigned(0), |inner, _| Item::array(vec![inner]))
}

/// KW-LIMIT-002: 16 levels of nesting, counting the message map.
#[test]
fn nesting_is_at_most_16_deep() {
    let mut item = example_item(MsgType::Ack);
    set(&mut item, -1, nested_arrays(15));
    Message::decode(&bytes_of(&item)).unwrap();
    set(&mut item, -1, nested_arrays(16));
    let bytes = bytes_of(&item);
    let e = reject(&bytes);
    assert_eq!(cbor_kind(&e), CborErrorKind::DepthLimit(16));
    assert_eq!(e.offset, bytes.len() - 2, "the 17th level's head");
    assert_eq!(ErrorCode::from(&e), ErrorCode::TOO_LARGE);
}

/// KW-LIMIT-003, KW-CBOR-004: at most 64 entries per collection, checked
/// on the declared count before any entry is read.
#[test]
fn collections_have_at_most_64_entries() {
    let mut item = example_item(MsgType::Ack);
    set(&mut item, -1, Item::array(vec![Item::Unsigned(0); 64]));
    Message::decode(&bytes_of(&item)).unwrap();
    set(&mut item, -1, Item::array(vec![Item::Unsigned(0); 65]));
    let e = reject(&bytes_of(&item));
    assert_eq!(cbor_kind(&e), CborErrorKind::TooManyItems(65));

    // A declared count of 2^32 - 1 with nothing behind it.
    let mut bytes = example(MsgType::Ack).encode();
    bytes[0] += 1;
    bytes.extend_from_slice(&[0x20, 0x9a, 0xff, 0xff, 0xff, 0xff]);
    let e = reject(&bytes);
    assert_eq!(cbor_kind(&e), CborErrorKind::TooManyItems(0xffff_ffff));
}

/// KW-CRYPTO-003, KW-CBOR-010: a certificate's tbs must be deterministic
/// inside its byte string; the error points into it.
#[test]
fn embedded_certificate_must_be_deterministic() {
    let Message::RegisterOk(ok) = example(MsgType::RegisterOk) else {
        unreachable!()
    };
    let cert = ok.cert.clone().unwrap();
    let tbs = cert.tbs_bytes();
    // serial 4711 = 0x19 0x1267; widen it to four bytes.
    let at = find(&tbs, &[0x01, 0x19, 0x12, 0x67]);
    let mut wide_tbs = tbs[..at + 1].to_vec();
    wide_tbs.extend_from_slice(&[0x1a, 0x00, 0x00, 0x12, 0x67]);
    wide_tbs.extend_from_slice(&tbs[at + 4..]);
    let mut item = item_of(&Message::RegisterOk(ok).encode());
    set(
        &mut item,
        13,
        Item::array(vec![
            Item::bytes(wide_tbs.clone()),
            Item::bytes(cert.sig.0.to_vec()),
        ]),
    );
    let bytes = bytes_of(&item);
    let e = reject(&bytes);
    assert_eq!(cbor_kind(&e), CborErrorKind::NonShortestArgument);
    assert_eq!(e.offset, find(&bytes, &wide_tbs) + at + 1);
}

/// KW-ERR-003: every decode failure maps to its code.
#[test]
fn decode_failures_map_to_error_codes() {
    let cases: [(&[u8], ErrorCode); 6] = [
        (&[0xa1, 0x00], ErrorCode::MALFORMED),
        (&[0x1c], ErrorCode::MALFORMED),
        (&[0xa1, 0x00, 0x61, 0xff], ErrorCode::MALFORMED),
        (&[0xa1, 0x00, 0x18, 0x01], ErrorCode::NOT_DETERMINISTIC),
        (&[0x01], ErrorCode::SCHEMA),
        (&[0xa0], ErrorCode::SCHEMA),
    ];
    for (bytes, code) in cases {
        assert_eq!(ErrorCode::from(&reject(bytes)), code, "{bytes:02x?}");
    }
}

/// KW-WIRE-002: sampled messages of every type roundtrip byte for byte.
#[test]
fn random_messages_roundtrip() {
    fn prop(seed: u64) -> TestResult {
        let message = Message::sample(&mut Source::new(seed));
        let bytes = message.encode();
        if bytes.len() > wire::MAX_MESSAGE_SIZE {
            return TestResult::discard();
        }
        match Message::decode(&bytes) {
            Ok(decoded) => TestResult::from_bool(decoded == message && decoded.encode() == bytes),
            Err(e) => TestResult::error(format!(
                "{:?}: {e}\n{}",
                message.msg_type(),
                cbor::hex(&bytes)
            )),
        }
    }
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn(u64) -> TestResult);
}

/// KW-WIRE-002, KW-ERR-003: mutated messages never panic the decoder; what
/// it accepts re-encodes to exactly the input; what it rejects has an
/// offset within the input and a code.
#[test]
fn mutated_messages_never_panic() {
    fn prop(seed: u64, edits: Vec<(usize, u8)>, cut: usize) -> bool {
        let mut bytes = Message::sample(&mut Source::new(seed)).encode();
        for (at, value) in edits.iter().take(4) {
            let len = bytes.len();
            match value % 3 {
                0 => bytes[at % len] ^= value | 1,
                1 => bytes.insert(at % len, *value),
                _ => {
                    bytes.remove(at % len);
                }
            }
            if bytes.is_empty() {
                return true;
            }
        }
        bytes.truncate(bytes.len() - cut % (bytes.len() + 1) / 8);
        match Message::decode(&bytes) {
            Ok(m) => m.encode() == bytes,
            Err(e) => e.offset <= bytes.len() && ErrorCode::from(&e).class() == 1,
        }
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(u64, Vec<(usize, u8)>, usize) -> bool);
}

/// The decoder never panics on arbitrary bytes, and its CBOR errors are of
/// a known class.
#[test]
fn arbitrary_bytes_never_panic() {
    fn prop(bytes: Vec<u8>) -> bool {
        match Message::decode(&bytes) {
            Ok(m) => m.encode() == bytes,
            Err(e) => match e.kind {
                WireErrorKind::Cbor(kind) => matches!(
                    kind.class(),
                    CborErrorClass::Malformed
                        | CborErrorClass::NotDeterministic
                        | CborErrorClass::Limit
                        | CborErrorClass::Type
                ),
                _ => true,
            },
        }
    }
    QuickCheck::new()
        .tests(20000)
        .quickcheck(prop as fn(Vec<u8>) -> bool);
}

/// KW-CRYPTO-034: a recipient entry has both `id` and `kid`, or neither.
#[test]
fn recipient_entries_are_explicit_or_anonymous() {
    let mut item = example_item(MsgType::Offer);
    let recipients = get(get(&mut item, 22), 5);
    let Item::Array { items, .. } = recipients else {
        unreachable!()
    };
    remove(&mut items[0], 1);
    let e = reject(&bytes_of(&item));
    assert!(matches!(e.kind, WireErrorKind::FieldCombination(_)), "{e}");
    assert_eq!(ErrorCode::from(&e), ErrorCode::SCHEMA);
}
