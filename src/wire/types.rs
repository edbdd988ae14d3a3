//! The field types shared by messages: identifiers, addresses, fixed-size
//! byte strings and enumerations (spec/messages.md §Common types).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::describe::{Node, ip_bytes};
use super::error::{WireError, WireErrorKind};
use super::value::{WireValue, bad_length};
use crate::cbor::{self, Reader};

fixed_bytes! {
    /// Transaction identifier: chosen at random by the requester, echoed by
    /// the response (KW-WIRE-040).
    TxnId = 8;
    /// Session identifier: chosen at random by the caller (KW-WIRE-041).
    SessionId = 16;
    /// Key identifier: names a public key (defined in spec/crypto.md).
    KeyId = 8;
    /// Recording identifier, chosen by the recorder's controller.
    RecordingId = 16;
    /// A 16-byte nonce or salt.
    Nonce = 16;
    /// An X25519 or Ed25519 public key.
    PublicKey = 32;
    /// An Ed25519 signature.
    SignatureBytes = 64;
    /// A SHA-256 digest.
    Hash32 = 32;
    /// A 32-byte MAC or proof.
    Mac32 = 32;
}

/// Maximum length of an account or server name (KW-WIRE-031).
pub const MAX_PRINCIPAL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_DOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// An account `local@domain` of a device, server or recorder (KW-WIRE-031):
/// lowercase ASCII only, so that one account has one spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(pub(crate) String);

impl Principal {
    /// Checks the syntax of `text`.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        if text.len() > MAX_PRINCIPAL_LEN {
            return Err("longer than 254 bytes");
        }
        let (local, domain) = text.split_once('@').ok_or("no '@'")?;
        if local.is_empty() || local.len() > MAX_LOCAL_LEN {
            return Err("local part not 1 to 64 bytes");
        }
        let local_ok = local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-+".contains(&b));
        if !local_ok {
            return Err("local part has a character outside a-z 0-9 . _ - +");
        }
        if local.starts_with('.') || local.ends_with('.') {
            return Err("local part starts or ends with '.'");
        }
        check_domain(domain)?;
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }
}

impl core::fmt::Display for Principal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
        return Err("domain not 1 to 253 bytes");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err("domain label not 1 to 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("domain label has a character outside a-z 0-9 -");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with '-'");
        }
    }
    Ok(())
}

