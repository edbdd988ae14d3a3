//! The CBOR head (initial byte plus argument, RFC 8949 §3) parsed with nom.
//! nom types stay inside this module and `decode`; nothing public exposes them.

use nom::IResult;
use nom::error::{ErrorKind, ParseError};
use nom::number::complete::{be_u8, be_u16, be_u32, be_u64};

use super::error::CborErrorKind;

/// Major types (RFC 8949 §3.1).
pub(crate) const MAJOR_UNSIGNED: u8 = 0;
pub(crate) const MAJOR_NEGATIVE: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
pub(crate) const MAJOR_TAG: u8 = 6;
pub(crate) const MAJOR_SIMPLE: u8 = 7;

/// The break stop code.
pub(crate) const BREAK: u8 = 0xff;

/// A parse failure inside the codec: what went wrong and how much input was
/// left where it did, from which the caller computes the absolute offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PErr {
    pub remaining: usize,
    pub kind: CborErrorKind,
}

impl PErr {
    pub fn at(input: &[u8], kind: CborErrorKind) -> nom::Err<Self> {
        nom::Err::Error(PErr {
            remaining: input.len(),
            kind,
        })
    }
}

impl ParseError<&[u8]> for PErr {
    // The only nom parsers used here are fixed-width reads and `take`, whose
    // only failure is running out of input.
    fn from_error_kind(input: &[u8], _kind: ErrorKind) -> Self {
        PErr {
            remaining: input.len(),
            kind: CborErrorKind::Truncated,
        }
    }

    fn append(_input: &[u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type PResult<'a, T> = IResult<&'a [u8], T, PErr>;

/// The argument of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A value with the number of bytes that followed the initial byte
    /// (0 when it was packed into the additional information).
    Value { value: u64, extra_bytes: u8 },
    /// Additional information 31: indefinite length, or break for major 7.
    Indefinite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub major: u8,
    pub info: u8,
    pub arg: Arg,
}

impl Head {
    /// Whether the argument used the shortest of the available encodings
    /// (RFC 8949 §4.2.1). Only meaningful for major types 0 to 6.
    pub fn is_shortest(&self) -> bool {
        match self.arg {
            Arg::Value { value, extra_bytes } => match extra_bytes {
                0 => true,
                1 => value >= 24,
                2 => value > 0xff,
                4 => value > 0xffff,
                _ => value > 0xffff_ffff,
            },
            Arg::Indefinite => true,
        }
    }
}

/// Parses one head. Errors point at the initial byte of the head.
pub(crate) fn head(input: &[u8]) -> PResult<'_, Head> {
    let start = input;
    let (rest, initial) = be_u8(input)?;
    let major = initial >> 5;
    let info = initial & 0x1f;
    let at_start = |e: nom::Err<PErr>| match e {
        nom::Err::Error(p) | nom::Err::Failure(p) => nom::Err::Error(PErr {
            remaining: start.len(),
            ..p
        }),
        other => other,
    };
    let (rest, arg) = match info {
        0..=23 => (
            rest,
            Arg::Value {
                value: u64::from(info),
                extra_bytes: 0,
            },
        ),
        24 => {
            let (r, v) = be_u8(rest).map_err(at_start)?;
            (
                r,
                Arg::Value {
                    value: u64::from(v),
                    extra_bytes: 1,
                },
            )
        }
        25 => {
            let (r, v) = be_u16(rest).map_err(at_start)?;
            (
                r,
                Arg::Value {
                    value: u64::from(v),
                    extra_bytes: 2,
                },
            )
        }
        26 => {
            let (r, v) = be_u32(rest).map_err(at_start)?;
            (
                r,
                Arg::Value {
                    value: u64::from(v),
                    extra_bytes: 4,
                },
            )
        }
        27 => {
            let (r, v) = be_u64(rest).map_err(at_start)?;
            (
                r,
                Arg::Value {
                    value: v,
                    extra_bytes: 8,
                },
            )
        }
        28..=30 => return Err(PErr::at(start, CborErrorKind::ReservedAdditionalInfo(info))),
        _ => (rest, Arg::Indefinite),
    };
    Ok((rest, Head { major, info, arg }))
}

/// Takes a definite-length string payload of `len` bytes, failing with
/// `LengthBeyondInput` at `head_start` when the input is shorter. No
/// allocation depends on `len`.
pub(crate) fn payload<'a>(
    input: &'a [u8],
    len: u64,
    head_start: &'a [u8],
) -> PResult<'a, &'a [u8]> {
    match usize::try_from(len) {
        Ok(n) if n <= input.len() => nom::bytes::complete::take(n)(input),
        _ => Err(PErr::at(head_start, CborErrorKind::LengthBeyondInput(len))),
    }
}

/// A human name for a major type, for error messages.
pub(crate) fn major_name(major: u8) -> &'static str {
    match major {
        MAJOR_UNSIGNED => "unsigned integer",
        MAJOR_NEGATIVE => "negative integer",
        MAJOR_BYTES => "byte string",
        MAJOR_TEXT => "text string",
        MAJOR_ARRAY => "array",
        MAJOR_MAP => "map",
        MAJOR_TAG => "tag",
        _ => "simple value or float",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_form_boundaries() {
        let shortest = |bytes: &[u8]| head(bytes).unwrap().1.is_shortest();
        assert!(shortest(&[0x17]));
        assert!(!shortest(&[0x18, 0x17]));
        assert!(shortest(&[0x18, 0x18]));
        assert!(!shortest(&[0x19, 0x00, 0xff]));
        assert!(shortest(&[0x19, 0x01, 0x00]));
        assert!(!shortest(&[0x1a, 0x00, 0x00, 0xff, 0xff]));
        assert!(!shortest(&[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]));
        assert!(shortest(&[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]));
    }

    #[test]
    fn truncated_argument_points_at_the_initial_byte() {
        let input = [0x1a, 0x01, 0x02];
        let err = head(&input).unwrap_err();
        assert_eq!(
            err,
            nom::Err::Error(PErr {
                remaining: 3,
                kind: CborErrorKind::Truncated
            })
        );
    }

    #[test]
    fn reserved_additional_information_is_rejected() {
        for info in 28..=30u8 {
            for major in 0..8u8 {
                let err = head(&[(major << 5) | info]).unwrap_err();
                assert_eq!(
                    err,
                    nom::Err::Error(PErr {
                        remaining: 1,
                        kind: CborErrorKind::ReservedAdditionalInfo(info)
                    })
                );
            }
        }
    }
}
