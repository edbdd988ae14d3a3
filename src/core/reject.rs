//! Answers to datagrams that fail to decode (KW-ERR-003, KW-ERR-005): the
//! error code and byte offset of the failure, never longer than the
//! datagram, and at most a few per source per second, so that Keyway
//! cannot amplify a reflection attack.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::error::ProtocolError;
use super::party::Outbox;
use super::transport::ReplyTo;
use super::{Addr, Millis};
use crate::wire::{ErrorCode, ErrorResponse, Extensions, Message, WireError};

/// Answers per source address per second.
const PER_SECOND: u32 = 10;
/// Sources tracked; the stalest is forgotten first.
const SOURCES: usize = 1024;

/// Per-source limit on answers to undecodable datagrams.
#[derive(Debug, Default)]
pub(crate) struct DecodeRejects {
    /// Per source: the second counted and the answers sent in it.
    sources: BTreeMap<IpAddr, (Millis, u32)>,
}

impl DecodeRejects {
    /// Decodes a datagram of `from`. One that fails to decode is told to
    /// the application by `event`, answered within the limit (the `error`
    /// pushed to `outputs`) and refused with the wire error.
    pub fn decode<E>(
        &mut self,
        now: Millis,
        from: ReplyTo,
        bytes: &[u8],
        out: &mut Outbox<E>,
        event: impl FnOnce(ErrorCode) -> E,
    ) -> Result<Message, ProtocolError> {
        Message::decode(bytes).map_err(|e| {
            out.event(event(ErrorCode::from(&e)));
            if let Some(error) = self.answer(now, from.peer, bytes.len(), &e) {
                out.reply(from, error);
            }
            ProtocolError::Undecodable(e)
        })
    }

    /// The `error` answering a datagram of `len` bytes from `from` that
    /// failed with `error`, or `None` when the limit or the size forbids.
    fn answer(
        &mut self,
        now: Millis,
        from: Addr,
        len: usize,
        error: &WireError,
    ) -> Option<Message> {
        let response = Message::Error(ErrorResponse {
            txn: None,
            re: None,
            code: ErrorCode::from(error),
            reason: None,
            offset: Some(error.offset as u64),
            min_expires: None,
            retry_after: None,
            ext: Extensions::new(),
        });
        // KW-ERR-005: never more bytes out than in.
        if response.encode().len() > len {
            return None;
        }
        let second = now / 1000;
        if !self.sources.contains_key(&from.ip()) && self.sources.len() >= SOURCES {
            let stalest = self
                .sources
                .iter()
                .min_by_key(|(_, (s, _))| *s)
                .map(|(ip, _)| *ip);
            if let Some(ip) = stalest {
                self.sources.remove(&ip);
            }
        }
        let slot = self.sources.entry(from.ip()).or_insert((second, 0));
        if slot.0 != second {
            *slot = (second, 0);
        }
        if slot.1 >= PER_SECOND {
            return None;
        }
        slot.1 += 1;
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// KW-SM-019: the sources whose answers are counted are bounded; a new
    /// one beyond the bound takes the place of the stalest.
    #[test]
    fn the_sources_counted_are_bounded() {
        let mut rejects = DecodeRejects::default();
        let mut garbage = vec![0xa2, 0x00, 0x01, 0x01, 0x0e];
        garbage.extend_from_slice(&[0u8; 40]);
        let error = Message::decode(&garbage).unwrap_err();
        for n in 0..=u32::try_from(SOURCES).unwrap() {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n);
            let from = Addr::new(ip.into(), 5000);
            assert!(rejects.answer(1000, from, garbage.len(), &error).is_some());
        }
        assert_eq!(rejects.sources.len(), SOURCES);
    }
}
