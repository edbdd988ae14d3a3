//! Structures nested inside messages: certificates and requests for them,
//! sealed bodies and their recipient entries, and the plaintext structures
//! that sealed bodies carry (spec/messages.md §Structures).

use zeroize::Zeroize;

use super::describe::Node;
use super::error::WireError;
use super::types::{
    Domain, Hash32, KeyId, MediaKind, Nonce, Permission, Principal, PublicKey, RecipientKind,
    RecordingId, RecordingMode, Role, SessionId, SignatureBytes, SocketAddr, Suite, open_tuple,
};
use super::value::{Bytes, List, Text, Time, WireValue};
use crate::cbor::{self, Reader};

/// 32 secret bytes (a media key): zeroized on drop, compared in constant
/// time, never printed by `Debug`.
#[derive(Clone)]
pub struct SecretBytes32(pub [u8; 32]);

impl Drop for SecretBytes32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for SecretBytes32 {
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for SecretBytes32 {}

impl core::fmt::Debug for SecretBytes32 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretBytes32(<redacted>)")
    }
}

impl WireValue for SecretBytes32 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        super::value::decode_fixed(r).map(Self)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_bytes(out, &self.0);
    }
    // Shown only when someone decodes a plaintext on purpose.
    fn describe(&self) -> Node {
        Node::Bytes(self.0.to_vec())
    }
}

wire_map! {
    /// A certificate-issuance request (F1): the device's public keys with
    /// proof of possession of the signing key (spec/crypto.md).
    pub struct CertRequest = "cert-request" {
        /// The cipher suite.
        0 => suite: req Suite,
        /// Ed25519 public key.
        1 => sig_key: req PublicKey,
        /// X25519 public key.
        2 => kx_key: req PublicKey,
        /// Signature by `sig_key` over the request (proof of possession).
        3 => pop: req SignatureBytes,
    }
}

wire_map! {
    /// The answer to a challenge (F1, F2, de-registration).
    pub struct AuthResponse = "auth-response" {
        /// The challenge nonce, echoed.
        0 => nonce: req Nonce,
        /// Proof of the provisioned secret, bound to the request.
        1 => proof: req super::types::Mac32,
        /// Proof of possession of the X25519 key, when a certificate is requested.
        2 => kx_proof: opt super::types::Mac32,
        /// The device's fresh X25519 key of this answer, whose exchange with
        /// the challenge's key masks `proof` (KW-CRYPTO-021).
        3 => epk: req PublicKey,
        /// Proof of possession of the signing key of the certificate a
        /// registration keeps (F2, refresh; KW-CRYPTO-026).
        4 => cert_pop: opt SignatureBytes,
    }
}

wire_map! {
    /// The signed part of a certificate.
    pub struct CertTbs = "cert-tbs" {
        /// The cipher suite.
        0 => suite: req Suite,
        /// Serial number, unique per issuer.
        1 => serial: req u64,
        /// The issuing domain.
        2 => issuer: req Domain,
        /// The issuer's signing key.
        3 => issuer_kid: req KeyId,
        /// The account certified.
        4 => subject: req Principal,
        /// What the subject is.
        5 => role: req Role,
        /// Ed25519 public key.
        6 => sig_key: req PublicKey,
        /// X25519 public key.
        7 => kx_key: req PublicKey,
        /// First second of validity.
        8 => not_before: req Time,
        /// Last second of validity (KW-CERT-003).
        9 => not_after: req Time,
    }
}

/// A certificate: CDDL `certificate = [tbs: bstr .cbor cert-tbs, sig]`.
/// The signature covers the exact bytes of `tbs`, which decoding has
/// checked to be deterministic, so re-encoding `tbs` reproduces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The signed part.
    pub tbs: CertTbs,
    /// The issuer's signature over the encoded `tbs`.
    pub sig: SignatureBytes,
}

impl Certificate {
    /// The encoded `tbs`, as signed.
    pub fn tbs_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.tbs.encode(&mut out);
        out
    }
}

