//! Every Keyway message (spec/messages.md). A message is one map whose
//! key 0 is the protocol version and key 1 the message type; every other key
//! has one meaning and one type across all messages (the field registry).

use super::describe::{Entry, Node};
use super::error::{WireError, WireErrorKind};
use super::fields::{Fields, MapOut, Schema};
use super::structs::{Attestation, AuthResponse, CertRequest, Certificate, Sealed};
use super::types::{
    Contact, ErrorCode, Nonce, Principal, PublicKey, RecordingId, RecordingMode, SessionId,
    Signature, SocketAddr, Transport, TxnId,
};
use super::value::{Bytes, List, Text, Time, UpTo, WireValue};
use super::{MAX_MESSAGE_SIZE, PROTOCOL_LIMITS, PROTOCOL_VERSION};
use crate::cbor::Reader;

/// The route a request has taken: the servers it passed, in order.
pub type Via = List<Principal, 1, 16>;
/// Remaining forwards before a request is dropped (KW-ROUTE-003).
pub type Hops = UpTo<16>;

wire_map! {
    /// F1/F2: location registration combined with a certificate-issuance
    /// request (`csr`) or an existing certificate (`cert`); with neither and
    /// `expires` 0, de-registration.
    pub struct Register = "register" {
        2 => txn: req TxnId,
        /// The account registering.
        3 => from: req Principal,
        /// Where the device can be reached.
        10 => contact: req Contact,
        /// Requested registration term in seconds; 0 de-registers.
        11 => expires: req u64,
        /// A certificate-issuance request.
        12 => csr: opt CertRequest,
        /// A certificate the device already holds.
        13 => cert: opt Certificate,
        /// The answer to a challenge.
        14 => auth: opt AuthResponse,
    }
    check = check_register;
}

fn check_register(m: &Register) -> Result<(), WireErrorKind> {
    if m.csr.is_some() && m.cert.is_some() {
        return Err(WireErrorKind::FieldCombination(
            "register carries csr or cert, not both",
        ));
    }
    Ok(())
}

wire_map! {
    /// The server's demand that the device prove its account, signed by
    /// the server so that the device answers only its own server
    /// (KW-REG-019, KW-CRYPTO-025).
    pub struct Challenge = "challenge" {
        2 => txn: req TxnId,
        /// The account challenged.
        4 => to: req Principal,
        /// The server's signature over the challenge without this field
        /// (KW-CRYPTO-025).
        8 => sig: req Signature,
        /// Seconds the nonce stays valid.
        11 => expires: req u64,
        /// The server's certificate (role server), which `sig` is checked
        /// with.
        13 => cert: req Certificate,
        /// Single-use challenge nonce.
        15 => nonce: req Nonce,
        /// Salt of the account's verifier.
        16 => salt: req Nonce,
        /// Iteration count of the account's verifier.
        17 => iterations: req u64,
        /// The server's X25519 key of this challenge: it keys the mask of
        /// the proof and the proof of possession of a csr's key
        /// (KW-CRYPTO-021, KW-CRYPTO-023).
        18 => kx_challenge: req PublicKey,
    }
}

wire_map! {
    /// Registration complete: the granted term and, when one was issued or
    /// confirmed, the certificate, whose term equals the registration's.
    pub struct RegisterOk = "register-ok" {
        2 => txn: req TxnId,
        /// The account registered.
        4 => to: req Principal,
        /// The contact registered.
        10 => contact: req Contact,
        /// Granted term in seconds; 0 after de-registration.
        11 => expires: req u64,
        /// The certificate issued or confirmed.
        13 => cert: opt Certificate,
        /// When the registration (and certificate) ends.
        19 => not_after: req Time,
    }
}

wire_map! {
    /// F3: a request for another account's certificate.
    pub struct CertQuery = "cert-query" {
        2 => txn: req TxnId,
        /// The requester.
        3 => from: req Principal,
        6 => hops: req Hops,
        7 => via: opt Via,
        /// The account whose certificate is wanted.
        20 => target: req Principal,
    }
}

