//! Reading and writing the integer-keyed maps that every Keyway structure
//! is made of, and the extension fields they may carry.
//!
//! Fields are requested in ascending key order, which is also the order in
//! which deterministic encoding places them, so one forward pass with one
//! key of look-ahead decodes a map: a pending non-negative key smaller than
//! the one requested is a field this structure does not define.

use super::describe::{Entry, Node};
use super::error::{WireError, WireErrorKind};
use super::value::WireValue;
use crate::cbor::{self, Key, KeyOrder, Reader};

/// A field of a structure, as listed in its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// The map key.
    pub key: u64,
    /// The Rust field name (the spec name is kebab-case).
    pub name: &'static str,
    /// Whether the field must be present.
    pub required: bool,
}

/// The schema of one map-shaped structure, for the CDDL consistency check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The CDDL rule name.
    pub cddl: &'static str,
    /// The message type code, for messages.
    pub message_type: Option<u64>,
    /// The fields in key order.
    pub fields: &'static [FieldInfo],
}

/// Extension fields (negative keys, KW-WIRE-012): kept in key order with
/// their encoded values so a message re-encodes byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Extensions(Vec<(u64, Vec<u8>)>);

impl Extensions {
    /// No extensions.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Sets extension key `-1 - n` to the encoded item `value`. The value
    /// must be one deterministically encoded item; it is checked here.
    pub fn insert(&mut self, n: u64, value: Vec<u8>) -> Result<(), crate::cbor::CborError> {
        cbor::decode(&value, &cbor::DecodeOptions::DETERMINISTIC)?;
        match self.0.binary_search_by_key(&n, |(k, _)| *k) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = value;
                }
            }
            Err(i) => self.0.insert(i, (n, value)),
        }
        Ok(())
    }

    /// The extension entries as (`n`, encoded value), key `-1 - n`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.0.iter().map(|(n, v)| (*n, v.as_slice()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn describe_into(&self, entries: &mut Vec<Entry>) {
        for (n, raw) in &self.0 {
            entries.push(Entry {
                key: -1 - i128::from(*n),
                name: None,
                value: Node::Raw(raw.clone()),
            });
        }
    }
}

/// Reads the entries of one map in key order.
pub(crate) struct Fields<'r, 'a> {
    r: &'r mut Reader<'a>,
    map_offset: usize,
    remaining: u64,
    pending: Option<(Key, usize)>,
    order: KeyOrder<'a>,
}

impl<'r, 'a> Fields<'r, 'a> {
    /// Reads a map head and prepares to read its entries.
    pub fn open(r: &'r mut Reader<'a>) -> Result<Self, WireError> {
        let map_offset = r.offset();
        let remaining = r.map()?;
        Ok(Self {
            r,
            map_offset,
            remaining,
            pending: None,
            order: KeyOrder::default(),
        })
    }

    /// Offset of the map head, for errors about the map as a whole.
    pub fn map_offset(&self) -> usize {
        self.map_offset
    }

    fn peek(&mut self) -> Result<Option<(Key, usize)>, WireError> {
        if self.pending.is_none() && self.remaining > 0 {
            self.pending = Some(self.r.map_key(&mut self.order)?);
        }
        Ok(self.pending)
    }

    /// Reads field `key` if it is next; fails on any unknown non-negative key
    /// before it.
    pub fn opt<T: WireValue>(
        &mut self,
        key: u64,
        _name: &'static str,
    ) -> Result<Option<T>, WireError> {
        match self.peek()? {
            Some((Key::Unsigned(k), at)) if k < key => {
                // KW-WIRE-011: a non-negative key not in the schema.
                Err(WireError::new(at, WireErrorKind::UnknownCriticalField(k)))
            }
            Some((Key::Unsigned(k), _)) if k == key => {
                self.pending = None;
                self.remaining -= 1;
                T::decode(self.r).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Reads required field `key` and returns it with the offset of its value.
    pub fn req_at<T: WireValue>(
        &mut self,
        key: u64,
        name: &'static str,
    ) -> Result<(T, usize), WireError> {
        if let Some((Key::Unsigned(k), _)) = self.peek()? {
            if k == key {
                self.pending = None;
                self.remaining -= 1;
                let at = self.r.offset();
                return Ok((T::decode(self.r)?, at));
            }
        }
        self.req(key, name).map(|v| (v, self.map_offset))
    }

    /// Reads required field `key`.
    pub fn req<T: WireValue>(&mut self, key: u64, name: &'static str) -> Result<T, WireError> {
        self.opt(key, name)?.ok_or_else(|| {
            WireError::new(self.map_offset, WireErrorKind::MissingField { key, name })
        })
    }

    /// Reads the remaining entries, which must all be extensions, and leaves
    /// the map.
    pub fn finish(mut self) -> Result<Extensions, WireError> {
        let mut ext = Vec::new();
        while let Some((key, at)) = self.peek()? {
            self.pending = None;
            self.remaining -= 1;
            match key {
                Key::Unsigned(k) => {
                    return Err(WireError::new(at, WireErrorKind::UnknownCriticalField(k)));
                }
                // KW-WIRE-012: kept verbatim, already checked deterministic.
                Key::Negative(n) => ext.push((n, self.r.skip()?.to_vec())),
            }
        }
        self.r.leave();
        Ok(Extensions(ext))
    }
}

/// Collects the entries of one map, then writes the map with its count.
pub(crate) struct MapOut {
    body: Vec<u8>,
    count: u64,
    skip: &'static [u64],
}

impl MapOut {
    pub fn new() -> Self {
        Self {
            body: Vec::new(),
            count: 0,
            skip: &[],
        }
    }

    /// A map that leaves out the fields `keys` (to compute a signature
    /// over the rest of a message).
    pub fn without(keys: &'static [u64]) -> Self {
        Self {
            skip: keys,
            ..Self::new()
        }
    }

    /// Writes field `key`. Keys must be written in ascending order.
    pub fn req<T: WireValue>(&mut self, key: u64, value: &T) {
        if self.skip.contains(&key) {
            return;
        }
        cbor::write_uint(&mut self.body, key);
        value.encode(&mut self.body);
        self.count += 1;
    }

    /// Writes field `key` when present.
    pub fn opt<T: WireValue>(&mut self, key: u64, value: &Option<T>) {
        if let Some(v) = value {
            self.req(key, v);
        }
    }

    /// Writes the extensions, which sort after every non-negative key.
    pub fn ext(&mut self, ext: &Extensions) {
        for (n, raw) in &ext.0 {
            cbor::write_nint(&mut self.body, *n);
            self.body.extend_from_slice(raw);
            self.count += 1;
        }
    }

    pub fn finish(self, out: &mut Vec<u8>) {
        cbor::write_map_header(out, self.count);
        out.extend_from_slice(&self.body);
    }
}

/// Describes a required field.
pub(crate) fn describe_req<T: WireValue>(
    entries: &mut Vec<Entry>,
    key: u64,
    name: &'static str,
    value: &T,
) {
    entries.push(Entry {
        key: i128::from(key),
        name: Some(name),
        value: value.describe(),
    });
}

/// Describes an optional field when present.
pub(crate) fn describe_opt<T: WireValue>(
    entries: &mut Vec<Entry>,
    key: u64,
    name: &'static str,
    value: &Option<T>,
) {
    if let Some(v) = value {
        describe_req(entries, key, name, v);
    }
}
