//! The messenger's side of the detour (docs/MESSAGING.md rule 10): each peer's key shares and
//! agreed keys, the signaling link the detour runs on, and the budget that keeps it well inside
//! the server's relay rate limit. The frames and their sealing are in
//! [`crate::reliable::detour`].

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use crate::reliable::detour::{
    DetourError, DetourKeys, FRAME_OVERHEAD, KeyShare, OpenedBatch, SEAL_OVERHEAD,
};
use crate::reliable::frame::PUBLIC_KEY_LEN;

/// Sealed batches per second the detour sends, across every peer: half the server's default
/// relay budget (50 a second, PROTOCOL.md §1 Limits), which negotiation shares.
const BATCHES_PER_SECOND: u32 = 25;
/// Batches sent at once after a quiet spell: enough for the batches a phone puts into its old
/// signaling link in the round trips before it learns the link is dead (a batch per message
/// at 100 messages a second), so that the new link starts with a full budget. Far below the
/// server's default burst (200).
const BATCH_BURST: u32 = 40;
/// Room left in a signaling frame for the JSON around `sealed` (type, `to`, `id`).
const ENVELOPE_BYTES: usize = 160;
/// The largest sealed batch, whatever the server's frame limit: 12 KiB once in base64, so that
/// one batch fits a fresh TCP connection's first flight (10 segments) and the first messages
/// arrive half a round trip after they leave, not after slow start has grown the window.
const MAX_BATCH_BYTES: usize = 9 * 1024;

/// The signaling link the detour runs on, as the bridge last saw it: published while a link
/// whose server relays `detour` is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DetourRoute {
    /// The link's generation: a new one makes every unacknowledged message eligible again
    /// (what went into the old link may have died with it).
    pub(crate) generation: u64,
    /// The largest signaling frame the server accepts.
    pub(crate) max_frame_bytes: usize,
}

impl DetourRoute {
    /// The largest sealed batch (before base64): at most [`MAX_BATCH_BYTES`], and fitting a
    /// frame to a `peer_id_len`-byte id.
    pub(crate) fn max_batch(&self, peer_id_len: usize) -> usize {
        (self.max_frame_bytes.saturating_sub(ENVELOPE_BYTES + peer_id_len) / 4 * 3)
            .min(MAX_BATCH_BYTES)
    }

    /// The largest encoded frame a batch can carry.
    pub(crate) fn largest_frame(&self, peer_id_len: usize) -> usize {
        self.max_batch(peer_id_len).saturating_sub(SEAL_OVERHEAD + FRAME_OVERHEAD)
    }
}

/// One peer's detour keys.
#[derive(Debug, Default)]
pub(crate) struct PeerKeys {
    /// This side's share for the current channel, until the peer's arrives.
    share: Option<KeyShare>,
    /// The public half of the current channel's share (sent after every Hello).
    public: Option<[u8; PUBLIC_KEY_LEN]>,
    /// The newest agreement (seals and opens) and the one before it (opens only: the peer may
    /// not have the newest yet).
    current: Option<DetourKeys>,
    previous: Option<DetourKeys>,
}

impl PeerKeys {
    /// A new channel: a fresh share, whose public key goes out after this side's Hello.
    pub(crate) fn channel_opened(&mut self) {
        match KeyShare::generate() {
            Ok(share) => {
                self.public = Some(share.public_key());
                self.share = Some(share);
            }
            Err(err) => {
                debug!(name: "live.detour.no_share", error = %err);
                self.public = None;
                self.share = None;
            }
        }
    }

    /// The key share to send on the current channel.
    pub(crate) fn public(&self) -> Option<[u8; PUBLIC_KEY_LEN]> {
        self.public
    }

    /// The peer's share arrived on the current channel; returns whether new keys were agreed.
    /// A repeat of the share already agreed with changes nothing.
    pub(crate) fn peer_share(&mut self, peer_public: &[u8; PUBLIC_KEY_LEN]) -> bool {
        if self.current.as_ref().is_some_and(|keys| keys.peer_public() == peer_public) {
            return false;
        }
        let Some(share) = self.share.take() else {
            // Ours was used with another share on this channel: wait for the next channel.
            return false;
        };
        match share.agree(peer_public) {
            Ok(keys) => {
                self.previous = self.current.replace(keys);
                true
            }
            Err(err) => {
                debug!(name: "live.detour.agreement_failed", error = %err);
                false
            }
        }
    }

    /// Whether frames can be sealed for the peer.
    pub(crate) fn agreed(&self) -> bool {
        self.current.is_some()
    }

