//! ciborium as an independent oracle (KW-CBOR-020): shared by the property
//! tests and the `cbor_differential` fuzz target.

use keyway::cbor::Item;

/// Whether ciborium cannot hold the value: simple values other than the
/// four named ones, bignums of more than 128 bits, or nesting beyond its
/// recursion limit. ciborium may reject such items.
pub fn beyond_ciborium(item: &Item<'_>) -> bool {
    depth(item) > 200
        || match item {
            Item::Simple(_) => true,
            Item::Tag(2 | 3, c) => {
                matches!(&**c, Item::Bytes(b) if b.len() > 15) || beyond_ciborium(c)
            }
            Item::Tag(_, c) => beyond_ciborium(c),
            Item::Array { items, .. } => items.iter().any(beyond_ciborium),
            Item::Map { entries, .. } => entries
                .iter()
                .any(|(k, v)| beyond_ciborium(k) || beyond_ciborium(v)),
            _ => false,
        }
}

fn depth(item: &Item<'_>) -> usize {
    match item {
        Item::Tag(_, c) => 1 + depth(c),
        Item::Array { items, .. } => 1 + items.iter().map(depth).max().unwrap_or(0),
        Item::Map { entries, .. } => {
            1 + entries
                .iter()
                .map(|(k, v)| depth(k).max(depth(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Whether our item and ciborium's value are the same CBOR value.
/// ciborium decodes bignums that fit 128 bits as integers, `undefined` as
/// null, and joins the chunks of indefinite-length strings.
pub fn same_value(ours: &Item<'_>, theirs: &ciborium::Value) -> bool {
    use ciborium::Value as V;
    match (ours, theirs) {
        (Item::Unsigned(v), V::Integer(i)) => i128::from(*i) == i128::from(*v),
        (Item::Negative(n), V::Integer(i)) => i128::from(*i) == -1 - i128::from(*n),
        (Item::Bytes(b), V::Bytes(t)) => b.as_ref() == t.as_slice(),
        (Item::BytesChunks(c), V::Bytes(t)) => c.concat() == *t,
        (Item::Text(s), V::Text(t)) => s == t,
        (Item::TextChunks(c), V::Text(t)) => c.concat() == *t,
        (Item::Array { items, .. }, V::Array(t)) => {
            items.len() == t.len() && items.iter().zip(t).all(|(a, b)| same_value(a, b))
        }
        (Item::Map { entries, .. }, V::Map(t)) => {
            entries.len() == t.len()
                && entries
                    .iter()
                    .zip(t)
                    .all(|((k, v), (tk, tv))| same_value(k, tk) && same_value(v, tv))
        }
        (Item::Tag(tag @ (2 | 3), content), V::Integer(i)) => match &**content {
            Item::Bytes(b) => {
                let magnitude = b.iter().fold(0u128, |acc, &x| (acc << 8) | u128::from(x));
                let value = i128::try_from(magnitude)
                    .ok()
                    .map(|m| if *tag == 2 { m } else { -1 - m });
                value == Some(i128::from(*i))
            }
            _ => false,
        },
        // A bignum's value does not change with leading zero bytes (RFC 8949
        // §3.4.3); ciborium sometimes strips them.
        (Item::Tag(n @ (2 | 3), c), V::Tag(tn, tc)) if n == tn => match (&**c, &**tc) {
            (Item::Bytes(a), V::Bytes(b)) => without_leading_zeros(a) == without_leading_zeros(b),
            _ => same_value(c, tc),
        },
        (Item::Tag(n, c), V::Tag(tn, tc)) => n == tn && same_value(c, tc),
        (Item::Bool(b), V::Bool(t)) => b == t,
        (Item::Null | Item::Undefined, V::Null) => true,
        (Item::Float(f), V::Float(t)) => {
            let v = f.to_f64();
            (v.is_nan() && t.is_nan()) || v.to_bits() == t.to_bits()
        }
        _ => false,
    }
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}