wire_map! {
    /// F3: the answer to a certificate query.
    pub struct CertNotify = "cert-notify" {
        2 => txn: req TxnId,
        /// The requester.
        4 => to: req Principal,
        /// The certificate.
        13 => cert: req Certificate,
        /// The account it certifies.
        20 => target: req Principal,
        /// The requester's own server vouching for a foreign certificate.
        21 => attestation: opt Attestation,
    }
}

wire_map! {
    /// F4: a session offer with sealed control information.
    pub struct Offer = "offer" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        4 => to: req Principal,
        5 => session: req SessionId,
        6 => hops: req Hops,
        7 => via: opt Via,
        /// The caller's certificate, so the callee need not query it.
        13 => cert: opt Certificate,
        /// The sealed session description.
        22 => body: req Sealed,
    }
}

wire_map! {
    /// F4: the callee's answer, retracing the offer's path.
    pub struct Answer = "answer" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        4 => to: req Principal,
        5 => session: req SessionId,
        /// The callee's certificate.
        13 => cert: opt Certificate,
        /// The sealed session description.
        22 => body: req Sealed,
    }
}

wire_map! {
    /// Confirms an answer.
    pub struct Ack = "ack" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        4 => to: req Principal,
        5 => session: req SessionId,
        6 => hops: req Hops,
        7 => via: opt Via,
        /// The sender's signature (KW-CRYPTO-061).
        8 => sig: req Signature,
    }
}

wire_map! {
    /// F5: an in-session message under the session key.
    pub struct Info = "info" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        4 => to: req Principal,
        5 => session: req SessionId,
        6 => hops: req Hops,
        7 => via: opt Via,
        /// The sender's signature (KW-CRYPTO-061).
        8 => sig: req Signature,
        /// Key epoch.
        23 => epoch: req u64,
        /// Sequence number within the epoch and direction.
        24 => seq: req u64,
        /// The encrypted session update.
        25 => payload: req Bytes<16, 8192>,
    }
}

wire_map! {
    /// F5: a new session key, sealed for the recipients (`body`) or wrapped
    /// under the current session key (`wrapped`): exactly one of the two.
    pub struct Rekey = "rekey" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        4 => to: req Principal,
        5 => session: req SessionId,
        6 => hops: req Hops,
        7 => via: opt Via,
        /// The sender's signature (KW-CRYPTO-061).
        8 => sig: req Signature,
        /// The new key, sealed for each recipient's key.
        22 => body: opt Sealed,
        /// The new epoch.
        23 => epoch: req u64,
        /// Sequence number in the old epoch.
        24 => seq: req u64,
        /// Data encrypted under the new key.
        25 => payload: opt Bytes<16, 8192>,
        /// The new key wrapped under the current one.
        26 => wrapped: opt Bytes<16, 64>,
    }
    check = check_rekey;
}

fn check_rekey(m: &Rekey) -> Result<(), WireErrorKind> {
    if m.body.is_some() == m.wrapped.is_some() {
        return Err(WireErrorKind::FieldCombination(
            "rekey carries exactly one of body and wrapped",
        ));
    }
    Ok(())
}

wire_map! {
    /// Ends a session (the cutoff signal of claims 29 and 32).
    pub struct Bye = "bye" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        4 => to: req Principal,
        5 => session: req SessionId,
        6 => hops: req Hops,
        7 => via: opt Via,
        /// The sender's signature (KW-CRYPTO-061).
        8 => sig: req Signature,
        23 => epoch: req u64,
        24 => seq: req u64,
        /// Authenticates the bye under the session key.
        25 => payload: req Bytes<16, 8192>,
    }
}

wire_map! {
    /// Success for a request that has no response of its own.
    pub struct OkResponse = "ok" {
        2 => txn: req TxnId,
        5 => session: opt SessionId,
        /// The epoch now in use, after a rekey.
        23 => epoch: opt u64,
        /// The type of the request answered.
        28 => re: req MsgType,
        /// The pinhole acted on.
        40 => pinhole: opt u64,
        /// The recording acted on.
        50 => recording: opt RecordingId,
    }
}

