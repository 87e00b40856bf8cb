//! One reliable, ordered message stream to one peer, across any number of
//! data channels (ICE restarts keep a channel; full reconnects replace it).
//!
//! Sans-IO, like the Supervisor: frames in with [`handle_frame`], frames out
//! with [`poll_transmit`], messages for the app with [`poll_delivery`],
//! confirmations with [`poll_confirmed`], time as an argument: a
//! `std::time::Instant`, as the Supervisor takes it (the node converts from
//! its tokio clock where it calls in).
//!
//! How nothing is lost or duplicated:
//! - every message gets the next sequence number of this node's session and
//!   stays in the replay buffer until the peer acknowledges it;
//! - every new channel starts with a Hello each way: "I am session S, my
//!   stream resumes at R; of your session P I delivered up to D". The
//!   sender drops what the peer delivered and replays the rest from its
//!   first unacknowledged message (the side that says Hello first does not
//!   wait to hear it: it replays everything unacknowledged at once, and the
//!   peer drops the few it already had);
//! - the receiver delivers only the next sequence number; anything at or
//!   below what it already delivered is a duplicate and is dropped (and
//!   acknowledged again). The channel may be unordered (tether's own channel
//!   is, so that a message lost below SCTP holds nothing else up): a frame
//!   ahead of the next one waits until the gap fills, and Data that overtook
//!   the peer's Hello on a new channel waits for the Hello;
//! - when the peer connection's path was replaced under a live channel (an
//!   ICE restart), [`ReliableStream::resend_unacknowledged`] puts everything
//!   unacknowledged on the channel again, so that messages lost into the old
//!   path do not wait for SCTP's own retransmission timer;
//! - when messages on the channel stay unacknowledged for a probe timeout
//!   (twice the round trip plus the peer's acknowledgement delay), the oldest
//!   of them go again ([`PROBE_FRAMES`] at a time, the timeout doubling while
//!   nothing moves): a message SCTP lost would otherwise wait for SCTP's
//!   retransmission timer, 1 s at least in webrtc-rs, and on an unordered
//!   channel the copy is delivered as soon as it arrives.
//!
//! A message may carry a deadline: if it was never put on any channel when
//! the deadline passes, it is withdrawn (and its sender told). A message
//! that went out once is never withdrawn, since it may have arrived: it is
//! replayed and deduplicated instead. Messages without a deadline wait for
//! as long as it takes.
//!
//! [`handle_frame`]: ReliableStream::handle_frame
//! [`poll_transmit`]: ReliableStream::poll_transmit
//! [`poll_delivery`]: ReliableStream::poll_delivery
//! [`poll_confirmed`]: ReliableStream::poll_confirmed

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::Frame;

/// Limits and timing of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Messages the replay buffer holds before senders must wait.
    pub max_buffered_messages: usize,
    /// Bytes the replay buffer holds before senders must wait.
    pub max_buffered_bytes: usize,
    /// Acknowledge after this many deliveries...
    pub ack_every: u32,
    /// ...or this long after the first unacknowledged delivery.
    pub ack_delay: Duration,
    /// The shortest bound on waiting for progress (an acknowledgement, or the peer's Hello)
    /// while messages wait on an open channel; the bound is this or four round trips, whichever
    /// is longer (see [`ReliableStream::stall_deadline`]).
    pub stall_after: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_buffered_messages: 8192,
            max_buffered_bytes: 16 << 20,
            ack_every: 32,
            ack_delay: Duration::from_millis(10),
            stall_after: Duration::from_secs(5),
        }
    }
}

/// How many of the oldest unacknowledged messages one probe sends again.
pub const PROBE_FRAMES: usize = 2;

/// The round trip a probe timeout assumes before the first acknowledgement measured one.
const INITIAL_ROUND_TRIP: Duration = Duration::from_millis(250);

/// Bounds of the probe timeout: never shorter (on a round trip of a few milliseconds, an Ack a
/// busy peer sends late, a browser's timers included, would look like a loss and make copies),
/// and never longer however often it doubled.
const PROBE_TIMEOUT_MIN: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// An encoded Ack frame's size.
const ACK_FRAME_LEN: usize = 9;
/// An encoded Data frame's size besides its payload.
const DATA_HEADER_LEN: usize = 9;

