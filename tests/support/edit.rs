//! Editing encoded messages at the generic item level, to build invalid
//! inputs from valid ones.

use keyway::cbor::{DecodeOptions, Item, decode, encode};

/// The message as an owned generic item.
pub fn item_of(bytes: &[u8]) -> Item<'static> {
    decode(bytes, &DecodeOptions::DETERMINISTIC)
        .unwrap()
        .into_owned()
}

/// Deterministic encoding of an item.
pub fn bytes_of(item: &Item<'_>) -> Vec<u8> {
    encode(item).unwrap()
}

fn entries<'i>(item: &'i mut Item<'static>) -> &'i mut Vec<(Item<'static>, Item<'static>)> {
    match item {
        Item::Map { entries, .. } => entries,
        other => panic!("not a map: {other:?}"),
    }
}

fn key_item(key: i64) -> Item<'static> {
    Item::integer(i128::from(key)).unwrap()
}

/// Sets map entry `key` (inserting it if absent).
pub fn set(item: &mut Item<'static>, key: i64, value: Item<'static>) {
    let entries = entries(item);
    let k = key_item(key);
    match entries.iter_mut().find(|(ek, _)| *ek == k) {
        Some(entry) => entry.1 = value,
        None => entries.push((k, value)),
    }
}

/// Removes map entry `key`.
pub fn remove(item: &mut Item<'static>, key: i64) {
    let k = key_item(key);
    entries(item).retain(|(ek, _)| *ek != k);
}

/// The value of map entry `key`.
pub fn get<'i>(item: &'i mut Item<'static>, key: i64) -> &'i mut Item<'static> {
    let k = key_item(key);
    &mut entries(item).iter_mut().find(|(ek, _)| *ek == k).unwrap().1
}

/// Byte offset of the first occurrence of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}
