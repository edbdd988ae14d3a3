//! The generic CBOR data model: every item RFC 8949 can express, with
//! indefinite-length items kept distinct so that diagnostic notation shows
//! what was on the wire. Strings borrow from the input when decoded.

use std::borrow::Cow;

use super::float::Float;

/// A simple value other than `false`, `true`, `null` and `undefined`
/// (0–19 or 32–255; 24–31 have no encoding, RFC 8949 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Simple(u8);

impl Simple {
    /// `None` for 20–31, which are either named items or not encodable.
    pub fn new(value: u8) -> Option<Self> {
        (!(20..32).contains(&value)).then_some(Self(value))
    }

    /// The simple value's number.
    pub fn value(self) -> u8 {
        self.0
    }
}

/// One CBOR data item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    /// Major type 0.
    Unsigned(u64),
    /// Major type 1, holding the argument `n`: the value is `-1 - n`.
    Negative(u64),
    /// A definite-length byte string.
    Bytes(Cow<'a, [u8]>),
    /// An indefinite-length byte string, as its chunks.
    BytesChunks(Vec<Cow<'a, [u8]>>),
    /// A definite-length text string.
    Text(Cow<'a, str>),
    /// An indefinite-length text string, as its chunks.
    TextChunks(Vec<Cow<'a, str>>),
    /// An array, with whether it was encoded with indefinite length.
    Array {
        /// The elements.
        items: Vec<Item<'a>>,
        /// Encoded with indefinite length.
        indefinite: bool,
    },
    /// A map as its entries in input order, with whether it was encoded with
    /// indefinite length.
    Map {
        /// Key/value pairs.
        entries: Vec<(Item<'a>, Item<'a>)>,
        /// Encoded with indefinite length.
        indefinite: bool,
    },
    /// A tag number and its content (bignums appear as tags 2 and 3).
    Tag(u64, Box<Item<'a>>),
    /// `false` or `true`.
    Bool(bool),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// Any other simple value.
    Simple(Simple),
    /// A float of any width, held exactly.
    Float(Float),
}

impl<'a> Item<'a> {
    /// A definite-length array.
    pub fn array(items: Vec<Item<'a>>) -> Self {
        Item::Array {
            items,
            indefinite: false,
        }
    }

    /// A definite-length map.
    pub fn map(entries: Vec<(Item<'a>, Item<'a>)>) -> Self {
        Item::Map {
            entries,
            indefinite: false,
        }
    }

    /// A text string.
    pub fn text(s: impl Into<Cow<'a, str>>) -> Self {
        Item::Text(s.into())
    }

    /// A byte string.
    pub fn bytes(b: impl Into<Cow<'a, [u8]>>) -> Self {
        Item::Bytes(b.into())
    }

    /// An integer in the CBOR range `-2^64 ..= 2^64 - 1`.
    pub fn integer(value: i128) -> Option<Self> {
        if value >= 0 {
            u64::try_from(value).ok().map(Item::Unsigned)
        } else {
            u64::try_from(-1 - value).ok().map(Item::Negative)
        }
    }

    /// Copies every borrowed string so the item outlives its input.
    pub fn into_owned(self) -> Item<'static> {
        match self {
            Item::Unsigned(v) => Item::Unsigned(v),
            Item::Negative(v) => Item::Negative(v),
            Item::Bytes(b) => Item::Bytes(Cow::Owned(b.into_owned())),
            Item::BytesChunks(c) => {
                Item::BytesChunks(c.into_iter().map(|b| Cow::Owned(b.into_owned())).collect())
            }
            Item::Text(t) => Item::Text(Cow::Owned(t.into_owned())),
            Item::TextChunks(c) => {
                Item::TextChunks(c.into_iter().map(|t| Cow::Owned(t.into_owned())).collect())
            }
            Item::Array { items, indefinite } => Item::Array {
                items: items.into_iter().map(Item::into_owned).collect(),
                indefinite,
            },
            Item::Map {
                entries,
                indefinite,
            } => Item::Map {
                entries: entries
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                indefinite,
            },
            Item::Tag(n, content) => Item::Tag(n, Box::new(content.into_owned())),
            Item::Bool(b) => Item::Bool(b),
            Item::Null => Item::Null,
            Item::Undefined => Item::Undefined,
            Item::Simple(s) => Item::Simple(s),
            Item::Float(f) => Item::Float(f),
        }
    }
}