    /// Seals encoded frames and returns the `sealed` field of a `detour` message.
    pub(crate) fn seal(
        &mut self,
        sender_session: u64,
        receiver_session: u64,
        path_down: bool,
        frames: &[Bytes],
    ) -> Option<String> {
        let keys = self.current.as_mut()?;
        Some(STANDARD.encode(keys.seal(sender_session, receiver_session, path_down, frames)))
    }

    /// Opens a `detour` message's `sealed` field with the newest keys, or the ones before.
    pub(crate) fn open(&self, sealed: &str) -> Result<OpenedBatch, OpenError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| OpenError::Base64)?;
        let mut last = DetourError::Unsealed;
        for keys in [&self.current, &self.previous].into_iter().flatten() {
            match keys.open(&bytes) {
                Ok(batch) => return Ok(batch),
                Err(err) => last = err,
            }
        }
        Err(OpenError::Detour(last))
    }
}

/// Why a detour message was dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("sealed is not base64")]
    Base64,
    #[error(transparent)]
    Detour(DetourError),
}

/// A token bucket over sealed batches: [`BATCHES_PER_SECOND`], bursts of [`BATCH_BURST`].
#[derive(Debug)]
pub(crate) struct DetourBudget {
    tokens: f64,
    refilled_at: Instant,
}

impl DetourBudget {
    pub(crate) fn new(now: Instant) -> Self {
        Self { tokens: f64::from(BATCH_BURST), refilled_at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(BATCHES_PER_SECOND)).min(f64::from(BATCH_BURST));
        self.refilled_at = now;
    }

    /// Takes one batch's worth, if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next batch may go.
    pub(crate) fn next_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.refilled_at + Duration::from_secs_f64(missing / f64::from(BATCHES_PER_SECOND))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reliable::Frame;

    #[test]
    fn two_sides_agree_after_exchanging_shares_and_a_repeat_changes_nothing() {
        let (mut alice, mut bob) = (PeerKeys::default(), PeerKeys::default());
        alice.channel_opened();
        bob.channel_opened();
        let (alice_share, bob_share) = (alice.public().unwrap(), bob.public().unwrap());
        assert!(alice.peer_share(&bob_share));
        assert!(!alice.peer_share(&bob_share), "a repeated share is not a new agreement");
        assert!(bob.peer_share(&alice_share));
        let frames = [Frame::Ack { delivered: 4 }.encode()];
        let sealed = alice.seal(1, 2, true, &frames).unwrap();
        let opened = bob.open(&sealed).unwrap();
        assert_eq!(opened.frames, vec![Frame::Ack { delivered: 4 }]);

        // A new channel: until both have the new agreement, the old one still opens.
        alice.channel_opened();
        bob.channel_opened();
        let (alice_share, bob_share) = (alice.public().unwrap(), bob.public().unwrap());
        assert!(alice.peer_share(&bob_share));
        let early = alice.seal(1, 2, true, &frames).unwrap();
        assert!(bob.open(&early).is_err(), "bob has not agreed the new keys yet");
        assert!(bob.peer_share(&alice_share));
        assert!(bob.open(&early).is_ok());
        assert!(alice.open(&bob.seal(2, 1, false, &frames).unwrap()).is_ok());
        assert!(matches!(bob.open("not base64!"), Err(OpenError::Base64)));
    }

    #[test]
    fn the_budget_allows_a_burst_then_its_rate() {
        let start = Instant::now();
        let mut budget = DetourBudget::new(start);
        for _ in 0..BATCH_BURST {
            assert!(budget.take(start));
        }
        assert!(!budget.take(start));
        let next = budget.next_at();
        assert_eq!(next - start, Duration::from_secs(1) / BATCHES_PER_SECOND);
        assert!(budget.take(next));
        assert!(!budget.take(next));
    }

    #[test]
    fn a_batch_fits_the_servers_frame_once_in_base64() {
        let route = DetourRoute { generation: 1, max_frame_bytes: 65_536 };
        assert_eq!(route.max_batch(64), MAX_BATCH_BYTES);
        let small = DetourRoute { generation: 1, max_frame_bytes: 4096 };
        let batch = small.max_batch(64);
        let encoded = STANDARD.encode(vec![0u8; batch]).len();
        assert!(encoded + ENVELOPE_BYTES + 64 <= 4096, "{encoded}");
        assert!(encoded + ENVELOPE_BYTES + 64 > 4096 - 8, "{encoded}: room left unused");
        assert_eq!(small.largest_frame(64), batch - SEAL_OVERHEAD - FRAME_OVERHEAD);
    }
}