/// Gaps between repeats of a Hello the peer has not answered on a new
/// channel (0.5 s, then 1.5 s and 4 s after the channel opened).
const HELLO_REPEATS: [Duration; 3] =
    [Duration::from_millis(500), Duration::from_millis(1000), Duration::from_millis(2500)];

/// Who says Hello first on a new channel (MESSAGING.md rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloTurn {
    /// Say Hello as soon as the channel opens, and again while the peer says nothing (the
    /// answerer, whose side of the channel opens last).
    First,
    /// Say nothing until the peer's Hello, then answer each Hello with one (the offerer: a
    /// frame reaching the answerer before its own side of the channel exists is dropped by
    /// webrtc-rs).
    AfterPeer,
}

/// The app's handle on one accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// The replay buffer is full: wait for acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the replay buffer is full ({messages} messages, {bytes} bytes)")]
pub struct BufferFull {
    /// Messages buffered.
    pub messages: usize,
    /// Bytes buffered.
    pub bytes: usize,
}

/// A frame that breaks the protocol (the stream ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// More data before the channel's Hello than a sender could have sent.
    #[error("data before hello")]
    DataBeforeHello,
    /// A sequence number further ahead of the next expected one than the replay buffer
    /// can hold: no sender following this protocol sends it.
    #[error("gap: got seq {got}, expected {expected}")]
    Gap {
        /// What came.
        got: u64,
        /// What was due.
        expected: u64,
    },
    /// A Hello or a Key on the detour, which carries only Data and Ack.
    #[error("hello or key frame on the detour")]
    NotOnDetour,
    /// An acknowledgement for messages never sent.
    #[error("ack for {acked} but only {sent} were sent")]
    AckBeyondSent {
        /// What the peer acknowledged.
        acked: u64,
        /// The highest sequence number sent.
        sent: u64,
    },
}

#[derive(Debug)]
struct Outgoing {
    id: MessageId,
    payload: Bytes,
    /// Withdraw it unsent at this instant, if any.
    deadline: Option<Instant>,
    /// When it was first put on a channel (for round-trip samples).
    first_sent: Option<Instant>,
    /// Whether it went out more than once: its acknowledgement may answer any copy, so it
    /// gives no round-trip sample.
    sent_again: bool,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Messages delivered to the app.
    pub delivered: u64,
    /// Duplicate data frames dropped.
    pub duplicates: u64,
    /// Data frames sent again: on a new channel, after an ICE restart, or as probes.
    pub replayed: u64,
    /// Messages withdrawn unsent at their deadline.
    pub withdrawn: u64,
    /// Data frames carried on the detour through signaling (MESSAGING.md rule 10).
    pub detoured: u64,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct ReliableStream {
    config: StreamConfig,
    session: u64,

    // Send side. `unacked[i]` has sequence number `acked + 1 + i`.
    next_id: u64,
    acked: u64,
    unacked: VecDeque<Outgoing>,
    unacked_bytes: usize,
    /// The next sequence number to put on the current channel.
    transmit_next: u64,
    /// The highest sequence number ever put on any channel (or on the detour).
    ever_sent: u64,
    /// The next sequence number to carry on the detour (MESSAGING.md rule 10); each message
    /// goes there at most once per [`restart_detour`](Self::restart_detour).
    detour_next: u64,
    confirmed: VecDeque<MessageId>,

    // Receive side.
    peer_session: u64,
    delivered: u64,
    deliveries: VecDeque<Bytes>,
    /// Data of `peer_session` that arrived ahead of `delivered + 1` (an unordered channel),
    /// by sequence number; delivered once the gap before it fills.
    early: BTreeMap<u64, Bytes>,
    early_bytes: usize,
    /// Data that arrived on this channel before the peer's Hello (an unordered channel lets
    /// it overtake), by sequence number; applied right after the Hello.
    before_hello: BTreeMap<u64, Bytes>,
    acks_owed: u32,
    ack_due: Option<Instant>,

    // Channel.
    channel_open: bool,
    hello_owed: bool,
    hello_turn: HelloTurn,
    hello_seen: bool,
    /// While the peer's Hello has not arrived on this channel: when to say
    /// Hello again, and how many repeats are left.
    hello_repeat: Option<(Instant, usize)>,
    /// Since when messages have waited on the open channel without progress (no
    /// acknowledgement, no Hello from the peer); `None` while nothing waits.
    waiting_since: Option<Instant>,
    /// Smoothed round trip from sending a message to its acknowledgement.
    round_trip: Option<Duration>,
    /// When to probe: messages on the channel are unacknowledged until then.
    probe_due: Option<Instant>,
    /// Probes since the peer last showed progress (each doubles the timeout).
    probes_unanswered: u32,
    /// The next sequence number a probe sends again, and how many it still may.
    probe_next: u64,
    probe_left: usize,
    /// How many times the peer showed progress (an acknowledgement of new messages, a Hello).
    progress: u64,
    stats: StreamStats,
}

impl ReliableStream {
    /// A stream of session `session` (nonzero, random per node instance).
    pub fn new(session: u64, config: StreamConfig) -> Self {
        Self {
            config,
            session,
            next_id: 0,
            acked: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            transmit_next: 1,
            ever_sent: 0,
            detour_next: 1,
            confirmed: VecDeque::new(),
            peer_session: 0,
            delivered: 0,
            deliveries: VecDeque::new(),
            early: BTreeMap::new(),
            early_bytes: 0,
            before_hello: BTreeMap::new(),
            acks_owed: 0,
            ack_due: None,
            channel_open: false,
            hello_owed: false,
            hello_turn: HelloTurn::First,
            hello_seen: false,
            hello_repeat: None,
            waiting_since: None,
            round_trip: None,
            probe_due: None,
            probes_unanswered: 0,
            probe_next: 0,
            probe_left: 0,
            progress: 0,
            stats: StreamStats::default(),
        }
    }

