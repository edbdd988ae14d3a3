//! Session keys (F5): one chain of epochs per direction, in-session
//! payloads, rekey under the current key, replay windows and retirement of
//! old epochs (KW-KEY-001 to KW-KEY-006, KW-CRYPTO-040 to KW-CRYPTO-043).

use aes_siv::siv::Aes128Siv;

use super::entropy::Entropy;
use super::error::CryptoError;
use super::primitives::{siv_cipher, siv_open, siv_seal, siv_unwrap32, siv_wrap32};
use super::secret::Secret32;
use super::structure::{MEDIA, MSG, Part, REKEY, structure};
use crate::wire::{MsgType, Principal, SessionId, Suite};

/// How long a replaced receive epoch stays usable, and when to rekey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Seconds after which a sender rekeys (KW-KEY-003).
    pub rekey_after_secs: u64,
    /// Messages after which a sender rekeys (KW-KEY-003).
    pub rekey_after_messages: u64,
    /// Seconds a replaced receive epoch is kept (KW-KEY-004).
    pub grace_secs: u64,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            rekey_after_secs: 600,
            rekey_after_messages: 1000,
            grace_secs: 30,
        }
    }
}

/// Sequence numbers accepted behind the highest seen (KW-KEY-005).
pub const REPLAY_WINDOW: u64 = 64;

/// A sliding window of seen sequence numbers (RFC 4303 §3.4.3 style).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `i` set: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `seq` would be accepted. Does not record it.
    pub fn check(&self, seq: u64) -> Result<(), CryptoError> {
        match self.highest {
            None => Ok(()),
            Some(h) if seq > h => Ok(()),
            Some(h) => {
                let back = h - seq;
                if back >= REPLAY_WINDOW || self.seen & (1 << back) != 0 {
                    Err(CryptoError::Replay(seq))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Records `seq`, which [`ReplayWindow::check`] accepted.
    pub fn record(&mut self, seq: u64) {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.seen = 1;
            }
            Some(h) if seq > h => {
                let shift = seq - h;
                self.seen = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(seq);
            }
            Some(h) => {
                let back = h - seq;
                if back < REPLAY_WINDOW {
                    self.seen |= 1 << back;
                }
            }
        }
    }
}

/// The associated data of an in-session payload (KW-CRYPTO-041).
pub fn message_ad(
    session: &SessionId,
    from: &Principal,
    to: &Principal,
    msg_type: MsgType,
    epoch: u64,
    seq: u64,
) -> Vec<u8> {
    structure(
        MSG,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&session.0),
            Part::Text(from.as_str()),
            Part::Text(to.as_str()),
            Part::Uint(msg_type.code()),
            Part::Uint(epoch),
            Part::Uint(seq),
        ],
    )
}

/// The associated data of a rekey under the current key (KW-CRYPTO-042).
pub fn rekey_ad(
    session: &SessionId,
    from: &Principal,
    to: &Principal,
    epoch: u64,
    seq: u64,
) -> Vec<u8> {
    structure(
        REKEY,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&session.0),
            Part::Text(from.as_str()),
            Part::Text(to.as_str()),
            Part::Uint(epoch),
            Part::Uint(seq),
        ],
    )
}

/// The associated data of a media payload (KW-CRYPTO-043).
pub fn media_ad(
    session: &SessionId,
    from: &Principal,
    stream: u64,
    epoch: u64,
    seq: u64,
) -> Vec<u8> {
    structure(
        MEDIA,
        &[
            Part::Uint(Suite::KeywayV1.code()),
            Part::Bytes(&session.0),
            Part::Text(from.as_str()),
            Part::Uint(stream),
            Part::Uint(epoch),
            Part::Uint(seq),
        ],
    )
}

/// Encrypts one media frame (KW-CRYPTO-043).
pub fn seal_media(key: &Secret32, ad: &[u8], frame: &[u8]) -> Vec<u8> {
    siv_seal(&mut siv_cipher(key.expose()), &[ad], frame)
}

