//! Reliable messaging over a channel that breaks at random: a two-party
//! stepper on a virtual clock (like quinn-proto's `Pair`). Whatever breaks
//! when, every accepted message is delivered exactly once and in order, or
//! was withdrawn unsent and its sender told. The channel may reorder frames
//! (tether's channel is unordered), lose a data frame or an acknowledgement
//! (as SCTP does until its own timer fires, which this model never does: the
//! stream's probes must recover), and either side may resend everything
//! unacknowledged at any time (as after an ICE restart). Once both have seen each other's Hello,
//! either may also carry frames on the detour (MESSAGING.md rule 10), a second path that
//! reorders and loses too, and survives the channel breaking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use tether::reliable::{Frame, HelloTurn, MessageId, ReliableStream, StreamConfig};

struct Side {
    stream: ReliableStream,
    sent: Vec<(MessageId, u64)>,
    next_payload: u64,
    received: Vec<u64>,
    confirmed: Vec<MessageId>,
    withdrawn: HashSet<MessageId>,
}

impl Side {
    fn new(session: u64, config: StreamConfig) -> Self {
        Self {
            stream: ReliableStream::new(session, config),
            sent: Vec::new(),
            next_payload: 0,
            received: Vec::new(),
            confirmed: Vec::new(),
            withdrawn: HashSet::new(),
        }
    }

    fn push(&mut self, deadline: Option<Instant>) {
        self.next_payload += 1;
        let payload = Bytes::copy_from_slice(&self.next_payload.to_be_bytes());
        if let Ok(id) = self.stream.push(payload, deadline) {
            self.sent.push((id, self.next_payload));
        } else {
            self.next_payload -= 1;
        }
    }

    fn drain(&mut self) {
        while let Some(bytes) = self.stream.poll_delivery() {
            self.received.push(u64::from_be_bytes(bytes[..8].try_into().unwrap()));
        }
        while let Some(id) = self.stream.poll_confirmed() {
            self.confirmed.push(id);
        }
    }
}

struct Pair {
    now: Instant,
    a: Side,
    b: Side,
    a_to_b: VecDeque<Bytes>,
    b_to_a: VecDeque<Bytes>,
    up: bool,
    /// Frames B already took, to hand it again (a transport duplicate).
    seen_by_b: Vec<Bytes>,
    /// Frames on the detour through signaling, each way.
    detour_to_b: VecDeque<Frame>,
    detour_to_a: VecDeque<Frame>,
}

#[derive(Debug, Clone)]
enum Op {
    PushA {
        deadline_ms: Option<u64>,
    },
    PushB,
    PumpA {
        data: bool,
    },
    PumpB {
        data: bool,
    },
    DeliverToB(usize),
    DeliverToA(usize),
    Break,
    Open,
    Advance(u64),
    WithdrawA,
    DuplicateToB(prop::sample::Index),
    /// One frame overtakes the others (an unordered channel).
    OvertakeToB(prop::sample::Index),
    OvertakeToA(prop::sample::Index),
    /// The path under the channel was replaced: resend everything unacknowledged.
    ResendA,
    ResendB,
    /// A data frame or an acknowledgement in flight is lost.
    LoseToB(prop::sample::Index),
    LoseToA(prop::sample::Index),
    /// A side puts what is due on the detour, in batches of `room` bytes.
    DetourA {
        room: usize,
    },
    DetourB {
        room: usize,
    },
    /// One detour frame arrives (in any order), or is lost.
    DetourToB(prop::sample::Index),
    DetourToA(prop::sample::Index),
    LoseDetour(prop::sample::Index),
    /// A's signaling link was replaced: everything unacknowledged may take the detour again.
    RestartDetourA,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::option::of(0u64..60).prop_map(|deadline_ms| Op::PushA { deadline_ms }),
        3 => Just(Op::PushB),
        4 => any::<bool>().prop_map(|data| Op::PumpA { data }),
        3 => any::<bool>().prop_map(|data| Op::PumpB { data }),
        4 => (0usize..8).prop_map(Op::DeliverToB),
        3 => (0usize..8).prop_map(Op::DeliverToA),
        1 => Just(Op::Break),
        2 => Just(Op::Open),
        2 => (0u64..40).prop_map(Op::Advance),
        1 => Just(Op::WithdrawA),
        1 => any::<prop::sample::Index>().prop_map(Op::DuplicateToB),
        2 => any::<prop::sample::Index>().prop_map(Op::OvertakeToB),
        1 => any::<prop::sample::Index>().prop_map(Op::OvertakeToA),
        1 => Just(Op::ResendA),
        1 => Just(Op::ResendB),
        1 => any::<prop::sample::Index>().prop_map(Op::LoseToB),
        1 => any::<prop::sample::Index>().prop_map(Op::LoseToA),
        2 => (9usize..64).prop_map(|room| Op::DetourA { room }),
        1 => (9usize..64).prop_map(|room| Op::DetourB { room }),
        2 => any::<prop::sample::Index>().prop_map(Op::DetourToB),
        2 => any::<prop::sample::Index>().prop_map(Op::DetourToA),
        1 => any::<prop::sample::Index>().prop_map(Op::LoseDetour),
        1 => Just(Op::RestartDetourA),
    ]
}