    /// Accepts `payload` for delivery; with a `deadline`, it is withdrawn if
    /// still unsent then (see [`withdraw_expired`](Self::withdraw_expired)).
    ///
    /// # Errors
    ///
    /// [`BufferFull`] when the replay buffer has no room; nothing changed.
    pub fn push(
        &mut self,
        payload: Bytes,
        deadline: Option<Instant>,
    ) -> Result<MessageId, BufferFull> {
        let full = self.unacked.len() >= self.config.max_buffered_messages
            || (self.unacked_bytes + payload.len() > self.config.max_buffered_bytes
                && !self.unacked.is_empty());
        if full {
            return Err(BufferFull { messages: self.unacked.len(), bytes: self.unacked_bytes });
        }
        self.next_id += 1;
        let id = MessageId(self.next_id);
        self.unacked_bytes += payload.len();
        self.unacked.push_back(Outgoing {
            id,
            payload,
            deadline,
            first_sent: None,
            sent_again: false,
        });
        Ok(id)
    }

    /// A new channel to the peer is open: say Hello when it is this side's `turn` (first:
    /// at once, and again after 0.5, 1.5 and 4 s while the peer says nothing, since a browser
    /// has been seen to drop the first message on a channel it just opened; after the peer:
    /// in answer to each of its Hellos), and replay everything not yet acknowledged once the
    /// peer's Hello arrives.
    pub fn channel_opened(&mut self, now: Instant, turn: HelloTurn) {
        self.channel_open = true;
        self.hello_turn = turn;
        self.hello_owed = turn == HelloTurn::First;
        self.hello_seen = false;
        self.hello_repeat = (turn == HelloTurn::First).then_some((now + HELLO_REPEATS[0], 1));
        self.before_hello.clear();
        self.transmit_next = self.acked + 1;
        self.waiting_since = (!self.unacked.is_empty()).then_some(now);
        self.stop_probing();
    }

    /// The channel is gone; frames in flight on it may be lost.
    pub fn channel_closed(&mut self) {
        self.channel_open = false;
        self.hello_owed = false;
        self.hello_seen = false;
        self.hello_repeat = None;
        self.before_hello.clear();
        self.acks_owed = 0;
        self.ack_due = None;
        self.waiting_since = None;
        self.stop_probing();
    }