/// Decrypts one media frame.
pub fn open_media(key: &Secret32, ad: &[u8], payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
    siv_open(&mut siv_cipher(key.expose()), &[ad], payload)
}

struct Epoch {
    number: u64,
    key: Secret32,
    cipher: Aes128Siv,
    /// When this epoch stops being accepted (receive side, once replaced).
    retire_at: Option<u64>,
    window: ReplayWindow,
}

impl Epoch {
    fn new(number: u64, key: Secret32) -> Self {
        let cipher = siv_cipher(key.expose());
        Self {
            number,
            key,
            cipher,
            retire_at: None,
            window: ReplayWindow::default(),
        }
    }
}

/// The keys of one direction (`from` → `to`) of a session.
pub struct DirectionKeys {
    session: SessionId,
    from: Principal,
    to: Principal,
    /// Current epoch last; at most one older epoch in its grace window.
    epochs: Vec<Epoch>,
    /// Next sequence number to send in the current epoch.
    next_seq: u64,
    /// When the current epoch began.
    epoch_started: u64,
}

impl core::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "DirectionKeys({} -> {}, epoch {})",
            self.from,
            self.to,
            self.current_epoch()
        )
    }
}

/// A payload and its place in the direction's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPayload {
    /// The epoch.
    pub epoch: u64,
    /// The sequence number.
    pub seq: u64,
    /// The ciphertext.
    pub payload: Vec<u8>,
}

/// A payload that opened and is still to be recorded in its epoch's
/// replay window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "record it once the message is accepted"]
pub struct Seen {
    epoch: u64,
    seq: u64,
}

/// A rekey under the current key, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyWrapped {
    /// The new epoch.
    pub epoch: u64,
    /// Sequence number in the old epoch.
    pub seq: u64,
    /// The new key wrapped under the current one.
    pub wrapped: [u8; 48],
}

impl DirectionKeys {
    /// Epoch 0 of a direction, keyed with the session key (KW-CRYPTO-040).
    pub fn new(
        session: SessionId,
        from: Principal,
        to: Principal,
        key: Secret32,
        now: u64,
    ) -> Self {
        Self {
            session,
            from,
            to,
            epochs: vec![Epoch::new(0, key)],
            next_seq: 0,
            epoch_started: now,
        }
    }

    /// The current epoch.
    pub fn current_epoch(&self) -> u64 {
        self.epochs.last().map_or(0, |e| e.number)
    }

    /// Whether the sender should rekey now (KW-KEY-003).
    pub fn needs_rekey(&self, now: u64, policy: &KeyPolicy) -> bool {
        now.saturating_sub(self.epoch_started) >= policy.rekey_after_secs
            || self.next_seq >= policy.rekey_after_messages
    }

    fn take_seq(&mut self) -> Result<u64, CryptoError> {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(CryptoError::SequenceExhausted)?;
        Ok(seq)
    }

    /// Sender: encrypts an in-session payload (KW-KEY-002, KW-CRYPTO-041).
    pub fn seal(
        &mut self,
        msg_type: MsgType,
        plaintext: &[u8],
    ) -> Result<SealedPayload, CryptoError> {
        let seq = self.take_seq()?;
        let epoch = self.current_epoch();
        let ad = message_ad(&self.session, &self.from, &self.to, msg_type, epoch, seq);
        let current = self
            .epochs
            .last_mut()
            .ok_or(CryptoError::StaleEpoch(epoch))?;
        let payload = siv_seal(&mut current.cipher, &[&ad], plaintext);
        Ok(SealedPayload {
            epoch,
            seq,
            payload,
        })
    }

    /// Receiver: retires epochs whose grace window has passed.
    pub fn expire(&mut self, now: u64) {
        self.epochs
            .retain(|e| e.retire_at.is_none_or(|retire| now < retire));
    }

    fn epoch_mut(&mut self, epoch: u64, now: u64) -> Result<&mut Epoch, CryptoError> {
        self.epochs
            .iter_mut()
            .find(|e| e.number == epoch && e.retire_at.is_none_or(|r| now < r))
            .ok_or(CryptoError::StaleEpoch(epoch))
    }

