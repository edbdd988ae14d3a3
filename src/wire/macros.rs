//! Declarative definitions of map-shaped structures and enumerations: one
//! line per field gives the Rust field, its key, whether it is required and
//! its type; the decoder, encoder, describer and schema table follow.

/// The Rust type of a field given its presence.
macro_rules! field_type {
    (req $t:ty) => { $t };
    (opt $t:ty) => { Option<$t> };
}

macro_rules! field_required {
    (req) => {
        true
    };
    (opt) => {
        false
    };
}

/// A map-shaped structure with integer keys.
///
/// ```text
/// wire_map! {
///     /// Docs.
///     pub struct Name = "cddl-rule-name" {
///         /// Field docs.
///         2 => txn: req TxnId,
///         12 => csr: opt CertRequest,
///     }
///     check = path::to::fn;   // optional: fn(&Name) -> Result<(), WireErrorKind>
/// }
/// ```
macro_rules! wire_map {
    (
        $(#[$meta:meta])*
        pub struct $name:ident = $cddl:literal {
            $(
                $(#[$fmeta:meta])*
                $key:literal => $field:ident : $presence:ident $ty:ty
            ),* $(,)?
        }
        $(check = $check:path;)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: field_type!($presence $ty),
            )*
            /// Extension fields (negative keys), re-encoded verbatim.
            pub ext: $crate::wire::Extensions,
        }

        impl $name {
            /// The fields in key order.
            pub const FIELDS: &'static [$crate::wire::FieldInfo] = &[
                $($crate::wire::FieldInfo {
                    key: $key,
                    name: stringify!($field),
                    required: field_required!($presence),
                },)*
            ];

            /// The CDDL rule that defines this structure.
            pub const CDDL: &'static str = $cddl;

            #[allow(unused_variables)]
            pub(crate) fn decode_fields(
                mut f: $crate::wire::fields::Fields<'_, '_>,
            ) -> Result<Self, $crate::wire::WireError> {
                let map_offset = f.map_offset();
                $(let $field = f.$presence::<$ty>($key, stringify!($field))?;)*
                let ext = f.finish()?;
                let value = Self { $($field,)* ext };
                $(
                    $check(&value)
                        .map_err(|kind| $crate::wire::WireError::new(map_offset, kind))?;
                )?
                Ok(value)
            }

            /// Arbitrary valid values, for tests and fuzzing.
            pub(crate) fn sample_fields(src: &mut $crate::wire::Source) -> Self {
                loop {
                    let value = Self {
                        $($field: wire_map!(@sample $presence, src, $ty),)*
                        ext: $crate::wire::Sample::sample(src),
                    };
                    // Rejection sampling: every check passes for at least
                    // half of the draws.
                    $(if $check(&value).is_err() { continue; })?
                    return value;
                }
            }

            pub(crate) fn encode_fields(&self, m: &mut $crate::wire::fields::MapOut) {
                $(m.$presence($key, &self.$field);)*
                m.ext(&self.ext);
            }

            pub(crate) fn describe_fields(&self, entries: &mut Vec<$crate::wire::describe::Entry>) {
                $(
                    wire_map!(@describe $presence, entries, $key, stringify!($field), &self.$field);
                )*
                self.ext.describe_into(entries);
            }
        }
    };
    (@sample req, $src:ident, $ty:ty) => {
        <$ty as $crate::wire::Sample>::sample($src)
    };
    (@sample opt, $src:ident, $ty:ty) => {
        if $src.coin() { Some(<$ty as $crate::wire::Sample>::sample($src)) } else { None }
    };
    (@describe req, $entries:ident, $key:literal, $name:expr, $value:expr) => {
        $crate::wire::fields::describe_req($entries, $key, $name, $value)
    };
    (@describe opt, $entries:ident, $key:literal, $name:expr, $value:expr) => {
        $crate::wire::fields::describe_opt($entries, $key, $name, $value)
    };
}

/// Makes a `wire_map!` structure usable as a nested field value.
macro_rules! nested_map {
    ($($name:ident),* $(,)?) => {$(
        impl $crate::wire::WireValue for $name {
            fn decode(r: &mut $crate::cbor::Reader<'_>) -> Result<Self, $crate::wire::WireError> {
                Self::decode_fields($crate::wire::fields::Fields::open(r)?)
            }
            fn encode(&self, out: &mut Vec<u8>) {
                let mut m = $crate::wire::fields::MapOut::new();
                self.encode_fields(&mut m);
                m.finish(out);
            }
            fn describe(&self) -> $crate::wire::Node {
                let mut entries = Vec::new();
                self.describe_fields(&mut entries);
                $crate::wire::Node::Map(entries)
            }
        }

        impl $crate::wire::Sample for $name {
            fn sample(src: &mut $crate::wire::Source) -> Self {
                Self::sample_fields(src)
            }
        }
    )*};
}

/// An enumeration carried as an unsigned integer.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident = $what:literal {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $code:literal => $spec:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The code on the wire.
            pub fn code(self) -> u64 {
                match self { $($name::$variant => $code,)* }
            }

            /// The name used in the spec.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $spec,)* }
            }

            /// The value with this code.
            pub fn from_code(code: u64) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl $crate::wire::WireValue for $name {
            fn decode(r: &mut $crate::cbor::Reader<'_>) -> Result<Self, $crate::wire::WireError> {
                let at = r.offset();
                let code = r.uint()?;
                Self::from_code(code).ok_or_else(|| {
                    $crate::wire::WireError::new(
                        at,
                        $crate::wire::WireErrorKind::UnknownEnumValue { what: $what, value: code },
                    )
                })
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $crate::cbor::write_uint(out, self.code());
            }
            fn describe(&self) -> $crate::wire::Node {
                $crate::wire::Node::Enum { code: self.code(), name: self.name() }
            }
        }

        impl $crate::wire::Sample for $name {
            fn sample(src: &mut $crate::wire::Source) -> Self {
                let all = [$($name::$variant,)*];
                let [first, ..] = all;
                let i = src.below(all.len() as u64) as usize;
                all.get(i).copied().unwrap_or(first)
            }
        }
    };
}

/// A newtype over a fixed-size byte string.
macro_rules! fixed_bytes {
    ($($(#[$meta:meta])* $name:ident = $n:literal;)*) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $n]);

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}(h'{}')", stringify!($name), $crate::cbor::hex(&self.0))
            }
        }

        impl $crate::wire::WireValue for $name {
            fn decode(r: &mut $crate::cbor::Reader<'_>) -> Result<Self, $crate::wire::WireError> {
                $crate::wire::value::decode_fixed(r).map(Self)
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $crate::cbor::write_bytes(out, &self.0);
            }
            fn describe(&self) -> $crate::wire::Node {
                $crate::wire::Node::Bytes(self.0.to_vec())
            }
        }

        impl $crate::wire::Sample for $name {
            fn sample(src: &mut $crate::wire::Source) -> Self {
                Self($crate::wire::Sample::sample(src))
            }
        }
    )*};
}