impl Pair {
    fn new(config: StreamConfig) -> Self {
        Self {
            now: Instant::now(),
            a: Side::new(0xA, config.clone()),
            b: Side::new(0xB, config),
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            up: false,
            seen_by_b: Vec::new(),
            detour_to_b: VecDeque::new(),
            detour_to_a: VecDeque::new(),
        }
    }

    /// Whether the sides may use the detour: keys are agreed on a channel after both Hellos.
    fn detour_ready(&self) -> bool {
        self.a.stream.peer_session() != 0 && self.b.stream.peer_session() != 0
    }

    fn detour(side: &mut Side, queue: &mut VecDeque<Frame>, now: Instant, room: usize) {
        // Batches of `room` bytes until nothing more is due; a message larger than 24 bytes
        // never takes the detour.
        while let Some(frame) = side.stream.poll_detour(now, room, 24) {
            queue.push_back(frame);
        }
    }

    fn deliver_detour(
        to: &mut Side,
        queue: &mut VecDeque<Frame>,
        index: prop::sample::Index,
        now: Instant,
    ) {
        if queue.is_empty() {
            return;
        }
        if let Some(frame) = queue.remove(index.index(queue.len())) {
            to.stream.handle_detour(now, frame).unwrap();
        }
        to.drain();
    }

    fn pump(side: &mut Side, queue: &mut VecDeque<Bytes>, now: Instant, data: bool) {
        while let Some(frame) = side.stream.poll_transmit(now, data) {
            queue.push_back(frame.encode());
        }
    }

    fn deliver(to: &mut Side, queue: &mut VecDeque<Bytes>, count: usize, now: Instant) {
        for _ in 0..count {
            let Some(bytes) = queue.pop_front() else { break };
            let frame = Frame::decode(bytes).unwrap();
            to.stream.handle_frame(now, frame).unwrap();
        }
        to.drain();
    }

    /// Drops the frame at `index` unless it is a Hello (the Hello's own repeats are bounded
    /// and tested on their own).
    fn lose(queue: &mut VecDeque<Bytes>, index: prop::sample::Index) {
        if queue.is_empty() {
            return;
        }
        let at = index.index(queue.len());
        let hello = matches!(Frame::decode(queue[at].clone()), Ok(Frame::Hello { .. }));
        if !hello {
            queue.remove(at);
        }
    }