wire_map! {
    /// Failure of a request.
    pub struct ErrorResponse = "error" {
        /// Absent when the request could not be decoded far enough.
        2 => txn: opt TxnId,
        /// The type of the request, when known.
        28 => re: opt MsgType,
        29 => code: req ErrorCode,
        /// Human-readable detail.
        30 => reason: opt Text<256>,
        /// Byte offset of the offending input, for decode errors.
        31 => offset: opt u64,
        /// The shortest registration term accepted.
        32 => min_expires: opt u64,
        /// Seconds to wait before retrying.
        33 => retry_after: opt u64,
    }
}

wire_map! {
    /// F6: pass packets to `dst`, from `src` or from anywhere.
    pub struct PinholeOpen = "pinhole-open" {
        2 => txn: req TxnId,
        /// The controlling server.
        3 => from: req Principal,
        5 => session: req SessionId,
        8 => sig: req Signature,
        /// When the server made the request: a firewall refuses one that
        /// is not fresh (KW-FW-007).
        9 => time: req Time,
        /// Identifier chosen by the server.
        40 => pinhole: req u64,
        41 => proto: req Transport,
        42 => dst: req SocketAddr,
        /// Absent: any source.
        43 => src: opt SocketAddr,
        /// Seconds after `time` at which the firewall closes it by itself.
        44 => lifetime: req u64,
        /// The public address that is forwarded to `dst`, as a NAT
        /// mapping (KW-FW-006).
        47 => public: opt SocketAddr,
    }
}

wire_map! {
    /// F6: pass only packets from `src`.
    pub struct PinholeNarrow = "pinhole-narrow" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        8 => sig: req Signature,
        9 => time: req Time,
        40 => pinhole: req u64,
        43 => src: req SocketAddr,
    }
}

wire_map! {
    /// F6: stop passing packets.
    pub struct PinholeClose = "pinhole-close" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        8 => sig: req Signature,
        9 => time: req Time,
        40 => pinhole: req u64,
    }
}

wire_map! {
    /// F7: copy (or stop copying) a pinhole's packets to a recorder.
    pub struct MediaCopy = "media-copy" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        8 => sig: req Signature,
        9 => time: req Time,
        40 => pinhole: req u64,
        /// Where copies go.
        45 => sink: req SocketAddr,
        /// Start (true) or stop (false).
        46 => copy: req bool,
    }
}

wire_map! {
    /// F7: start recording a session, with its media keys sealed for the
    /// recorder.
    pub struct RecordStart = "record-start" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        5 => session: req SessionId,
        8 => sig: req Signature,
        /// When the sender made the request: a recorder refuses one that
        /// is not fresh (KW-REC-006).
        9 => time: req Time,
        50 => recording: req RecordingId,
        51 => mode: req RecordingMode,
        /// Media keys, sealed for the recorder.
        52 => keys: req Sealed,
        /// The parties of the session.
        58 => parties: req List<Principal, 1, 8>,
    }
}

wire_map! {
    /// F7: media keys after a rekey.
    pub struct RecordKey = "record-key" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        5 => session: req SessionId,
        8 => sig: req Signature,
        /// When the sender made the request: a recorder refuses one that
        /// is not fresh (KW-REC-006).
        9 => time: req Time,
        23 => epoch: req u64,
        50 => recording: req RecordingId,
        52 => keys: req Sealed,
    }
}

wire_map! {
    /// F7: stop recording.
    pub struct RecordStop = "record-stop" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        5 => session: req SessionId,
        8 => sig: req Signature,
        /// When the sender made the request: a recorder refuses one that
        /// is not fresh (KW-REC-006).
        9 => time: req Time,
        50 => recording: req RecordingId,
    }
}

wire_map! {
    /// F7: list the recordings the requester may see.
    pub struct RecordList = "record-list" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        /// Only this session's recordings.
        5 => session: opt SessionId,
        8 => sig: req Signature,
        /// When the sender made the request: a recorder refuses one that
        /// is not fresh (KW-REC-006).
        9 => time: req Time,
    }
}