impl WireValue for Principal {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let text = r.text()?;
        Principal::new(text).map_err(|why| {
            WireError::new(
                at,
                WireErrorKind::InvalidSyntax {
                    what: "account",
                    why,
                },
            )
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_text_string(out, &self.0);
    }
    fn describe(&self) -> Node {
        Node::Text(self.0.clone())
    }
}

/// A domain name (KW-WIRE-031): lowercase DNS labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(pub(crate) String);

impl Domain {
    /// Checks the syntax of `text`.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        check_domain(text)?;
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl WireValue for Domain {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let text = r.text()?;
        Domain::new(text).map_err(|why| {
            WireError::new(
                at,
                WireErrorKind::InvalidSyntax {
                    what: "domain",
                    why,
                },
            )
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_text_string(out, &self.0);
    }
    fn describe(&self) -> Node {
        Node::Text(self.0.clone())
    }
}

impl WireValue for IpAddr {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let bytes = r.bytes()?;
        if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
            Ok(IpAddr::V4(Ipv4Addr::from(v4)))
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
            Ok(IpAddr::V6(Ipv6Addr::from(v6)))
        } else {
            Err(bad_length(at, bytes.len(), 4, 16))
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_bytes(out, &ip_bytes(self));
    }
    fn describe(&self) -> Node {
        Node::Ip(*self)
    }
}

impl WireValue for u16 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let value = r.uint()?;
        u16::try_from(value).map_err(|_| {
            WireError::new(
                at,
                WireErrorKind::OutOfRange {
                    value,
                    max: u64::from(u16::MAX),
                },
            )
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_uint(out, u64::from(*self));
    }
    fn describe(&self) -> Node {
        Node::Uint(u64::from(*self))
    }
}

/// Reads an array of exactly `len` items; the caller reads the items and
/// then calls `r.leave()`.
pub(crate) fn open_tuple(r: &mut Reader<'_>, len: usize) -> Result<(), WireError> {
    let at = r.offset();
    let actual = r.array()?;
    if actual != len as u64 {
        return Err(bad_length(
            at,
            usize::try_from(actual).unwrap_or(usize::MAX),
            len,
            len,
        ));
    }
    Ok(())
}

/// An IP address and port: CDDL `socket-addr = [ip, port]`.
pub type SocketAddr = std::net::SocketAddr;

impl WireValue for SocketAddr {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        open_tuple(r, 2)?;
        let ip = IpAddr::decode(r)?;
        let port = u16::decode(r)?;
        r.leave();
        Ok(SocketAddr::new(ip, port))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_array_header(out, 2);
        self.ip().encode(out);
        self.port().encode(out);
    }
    fn describe(&self) -> Node {
        Node::Tuple(vec![
            ("ip", self.ip().describe()),
            ("port", self.port().describe()),
        ])
    }
}

wire_enum! {
    /// The cipher suite (KW-CRYPTO-001): v1 is Ed25519, X25519, HKDF-SHA256
    /// and AES-SIV.
    pub enum Suite = "suite" {
        /// Ed25519 + X25519 + HKDF-SHA256 + AES-SIV-CMAC-256.
        KeywayV1 = 1 => "keyway-v1",
    }
}

wire_enum! {
    /// A transport protocol.
    pub enum Transport = "transport" {
        /// UDP, one message per datagram.
        Udp = 0 => "udp",
        /// TCP, length-prefixed messages.
        Tcp = 1 => "tcp",
    }
}

wire_enum! {
    /// What a certificate's subject is.
    pub enum Role = "role" {
        /// A user's device.
        Device = 0 => "device",
        /// A session control server.
        Server = 1 => "server",
        /// A recorder.
        Recorder = 2 => "recorder",
        /// A firewall controller.
        Firewall = 3 => "firewall",
    }
}

wire_enum! {
    /// Who a recipient entry of a sealed body is for.
    pub enum RecipientKind = "recipient kind" {
        /// The destination device.
        Destination = 0 => "destination",
        /// A server on the path, asked to decrypt (a decryption request).
        Server = 1 => "server",
    }
}

wire_enum! {
    /// What a recipient may do with the control information.
    pub enum Permission = "permission" {
        /// Read only.
        Read = 0 => "read",
        /// Read and modify.
        ReadModify = 1 => "read-modify",
    }
}

wire_enum! {
    /// What a recorder keeps.
    pub enum RecordingMode = "recording mode" {
        /// The decrypted media.
        Plaintext = 0 => "plaintext",
        /// The media as sent, with the keys that decrypt it.
        CiphertextAndKeys = 1 => "ciphertext-and-keys",
    }
}

wire_enum! {
    /// The kind of a media stream.
    pub enum MediaKind = "media kind" {
        /// Audio.
        Audio = 0 => "audio",
        /// Video.
        Video = 1 => "video",
        /// Application data.
        Data = 2 => "data",
    }
}

/// Where a device can be reached: CDDL `contact = [transport, ip, port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The transport.
    pub transport: Transport,
    /// The address.
    pub addr: SocketAddr,
}

impl WireValue for Contact {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        open_tuple(r, 3)?;
        let transport = Transport::decode(r)?;
        let ip = IpAddr::decode(r)?;
        let port = u16::decode(r)?;
        r.leave();
        Ok(Contact {
            transport,
            addr: SocketAddr::new(ip, port),
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_array_header(out, 3);
        self.transport.encode(out);
        self.addr.ip().encode(out);
        self.addr.port().encode(out);
    }
    fn describe(&self) -> Node {
        Node::Tuple(vec![
            ("transport", self.transport.describe()),
            ("ip", self.addr.ip().describe()),
            ("port", self.addr.port().describe()),
        ])
    }
}

/// A signature by a named key: CDDL `signature = [kid, sig]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The signing key.
    pub kid: KeyId,
    /// The Ed25519 signature.
    pub sig: SignatureBytes,
}

impl WireValue for Signature {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        open_tuple(r, 2)?;
        let kid = KeyId::decode(r)?;
        let sig = SignatureBytes::decode(r)?;
        r.leave();
        Ok(Signature { kid, sig })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_array_header(out, 2);
        self.kid.encode(out);
        self.sig.encode(out);
    }
    fn describe(&self) -> Node {
        Node::Tuple(vec![
            ("kid", self.kid.describe()),
            ("sig", self.sig.describe()),
        ])
    }
}

/// A protocol error code (spec/errors.md): three digits whose first
/// names the class. Receivers accept codes they do not know and act on the
/// class (KW-ERR-002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl WireValue for ErrorCode {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let value = r.uint()?;
        match u16::try_from(value) {
            Ok(code) if (100..=999).contains(&code) => Ok(ErrorCode(code)),
            _ => Err(WireError::new(
                at,
                WireErrorKind::OutOfRange { value, max: 999 },
            )),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_uint(out, u64::from(self.0));
    }
    fn describe(&self) -> Node {
        match self.name() {
            Some(name) => Node::Enum {
                code: u64::from(self.0),
                name,
            },
            None => Node::Uint(u64::from(self.0)),
        }
    }
}