    /// The peer connection's path was replaced under the open channel (an ICE restart
    /// completed): messages put on it before may have been lost into the old path, where SCTP
    /// only sends them again when its own retransmission timer fires (1 s at least, backed off
    /// while the path was down). Sends every unacknowledged message again, in order, from the
    /// first; the peer drops what it already has. Nothing happens before the peer's Hello
    /// (the Hello replays anyway).
    pub fn resend_unacknowledged(&mut self) {
        if self.channel_open && self.hello_seen {
            self.transmit_next = self.acked + 1;
            // Everything goes again anyway; the next send arms a fresh probe.
            self.stop_probing();
        }
    }

    fn stop_probing(&mut self) {
        self.probe_due = None;
        self.probes_unanswered = 0;
        self.probe_left = 0;
    }

    /// Whether Data may go on the channel (MESSAGING.md rule 3). The side that says Hello
    /// first sends right after its Hello: its peer's Hello could only say what the peer already
    /// has of messages in flight when the last channel died (a round trip of traffic at most,
    /// which the peer drops as duplicates), and waiting for it would cost every message a round
    /// trip. The side that answers waits for the peer's Hello: its side of the channel opens
    /// first, and a frame reaching the peer's side before that exists would be dropped.
    fn may_send_data(&self) -> bool {
        self.hello_seen || self.hello_turn == HelloTurn::First
    }

    /// Whether messages put on this channel wait for their acknowledgement.
    fn outstanding(&self) -> bool {
        self.transmit_next > self.acked + 1
    }

    /// Twice the round trip plus the peer's acknowledgement delay, doubled per probe the peer
    /// left unanswered, within [`PROBE_TIMEOUT_MIN`] and [`PROBE_TIMEOUT_MAX`].
    fn probe_timeout(&self) -> Duration {
        let round_trip = self.round_trip.unwrap_or(INITIAL_ROUND_TRIP);
        let base = (round_trip * 2 + self.config.ack_delay).max(PROBE_TIMEOUT_MIN);
        base.saturating_mul(1 << self.probes_unanswered.min(8)).min(PROBE_TIMEOUT_MAX)
    }

    /// Applies one frame from the peer.
    ///
    /// # Errors
    ///
    /// [`StreamError`] for a frame that breaks the protocol; it is ignored
    /// and the stream stays consistent.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) -> Result<(), StreamError> {
        match frame {
            Frame::Hello { session, resume_from, peer_session, delivered } => {
                if session != self.peer_session {
                    // A stream we have not seen: it starts where it says.
                    self.peer_session = session;
                    self.delivered = resume_from.saturating_sub(1);
                    self.early.clear();
                    self.early_bytes = 0;
                }
                self.hello_seen = true;
                self.hello_repeat = None;
                if self.hello_turn == HelloTurn::AfterPeer && self.channel_open {
                    self.hello_owed = true;
                }
                self.progress += 1;
                self.progressed(now);
                if peer_session == self.session {
                    self.acknowledged(now, delivered.min(self.ever_sent))?;
                }
                for (seq, payload) in std::mem::take(&mut self.before_hello) {
                    self.data(now, seq, payload)?;
                }
                Ok(())
            }
            Frame::Data { seq, payload } => {
                if !self.hello_seen {
                    // The peer sends Data only after its Hello; this one overtook it. Until
                    // that Hello the peer sends at most one replay buffer's worth.
                    let known = self.before_hello.contains_key(&seq);
                    if !known && self.before_hello.len() >= self.config.max_buffered_messages {
                        return Err(StreamError::DataBeforeHello);
                    }
                    self.before_hello.insert(seq, payload);
                    return Ok(());
                }
                self.data(now, seq, payload)
            }
            Frame::Ack { delivered } => self.acknowledged(now, delivered),
            // Key shares are the caller's business (they set up its detour), not the stream's.
            Frame::Key { .. } => Ok(()),
        }
    }

    /// Applies one frame that came on the detour through signaling (MESSAGING.md rule 10).
    /// The caller checked that its sender is this stream's `peer_session` and its receiver
    /// this session, so Data applies as on a channel after the Hello.
    ///
    /// # Errors
    ///
    /// [`StreamError`] for a frame that breaks the protocol (a Hello or a Key has no place on
    /// the detour); it is ignored and the stream stays consistent.
    pub fn handle_detour(&mut self, now: Instant, frame: Frame) -> Result<(), StreamError> {
        match frame {
            Frame::Data { seq, payload } => self.data(now, seq, payload),
            Frame::Ack { delivered } => self.acknowledged(now, delivered),
            Frame::Hello { .. } | Frame::Key { .. } => Err(StreamError::NotOnDetour),
        }
    }