wire_map! {
    /// F7: the answer to a record-list.
    pub struct RecordListing = "record-listing" {
        2 => txn: req TxnId,
        /// The listing (`[0*64 recording-info]`), sealed for the
        /// requester (KW-CRYPTO-070).
        53 => recordings: req Bytes<16, 16384>,
        /// The recorder's ephemeral X25519 key for this response.
        59 => epk: req PublicKey,
    }
}

wire_map! {
    /// F7: fetch one chunk of a recording.
    pub struct RecordFetch = "record-fetch" {
        2 => txn: req TxnId,
        3 => from: req Principal,
        8 => sig: req Signature,
        /// When the sender made the request: a recorder refuses one that
        /// is not fresh (KW-REC-006).
        9 => time: req Time,
        50 => recording: req RecordingId,
        /// Chunk index, from 0.
        56 => index: req u64,
    }
}

wire_map! {
    /// F7: one chunk of a recording.
    pub struct RecordData = "record-data" {
        2 => txn: req TxnId,
        50 => recording: req RecordingId,
        /// Recorded packet `index`, sealed for the requester
        /// (KW-CRYPTO-070).
        54 => chunk: req Bytes<16, 8208>,
        56 => index: req u64,
        /// Whether further chunks follow.
        57 => more: req bool,
        /// The recorder's ephemeral X25519 key for this response.
        59 => epk: req PublicKey,
    }
}

wire_map! {
    /// A media packet ("main information"), encrypted with the sender's
    /// media key for the stream; what the firewall copies to a recorder.
    pub struct Media = "media" {
        3 => from: req Principal,
        5 => session: req SessionId,
        23 => epoch: req u64,
        24 => seq: req u64,
        25 => payload: req Bytes<16, 8192>,
        55 => stream: req u64,
    }
}

macro_rules! messages {
    ($($variant:ident($ty:ty) = $code:literal => $spec:literal,)*) => {
        wire_enum! {
            /// The message type (key 1 of every message).
            pub enum MsgType = "message type" {
                $($variant = $code => $spec,)*
            }
        }

        /// Any Keyway message.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message {
            $(
                #[allow(missing_docs)]
                $variant($ty),
            )*
        }

        impl Message {
            /// The message type.
            pub fn msg_type(&self) -> MsgType {
                match self { $(Message::$variant(_) => MsgType::$variant,)* }
            }

            fn decode_body(t: MsgType, f: Fields<'_, '_>) -> Result<Self, WireError> {
                match t { $(MsgType::$variant => <$ty>::decode_fields(f).map(Message::$variant),)* }
            }

            fn encode_body(&self, m: &mut MapOut) {
                match self { $(Message::$variant(b) => b.encode_fields(m),)* }
            }

            fn describe_body(&self, entries: &mut Vec<Entry>) {
                match self { $(Message::$variant(b) => b.describe_fields(entries),)* }
            }
        }

        impl $crate::wire::Sample for Message {
            fn sample(src: &mut $crate::wire::Source) -> Self {
                match <MsgType as $crate::wire::Sample>::sample(src) {
                    $(MsgType::$variant => Message::$variant(<$ty>::sample_fields(src)),)*
                }
            }
        }

        $(
            impl From<$ty> for Message {
                fn from(m: $ty) -> Self {
                    Message::$variant(m)
                }
            }
        )*

        /// The schema of every message, for the CDDL check.
        pub const MESSAGE_SCHEMAS: &[Schema] = &[
            $(Schema { cddl: <$ty>::CDDL, message_type: Some($code), fields: <$ty>::FIELDS },)*
        ];
    };
}

