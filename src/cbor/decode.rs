//! The strict generic decoder: any well-formed CBOR item (RFC 8949), and
//! optionally only core deterministic encoding (RFC 8949 §4.2.1).

use std::borrow::Cow;

use super::error::{CborError, CborErrorKind};
use super::float::{Float, f64_to_f16_exact, f64_to_f32_exact};
use super::head::{
    Arg, BREAK, Head, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGATIVE, MAJOR_SIMPLE, MAJOR_TAG,
    MAJOR_TEXT, MAJOR_UNSIGNED, PErr, PResult, head, payload,
};
use super::item::{Item, Simple};

/// Containers are never pre-allocated beyond this many slots: a declared
/// count is a claim, not a fact, until the entries have been parsed.
const PREALLOCATE_AT_MOST: usize = 16;

/// How strictly to decode, and the resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Require core deterministic encoding (RFC 8949 §4.2.1): shortest
    /// arguments and floats, definite lengths, map keys unique and in
    /// bytewise order of their encodings, bignums in preferred serialization.
    pub deterministic: bool,
    /// Maximum nesting of arrays, maps and tags (a bare integer has depth 0,
    /// `[1]` has depth 1).
    pub max_depth: usize,
    /// Maximum number of entries in any one array or map.
    pub max_items: u64,
    /// Maximum input length in bytes.
    pub max_input: usize,
}

impl DecodeOptions {
    /// Any well-formed item up to 1 MiB and 128 levels deep.
    pub const WELL_FORMED: Self = Self {
        deterministic: false,
        max_depth: 128,
        max_items: u64::MAX,
        max_input: 1 << 20,
    };

    /// Like [`DecodeOptions::WELL_FORMED`], but deterministic encoding only.
    pub const DETERMINISTIC: Self = Self {
        deterministic: true,
        ..Self::WELL_FORMED
    };
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self::WELL_FORMED
    }
}

/// Decodes exactly one item that spans the whole input.
pub fn decode<'a>(input: &'a [u8], options: &DecodeOptions) -> Result<Item<'a>, CborError> {
    if input.len() > options.max_input {
        // KW-LIMIT-001: detected at the first byte beyond the limit.
        return Err(CborError::new(
            options.max_input,
            CborErrorKind::InputTooLarge(input.len()),
        ));
    }
    let (item, used) = decode_prefix(input, options, 0)?;
    if used != input.len() {
        return Err(CborError::new(used, CborErrorKind::TrailingBytes));
    }
    Ok(item)
}

/// Decodes one item from the start of `input` and returns it with the number
/// of bytes it occupies. `base` is added to error offsets (the position of
/// `input` within a larger buffer).
pub(crate) fn decode_prefix<'a>(
    input: &'a [u8],
    options: &DecodeOptions,
    base: usize,
) -> Result<(Item<'a>, usize), CborError> {
    let decoder = Decoder { options };
    match decoder.item(input, 0) {
        Ok((rest, item)) => Ok((item, input.len() - rest.len())),
        Err(e) => Err(to_error(e, input.len(), base)),
    }
}

pub(crate) fn to_error(e: nom::Err<PErr>, total: usize, base: usize) -> CborError {
    match e {
        nom::Err::Error(p) | nom::Err::Failure(p) => {
            CborError::new(base + total.saturating_sub(p.remaining), p.kind)
        }
        nom::Err::Incomplete(_) => CborError::new(base + total, CborErrorKind::Truncated),
    }
}

struct Decoder<'o> {
    options: &'o DecodeOptions,
}