    /// The next frame to carry on the detour while the channel cannot be used (MESSAGING.md
    /// rule 10): an Ack when one is due (as on a channel), then each unacknowledged message not
    /// yet carried there, in order. `None` once the next frame's encoding does not fit in
    /// `room` bytes; a message whose frame is larger than `largest` is skipped for good (it
    /// waits for a channel).
    #[must_use]
    pub fn poll_detour(&mut self, now: Instant, room: usize, largest: usize) -> Option<Frame> {
        if self.ack_is_due(now) && room >= ACK_FRAME_LEN {
            self.acks_owed = 0;
            self.ack_due = None;
            return Some(Frame::Ack { delivered: self.delivered });
        }
        self.detour_next = self.detour_next.max(self.acked + 1);
        loop {
            let index = usize::try_from(self.detour_next - self.acked - 1).ok()?;
            let message = self.unacked.get_mut(index)?;
            let len = DATA_HEADER_LEN + message.payload.len();
            if len > largest {
                self.detour_next += 1;
                continue;
            }
            if len > room {
                return None;
            }
            // Its acknowledgement may answer a copy on either path: no round-trip sample.
            message.first_sent.get_or_insert(now);
            message.sent_again = true;
            let seq = self.detour_next;
            self.detour_next += 1;
            self.ever_sent = self.ever_sent.max(seq);
            self.stats.detoured += 1;
            return Some(Frame::Data { seq, payload: message.payload.clone() });
        }
    }

    /// Whether [`poll_detour`](Self::poll_detour) has something to carry: an Ack that is due,
    /// or a message not yet carried whose frame is at most `largest` bytes.
    #[must_use]
    pub fn detour_due(&self, now: Instant, largest: usize) -> bool {
        if self.ack_is_due(now) {
            return true;
        }
        let first = usize::try_from(self.detour_next.max(self.acked + 1) - self.acked - 1)
            .unwrap_or(usize::MAX);
        self.unacked
            .iter()
            .skip(first)
            .any(|message| DATA_HEADER_LEN + message.payload.len() <= largest)
    }

    /// Whether an acknowledgement is due (MESSAGING.md rule 5): after `ack_every` deliveries,
    /// or once the ack delay since the first unacknowledged one passed.
    fn ack_is_due(&self, now: Instant) -> bool {
        let timer_fired = self.ack_due.is_some_and(|due| due <= now);
        self.acks_owed >= self.config.ack_every || (self.acks_owed > 0 && timer_fired)
    }

    /// When an acknowledgement is due on the detour (see [`poll_detour`](Self::poll_detour)).
    #[must_use]
    pub fn detour_timeout(&self) -> Option<Instant> {
        self.ack_due.filter(|_| self.acks_owed > 0)
    }

    /// Makes every unacknowledged message eligible for the detour again (the link it went on
    /// was replaced before delivering it, perhaps).
    pub fn restart_detour(&mut self) {
        self.detour_next = self.acked + 1;
    }

    /// The peer's stream session (0 before its first Hello).
    #[must_use]
    pub fn peer_session(&self) -> u64 {
        self.peer_session
    }

    fn data(&mut self, now: Instant, seq: u64, payload: Bytes) -> Result<(), StreamError> {
        if seq <= self.delivered || self.early.contains_key(&seq) {
            self.stats.duplicates += 1;
            // Tell the sender again, so it stops replaying.
            self.acks_owed = self.acks_owed.max(self.config.ack_every);
            return Ok(());
        }
        if seq != self.delivered + 1 {
            // Ahead of a gap (an unordered channel): wait for the gap to fill. A sender holds
            // at most its replay buffer unacknowledged, so nothing further ahead can come.
            let ahead = usize::try_from(seq - self.delivered).unwrap_or(usize::MAX);
            let too_much = self.early_bytes + payload.len() > self.config.max_buffered_bytes;
            if ahead > self.config.max_buffered_messages || too_much {
                return Err(StreamError::Gap { got: seq, expected: self.delivered + 1 });
            }
            self.early_bytes += payload.len();
            self.early.insert(seq, payload);
            return Ok(());
        }
        self.deliver(now, seq, payload);
        while let Some(payload) = self.early.remove(&(self.delivered + 1)) {
            self.early_bytes -= payload.len();
            self.deliver(now, self.delivered + 1, payload);
        }
        Ok(())
    }

