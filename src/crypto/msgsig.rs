//! Signatures of firewall and recording requests (KW-CRYPTO-060) and of
//! in-session requests (KW-CRYPTO-061).

use super::error::CryptoError;
use super::keys::{KeyUse, SigningKeyPair, key_id, verify};
use super::structure::{MSG_SIG, Part, structure};
use crate::wire::{Certificate, Message, Signature, SignatureBytes};

/// Placeholder signature used while encoding the signed input; its value
/// does not matter since key 8 is removed before signing.
fn unsigned_bytes(message: &Message) -> Option<Vec<u8>> {
    let mut copy = message.clone();
    set_signature(&mut copy, None)?;
    Some(copy.encode_without_signature())
}

/// The signed input: `cbor(["keyway-v1 msg-sig", m])`, `m` the message
/// encoded without key 8 (and, for an in-session request, without keys 6
/// and 7).
pub fn message_signature_input(message: &Message) -> Option<Vec<u8>> {
    let m = unsigned_bytes(message)?;
    Some(structure(MSG_SIG, &[Part::Bytes(&m)]))
}

fn set_signature(message: &mut Message, sig: Option<Signature>) -> Option<()> {
    let slot = match message {
        Message::PinholeOpen(m) => &mut m.sig,
        Message::PinholeNarrow(m) => &mut m.sig,
        Message::PinholeClose(m) => &mut m.sig,
        Message::MediaCopy(m) => &mut m.sig,
        Message::RecordStart(m) => &mut m.sig,
        Message::RecordKey(m) => &mut m.sig,
        Message::RecordStop(m) => &mut m.sig,
        Message::RecordList(m) => &mut m.sig,
        Message::RecordFetch(m) => &mut m.sig,
        Message::Ack(m) => &mut m.sig,
        Message::Info(m) => &mut m.sig,
        Message::Rekey(m) => &mut m.sig,
        Message::Bye(m) => &mut m.sig,
        _ => return None,
    };
    if let Some(sig) = sig {
        *slot = sig;
    }
    Some(())
}

fn signature_of(message: &Message) -> Option<&Signature> {
    match message {
        Message::PinholeOpen(m) => Some(&m.sig),
        Message::PinholeNarrow(m) => Some(&m.sig),
        Message::PinholeClose(m) => Some(&m.sig),
        Message::MediaCopy(m) => Some(&m.sig),
        Message::RecordStart(m) => Some(&m.sig),
        Message::RecordKey(m) => Some(&m.sig),
        Message::RecordStop(m) => Some(&m.sig),
        Message::RecordList(m) => Some(&m.sig),
        Message::RecordFetch(m) => Some(&m.sig),
        Message::Ack(m) => Some(&m.sig),
        Message::Info(m) => Some(&m.sig),
        Message::Rekey(m) => Some(&m.sig),
        Message::Bye(m) => Some(&m.sig),
        _ => None,
    }
}

/// Signs a message that has a `sig` field; `None` for other types.
pub fn sign_message(message: &mut Message, key: &SigningKeyPair) -> Option<()> {
    let input = message_signature_input(message)?;
    let sig = Signature {
        kid: key.kid(),
        sig: key.sign(&input),
    };
    set_signature(message, Some(sig))
}

/// Verifies a message's `sig` with the sender's (already validated)
/// certificate.
pub fn verify_message(message: &Message, cert: &Certificate) -> Result<(), CryptoError> {
    let sig = signature_of(message).ok_or(CryptoError::BadSignature)?;
    if key_id(&cert.tbs.sig_key, KeyUse::Signing) != sig.kid {
        return Err(CryptoError::KeyIdMismatch);
    }
    let input = message_signature_input(message).ok_or(CryptoError::BadSignature)?;
    verify(&cert.tbs.sig_key, &input, &sig.sig)
}

/// An all-zero signature, to fill `sig` before [`sign_message`].
pub fn unsigned() -> Signature {
    Signature {
        kid: crate::wire::KeyId([0; 8]),
        sig: SignatureBytes([0; 64]),
    }
}