    /// Receiver: checks and decrypts an in-session payload. A rejected
    /// payload changes nothing (KW-ERR-004); an accepted one is recorded
    /// in the replay window (KW-KEY-005).
    pub fn open(
        &mut self,
        msg_type: MsgType,
        epoch: u64,
        seq: u64,
        payload: &[u8],
        now: u64,
    ) -> Result<Vec<u8>, CryptoError> {
        let (plaintext, seen) = self.open_unrecorded(msg_type, epoch, seq, payload, now)?;
        self.record(seen, now);
        Ok(plaintext)
    }

    /// Receiver: [`DirectionKeys::open`] without recording the sequence
    /// number, for a caller that may still refuse the message for what it
    /// says; it hands the [`Seen`] to [`DirectionKeys::record`] once it
    /// accepts it (KW-ERR-004).
    pub fn open_unrecorded(
        &mut self,
        msg_type: MsgType,
        epoch: u64,
        seq: u64,
        payload: &[u8],
        now: u64,
    ) -> Result<(Vec<u8>, Seen), CryptoError> {
        let ad = message_ad(&self.session, &self.from, &self.to, msg_type, epoch, seq);
        let state = self.epoch_mut(epoch, now)?;
        state.window.check(seq)?;
        let plaintext = siv_open(&mut state.cipher, &[&ad], payload)?;
        Ok((plaintext, Seen { epoch, seq }))
    }

    /// Records a payload [`DirectionKeys::open_unrecorded`] accepted.
    pub fn record(&mut self, seen: Seen, now: u64) {
        if let Ok(state) = self.epoch_mut(seen.epoch, now) {
            state.window.record(seen.seq);
        }
    }

    /// Sender: draws the next epoch's key, wraps it under the current one
    /// (KW-CRYPTO-042) and switches to it.
    pub fn rekey_wrapped(
        &mut self,
        now: u64,
        entropy: &mut impl Entropy,
    ) -> Result<RekeyWrapped, CryptoError> {
        let key = Secret32::new(entropy.array());
        self.rekey_wrapped_with(key, now)
    }

    /// [`DirectionKeys::rekey_wrapped`] with a chosen key (for vectors).
    pub fn rekey_wrapped_with(
        &mut self,
        key: Secret32,
        now: u64,
    ) -> Result<RekeyWrapped, CryptoError> {
        let seq = self.take_seq()?;
        let old = self.current_epoch();
        let epoch = old.checked_add(1).ok_or(CryptoError::StaleEpoch(old))?;
        let ad = rekey_ad(&self.session, &self.from, &self.to, epoch, seq);
        let current = self.epochs.last_mut().ok_or(CryptoError::StaleEpoch(old))?;
        let wrapped = siv_wrap32(&mut current.cipher, &[&ad], key.expose());
        self.switch_sending(epoch, key, now);
        Ok(RekeyWrapped {
            epoch,
            seq,
            wrapped,
        })
    }

    /// Sender: switches to a new epoch whose key it sealed for the
    /// recipients itself (KW-CRYPTO-042, body form).
    pub fn switch_sending(&mut self, epoch: u64, key: Secret32, now: u64) {
        // A sender never needs an old key again.
        self.epochs.clear();
        self.epochs.push(Epoch::new(epoch, key));
        self.next_seq = 0;
        self.epoch_started = now;
    }

    /// Receiver: accepts a rekey under the current key. Rejected input
    /// changes nothing.
    pub fn accept_rekey_wrapped(
        &mut self,
        epoch: u64,
        seq: u64,
        wrapped: &[u8],
        now: u64,
        policy: &KeyPolicy,
    ) -> Result<(), CryptoError> {
        let current = self.current_epoch();
        if Some(epoch) != current.checked_add(1) {
            return Err(CryptoError::StaleEpoch(epoch));
        }
        let ad = rekey_ad(&self.session, &self.from, &self.to, epoch, seq);
        let state = self.epoch_mut(current, now)?;
        state.window.check(seq)?;
        let key = siv_unwrap32(&mut state.cipher, &[&ad], wrapped)?;
        state.window.record(seq);
        self.install(epoch, key, now, policy);
        Ok(())
    }