    fn deliver(&mut self, now: Instant, seq: u64, payload: Bytes) {
        self.delivered = seq;
        self.stats.delivered += 1;
        self.deliveries.push_back(payload);
        self.acks_owed += 1;
        if self.ack_due.is_none() {
            self.ack_due = Some(now + self.config.ack_delay);
        }
    }

    fn acknowledged(&mut self, now: Instant, delivered: u64) -> Result<(), StreamError> {
        if delivered > self.ever_sent {
            return Err(StreamError::AckBeyondSent { acked: delivered, sent: self.ever_sent });
        }
        let before = self.acked;
        let mut newest = None;
        while self.acked < delivered {
            // Invariant: `acked < delivered <= ever_sent` and every sent
            // message stays in `unacked` until acknowledged.
            let Some(message) = self.unacked.pop_front() else { break };
            self.acked += 1;
            self.unacked_bytes -= message.payload.len();
            self.confirmed.push_back(message.id);
            newest = Some(message);
        }
        self.transmit_next = self.transmit_next.max(self.acked + 1);
        self.probe_next = self.probe_next.max(self.acked + 1);
        if self.acked == before {
            return Ok(());
        }
        // A sample only from a message that went out once (Karn): the acknowledgement of one
        // sent again may answer either copy.
        if let Some(sent) = newest.filter(|m| !m.sent_again).and_then(|m| m.first_sent) {
            let sample = now.saturating_duration_since(sent);
            self.round_trip =
                Some(self.round_trip.map_or(sample, |smoothed| (smoothed * 7 + sample) / 8));
        }
        self.progress += 1;
        self.progressed(now);
        Ok(())
    }

    /// Something moved: the wait for progress starts again (or ends, when nothing waits), and
    /// so does the probe timeout.
    fn progressed(&mut self, now: Instant) {
        self.waiting_since = (self.channel_open && !self.unacked.is_empty()).then_some(now);
        self.probes_unanswered = 0;
        self.probe_due = self.outstanding().then(|| now + self.probe_timeout());
    }

    /// When the wait for progress runs out: messages have waited on the open channel for
    /// `max(stall_after, 4 × round trip)` without an acknowledgement or the peer's Hello. The
    /// caller decides what a stall means (the node replaces the peer connection when it still
    /// claims to be connected); `None` while nothing waits or the channel is closed.
    #[must_use]
    pub fn stall_deadline(&self) -> Option<Instant> {
        let since = self.waiting_since.filter(|_| self.channel_open)?;
        let round_trips = self.round_trip.map_or(Duration::ZERO, |rtt| rtt * 4);
        Some(since + self.config.stall_after.max(round_trips))
    }

    /// Counts the peer's signs of progress (acknowledgements of new messages, Hellos): a caller
    /// that acted on a stall can tell whether anything moved since.
    #[must_use]
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// Starts the wait for progress again from `now` (after the caller acted on a stall, or
    /// decided it was not one).
    pub fn restart_stall_clock(&mut self, now: Instant) {
        self.progressed(now);
    }

