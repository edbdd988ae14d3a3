//! Arbitrary valid values of every wire type, from a seed: the generator
//! behind the property tests and the structured fuzz targets. Values stay
//! small so that sampled messages fit the protocol limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::structs::{Certificate, SecretBytes32};
use super::types::{Contact, Domain, ErrorCode, Principal, Signature, SocketAddr};
use super::value::{Bytes, Fixed, List, Text, Time, UpTo};
use super::{Extensions, KeyId, SignatureBytes};
use crate::cbor::{self, Item};

/// A deterministic stream of pseudo-random numbers (SplitMix64). Not for
/// keys: for choosing test values.
#[derive(Debug, Clone)]
pub struct Source {
    state: u64,
}

impl Source {
    /// A stream determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability 1/2.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// A length in `min..=max`, usually close to `min`.
    pub fn len(&mut self, min: usize, max: usize) -> usize {
        let span = (max - min.min(max)) as u64;
        let extra = match self.below(8) {
            0 => self.below(span + 1),
            _ => self.below(span.min(4) + 1),
        };
        min + extra as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    fn pick<'a>(&mut self, options: &'a [&'a str]) -> &'a str {
        let i = self.below(options.len() as u64) as usize;
        options.get(i).copied().unwrap_or_default()
    }
}

/// A type whose arbitrary valid values can be generated.
pub trait Sample: Sized {
    /// One value.
    fn sample(src: &mut Source) -> Self;
}

impl Sample for u64 {
    fn sample(src: &mut Source) -> Self {
        match src.below(4) {
            0 => *[0, 23, 24, 255, 256, 65535, 65536, u64::MAX]
                .get(src.below(8) as usize)
                .unwrap_or(&0),
            1 => src.next_u64(),
            _ => src.below(1000),
        }
    }
}

impl Sample for bool {
    fn sample(src: &mut Source) -> Self {
        src.coin()
    }
}

impl Sample for u16 {
    fn sample(src: &mut Source) -> Self {
        src.next_u64() as u16
    }
}

impl<const N: usize> Sample for [u8; N] {
    fn sample(src: &mut Source) -> Self {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = src.next_u64() as u8;
        }
        out
    }
}

impl<const N: usize> Sample for Fixed<N> {
    fn sample(src: &mut Source) -> Self {
        Fixed(Sample::sample(src))
    }
}

impl<const MIN: usize, const MAX: usize> Sample for Bytes<MIN, MAX> {
    fn sample(src: &mut Source) -> Self {
        let n = src.len(MIN, MAX.min(MIN + 64));
        Bytes(src.bytes(n))
    }
}

impl<const MAX: usize> Sample for Text<MAX> {
    fn sample(src: &mut Source) -> Self {
        const PIECES: &[&str] = &[
            "a",
            "z",
            " ",
            "\"",
            "\\",
            "\n",
            "\u{fc}",
            "\u{6c34}",
            "\u{1f600}",
        ];
        let mut text = String::new();
        for _ in 0..src.len(0, 12) {
            let piece = src.pick(PIECES);
            if text.len() + piece.len() <= MAX {
                text.push_str(piece);
            }
        }
        Text(text)
    }
}

impl<T: Sample, const MIN: usize, const MAX: usize> Sample for List<T, MIN, MAX> {
    fn sample(src: &mut Source) -> Self {
        let n = src.len(MIN, MAX.min(MIN + 3));
        // `n` is within bounds by construction.
        List((0..n).map(|_| T::sample(src)).collect())
    }
}

impl<const MAX: u64> Sample for UpTo<MAX> {
    fn sample(src: &mut Source) -> Self {
        UpTo(src.below(MAX + 1))
    }
}

impl Sample for Time {
    fn sample(src: &mut Source) -> Self {
        Time(1_767_225_600 + src.below(1 << 32))
    }
}

fn sample_label(src: &mut Source) -> String {
    const LABELS: &[&str] = &["a", "b", "example", "x-1", "0", "zz9", "sc"];
    src.pick(LABELS).to_owned()
}

impl Sample for Domain {
    fn sample(src: &mut Source) -> Self {
        let labels: Vec<String> = (0..src.len(1, 3)).map(|_| sample_label(src)).collect();
        Domain(labels.join("."))
    }
}

impl Sample for Principal {
    fn sample(src: &mut Source) -> Self {
        const LOCALS: &[&str] = &["alice", "bob", "sc", "rec", "a.b", "x+y", "_9", "a-"];
        let domain = Domain::sample(src);
        Principal(format!("{}@{}", src.pick(LOCALS), domain.as_str()))
    }
}

impl Sample for IpAddr {
    fn sample(src: &mut Source) -> Self {
        if src.coin() {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::sample(src)))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::sample(src)))
        }
    }
}

impl Sample for SocketAddr {
    fn sample(src: &mut Source) -> Self {
        SocketAddr::new(IpAddr::sample(src), u16::sample(src))
    }
}

impl Sample for Contact {
    fn sample(src: &mut Source) -> Self {
        Contact {
            transport: Sample::sample(src),
            addr: SocketAddr::sample(src),
        }
    }
}

impl Sample for Signature {
    fn sample(src: &mut Source) -> Self {
        Signature {
            kid: KeyId::sample(src),
            sig: SignatureBytes::sample(src),
        }
    }
}

impl Sample for ErrorCode {
    fn sample(src: &mut Source) -> Self {
        if src.coin() {
            *ErrorCode::ALL
                .get(src.below(ErrorCode::ALL.len() as u64) as usize)
                .unwrap_or(&ErrorCode::INTERNAL)
        } else {
            ErrorCode(100 + src.below(900) as u16)
        }
    }
}

impl Sample for SecretBytes32 {
    fn sample(src: &mut Source) -> Self {
        SecretBytes32(Sample::sample(src))
    }
}

impl Sample for Certificate {
    fn sample(src: &mut Source) -> Self {
        Certificate {
            tbs: Sample::sample(src),
            sig: Sample::sample(src),
        }
    }
}

/// A small deterministic item for an extension value.
fn sample_item(src: &mut Source, depth: u32) -> Item<'static> {
    match src.below(if depth == 0 { 4 } else { 6 }) {
        0 => Item::Unsigned(u64::sample(src)),
        1 => Item::Negative(src.below(1000)),
        2 => {
            let n = src.len(0, 8);
            Item::bytes(src.bytes(n))
        }
        3 => Item::text(Text::<32>::sample(src).as_str().to_owned()),
        4 => Item::array(
            (0..src.len(0, 3))
                .map(|_| sample_item(src, depth - 1))
                .collect(),
        ),
        _ => Item::map(
            (0..src.len(0, 3))
                .map(|i| (Item::Unsigned(i as u64), sample_item(src, depth - 1)))
                .collect(),
        ),
    }
}

impl Sample for Extensions {
    fn sample(src: &mut Source) -> Self {
        let mut ext = Extensions::new();
        if src.below(4) == 0 {
            for _ in 0..src.len(1, 3) {
                let value = cbor::encode(&sample_item(src, 2)).unwrap_or_else(|_| vec![0]);
                // Sampled items have unique map keys, so they encode.
                let _ = ext.insert(src.below(8), value);
            }
        }
        ext
    }
}
