//! A server's requests to its recorder (F7): the copy of a session's
//! media and its keys, sealed for the recorder (KW-REC-001..003). A
//! recording's start carries every key known, so that sending it again
//! after a restart (KW-SM-025) completes what the recorder holds.

use super::firewall::FwOp;
use super::{Pending, Server, ServerEvent};
use crate::core::clock::Now;
use crate::core::transport::Proto;
use crate::crypto::{Entropy, RecipientSpec, SealContext, seal, sign_message, unsigned};
use crate::wire::{
    Extensions, List, MediaKey, MediaKeys, Message, MsgType, Permission, Principal, RecipientKind,
    RecordKey, RecordStart, RecordStop, RecordingId, Sealed, SecretBytes32, SessionDesc, SessionId,
    Time, TxnId, encode_plaintext,
};

impl Server {
    /// KW-REC-001, KW-REC-002: copy the session's pinholes to the recorder
    /// and give it the media keys, sealed for it.
    pub(super) fn start_recording(&mut self, now: Now, session: SessionId, rng: &mut impl Entropy) {
        let Some(recorder) = self.cfg.recorder.clone() else {
            return;
        };
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let selected = [&s.caller, &s.callee]
            .into_iter()
            .any(|p| self.is_local(p) && self.cfg.policy.record.selects(p));
        if !selected || s.pinholes.is_empty() || s.recording.is_some() {
            return;
        }
        let id = RecordingId(rng.array());
        let pinholes: Vec<u64> = s.pinholes.keys().copied().collect();
        if let Some(s) = self.session_mut(&session) {
            s.recording = Some(id);
            for pinhole in s.pinholes.values_mut() {
                pinhole.copy = true;
            }
        }
        for pinhole in pinholes {
            let op = FwOp::Copy {
                sink: recorder.addr,
                on: true,
            };
            self.firewall_request(now, session, pinhole, op, rng);
        }
        self.event(ServerEvent::RecordingStarted(session, id));
        self.record_start(now, session, rng);
    }

    /// Sends `record-start` with every media key the session has shown.
    pub(super) fn record_start(&mut self, now: Now, session: SessionId, rng: &mut impl Entropy) {
        let Some(recorder) = self.cfg.recorder.clone() else {
            return;
        };
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let Some(id) = s.recording else {
            return;
        };
        let parties = vec![s.caller.clone(), s.callee.clone()];
        let keys: Vec<MediaKey> = s
            .descs
            .iter()
            .flat_map(|((party, n), d)| media_keys(party, *n, d))
            .collect();
        let Some(sealed) = self.seal_keys(session, MsgType::RecordStart, keys, rng) else {
            return;
        };
        let Some(parties) = List::new(parties) else {
            return;
        };
        let txn = TxnId(rng.array());
        let message = Message::RecordStart(RecordStart {
            txn,
            from: self.account().clone(),
            session,
            sig: unsigned(),
            // KW-REC-006: the recorder refuses a command that is not fresh.
            time: Time(now.wall_secs()),
            recording: id,
            mode: recorder.mode,
            keys: sealed,
            parties,
            ext: Extensions::new(),
        });
        self.send_recorder(now, txn, message);
    }

    /// Sends `record-key` with the keys of a new description.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_key(
        &mut self,
        now: Now,
        session: SessionId,
        recording: RecordingId,
        sender: &Principal,
        number: u64,
        desc: &SessionDesc,
        rng: &mut impl Entropy,
    ) {
        let keys = media_keys(sender, number, desc);
        let Some(sealed) = self.seal_keys(session, MsgType::RecordKey, keys, rng) else {
            return;
        };
        let txn = TxnId(rng.array());
        let message = Message::RecordKey(RecordKey {
            txn,
            from: self.account().clone(),
            session,
            sig: unsigned(),
            time: Time(now.wall_secs()),
            epoch: number,
            recording,
            keys: sealed,
            ext: Extensions::new(),
        });
        self.send_recorder(now, txn, message);
    }

    /// Sends `record-stop` (KW-REC-003).
    pub(super) fn record_stop(
        &mut self,
        now: Now,
        session: SessionId,
        recording: RecordingId,
        rng: &mut impl Entropy,
    ) {
        let txn = TxnId(rng.array());
        let message = Message::RecordStop(RecordStop {
            txn,
            from: self.account().clone(),
            session,
            sig: unsigned(),
            time: Time(now.wall_secs()),
            recording,
            ext: Extensions::new(),
        });
        self.send_recorder(now, txn, message);
    }

    /// Signs a command and sends it to the recorder as a request of the
    /// server's own.
    fn send_recorder(&mut self, now: Now, txn: TxnId, mut message: Message) {
        let Some(recorder) = self.cfg.recorder.clone() else {
            return;
        };
        sign_message(&mut message, &self.cfg.identity.signing);
        let transmit = self.transmit_to(Proto::of(recorder.transport), recorder.addr, message);
        self.request(now, transmit, txn, Pending::Recorder);
    }

    /// Media keys sealed for the recorder only, each sealing with its own
    /// `cid` within the session.
    fn seal_keys(
        &mut self,
        session: SessionId,
        re: MsgType,
        keys: Vec<MediaKey>,
        rng: &mut impl Entropy,
    ) -> Option<Sealed> {
        let recorder = self.cfg.recorder.clone()?;
        let cid = {
            let s = self.session_mut(&session)?;
            let cid = s.next_cid;
            s.next_cid = s.next_cid.saturating_add(1);
            cid
        };
        let plaintext = encode_plaintext(&MediaKeys {
            keys: List::new(keys)?,
            ext: Extensions::new(),
        });
        let spec = RecipientSpec {
            id: recorder.account,
            kx_key: recorder.kx_key,
            kind: RecipientKind::Destination,
            perm: Permission::Read,
            anonymous: false,
        };
        // A recorder's request names no `to` (KW-CRYPTO-032).
        let ctx = SealContext {
            session: &session,
            cid,
            re,
            to: None,
        };
        seal(
            ctx,
            &self.cfg.identity,
            &[spec],
            &plaintext,
            None,
            &mut self.kek,
            rng,
        )
        .ok()
        .map(|(sealed, _)| sealed)
    }
}

/// The media keys of a description.
pub(super) fn media_keys(party: &Principal, number: u64, desc: &SessionDesc) -> Vec<MediaKey> {
    desc.streams
        .iter()
        .map(|s| MediaKey {
            sender: party.clone(),
            stream: s.id,
            epoch: number,
            key: SecretBytes32(s.key.0),
            ext: Extensions::new(),
        })
        .collect()
}
