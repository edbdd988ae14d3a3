//! Test-only generators: arbitrary CBOR items, and a "loose" encoder that
//! makes every encoding choice RFC 8949 allows (wider heads, indefinite
//! lengths, chunked strings, wider floats) at random.

use keyway::cbor::{Float, FloatWidth, Item, Simple, encode};
use quickcheck::{Arbitrary, Gen};

/// An owned CBOR item whose maps have unique keys.
#[derive(Debug, Clone)]
pub struct AnyItem(pub Item<'static>);

impl Arbitrary for AnyItem {
    fn arbitrary(g: &mut Gen) -> Self {
        AnyItem(item(g, 4))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        match &self.0 {
            Item::Array { items, .. } => Box::new(
                items
                    .clone()
                    .into_iter()
                    .map(AnyItem)
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            Item::Map { entries, .. } => Box::new(
                entries
                    .iter()
                    .flat_map(|(k, v)| [AnyItem(k.clone()), AnyItem(v.clone())])
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            Item::Tag(_, content) => Box::new(std::iter::once(AnyItem((**content).clone()))),
            _ => Box::new(std::iter::empty()),
        }
    }
}

fn small_len(g: &mut Gen) -> usize {
    usize::arbitrary(g) % 6
}

fn interesting_u64(g: &mut Gen) -> u64 {
    let choices = [
        0,
        1,
        23,
        24,
        255,
        256,
        65535,
        65536,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        u64::MAX,
    ];
    if bool::arbitrary(g) {
        *g.choose(&choices).unwrap()
    } else {
        u64::arbitrary(g) >> (u32::arbitrary(g) % 64)
    }
}

fn float(g: &mut Gen) -> Float {
    match u8::arbitrary(g) % 4 {
        0 => Float::from_f16_bits(u16::arbitrary(g)),
        1 => Float::from_f32_bits(u32::arbitrary(g)),
        2 => Float::from_bits(u64::arbitrary(g)),
        _ => Float::from_f64(
            *g.choose(&[0.0, -0.0, 1.5, 100000.0, 1.1, f64::INFINITY, f64::NAN])
                .unwrap(),
        ),
    }
}

fn text(g: &mut Gen) -> String {
    let alphabet = [
        'a',
        'z',
        '"',
        '\\',
        '\n',
        '\u{fc}',
        '\u{6c34}',
        '\u{10151}',
        '\u{0}',
    ];
    (0..small_len(g))
        .map(|_| *g.choose(&alphabet).unwrap())
        .collect()
}

fn bytes(g: &mut Gen) -> Vec<u8> {
    (0..small_len(g) * 3).map(|_| u8::arbitrary(g)).collect()
}

pub fn item(g: &mut Gen, depth: u32) -> Item<'static> {
    let kinds = if depth == 0 { 9 } else { 13 };
    match u8::arbitrary(g) % kinds {
        0 => Item::Unsigned(interesting_u64(g)),
        1 => Item::Negative(interesting_u64(g)),
        2 => Item::bytes(bytes(g)),
        3 => Item::text(text(g)),
        4 => Item::Bool(bool::arbitrary(g)),
        5 => g.choose(&[Item::Null, Item::Undefined]).unwrap().clone(),
        6 => Item::Simple(Simple::new(u8::arbitrary(g)).unwrap_or_else(|| Simple::new(0).unwrap())),
        7 => Item::Float(float(g)),
        8 => {
            if bool::arbitrary(g) {
                Item::BytesChunks((0..small_len(g)).map(|_| bytes(g).into()).collect())
            } else {
                Item::TextChunks((0..small_len(g)).map(|_| text(g).into()).collect())
            }
        }
        9 | 10 => Item::Array {
            items: (0..small_len(g)).map(|_| item(g, depth - 1)).collect(),
            indefinite: bool::arbitrary(g),
        },
        11 => {
            let mut entries: Vec<(Item<'static>, Item<'static>)> = Vec::new();
            let mut seen = Vec::new();
            for _ in 0..small_len(g) {
                let key = item(g, depth - 1);
                let encoded = encode(&key).unwrap();
                if !seen.contains(&encoded) {
                    seen.push(encoded);
                    entries.push((key, item(g, depth - 1)));
                }
            }
            Item::Map {
                entries,
                indefinite: bool::arbitrary(g),
            }
        }
        _ => {
            let tag = *g.choose(&[0, 1, 2, 3, 24, 32, 55799, u64::MAX]).unwrap();
            Item::Tag(tag, Box::new(item(g, depth - 1)))
        }
    }
}

/// Writes a head with an argument at least as wide as needed, at random.
fn loose_head(g: &mut Gen, out: &mut Vec<u8>, major: u8, value: u64) {
    let m = major << 5;
    let min_width = match value {
        0..=23 => 0,
        24..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    };
    let widths: Vec<u8> = [0u8, 1, 2, 4, 8]
        .into_iter()
        .filter(|&w| w >= min_width)
        .collect();
    // Mostly shortest, sometimes wider.
    let width = if u8::arbitrary(g) % 4 == 0 {
        *g.choose(&widths).unwrap()
    } else {
        min_width
    };
    match width {
        0 => out.push(m | value as u8),
        1 => out.extend_from_slice(&[m | 24, value as u8]),
        2 => {
            out.push(m | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        4 => {
            out.push(m | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

fn sometimes(g: &mut Gen) -> bool {
    u8::arbitrary(g) % 4 == 0
}

fn loose_string(g: &mut Gen, out: &mut Vec<u8>, major: u8, data: &[u8], utf8: bool) {
    if sometimes(g) {
        out.push((major << 5) | 31);
        // Split at random points, keeping UTF-8 sequences whole.
        let mut start = 0;
        while start < data.len() {
            let mut end = (start + 1 + usize::arbitrary(g) % 4).min(data.len());
            while utf8 && end < data.len() && (data[end] & 0xc0) == 0x80 {
                end += 1;
            }
            loose_head(g, out, major, (end - start) as u64);
            out.extend_from_slice(&data[start..end]);
            start = end;
        }
        out.push(0xff);
    } else {
        loose_head(g, out, major, data.len() as u64);
        out.extend_from_slice(data);
    }
}

/// Encodes `item` with random (valid, RFC 8949) encoding choices.
pub fn loose_encode(g: &mut Gen, out: &mut Vec<u8>, item: &Item<'_>) {
    match item {
        Item::Unsigned(v) => loose_head(g, out, 0, *v),
        Item::Negative(n) => loose_head(g, out, 1, *n),
        Item::Bytes(b) => loose_string(g, out, 2, b, false),
        Item::BytesChunks(c) => loose_string(g, out, 2, &c.concat(), false),
        Item::Text(t) => loose_string(g, out, 3, t.as_bytes(), true),
        Item::TextChunks(c) => loose_string(g, out, 3, c.concat().as_bytes(), true),
        Item::Array { items, .. } => {
            let indefinite = sometimes(g);
            if indefinite {
                out.push(0x9f);
            } else {
                loose_head(g, out, 4, items.len() as u64);
            }
            for i in items {
                loose_encode(g, out, i);
            }
            if indefinite {
                out.push(0xff);
            }
        }
        Item::Map { entries, .. } => {
            let indefinite = sometimes(g);
            if indefinite {
                out.push(0xbf);
            } else {
                loose_head(g, out, 5, entries.len() as u64);
            }
            let mut order: Vec<usize> = (0..entries.len()).collect();
            if sometimes(g) {
                order.reverse();
            }
            for i in order {
                loose_encode(g, out, &entries[i].0);
                loose_encode(g, out, &entries[i].1);
            }
            if indefinite {
                out.push(0xff);
            }
        }
        Item::Tag(tag, content) => {
            loose_head(g, out, 6, *tag);
            loose_encode(g, out, content);
        }
        Item::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Item::Null => out.push(0xf6),
        Item::Undefined => out.push(0xf7),
        Item::Simple(s) if s.value() < 24 => out.push(0xe0 | s.value()),
        Item::Simple(s) => out.extend_from_slice(&[0xf8, s.value()]),
        Item::Float(f) => {
            // The shortest width, or a wider one now and then.
            let shortest = f.shortest();
            let rank = match shortest {
                FloatWidth::Half(_) => 0,
                FloatWidth::Single(_) => 1,
                FloatWidth::Double(_) => 2,
            };
            let width = if sometimes(g) {
                rank.max(u8::arbitrary(g) % 3)
            } else {
                rank
            };
            match (width, shortest) {
                (0, FloatWidth::Half(h)) => {
                    out.push(0xf9);
                    out.extend_from_slice(&h.to_be_bytes());
                }
                (1, FloatWidth::Single(s)) => {
                    out.push(0xfa);
                    out.extend_from_slice(&s.to_be_bytes());
                }
                (1, _) => {
                    out.push(0xfa);
                    out.extend_from_slice(&f32_bits_of_half(*f).to_be_bytes());
                }
                _ => {
                    out.push(0xfb);
                    out.extend_from_slice(&f.to_bits().to_be_bytes());
                }
            }
        }
    }
}

/// The single-precision bits of a value known to fit half precision.
fn f32_bits_of_half(f: Float) -> u32 {
    let bits = f.to_bits();
    let sign = ((bits >> 63) as u32) << 31;
    let exp = (bits >> 52) & 0x7ff;
    let mant = bits & ((1 << 52) - 1);
    if exp == 0x7ff {
        return sign | (0xff << 23) | (mant >> 29) as u32;
    }
    if exp == 0 {
        return sign;
    }
    let e = exp as i64 - 1023;
    if e >= -126 {
        sign | (((e + 127) as u32) << 23) | (mant >> 29) as u32
    } else {
        let full = mant | (1 << 52);
        sign | (full >> (-e - 97) as u32) as u32
    }
}