    /// Sender: switches to the next epoch with `key`, which it sealed for
    /// the recipients itself (KW-CRYPTO-042, body form). Returns the new
    /// epoch and the rekey's sequence number in the old one.
    pub fn rekey_with_key(&mut self, key: Secret32, now: u64) -> Result<(u64, u64), CryptoError> {
        let seq = self.take_seq()?;
        let old = self.current_epoch();
        let epoch = old.checked_add(1).ok_or(CryptoError::StaleEpoch(old))?;
        self.switch_sending(epoch, key, now);
        Ok((epoch, seq))
    }

    /// Receiver: installs epoch `epoch` with a key obtained from a rekey
    /// body; the rekey's `seq` is checked in the current epoch's window
    /// (KW-CRYPTO-044), and the current epoch enters its grace window
    /// (KW-KEY-004). Rejected input changes nothing.
    pub fn accept_rekey_key(
        &mut self,
        epoch: u64,
        seq: u64,
        key: Secret32,
        now: u64,
        policy: &KeyPolicy,
    ) -> Result<(), CryptoError> {
        let current = self.current_epoch();
        if Some(epoch) != current.checked_add(1) {
            return Err(CryptoError::StaleEpoch(epoch));
        }
        let state = self.epoch_mut(current, now)?;
        state.window.check(seq)?;
        state.window.record(seq);
        self.install(epoch, key, now, policy);
        Ok(())
    }

    /// When the current epoch began.
    pub fn epoch_started(&self) -> u64 {
        self.epoch_started
    }

    fn install(&mut self, epoch: u64, key: Secret32, now: u64, policy: &KeyPolicy) {
        // Only the epoch just replaced keeps a grace window.
        self.epochs.retain(|e| e.retire_at.is_none());
        if let Some(previous) = self.epochs.last_mut() {
            previous.retire_at = Some(now.saturating_add(policy.grace_secs));
        }
        self.epochs.push(Epoch::new(epoch, key));
        self.epoch_started = now;
    }
}

/// One epoch of a direction, as kept in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochState {
    /// The epoch number.
    pub number: u64,
    /// Its key.
    pub key: Secret32,
    /// When it stops being accepted, once replaced (receive side).
    pub retire_at: Option<u64>,
    /// Its replay window.
    pub window: ReplayWindow,
}

/// Everything a [`DirectionKeys`] holds, so that a party can keep a
/// direction in its store and go on with it after a restart. Times are in
/// the seconds the caller gave the direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionState {
    /// The session.
    pub session: SessionId,
    /// The sender of this direction.
    pub from: Principal,
    /// Its receiver.
    pub to: Principal,
    /// Its epochs, the current last.
    pub epochs: Vec<EpochState>,
    /// The next sequence number to send in the current epoch.
    pub next_seq: u64,
    /// When the current epoch began.
    pub epoch_started: u64,
}

impl DirectionState {
    /// Moves every time by `delta` seconds, saturating: from one clock to
    /// another (a party keeps monotonic times in memory and wall times in
    /// its store).
    pub fn shift(&mut self, delta: i128) {
        self.epoch_started = shift_secs(self.epoch_started, delta);
        for epoch in &mut self.epochs {
            epoch.retire_at = epoch.retire_at.map(|t| shift_secs(t, delta));
        }
    }
}

/// `t` moved by `delta`, kept within `u64`.
fn shift_secs(t: u64, delta: i128) -> u64 {
    u64::try_from((i128::from(t) + delta).max(0)).unwrap_or(u64::MAX)
}