messages! {
    Register(Register) = 1 => "register",
    Challenge(Challenge) = 2 => "challenge",
    RegisterOk(RegisterOk) = 3 => "register-ok",
    CertQuery(CertQuery) = 4 => "cert-query",
    CertNotify(CertNotify) = 5 => "cert-notify",
    Offer(Offer) = 6 => "offer",
    Answer(Answer) = 7 => "answer",
    Ack(Ack) = 8 => "ack",
    Info(Info) = 9 => "info",
    Rekey(Rekey) = 10 => "rekey",
    Bye(Bye) = 11 => "bye",
    Ok(OkResponse) = 12 => "ok",
    Error(ErrorResponse) = 13 => "error",
    PinholeOpen(PinholeOpen) = 20 => "pinhole-open",
    PinholeNarrow(PinholeNarrow) = 21 => "pinhole-narrow",
    PinholeClose(PinholeClose) = 22 => "pinhole-close",
    MediaCopy(MediaCopy) = 23 => "media-copy",
    RecordStart(RecordStart) = 30 => "record-start",
    RecordKey(RecordKey) = 31 => "record-key",
    RecordStop(RecordStop) = 32 => "record-stop",
    RecordList(RecordList) = 33 => "record-list",
    RecordListing(RecordListing) = 34 => "record-listing",
    RecordFetch(RecordFetch) = 35 => "record-fetch",
    RecordData(RecordData) = 36 => "record-data",
    Media(Media) = 40 => "media",
}

const KEY_VERSION: u64 = 0;
const KEY_TYPE: u64 = 1;
/// What a message signature leaves out (KW-CRYPTO-060): the signature.
const UNSIGNED: &[u64] = &[8];
/// What the signature of an in-session request leaves out
/// (KW-CRYPTO-061): `hops` and `via`, which servers rewrite on the way,
/// and the signature.
const UNSIGNED_IN_SESSION: &[u64] = &[6, 7, 8];

impl Message {
    /// Decodes one message (KW-WIRE-001): deterministic CBOR within the
    /// protocol limits, a known version and type, every field valid.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_MESSAGE_SIZE {
            // KW-LIMIT-001: detected at the first byte beyond the limit.
            return Err(WireError::new(
                MAX_MESSAGE_SIZE,
                WireErrorKind::MessageTooLarge {
                    size: bytes.len(),
                    limit: MAX_MESSAGE_SIZE,
                },
            ));
        }
        // The whole message is checked as CBOR (well-formed, deterministic,
        // within limits) before any field is interpreted, so that the error
        // reported for bad input does not depend on the schema.
        crate::cbor::decode(bytes, &PROTOCOL_LIMITS)?;
        let mut r = Reader::new(bytes, PROTOCOL_LIMITS)?;
        let mut f = Fields::open(&mut r)?;
        let (version, at) = f.req_at::<u64>(KEY_VERSION, "v")?;
        if version != PROTOCOL_VERSION {
            return Err(WireError::new(
                at,
                WireErrorKind::UnsupportedVersion(version),
            ));
        }
        let (code, at) = f.req_at::<u64>(KEY_TYPE, "type")?;
        let msg_type = MsgType::from_code(code)
            .ok_or_else(|| WireError::new(at, WireErrorKind::UnknownMessageType(code)))?;
        let message = Self::decode_body(msg_type, f)?;
        r.finish()?;
        Ok(message)
    }

    /// The deterministic encoding (KW-WIRE-002).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_into(MapOut::new())
    }

    /// The encoding without the `sig` field (key 8), and for an in-session
    /// request without `hops` and `via` (keys 6 and 7): the input of a
    /// message signature (KW-CRYPTO-060, KW-CRYPTO-061).
    pub fn encode_without_signature(&self) -> Vec<u8> {
        let skip = match self.msg_type() {
            MsgType::Ack | MsgType::Info | MsgType::Rekey | MsgType::Bye => UNSIGNED_IN_SESSION,
            _ => UNSIGNED,
        };
        self.encode_into(MapOut::without(skip))
    }

    fn encode_into(&self, mut m: MapOut) -> Vec<u8> {
        m.req(KEY_VERSION, &PROTOCOL_VERSION);
        m.req(KEY_TYPE, &self.msg_type());
        self.encode_body(&mut m);
        let mut out = Vec::new();
        m.finish(&mut out);
        out
    }

    /// An annotated view for diagnostic output.
    pub fn describe(&self) -> Node {
        let mut entries = vec![
            Entry {
                key: 0,
                name: Some("v"),
                value: Node::Uint(PROTOCOL_VERSION),
            },
            Entry {
                key: 1,
                name: Some("type"),
                value: self.msg_type().describe(),
            },
        ];
        self.describe_body(&mut entries);
        Node::Map(entries)
    }
}