    fn take_any(queue: &mut VecDeque<Bytes>, index: prop::sample::Index) -> Option<Bytes> {
        if queue.is_empty() {
            return None;
        }
        queue.remove(index.index(queue.len()))
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::PushA { deadline_ms } => {
                self.a.push(deadline_ms.map(|ms| now + Duration::from_millis(ms)));
            }
            Op::PushB => self.b.push(None),
            Op::PumpA { data } => Self::pump(&mut self.a, &mut self.a_to_b, now, data),
            Op::PumpB { data } => Self::pump(&mut self.b, &mut self.b_to_a, now, data),
            Op::DeliverToB(n) => {
                self.seen_by_b.extend(self.a_to_b.iter().take(n).cloned());
                Self::deliver(&mut self.b, &mut self.a_to_b, n, now);
            }
            Op::DuplicateToB(index) => {
                if !self.seen_by_b.is_empty() && self.up {
                    let copy = self.seen_by_b[index.index(self.seen_by_b.len())].clone();
                    let mut queue = VecDeque::from([copy]);
                    Self::deliver(&mut self.b, &mut queue, 1, now);
                }
            }
            Op::DeliverToA(n) => Self::deliver(&mut self.a, &mut self.b_to_a, n, now),
            Op::OvertakeToB(index) => {
                if let Some(frame) = Self::take_any(&mut self.a_to_b, index) {
                    self.seen_by_b.push(frame.clone());
                    Self::deliver(&mut self.b, &mut VecDeque::from([frame]), 1, now);
                }
            }
            Op::OvertakeToA(index) => {
                if let Some(frame) = Self::take_any(&mut self.b_to_a, index) {
                    Self::deliver(&mut self.a, &mut VecDeque::from([frame]), 1, now);
                }
            }
            Op::LoseToB(index) => Self::lose(&mut self.a_to_b, index),
            Op::LoseToA(index) => Self::lose(&mut self.b_to_a, index),
            Op::DetourA { room } if self.detour_ready() => {
                Self::detour(&mut self.a, &mut self.detour_to_b, now, room);
            }
            Op::DetourB { room } if self.detour_ready() => {
                Self::detour(&mut self.b, &mut self.detour_to_a, now, room);
            }
            Op::DetourA { .. } | Op::DetourB { .. } => {}
            Op::DetourToB(index) => {
                Self::deliver_detour(&mut self.b, &mut self.detour_to_b, index, now)
            }
            Op::DetourToA(index) => {
                Self::deliver_detour(&mut self.a, &mut self.detour_to_a, index, now)
            }
            Op::LoseDetour(index) => {
                if !self.detour_to_b.is_empty() {
                    self.detour_to_b.remove(index.index(self.detour_to_b.len()));
                }
            }
            Op::RestartDetourA => self.a.stream.restart_detour(),
            Op::ResendA => self.a.stream.resend_unacknowledged(),
            Op::ResendB => self.b.stream.resend_unacknowledged(),
            Op::Break => {
                // Whatever was in flight on the old channel is lost.
                self.a_to_b.clear();
                self.b_to_a.clear();
                self.a.stream.channel_closed();
                self.b.stream.channel_closed();
                self.up = false;
                self.seen_by_b.clear();
            }
            Op::Open => {
                if !self.up {
                    self.up = true;
                    // A answers, B offers (MESSAGING.md rule 1).
                    self.a.stream.channel_opened(self.now, HelloTurn::First);
                    self.b.stream.channel_opened(self.now, HelloTurn::AfterPeer);
                }
            }
            Op::Advance(ms) => self.now += Duration::from_millis(ms),
            Op::WithdrawA => {
                for id in self.a.stream.withdraw_expired(now) {
                    self.a.withdrawn.insert(id);
                }
            }
        }
    }

    /// Delivers what is still on the detour, opens the channel and runs until nothing moves.
    fn settle(&mut self) {
        let now = self.now;
        for frame in std::mem::take(&mut self.detour_to_b) {
            self.b.stream.handle_detour(now, frame).unwrap();
        }
        for frame in std::mem::take(&mut self.detour_to_a) {
            self.a.stream.handle_detour(now, frame).unwrap();
        }
        self.a.drain();
        self.b.drain();
        self.apply(&Op::Open);
        for _ in 0..10_000 {
            let now = self.now;
            Self::pump(&mut self.a, &mut self.a_to_b, now, true);
            Self::pump(&mut self.b, &mut self.b_to_a, now, true);
            if self.a_to_b.is_empty() && self.b_to_a.is_empty() {
                let next = [self.a.stream.poll_timeout(), self.b.stream.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(at) => self.now = self.now.max(at),
                    None => return,
                }
                continue;
            }
            let (ab, ba) = (self.a_to_b.len(), self.b_to_a.len());
            Self::deliver(&mut self.b, &mut self.a_to_b, ab, now);
            Self::deliver(&mut self.a, &mut self.b_to_a, ba, now);
        }
        panic!("the pair did not settle");
    }
}