impl WireValue for Certificate {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        open_tuple(r, 2)?;
        let mut inner = r.embedded()?;
        let tbs = CertTbs::decode(&mut inner)?;
        inner.finish()?;
        let sig = SignatureBytes::decode(r)?;
        r.leave();
        Ok(Certificate { tbs, sig })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        cbor::write_array_header(out, 2);
        cbor::write_bytes(out, &self.tbs_bytes());
        self.sig.encode(out);
    }
    fn describe(&self) -> Node {
        Node::Tuple(vec![
            ("tbs", Node::Embedded(Box::new(self.tbs.describe()))),
            ("sig", self.sig.describe()),
        ])
    }
}

wire_map! {
    /// A server's statement that it checked a certificate (F3).
    pub struct Attestation = "attestation" {
        /// The attesting server.
        0 => attester: req Principal,
        /// Its signing key.
        1 => kid: req KeyId,
        /// When it checked.
        2 => at: req Time,
        /// Signature over the certificate, the requester and the time
        /// (KW-CRYPTO-012).
        3 => sig: req SignatureBytes,
        /// The attester's own certificate.
        4 => cert: req Certificate,
    }
}

wire_map! {
    /// One recipient of a sealed body: the content key wrapped for it
    /// (F4). Entries without `id` and `kid` are found by trial unwrap.
    pub struct Recipient = "recipient" {
        /// The recipient's account.
        0 => id: opt Principal,
        /// The recipient's key-agreement key.
        1 => kid: opt KeyId,
        /// Destination device, or a server asked to decrypt.
        2 => kind: req RecipientKind,
        /// Read, or read and modify.
        3 => perm: req Permission,
        /// The wrapped content key.
        4 => wrapped: req Bytes<16, 64>,
    }
    check = check_recipient;
}

/// KW-CRYPTO-034: an entry is explicit (`id` and `kid`) or anonymous
/// (neither).
fn check_recipient(r: &Recipient) -> Result<(), super::error::WireErrorKind> {
    if r.id.is_some() != r.kid.is_some() {
        return Err(super::error::WireErrorKind::FieldCombination(
            "a recipient entry has both id and kid or neither",
        ));
    }
    Ok(())
}

wire_map! {
    /// A modification of sealed control information by a permitted server.
    pub struct Edit = "edit" {
        /// The modifying server.
        0 => editor: req Principal,
        /// Its signing key.
        1 => kid: req KeyId,
        /// Digest of the version it changed.
        2 => prev: req Hash32,
        /// Digest of the version it wrote.
        3 => next: req Hash32,
        /// Its signature over the change (KW-CRYPTO-035).
        4 => sig: req SignatureBytes,
        /// Its ephemeral key, when it drew a new content key and re-wrapped.
        5 => epk: opt PublicKey,
        /// Its certificate.
        6 => cert: req Certificate,
    }
}

wire_map! {
    /// Control information encrypted under a content key, with the key
    /// wrapped for each recipient and signed by the sender (F4).
    pub struct Sealed = "sealed" {
        /// The cipher suite.
        0 => suite: req Suite,
        /// Content identifier: which content of the message this is.
        1 => cid: req u64,
        /// The original sender.
        2 => sender: req Principal,
        /// The sender's signing key.
        3 => sender_kid: req KeyId,
        /// Ephemeral X25519 public key shared by all entries.
        4 => epk: req PublicKey,
        /// One entry per recipient.
        5 => recipients: req List<Recipient, 1, 16>,
        /// Per-message nonce of the body encryption.
        6 => nonce: req Nonce,
        /// The encrypted control information.
        7 => ct: req Bytes<16, 8192>,
        /// Digest of the original control information.
        8 => hash: req Hash32,
        /// The sender's signature over `hash` and the recipient list.
        9 => sig: req SignatureBytes,
        /// Modifications since the sender sealed it, oldest first.
        10 => edits: opt List<Edit, 1, 8>,
    }
}