impl Decoder<'_> {
    fn item<'a>(&self, input: &'a [u8], depth: usize) -> PResult<'a, Item<'a>> {
        let (rest, h) = head(input)?;
        let deterministic = self.options.deterministic;
        if deterministic && h.major != MAJOR_SIMPLE && !h.is_shortest() {
            return Err(PErr::at(input, CborErrorKind::NonShortestArgument));
        }
        if deterministic && h.arg == Arg::Indefinite && h.major != MAJOR_SIMPLE {
            let kind = match h.major {
                MAJOR_UNSIGNED | MAJOR_NEGATIVE | MAJOR_TAG => {
                    CborErrorKind::IndefiniteNotAllowed(h.major)
                }
                _ => CborErrorKind::IndefiniteLength,
            };
            return Err(PErr::at(input, kind));
        }
        match (h.major, h.arg) {
            (MAJOR_UNSIGNED, Arg::Value { value, .. }) => Ok((rest, Item::Unsigned(value))),
            (MAJOR_NEGATIVE, Arg::Value { value, .. }) => Ok((rest, Item::Negative(value))),
            (MAJOR_BYTES, Arg::Value { value, .. }) => {
                let (rest, bytes) = payload(rest, value, input)?;
                Ok((rest, Item::Bytes(Cow::Borrowed(bytes))))
            }
            (MAJOR_TEXT, Arg::Value { value, .. }) => {
                let (rest, bytes) = payload(rest, value, input)?;
                let text = utf8(bytes, input)?;
                Ok((rest, Item::Text(Cow::Borrowed(text))))
            }
            (MAJOR_BYTES, Arg::Indefinite) => {
                let (rest, chunks) = self.chunks(rest, MAJOR_BYTES)?;
                let chunks = chunks.into_iter().map(|(b, _)| Cow::Borrowed(b)).collect();
                Ok((rest, Item::BytesChunks(chunks)))
            }
            (MAJOR_TEXT, Arg::Indefinite) => {
                let (rest, chunks) = self.chunks(rest, MAJOR_TEXT)?;
                let mut texts = Vec::with_capacity(chunks.len());
                for (bytes, at) in chunks {
                    texts.push(Cow::Borrowed(utf8(bytes, at)?));
                }
                Ok((rest, Item::TextChunks(texts)))
            }
            (MAJOR_ARRAY, arg) => {
                let depth = self.enter(input, depth)?;
                let (rest, items) = match arg {
                    Arg::Value { value, .. } => self.array(input, rest, value, depth)?,
                    Arg::Indefinite => self.array_indefinite(rest, depth)?,
                };
                let indefinite = arg == Arg::Indefinite;
                Ok((rest, Item::Array { items, indefinite }))
            }
            (MAJOR_MAP, arg) => {
                let depth = self.enter(input, depth)?;
                let (rest, entries) = match arg {
                    Arg::Value { value, .. } => self.map(input, rest, value, depth)?,
                    Arg::Indefinite => self.map_indefinite(rest, depth)?,
                };
                let indefinite = arg == Arg::Indefinite;
                Ok((
                    rest,
                    Item::Map {
                        entries,
                        indefinite,
                    },
                ))
            }
            (MAJOR_TAG, Arg::Value { value, .. }) => {
                let depth = self.enter(input, depth)?;
                let (rest, content) = self.item(rest, depth)?;
                if deterministic && is_non_preferred_bignum(value, &content) {
                    return Err(PErr::at(input, CborErrorKind::NonPreferredBignum));
                }
                Ok((rest, Item::Tag(value, Box::new(content))))
            }
            (MAJOR_SIMPLE, _) => self.simple(input, rest, h),
            (major, _) => Err(PErr::at(input, CborErrorKind::IndefiniteNotAllowed(major))),
        }
    }

    fn enter(&self, at: &[u8], depth: usize) -> Result<usize, nom::Err<PErr>> {
        if depth >= self.options.max_depth {
            return Err(PErr::at(
                at,
                CborErrorKind::DepthLimit(self.options.max_depth),
            ));
        }
        Ok(depth + 1)
    }

    /// Rejects a declared entry count beyond the limit, or one the remaining
    /// input cannot possibly hold (each entry takes `min_bytes`).
    fn check_count(
        &self,
        at: &[u8],
        count: u64,
        remaining: usize,
        min_bytes: u64,
    ) -> Result<(), nom::Err<PErr>> {
        if count > self.options.max_items {
            return Err(PErr::at(at, CborErrorKind::TooManyItems(count)));
        }
        if count.saturating_mul(min_bytes) > remaining as u64 {
            return Err(PErr::at(at, CborErrorKind::LengthBeyondInput(count)));
        }
        Ok(())
    }

    fn array<'a>(
        &self,
        at: &'a [u8],
        mut rest: &'a [u8],
        count: u64,
        depth: usize,
    ) -> PResult<'a, Vec<Item<'a>>> {
        self.check_count(at, count, rest.len(), 1)?;
        let mut items = Vec::with_capacity(preallocation(count));
        for _ in 0..count {
            let (r, item) = self.item(rest, depth)?;
            items.push(item);
            rest = r;
        }
        Ok((rest, items))
    }

    fn array_indefinite<'a>(&self, mut rest: &'a [u8], depth: usize) -> PResult<'a, Vec<Item<'a>>> {
        let mut items = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix(&[BREAK]) {
                return Ok((after, items));
            }
            if items.len() as u64 >= self.options.max_items {
                return Err(PErr::at(
                    rest,
                    CborErrorKind::TooManyItems(items.len() as u64 + 1),
                ));
            }
            let (r, item) = self.item(rest, depth)?;
            items.push(item);
            rest = r;
        }
    }

    fn map<'a>(
        &self,
        at: &'a [u8],
        mut rest: &'a [u8],
        count: u64,
        depth: usize,
    ) -> PResult<'a, Vec<(Item<'a>, Item<'a>)>> {
        self.check_count(at, count, rest.len(), 2)?;
        let mut entries = Vec::with_capacity(preallocation(count));
        let mut previous_key: Option<&[u8]> = None;
        for _ in 0..count {
            let key_start = rest;
            let (r, key) = self.item(rest, depth)?;
            if self.options.deterministic {
                let key_bytes = key_start
                    .get(..key_start.len() - r.len())
                    .unwrap_or_default();
                if let Some(kind) = key_order_violation(previous_key, key_bytes) {
                    return Err(PErr::at(key_start, kind));
                }
                previous_key = Some(key_bytes);
            }
            let (r, value) = self.item(r, depth)?;
            entries.push((key, value));
            rest = r;
        }
        Ok((rest, entries))
    }

    fn map_indefinite<'a>(
        &self,
        mut rest: &'a [u8],
        depth: usize,
    ) -> PResult<'a, Vec<(Item<'a>, Item<'a>)>> {
        let mut entries = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix(&[BREAK]) {
                return Ok((after, entries));
            }
            if entries.len() as u64 >= self.options.max_items {
                return Err(PErr::at(
                    rest,
                    CborErrorKind::TooManyItems(entries.len() as u64 + 1),
                ));
            }
            let (r, key) = self.item(rest, depth)?;
            // A break here would leave a key without a value: `item` reports
            // it as an unexpected break.
            let (r, value) = self.item(r, depth)?;
            entries.push((key, value));
            rest = r;
        }
    }

    /// The chunks of an indefinite-length string, each with the input at its
    /// head (for error offsets).
    #[allow(clippy::type_complexity)]
    fn chunks<'a>(&self, mut rest: &'a [u8], major: u8) -> PResult<'a, Vec<(&'a [u8], &'a [u8])>> {
        let mut chunks = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix(&[BREAK]) {
                return Ok((after, chunks));
            }
            let chunk_start = rest;
            let (r, h) = head(rest)?;
            let len = match h.arg {
                Arg::Value { value, .. } if h.major == major => value,
                _ => return Err(PErr::at(chunk_start, CborErrorKind::BadStringChunk)),
            };
            let (r, bytes) = payload(r, len, chunk_start)?;
            chunks.push((bytes, chunk_start));
            rest = r;
        }
    }

    fn simple<'a>(&self, at: &'a [u8], rest: &'a [u8], h: Head) -> PResult<'a, Item<'a>> {
        let value = match h.arg {
            Arg::Value { value, .. } => value,
            Arg::Indefinite => return Err(PErr::at(at, CborErrorKind::UnexpectedBreak)),
        };
        let item = match h.info {
            20 => Item::Bool(false),
            21 => Item::Bool(true),
            22 => Item::Null,
            23 => Item::Undefined,
            0..=19 | 24 => match u8::try_from(value).ok().and_then(Simple::new) {
                Some(simple) if value >= 32 || h.info < 24 => Item::Simple(simple),
                _ => {
                    return Err(PErr::at(at, CborErrorKind::BadSimpleValue(value as u8)));
                }
            },
            25 => Item::Float(Float::from_f16_bits(value as u16)),
            26 => {
                let float = Float::from_f32_bits(value as u32);
                if self.options.deterministic && f64_to_f16_exact(float.to_bits()).is_some() {
                    return Err(PErr::at(at, CborErrorKind::NonShortestFloat));
                }
                Item::Float(float)
            }
            _ => {
                let float = Float::from_bits(value);
                if self.options.deterministic && f64_to_f32_exact(value).is_some() {
                    return Err(PErr::at(at, CborErrorKind::NonShortestFloat));
                }
                Item::Float(float)
            }
        };
        Ok((rest, item))
    }
}