fn check_side(from: &Side, to: &Side) -> Result<(), TestCaseError> {
    let expected: Vec<u64> =
        from.sent.iter().filter(|(id, _)| !from.withdrawn.contains(id)).map(|&(_, p)| p).collect();
    prop_assert_eq!(&to.received, &expected, "delivered exactly once, in order");
    let confirmed: HashSet<MessageId> = from.confirmed.iter().copied().collect();
    prop_assert_eq!(confirmed.len(), from.confirmed.len(), "a message confirmed twice");
    for (id, _) in &from.sent {
        prop_assert!(
            confirmed.contains(id) != from.withdrawn.contains(id),
            "{:?} must be either confirmed or withdrawn",
            id
        );
    }
    prop_assert_eq!(from.stream.buffered(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn nothing_lost_nothing_duplicated(ops in prop::collection::vec(op(), 0..300), small in any::<bool>()) {
        let config = if small {
            StreamConfig { max_buffered_messages: 4, ack_every: 2, ..StreamConfig::default() }
        } else {
            StreamConfig::default()
        };
        let mut pair = Pair::new(config);
        for op in &ops {
            pair.apply(op);
        }
        pair.settle();
        check_side(&pair.a, &pair.b)?;
        check_side(&pair.b, &pair.a)?;
    }
}

#[test]
fn the_answering_side_replays_after_a_break_only_what_the_hello_says_is_missing() {
    let mut pair = Pair::new(StreamConfig { ack_every: 100, ..StreamConfig::default() });
    pair.apply(&Op::Open);
    for _ in 0..5 {
        pair.apply(&Op::PushB);
    }
    pair.apply(&Op::PumpB { data: true }); // B (the offerer) waits for A's hello
    assert!(pair.b_to_a.is_empty(), "the offerer speaks second");
    pair.apply(&Op::PumpA { data: true }); // A's hello
    pair.apply(&Op::DeliverToB(1));
    pair.apply(&Op::PumpB { data: true }); // B's hello, in answer, then five messages
    pair.apply(&Op::DeliverToA(4)); // the hello and 3 messages arrive
    pair.apply(&Op::Break); // two messages and every ack are lost
    pair.settle();
    assert_eq!(pair.a.received, [1, 2, 3, 4, 5]);
    assert_eq!(pair.a.stream.stats().duplicates, 0, "A's Hello told B what A had");
    assert_eq!(pair.b.stream.stats().replayed, 2);
    assert_eq!(pair.b.confirmed.len(), 5);
}

#[test]
fn the_side_that_says_hello_first_sends_at_once_and_its_peer_drops_what_it_had() {
    let mut pair = Pair::new(StreamConfig { ack_every: 100, ..StreamConfig::default() });
    pair.apply(&Op::Open);
    for _ in 0..5 {
        pair.apply(&Op::PushA { deadline_ms: None });
    }
    pair.apply(&Op::PumpA { data: true }); // A (the answerer): its hello, then five messages
    assert_eq!(pair.a_to_b.len(), 6, "the answerer does not wait for the offerer's hello");
    pair.apply(&Op::DeliverToB(4)); // the hello and 3 messages arrive
    pair.apply(&Op::Break); // two messages and every ack are lost
    pair.settle();
    assert_eq!(pair.b.received, [1, 2, 3, 4, 5]);
    // On the new channel A again sends everything unacknowledged at once, before B's Hello
    // could tell it what B has: B drops the three it had.
    assert_eq!(pair.b.stream.stats().duplicates, 3);
    assert_eq!(pair.a.stream.stats().replayed, 5);
    assert_eq!(pair.a.confirmed.len(), 5);
}

#[test]
fn a_full_buffer_refuses_and_acks_make_room() {
    let config = StreamConfig { max_buffered_messages: 2, ..StreamConfig::default() };
    let mut stream = ReliableStream::new(1, config);
    let now = Instant::now();
    stream.push(Bytes::from_static(b"a"), None).unwrap();
    stream.push(Bytes::from_static(b"b"), None).unwrap();
    let full = stream.push(Bytes::from_static(b"c"), None).unwrap_err();
    assert_eq!(full.messages, 2);
    stream.channel_opened(now, HelloTurn::First);
    stream
        .handle_frame(
            now,
            Frame::Hello { session: 2, resume_from: 1, peer_session: 0, delivered: 0 },
        )
        .unwrap();
    while stream.poll_transmit(now, true).is_some() {}
    stream.handle_frame(now, Frame::Ack { delivered: 1 }).unwrap();
    assert!(stream.push(Bytes::from_static(b"c"), None).is_ok());
    // An ack for what was never sent is a protocol error, and changes nothing.
    assert!(stream.handle_frame(now, Frame::Ack { delivered: 9 }).is_err());
    assert_eq!(stream.buffered(), 2);
}

#[test]
fn only_unsent_messages_with_a_passed_deadline_are_withdrawn() {
    let mut stream = ReliableStream::new(1, StreamConfig::default());
    let t0 = Instant::now();
    let deadline = Some(t0 + Duration::from_secs(1));
    let sent = stream.push(Bytes::from_static(b"sent"), deadline).unwrap();
    stream.channel_opened(t0, HelloTurn::First);
    stream
        .handle_frame(
            t0,
            Frame::Hello { session: 2, resume_from: 1, peer_session: 0, delivered: 0 },
        )
        .unwrap();
    while stream.poll_transmit(t0, true).is_some() {}
    stream.channel_closed();
    let patient = stream.push(Bytes::from_static(b"no deadline"), None).unwrap();
    let unsent = stream.push(Bytes::from_static(b"unsent"), deadline).unwrap();
    let later =
        stream.push(Bytes::from_static(b"later"), Some(t0 + Duration::from_secs(9))).unwrap();
    assert!(stream.withdraw_expired(t0).is_empty(), "nothing is due yet");
    let withdrawn = stream.withdraw_expired(t0 + Duration::from_secs(1));
    assert_eq!(withdrawn, [unsent]);
    assert_eq!(stream.buffered(), 3);
    let abandoned = stream.abandon();
    assert_eq!(abandoned, [sent, patient, later]);
}

#[test]
fn an_unanswered_hello_is_repeated_then_given_up() {
    let mut stream = ReliableStream::new(1, StreamConfig::default());
    let t0 = Instant::now();
    stream.channel_opened(t0, HelloTurn::First);
    let hellos = |stream: &mut ReliableStream, at: Instant| {
        std::iter::from_fn(|| stream.poll_transmit(at, true))
            .filter(|f| matches!(f, Frame::Hello { .. }))
            .count()
    };
    assert_eq!(hellos(&mut stream, t0), 1);
    assert_eq!(stream.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    assert_eq!(hellos(&mut stream, t0 + Duration::from_millis(499)), 0);
    assert_eq!(hellos(&mut stream, t0 + Duration::from_millis(500)), 1);
    assert_eq!(hellos(&mut stream, t0 + Duration::from_millis(1500)), 1);
    assert_eq!(hellos(&mut stream, t0 + Duration::from_millis(4000)), 1);
    assert_eq!(stream.poll_timeout(), None, "three repeats, then silence");
    assert_eq!(hellos(&mut stream, t0 + Duration::from_secs(60)), 0);

    // The peer's Hello stops the repeats.
    let mut stream = ReliableStream::new(1, StreamConfig::default());
    stream.channel_opened(t0, HelloTurn::First);
    assert_eq!(hellos(&mut stream, t0), 1);
    stream
        .handle_frame(
            t0,
            Frame::Hello { session: 2, resume_from: 1, peer_session: 0, delivered: 0 },
        )
        .unwrap();
    assert_eq!(stream.poll_timeout(), None);
    assert_eq!(hellos(&mut stream, t0 + Duration::from_secs(1)), 0);
    // A repeated Hello from the peer changes nothing.
    stream.push(Bytes::from_static(b"x"), None).unwrap();
    assert!(matches!(stream.poll_transmit(t0, true), Some(Frame::Data { seq: 1, .. })));
    stream
        .handle_frame(
            t0,
            Frame::Hello { session: 2, resume_from: 1, peer_session: 1, delivered: 0 },
        )
        .unwrap();
    stream.handle_frame(t0, Frame::Data { seq: 1, payload: Bytes::from_static(b"y") }).unwrap();
    assert_eq!(stream.poll_delivery(), Some(Bytes::from_static(b"y")));
    assert_eq!(stream.buffered(), 1, "nothing was acknowledged by the repeat");
}

/// A stream of session 1 whose channel opened at `t0`, with the peer's Hello in and its own out.
fn ready_stream(config: StreamConfig, t0: Instant) -> ReliableStream {
    let mut stream = ReliableStream::new(1, config);
    stream.channel_opened(t0, HelloTurn::First);
    let hello = Frame::Hello { session: 2, resume_from: 1, peer_session: 0, delivered: 0 };
    stream.handle_frame(t0, hello).unwrap();
    while stream.poll_transmit(t0, true).is_some() {}
    stream
}

#[test]
fn a_stream_without_progress_while_messages_wait_has_a_stall_deadline() {
    let ms = Duration::from_millis;
    let config = StreamConfig::default();
    let bound = config.stall_after;
    let t0 = Instant::now();
    let mut stream = ready_stream(config, t0);
    // Nothing waits: no deadline, however long the silence.
    assert_eq!(stream.stall_deadline(), None);

    // A message goes out at t1 and is not acknowledged.
    let t1 = t0 + ms(100);
    stream.push(Bytes::from_static(b"x"), None).unwrap();
    while stream.poll_transmit(t1, true).is_some() {}
    assert_eq!(stream.stall_deadline(), Some(t1 + bound));

    // Its acknowledgement is progress, and with nothing left waiting, no deadline.
    let t2 = t1 + ms(40);
    stream.handle_frame(t2, Frame::Ack { delivered: 1 }).unwrap();
    assert_eq!(stream.stall_deadline(), None);
    // The Hello and this acknowledgement: two signs of progress; a repeated ack is none.
    assert_eq!(stream.progress(), 2);
    stream.handle_frame(t2, Frame::Ack { delivered: 1 }).unwrap();
    assert_eq!(stream.progress(), 2);

    // Round trips longer than a quarter of the bound stretch it.
    let slow = bound * 3;
    let t3 = t2 + ms(10);
    stream.push(Bytes::from_static(b"y"), None).unwrap();
    while stream.poll_transmit(t3, true).is_some() {}
    stream.push(Bytes::from_static(b"z"), None).unwrap();
    let t4 = t3 + slow;
    stream.handle_frame(t4, Frame::Ack { delivered: 2 }).unwrap();
    while stream.poll_transmit(t4, true).is_some() {}
    let deadline = stream.stall_deadline().unwrap();
    assert!(deadline > t4 + bound, "{:?} after t4", deadline - t4);

    // The caller restarts the wait after acting; a closed channel has no deadline.
    stream.restart_stall_clock(t4 + ms(1));
    assert!(stream.stall_deadline().unwrap() > deadline);
    stream.channel_closed();
    assert_eq!(stream.stall_deadline(), None);
}

#[test]
fn a_new_channel_whose_peer_never_says_hello_stalls() {
    let mut stream = ReliableStream::new(1, StreamConfig::default());
    let t0 = Instant::now();
    stream.push(Bytes::from_static(b"waiting"), None).unwrap();
    stream.channel_opened(t0, HelloTurn::First);
    while stream.poll_transmit(t0, true).is_some() {}
    assert_eq!(stream.stall_deadline(), Some(t0 + StreamConfig::default().stall_after));
}

/// SCTP loses a message (webrtc-rs would send it again after 1 s at the earliest): the stream
/// sends the oldest unacknowledged messages again once they stayed unacknowledged for twice the
/// measured round trip plus the peer's acknowledgement delay, doubles that wait while the peer
/// stays silent, and stops once the peer acknowledges.
#[test]
fn a_lost_message_goes_again_after_the_probe_timeout() {
    let ms = Duration::from_millis;
    let config = StreamConfig::default();
    let ack_delay = config.ack_delay;
    let t0 = Instant::now();
    let mut stream = ready_stream(config, t0);

    // One message, acknowledged 100 ms later: the round trip.
    stream.push(Bytes::from_static(b"1"), None).unwrap();
    assert!(matches!(stream.poll_transmit(t0, true), Some(Frame::Data { seq: 1, .. })));
    let t1 = t0 + ms(100);
    stream.handle_frame(t1, Frame::Ack { delivered: 1 }).unwrap();
    assert_eq!(stream.poll_timeout(), None, "nothing outstanding, nothing to probe");

    // Three more go out at t1; the peer never acknowledges them.
    for payload in [b"2", b"3", b"4"] {
        stream.push(Bytes::from_static(payload), None).unwrap();
    }
    let sent: Vec<Frame> = std::iter::from_fn(|| stream.poll_transmit(t1, true)).collect();
    assert_eq!(sent.len(), 3);
    let probe_at = t1 + ms(200) + ack_delay;
    assert_eq!(stream.poll_timeout(), Some(probe_at));
    assert_eq!(stream.poll_transmit(probe_at - ms(1), true), None, "not before the timeout");
    let probe: Vec<Frame> = std::iter::from_fn(|| stream.poll_transmit(probe_at, true)).collect();
    let seqs: Vec<u64> = probe
        .iter()
        .filter_map(|frame| match frame {
            Frame::Data { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [2, 3], "the oldest two go again, and nothing else");
    assert_eq!(stream.stats().replayed, 2);

    // Unanswered: the next probe waits twice as long.
    let second = probe_at + (ms(200) + ack_delay) * 2;
    assert_eq!(stream.poll_timeout(), Some(second));

    // The peer acknowledges everything: no more probes.
    stream.handle_frame(second - ms(5), Frame::Ack { delivered: 4 }).unwrap();
    assert_eq!(stream.poll_transmit(second, true), None);
    assert_eq!(stream.poll_timeout(), None);
}
