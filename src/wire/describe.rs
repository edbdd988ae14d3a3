//! An annotated view of a decoded message, printed as diagnostic notation
//! with field names in comments (valid EDN, RFC 8610 Appendix G) or as JSON.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::cbor::{self, DecodeOptions};

/// One value of a message, with what is known of its meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// An unsigned integer.
    Uint(u64),
    /// A boolean.
    Bool(bool),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A text string.
    Text(String),
    /// An enumerated value: its code and name.
    Enum {
        /// The code on the wire.
        code: u64,
        /// Its name in the spec.
        name: &'static str,
    },
    /// A time in seconds since the Unix epoch.
    Time(u64),
    /// An IP address, carried as a byte string.
    Ip(IpAddr),
    /// An array of like values.
    Array(Vec<Node>),
    /// An array whose positions have names.
    Tuple(Vec<(&'static str, Node)>),
    /// A map.
    Map(Vec<Entry>),
    /// A byte string that holds an encoded item (CDDL `bstr .cbor`).
    Embedded(Box<Node>),
    /// An item the schema does not describe (an extension value).
    Raw(Vec<u8>),
}

/// One map entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key: non-negative for defined fields, negative for extensions.
    pub key: i128,
    /// The field name, for defined fields.
    pub name: Option<&'static str>,
    /// The value.
    pub value: Node,
}

impl Node {
    /// Diagnostic notation, one field per line, names and enum values in
    /// `/ comments /`.
    pub fn to_annotated_diag(&self) -> String {
        let mut out = String::new();
        self.write_diag(&mut out, 0);
        out
    }

    fn write_diag(&self, out: &mut String, indent: usize) {
        match self {
            Node::Uint(v) => push(out, v),
            Node::Bool(b) => push(out, b),
            Node::Bytes(b) => cbor::write_hex_bytes(out, b),
            Node::Text(t) => cbor::write_text(out, t),
            Node::Enum { code, name } => push(out, format_args!("{code} / {name} /")),
            Node::Time(t) => push(out, format_args!("{t} / {} /", format_time(*t))),
            Node::Ip(ip) => {
                cbor::write_hex_bytes(out, &ip_bytes(ip));
                push(out, format_args!(" / {ip} /"));
            }
            Node::Array(items) => {
                let inline = items.iter().all(Node::is_scalar);
                write_list(out, indent, inline, "[", "]", items, |out, item, indent| {
                    item.write_diag(out, indent);
                });
            }
            Node::Tuple(items) => {
                let inline = items.iter().all(|(_, n)| n.is_scalar());
                write_list(
                    out,
                    indent,
                    inline,
                    "[",
                    "]",
                    items,
                    |out, (name, item), indent| {
                        push(out, format_args!("/ {name} / "));
                        item.write_diag(out, indent);
                    },
                );
            }
            Node::Map(entries) => {
                write_list(
                    out,
                    indent,
                    entries.is_empty(),
                    "{",
                    "}",
                    entries,
                    |out, e, indent| {
                        push(out, e.key);
                        if let Some(name) = e.name {
                            push(out, format_args!(" / {} /", spec_name(name)));
                        }
                        out.push_str(": ");
                        e.value.write_diag(out, indent);
                    },
                );
            }
            Node::Embedded(inner) => {
                out.push_str("<<");
                inner.write_diag(out, indent);
                out.push_str(">>");
            }
            Node::Raw(bytes) => out.push_str(&raw_diag(bytes)),
        }
    }

    fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Node::Array(_) | Node::Tuple(_) | Node::Map(_) | Node::Embedded(_) | Node::Raw(_)
        )
    }

    /// JSON: maps become objects keyed by field name (extensions by their
    /// negative key), bytes become lowercase hex, enums their names.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Node::Uint(v) | Node::Time(v) => J::from(*v),
            Node::Bool(b) => J::Bool(*b),
            Node::Bytes(b) => J::String(cbor::hex(b)),
            Node::Text(t) => J::String(t.clone()),
            Node::Enum { name, .. } => J::String((*name).to_string()),
            Node::Ip(ip) => J::String(ip.to_string()),
            Node::Array(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Node::Tuple(items) => J::Object(
                items
                    .iter()
                    .map(|(name, n)| (spec_name(name), n.to_json()))
                    .collect(),
            ),
            Node::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| {
                        let key = e.name.map_or_else(|| e.key.to_string(), spec_name);
                        (key, e.value.to_json())
                    })
                    .collect(),
            ),
            Node::Embedded(inner) => inner.to_json(),
            Node::Raw(bytes) => J::String(raw_diag(bytes)),
        }
    }
}

/// Field names are Rust identifiers in code and kebab-case in the spec.
pub(crate) fn spec_name(name: &str) -> String {
    name.trim_start_matches("r#").replace('_', "-")
}

fn push(out: &mut String, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value}");
}

fn write_list<T>(
    out: &mut String,
    indent: usize,
    inline: bool,
    open: &str,
    close: &str,
    items: &[T],
    mut each: impl FnMut(&mut String, &T, usize),
) {
    out.push_str(open);
    if inline {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            each(out, item, indent);
        }
    } else {
        for (i, item) in items.iter().enumerate() {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', (indent + 1) * 2));
            each(out, item, indent + 1);
            if i + 1 < items.len() {
                out.push(',');
            }
        }
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', indent * 2));
    }
    out.push_str(close);
}

fn raw_diag(bytes: &[u8]) -> String {
    match cbor::decode(bytes, &DecodeOptions::WELL_FORMED) {
        Ok(item) => cbor::to_diag(&item),
        Err(_) => format!("h'{}'", cbor::hex(bytes)),
    }
}

pub(crate) fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// RFC 3339 UTC for seconds since the epoch (proleptic Gregorian calendar).
pub fn format_time(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rem = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc_3339() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(format_time(1_363_896_240), "2013-03-21T20:04:00Z");
    }

    #[test]
    fn annotated_diag_nests_and_names_fields() {
        let node = Node::Map(vec![
            Entry {
                key: 0,
                name: Some("not_after"),
                value: Node::Uint(1),
            },
            Entry {
                key: -1,
                name: None,
                value: Node::Raw(vec![0x82, 0x01, 0x02]),
            },
        ]);
        assert_eq!(
            node.to_annotated_diag(),
            "{\n  0 / not-after /: 1,\n  -1: [1, 2]\n}"
        );
        assert_eq!(
            node.to_json().to_string(),
            r#"{"not-after":1,"-1":"[1, 2]"}"#
        );
    }
}