impl DirectionKeys {
    /// What the direction holds, for a store.
    pub fn state(&self) -> DirectionState {
        DirectionState {
            session: self.session,
            from: self.from.clone(),
            to: self.to.clone(),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochState {
                    number: e.number,
                    key: e.key.clone(),
                    retire_at: e.retire_at,
                    window: e.window,
                })
                .collect(),
            next_seq: self.next_seq,
            epoch_started: self.epoch_started,
        }
    }

    /// A direction as [`DirectionKeys::state`] described it.
    pub fn from_state(state: DirectionState) -> Self {
        Self {
            session: state.session,
            from: state.from,
            to: state.to,
            epochs: state
                .epochs
                .into_iter()
                .map(|e| {
                    let mut epoch = Epoch::new(e.number, e.key);
                    epoch.retire_at = e.retire_at;
                    epoch.window = e.window;
                    epoch
                })
                .collect(),
            next_seq: state.next_seq,
            epoch_started: state.epoch_started,
        }
    }
}

/// Both directions of a session with one peer (KW-KEY-001).
#[derive(Debug)]
pub struct SessionKeys {
    /// What this party sends with.
    pub send: DirectionKeys,
    /// What this party receives with.
    pub recv: DirectionKeys,
}

impl SessionKeys {
    /// Epoch 0 of both directions between `me` and `peer`, keyed with the
    /// session key (KW-CRYPTO-040).
    pub fn new(
        session: SessionId,
        me: Principal,
        peer: Principal,
        key: Secret32,
        now: u64,
    ) -> Self {
        Self {
            send: DirectionKeys::new(session, me.clone(), peer.clone(), key.clone(), now),
            recv: DirectionKeys::new(session, peer, me, key, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;

    /// KW-KEY-005: the window accepts exactly what a model that remembers
    /// every number does, within 64 behind the highest: each number once,
    /// anything newer, nothing 64 or more behind. Walks that advance by
    /// steps of 1 to 70 (so the bitmap shifts by small, exact and
    /// overflowing amounts) and go back within and past the window.
    #[test]
    fn kw_key_005_the_replay_window_matches_a_model() {
        let mut rng = SeededEntropy::from_label("replay window walks");
        for _ in 0..200 {
            let mut window = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut highest: Option<u64> = None;
            let mut at = 1000u64;
            for _ in 0..200 {
                let draw: [u8; 2] = rng.array();
                let step = u64::from(draw[1] % 71);
                at = match draw[0] % 3 {
                    0 => at + step,
                    1 => at.saturating_sub(step),
                    _ => at,
                };
                let fresh = match highest {
                    None => true,
                    Some(h) => at > h || (h - at < REPLAY_WINDOW && !seen.contains(&at)),
                };
                assert_eq!(window.check(at).is_ok(), fresh, "{at} after {highest:?}");
                if fresh {
                    window.record(at);
                    seen.insert(at);
                    highest = highest.max(Some(at));
                }
            }
        }
    }

    /// KW-KEY-005 at the edges: a jump of exactly the window's width
    /// forgets every number before it; one less keeps the oldest.
    #[test]
    fn kw_key_005_the_window_edges() {
        let mut w = ReplayWindow::default();
        w.record(10);
        w.record(10 + REPLAY_WINDOW - 1);
        assert!(w.check(10).is_err(), "63 behind, seen");
        assert!(w.check(11).is_ok(), "62 behind, not seen");
        let mut w = ReplayWindow::default();
        w.record(10);
        w.record(10 + REPLAY_WINDOW);
        assert!(w.check(10).is_err(), "64 behind: outside");
        assert!(w.check(11).is_ok(), "63 behind, not seen");
        w.record(11);
        assert!(w.check(11).is_err());
    }

    /// A direction kept in a store moves from the monotonic clock to the
    /// wall clock and back (KW-SM-025): every time moves, none below zero.
    #[test]
    fn a_stored_direction_moves_between_clocks() {
        let (mut send, mut recv) = pair();
        let policy = KeyPolicy::default();
        let r = send
            .rekey_wrapped(100, &mut SeededEntropy::from_label("shift"))
            .unwrap();
        recv.accept_rekey_wrapped(r.epoch, r.seq, &r.wrapped, 100, &policy)
            .unwrap();
        let state = recv.state();
        assert_eq!(state.epoch_started, 100);
        assert_eq!(state.epochs[0].retire_at, Some(100 + policy.grace_secs));
        let mut moved = state.clone();
        moved.shift(1_000);
        assert_eq!(moved.epoch_started, 1_100);
        assert_eq!(moved.epochs[0].retire_at, Some(1_100 + policy.grace_secs));
        assert_eq!(moved.epochs[1].retire_at, None);
        moved.shift(-1_000);
        assert_eq!(moved, state);
        moved.shift(-1_000);
        assert_eq!(
            (moved.epoch_started, moved.epochs[0].retire_at),
            (0, Some(0))
        );
    }

    fn pair() -> (DirectionKeys, DirectionKeys) {
        let session = SessionId([5; 16]);
        let a = Principal::new("alice@a.example").unwrap();
        let b = Principal::new("bob@b.example").unwrap();
        let k = Secret32::new([8; 32]);
        (
            DirectionKeys::new(session, a.clone(), b.clone(), k.clone(), 0),
            DirectionKeys::new(session, a, b, k, 0),
        )
    }

    /// KW-KEY-003, KW-KEY-004 (body form): the sender switches to a key it
    /// sealed itself; the receiver installs it once, checking the rekey's
    /// sequence number; a replayed rekey changes nothing.
    #[test]
    fn a_rekey_with_a_sealed_key_switches_both_sides() {
        let (mut tx, mut rx) = pair();
        let policy = KeyPolicy::default();
        let new_key = Secret32::new([9; 32]);
        let (epoch, seq) = tx.rekey_with_key(new_key.clone(), 10).unwrap();
        assert_eq!((epoch, seq), (1, 0));
        rx.accept_rekey_key(epoch, seq, new_key.clone(), 10, &policy)
            .unwrap();
        let sealed = tx.seal(MsgType::Info, b"under epoch 1").unwrap();
        assert_eq!(sealed.epoch, 1);
        assert_eq!(
            rx.open(MsgType::Info, sealed.epoch, sealed.seq, &sealed.payload, 11)
                .unwrap(),
            b"under epoch 1"
        );
        assert_eq!(
            rx.accept_rekey_key(epoch, seq, new_key, 12, &policy),
            Err(CryptoError::StaleEpoch(1))
        );
        assert_eq!(rx.current_epoch(), 1);
        assert_eq!(tx.epoch_started(), 10);
    }

    #[test]
    fn kw_key_005_replays_and_old_sequence_numbers_are_rejected() {
        let mut w = ReplayWindow::default();
        for seq in [5, 3, 70, 69] {
            w.check(seq).unwrap();
            w.record(seq);
        }
        assert_eq!(w.check(5), Err(CryptoError::Replay(5)), "behind the window");
        assert_eq!(w.check(70), Err(CryptoError::Replay(70)));
        assert_eq!(w.check(69), Err(CryptoError::Replay(69)));
        w.check(68).unwrap();
        w.check(7).unwrap();
        w.check(71).unwrap();
        assert_eq!(w.check(6), Err(CryptoError::Replay(6)), "exactly 64 behind");
    }

    #[test]
    fn kw_key_002_payloads_flow_and_replays_fail_without_state_change() {
        let (mut send, mut recv) = pair();
        let p = send.seal(MsgType::Info, b"hello").unwrap();
        assert_eq!(
            recv.open(MsgType::Info, p.epoch, p.seq, &p.payload, 1)
                .unwrap(),
            b"hello"
        );
        assert_eq!(
            recv.open(MsgType::Info, p.epoch, p.seq, &p.payload, 1),
            Err(CryptoError::Replay(0))
        );
        // Moved to another message type: fails, and seq 1 stays unused.
        let q = send.seal(MsgType::Info, b"x").unwrap();
        assert_eq!(
            recv.open(MsgType::Bye, q.epoch, q.seq, &q.payload, 1),
            Err(CryptoError::DecryptFailed)
        );
        assert_eq!(
            recv.open(MsgType::Info, q.epoch, q.seq, &q.payload, 1)
                .unwrap(),
            b"x"
        );
    }

    /// KW-KEY-001, KW-KEY-002, KW-ERR-004: one key serves both
    /// directions of a session, each with its own associated data; a
    /// rejected payload leaves the keys as they were.
    #[test]
    fn kw_key_001_one_key_serves_both_directions() {
        let session = SessionId([9; 16]);
        let a = Principal::new("alice@a.example").unwrap();
        let b = Principal::new("bob@b.example").unwrap();
        let k = Secret32::new([4; 32]);
        let mut alice = SessionKeys::new(session, a.clone(), b.clone(), k.clone(), 0);
        let mut bob = SessionKeys::new(session, b, a, k, 0);
        let to_bob = alice.send.seal(MsgType::Info, b"hi").unwrap();
        let mut forged = to_bob.payload.clone();
        forged[3] ^= 1;
        assert!(
            bob.recv
                .open(MsgType::Info, 0, to_bob.seq, &forged, 1)
                .is_err()
        );
        assert_eq!(
            bob.recv
                .open(MsgType::Info, 0, to_bob.seq, &to_bob.payload, 1)
                .unwrap(),
            b"hi"
        );
        let reply = bob.send.seal(MsgType::Info, b"hello").unwrap();
        // Bob's first message has Alice's sequence number, but not her
        // direction: it opens only as Bob's.
        assert_eq!(reply.seq, to_bob.seq);
        assert!(
            DirectionKeys::from_state(alice.send.state())
                .open(MsgType::Info, 0, reply.seq, &reply.payload, 1)
                .is_err()
        );
        assert_eq!(
            alice
                .recv
                .open(MsgType::Info, 0, reply.seq, &reply.payload, 1)
                .unwrap(),
            b"hello"
        );
    }

    #[test]
    fn kw_key_004_rekey_switches_and_the_old_epoch_retires_after_grace() {
        let policy = KeyPolicy::default();
        let (mut send, mut recv) = pair();
        let late = send.seal(MsgType::Info, b"late").unwrap();
        let r = send
            .rekey_wrapped(100, &mut SeededEntropy::from_label("rk"))
            .unwrap();
        assert_eq!(r.epoch, 1);
        recv.accept_rekey_wrapped(r.epoch, r.seq, &r.wrapped, 100, &policy)
            .unwrap();
        assert_eq!(
            recv.accept_rekey_wrapped(r.epoch, r.seq, &r.wrapped, 100, &policy),
            Err(CryptoError::StaleEpoch(1)),
            "a replayed rekey"
        );
        let fresh = send.seal(MsgType::Info, b"new").unwrap();
        assert_eq!(fresh.epoch, 1);
        assert_eq!(
            recv.open(MsgType::Info, 1, fresh.seq, &fresh.payload, 101)
                .unwrap(),
            b"new"
        );
        // A message of the old epoch in flight: accepted within the grace window.
        assert_eq!(
            recv.open(MsgType::Info, 0, late.seq, &late.payload, 129)
                .unwrap(),
            b"late"
        );
        recv.expire(130);
        let stale = DirectionKeys::new(
            SessionId([5; 16]),
            Principal::new("alice@a.example").unwrap(),
            Principal::new("bob@b.example").unwrap(),
            Secret32::new([8; 32]),
            0,
        )
        .seal(MsgType::Info, b"old")
        .map(|p| (p.seq, p.payload))
        .unwrap();
        assert_eq!(
            recv.open(MsgType::Info, 0, stale.0 + 5, &stale.1, 130),
            Err(CryptoError::StaleEpoch(0))
        );
        assert!(send.needs_rekey(100 + policy.rekey_after_secs, &policy));
        assert!(!send.needs_rekey(101, &policy));
    }
}