    /// The next frame to put on the channel. Control frames (Hello, Ack)
    /// come first; data only once the peer's Hello arrived on this channel,
    /// and only when `room_for_data` (the caller's channel is not
    /// congested).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, room_for_data: bool) -> Option<Frame> {
        if !self.channel_open {
            return None;
        }
        if self.waiting_since.is_none() && !self.unacked.is_empty() {
            self.waiting_since = Some(now);
        }
        if let Some((due, sent)) = self.hello_repeat
            && due <= now
        {
            self.hello_owed = true;
            self.hello_repeat = HELLO_REPEATS.get(sent).map(|&after| (due + after, sent + 1));
        }
        if self.hello_owed {
            self.hello_owed = false;
            return Some(Frame::Hello {
                session: self.session,
                resume_from: self.acked + 1,
                peer_session: self.peer_session,
                delivered: self.delivered,
            });
        }
        if self.ack_is_due(now) {
            self.acks_owed = 0;
            self.ack_due = None;
            return Some(Frame::Ack { delivered: self.delivered });
        }
        if !room_for_data || !self.may_send_data() {
            return None;
        }
        if self.probe_due.is_some_and(|due| due <= now) {
            self.probes_unanswered = self.probes_unanswered.saturating_add(1);
            self.probe_next = self.acked + 1;
            self.probe_left = PROBE_FRAMES;
            self.probe_due = self.outstanding().then(|| now + self.probe_timeout());
        }
        if self.probe_left > 0 && self.probe_next < self.transmit_next {
            self.probe_left -= 1;
            let seq = self.probe_next;
            self.probe_next += 1;
            let index = usize::try_from(seq - self.acked - 1).ok()?;
            let message = self.unacked.get_mut(index)?;
            message.sent_again = true;
            self.stats.replayed += 1;
            return Some(Frame::Data { seq, payload: message.payload.clone() });
        }
        let index = usize::try_from(self.transmit_next - self.acked - 1).ok()?;
        let message = self.unacked.get_mut(index)?;
        message.sent_again |= message.first_sent.is_some();
        message.first_sent.get_or_insert(now);
        let payload = message.payload.clone();
        let seq = self.transmit_next;
        self.transmit_next += 1;
        if seq <= self.ever_sent {
            self.stats.replayed += 1;
        }
        self.ever_sent = self.ever_sent.max(seq);
        if self.probe_due.is_none() {
            self.probe_due = Some(now + self.probe_timeout());
        }
        Some(Frame::Data { seq, payload })
    }

    /// Makes any owed acknowledgement due now (before a deliberate close,
    /// so that the peer does not replay what already arrived).
    pub fn flush_acks(&mut self) {
        if self.acks_owed > 0 {
            self.acks_owed = self.acks_owed.max(self.config.ack_every);
        }
    }

    /// The next message for the app, in order.
    #[must_use]
    pub fn poll_delivery(&mut self) -> Option<Bytes> {
        self.deliveries.pop_front()
    }

    /// The next message the peer acknowledged.
    #[must_use]
    pub fn poll_confirmed(&mut self) -> Option<MessageId> {
        self.confirmed.pop_front()
    }

    /// When an acknowledgement, a repeated Hello or a probe is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.channel_open {
            return None;
        }
        let ack = if self.acks_owed > 0 { self.ack_due } else { None };
        let hello = self.hello_repeat.map(|(due, _)| due);
        let probe = self.probe_due.filter(|_| self.may_send_data());
        [ack, hello, probe].into_iter().flatten().min()
    }

    /// Withdraws every message whose deadline is at or before `now` and that
    /// was never put on any channel, and returns their ids. Messages that
    /// went out once stay: they may have arrived.
    pub fn withdraw_expired(&mut self, now: Instant) -> Vec<MessageId> {
        let first_unsent =
            usize::try_from(self.ever_sent.saturating_sub(self.acked)).unwrap_or(usize::MAX);
        if first_unsent >= self.unacked.len() {
            return Vec::new();
        }
        // Unsent messages have no sequence number on the wire yet, so
        // removing some renumbers the rest without anyone noticing.
        let mut withdrawn = Vec::new();
        let mut index = first_unsent;
        while index < self.unacked.len() {
            if self.unacked[index].deadline.is_some_and(|deadline| deadline <= now) {
                if let Some(message) = self.unacked.remove(index) {
                    self.unacked_bytes -= message.payload.len();
                    withdrawn.push(message.id);
                }
            } else {
                index += 1;
            }
        }
        self.stats.withdrawn += withdrawn.len() as u64;
        withdrawn
    }

    /// Messages waiting for acknowledgement.
    pub fn buffered(&self) -> usize {
        self.unacked.len()
    }

    /// Ends the stream (the peer is gone for good) and returns every
    /// message that was never acknowledged, so that their senders can be
    /// told.
    pub fn abandon(self) -> Vec<MessageId> {
        self.unacked.into_iter().map(|m| m.id).collect()
    }

    /// This stream's session.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Whether the channel is open and the peer's Hello arrived.
    pub fn is_ready(&self) -> bool {
        self.channel_open && self.hello_seen
    }

    /// Counters.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }
}
