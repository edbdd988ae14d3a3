//! Diagnostic notation (RFC 8949 §8): one line per item, spelled as in the
//! RFC's Appendix A. Text is printed ASCII-only with JSON escapes, so the
//! output is safe on any terminal; bignums are shown as their tags.

use std::fmt::Write as _;

use super::item::Item;

/// The diagnostic notation of `item`.
pub fn to_diag(item: &Item<'_>) -> String {
    let mut out = String::new();
    write_diag(&mut out, item);
    out
}

/// Appends the diagnostic notation of `item` to `out`.
pub fn write_diag(out: &mut String, item: &Item<'_>) {
    match item {
        Item::Unsigned(v) => push_display(out, v),
        Item::Negative(n) => push_display(out, -1 - i128::from(*n)),
        Item::Bytes(b) => write_hex_bytes(out, b),
        // RFC 8949 §8.1: with no chunks, `(_ )` would not say whether a
        // byte string (0x5fff) or a text string (0x7fff) is meant, so those
        // two are `''_` and `""_`; one or more chunks, even empty ones, are
        // listed: `(_ h'')`.
        Item::BytesChunks(chunks) if chunks.is_empty() => out.push_str("''_"),
        Item::BytesChunks(chunks) => {
            write_sequence(out, "(_ ", ")", chunks, |out, c| write_hex_bytes(out, c));
        }
        Item::Text(t) => write_text(out, t),
        Item::TextChunks(chunks) if chunks.is_empty() => out.push_str("\"\"_"),
        Item::TextChunks(chunks) => {
            write_sequence(out, "(_ ", ")", chunks, |out, c| write_text(out, c));
        }
        Item::Array { items, indefinite } => {
            let open = if *indefinite { "[_ " } else { "[" };
            write_sequence(out, open, "]", items, write_diag);
        }
        Item::Map {
            entries,
            indefinite,
        } => {
            let open = if *indefinite { "{_ " } else { "{" };
            write_sequence(out, open, "}", entries, |out, (k, v)| {
                write_diag(out, k);
                out.push_str(": ");
                write_diag(out, v);
            });
        }
        Item::Tag(tag, content) => {
            push_display(out, tag);
            out.push('(');
            write_diag(out, content);
            out.push(')');
        }
        Item::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Item::Null => out.push_str("null"),
        Item::Undefined => out.push_str("undefined"),
        Item::Simple(s) => {
            out.push_str("simple(");
            push_display(out, s.value());
            out.push(')');
        }
        Item::Float(f) => out.push_str(&format_float(f.to_f64())),
    }
}

fn push_display(out: &mut String, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value}");
}

fn write_sequence<T>(
    out: &mut String,
    open: &str,
    close: &str,
    items: &[T],
    mut each: impl FnMut(&mut String, &T),
) {
    out.push_str(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
    out.push_str(close);
}

/// `h'…'` with lowercase hex.
pub fn write_hex_bytes(out: &mut String, bytes: &[u8]) {
    out.push_str("h'");
    out.push_str(&hex(bytes));
    out.push('\'');
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let digit = |nibble: u8| char::from_digit(u32::from(nibble), 16).unwrap_or('0');
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 0x0f));
    }
    s
}

/// Bytes from hex text (either case); `None` for odd length or a non-hex
/// character.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let nibble = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    digits
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((nibble(*hi)? << 4) | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

/// A JSON-style quoted string; everything outside printable ASCII is
/// escaped, code points above U+FFFF as surrogate pairs.
pub fn write_text(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_display(out, format_args!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// Formats a float as RFC 8949 Appendix A does: the shortest digits that
/// round-trip, positional notation for decimal exponents from -7 to 20
/// (as ECMAScript's Number.prototype.toString), always with a fraction.
pub fn format_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .into();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let k = digits.len() as i32;
    // The decimal point sits after `n` digits.
    let n = exponent + 1;
    let mut out = String::new();
    if value.is_sign_negative() {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
        out.push_str(".0");
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        out.push('.');
        out.push_str(if rest.is_empty() { "0" } else { rest });
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        push_display(&mut out, (n - 1).abs());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_in_rfc_8949_appendix_a() {
        let cases = [
            (1.0, "1.0"),
            (1.1, "1.1"),
            (-4.1, "-4.1"),
            (65504.0, "65504.0"),
            (100000.0, "100000.0"),
            (3.4028234663852886e38, "3.4028234663852886e+38"),
            (1.0e300, "1.0e+300"),
            (5.960464477539063e-8, "5.960464477539063e-8"),
            (0.00006103515625, "0.00006103515625"),
            (1e21, "1.0e+21"),
            (1e20, "100000000000000000000.0"),
            (1.5e-7, "1.5e-7"),
            (1.5e-6, "0.0000015"),
            (-0.0, "-0.0"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_float(value), expected, "{value:e}");
        }
    }

    /// RFC 8949 §8.1: `''_` and `""_` only for no chunks at all; chunks,
    /// even empty ones, are listed inside `(_ …)`.
    #[test]
    fn indefinite_strings_without_chunks_are_told_apart() {
        let cases = [
            ("5fff", "''_"),
            ("7fff", "\"\"_"),
            ("5f40ff", "(_ h'')"),
            ("7f60ff", "(_ \"\")"),
            ("5f42010241 03ff", "(_ h'0102', h'03')"),
            ("7f657374726561646d696e67ff", "(_ \"strea\", \"ming\")"),
            ("825fff7fff", "[''_, \"\"_]"),
        ];
        for (hex, expected) in cases {
            let bytes = unhex(&hex.replace(' ', "")).unwrap();
            let item =
                crate::cbor::decode(&bytes, &crate::cbor::DecodeOptions::WELL_FORMED).unwrap();
            assert_eq!(to_diag(&item), expected, "{hex}");
        }
    }

    #[test]
    fn text_escapes_are_json_style_and_ascii_only() {
        let mut out = String::new();
        write_text(&mut out, "\"\\\u{fc}\u{6c34}\u{10151}\u{1}\n");
        assert_eq!(out, r#""\"\\\u00fc\u6c34\ud800\udd51\u0001\n""#);
    }
}