wire_map! {
    /// One media stream of a session description.
    pub struct Stream = "stream" {
        /// Stream identifier, unique per sender and session.
        0 => id: req u64,
        /// Audio, video or data.
        1 => kind: req MediaKind,
        /// Where the sender receives this stream.
        2 => addr: req SocketAddr,
        /// Media parameters (codec and options).
        3 => params: req Text<64>,
        /// The key the sender encrypts this stream with.
        4 => key: req SecretBytes32,
    }
}

wire_map! {
    /// The control information of an offer or answer: the plaintext of its
    /// sealed body.
    pub struct SessionDesc = "session-desc" {
        /// Random salt, so equal descriptions never hash alike.
        0 => salt: req Nonce,
        /// The media streams.
        1 => streams: req List<Stream, 1, 8>,
    }
}

wire_map! {
    /// The plaintext of an in-session message.
    pub struct SessionUpdate = "session-update" {
        /// Application text.
        0 => text: opt Text<1024>,
        /// A new session description (e.g. new media keys).
        1 => desc: opt SessionDesc,
    }
}

wire_map! {
    /// A media key as told to a recorder.
    pub struct MediaKey = "media-key" {
        /// Who encrypts with it.
        0 => sender: req Principal,
        /// Which of the sender's streams.
        1 => stream: req u64,
        /// From which key epoch on.
        2 => epoch: req u64,
        /// The key.
        3 => key: req SecretBytes32,
    }
}

wire_map! {
    /// The plaintext of the sealed `keys` of a recording command.
    pub struct MediaKeys = "media-keys" {
        /// The keys.
        0 => keys: req List<MediaKey, 1, 16>,
    }
}

wire_map! {
    /// One recording, as listed.
    pub struct RecordingInfo = "recording-info" {
        /// The recording.
        0 => recording: req RecordingId,
        /// The session recorded.
        1 => session: req SessionId,
        /// When recording started.
        2 => started: req Time,
        /// When it ended, if it has.
        3 => ended: opt Time,
        /// What is kept.
        4 => mode: req RecordingMode,
        /// The parties of the session.
        5 => parties: req List<Principal, 1, 8>,
        /// Media packets recorded.
        6 => packets: req u64,
        /// Bytes recorded.
        7 => bytes: req u64,
    }
}

nested_map!(
    CertRequest,
    AuthResponse,
    CertTbs,
    Attestation,
    Recipient,
    Edit,
    Sealed,
    Stream,
    SessionDesc,
    SessionUpdate,
    MediaKey,
    MediaKeys,
    RecordingInfo,
);

/// The schemas of the nested structures, for the CDDL check.
pub(crate) const NESTED_SCHEMAS: &[super::fields::Schema] = &[
    schema(CertRequest::CDDL, CertRequest::FIELDS),
    schema(AuthResponse::CDDL, AuthResponse::FIELDS),
    schema(CertTbs::CDDL, CertTbs::FIELDS),
    schema(Attestation::CDDL, Attestation::FIELDS),
    schema(Recipient::CDDL, Recipient::FIELDS),
    schema(Edit::CDDL, Edit::FIELDS),
    schema(Sealed::CDDL, Sealed::FIELDS),
    schema(Stream::CDDL, Stream::FIELDS),
    schema(SessionDesc::CDDL, SessionDesc::FIELDS),
    schema(SessionUpdate::CDDL, SessionUpdate::FIELDS),
    schema(MediaKey::CDDL, MediaKey::FIELDS),
    schema(MediaKeys::CDDL, MediaKeys::FIELDS),
    schema(RecordingInfo::CDDL, RecordingInfo::FIELDS),
];

const fn schema(
    cddl: &'static str,
    fields: &'static [super::fields::FieldInfo],
) -> super::fields::Schema {
    super::fields::Schema {
        cddl,
        message_type: None,
        fields,
    }
}

/// Decodes one plaintext structure (e.g. the [`SessionDesc`] inside a
/// sealed body) with the protocol limits.
pub fn decode_plaintext<T: WireValue>(bytes: &[u8]) -> Result<T, WireError> {
    let mut r = Reader::new(bytes, super::PROTOCOL_LIMITS)?;
    let value = T::decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// Encodes one plaintext structure.
pub fn encode_plaintext<T: WireValue>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}