fn preallocation(count: u64) -> usize {
    usize::try_from(count).map_or(PREALLOCATE_AT_MOST, |c| c.min(PREALLOCATE_AT_MOST))
}

fn utf8<'a>(bytes: &'a [u8], head_at: &[u8]) -> Result<&'a str, nom::Err<PErr>> {
    core::str::from_utf8(bytes).map_err(|_| PErr::at(head_at, CborErrorKind::InvalidUtf8))
}

/// RFC 8949 §4.2.1: keys sorted by the bytewise lexicographic order of
/// their deterministic encodings, and unique (§5.6). Returns what is wrong
/// with `current` following `previous`, if anything (KW-CBOR-013,
/// KW-CBOR-014).
pub(crate) fn key_order_violation(
    previous: Option<&[u8]>,
    current: &[u8],
) -> Option<CborErrorKind> {
    match previous.map(|p| p.cmp(current)) {
        Some(core::cmp::Ordering::Equal) => Some(CborErrorKind::DuplicateMapKey),
        Some(core::cmp::Ordering::Greater) => Some(CborErrorKind::UnsortedMapKeys),
        _ => None,
    }
}

/// RFC 8949 §3.4.3: the preferred serialization of a bignum has no leading
/// zero bytes, and an integer that fits major type 0 or 1 is not a bignum.
fn is_non_preferred_bignum(tag: u64, content: &Item<'_>) -> bool {
    match (tag, content) {
        (2 | 3, Item::Bytes(b)) => b.len() <= 8 || b.first() == Some(&0),
        _ => false,
    }
}
