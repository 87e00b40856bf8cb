//! The reader of one data channel: publishes it while open, forwards its messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tether_signal::protocol::PeerId;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, Span, debug, info, trace};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use super::connection::Internal;
use super::view::PeerView;
use crate::event::{ConnectionId, RtcEvent};
use crate::negotiation::input::PcEvent;

/// The SCTP stream of tether's data channel, which both sides create negotiated out of band
/// (NEGOTIATION.md §3).
pub(super) const CHANNEL_STREAM_ID: u16 = 0;

/// How often a channel that is not open yet wakes its peer connection's driver. webrtc-rs 0.21
/// queues what the DTLS and SCTP handshakes produce while handling an event (the SCTP client's
/// INIT once DTLS completes, the server side's channel open once COOKIE-ECHO arrives) and
/// sends it only when its driver next wakes for some other reason: a packet or a timer, often
/// 100 ms or more later, once per handshake step. Any call into the channel wakes the driver,
/// so the watcher makes a harmless one at this pace from when ICE and DTLS are up (nothing of
/// the kind is queued before) until the channel opens (`tether lab
/// handoff --outage-ms 20000 --rtt-ms 100`: a new peer connection's channel opened about
/// 100 ms sooner).
const DRIVER_NUDGE_INTERVAL: Duration = Duration::from_millis(10);

/// When a side may call its channel open (NEGOTIATION.md §3). The offerer's side opens first
/// (it is the SCTP server), and webrtc-rs drops a message that reaches the answerer's side of a
/// negotiated channel before that side exists; so the answerer announces its side with one
/// empty message, and the offerer's side counts as open only once a message from the answerer
/// arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelOpening {
    /// The answerer: open with the channel; sends the empty "ready" message at once.
    Announce,
    /// The offerer: open at the answerer's first message.
    AwaitPeer,
}

/// Reads a data channel of peer connection `connection_id` until it closes, publishing it
/// while open. Empty messages are never delivered (the "ready" message is one).
pub(super) fn watch_channel(
    peer: PeerId,
    view: Arc<PeerView>,
    internal: mpsc::UnboundedSender<Internal>,
    traffic: mpsc::Sender<RtcEvent>,
    (connection_id, opening): (ConnectionId, ChannelOpening),
    channel: Arc<dyn DataChannel>,
) {
    let forward = move |event: PcEvent| {
        let _ = internal.send(Internal { connection_id, event, channel: None });
    };
    let task = async move {
        let mut opened = false;
        let mut nudge = tokio::time::interval(DRIVER_NUDGE_INTERVAL);
        nudge.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                // `poll` is cancel safe (an mpsc receive behind a lock).
                event = channel.poll() => event,
                _ = nudge.tick(), if !opened => {
                    if view.transport_up(connection_id) {
                        // Sets the threshold to the value it has (tether never changes it): the
                        // call only wakes the driver.
                        let _ = channel.set_buffered_amount_high_threshold(u32::MAX).await;
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            // webrtc-rs may deliver a message before the open event: the channel is open then,
            // and consumers must hear so before they see the message.
            let opens = matches!(
                (&event, opening),
                (DataChannelEvent::OnOpen, ChannelOpening::Announce)
                    | (DataChannelEvent::OnMessage(_), _)
            );
            if opens && !opened && opening == ChannelOpening::Announce {
                // Before anything else on it: the answerer's side exists now.
                if let Err(error) = channel.send(BytesMut::new()).await {
                    debug!(name: "rtc.channel.ready_failed", connection = connection_id.get(), %error);
                }
            }
            if opens && !opened && view.open_channel(connection_id, &channel) {
                opened = true;
                forward(PcEvent::ChannelOpened);
                let opened_event = RtcEvent::ChannelOpened { peer: peer.clone(), connection_id };
                let _ = traffic.send(opened_event).await;
            }
            match event {
                DataChannelEvent::OnMessage(message) if message.data.is_empty() => {
                    trace!(name: "rtc.channel.ready", connection = connection_id.get());
                }
                DataChannelEvent::OnMessage(message) => {
                    trace!(name: "rtc.channel.message", bytes = message.data.len());
                    let received = RtcEvent::MessageReceived {
                        peer: peer.clone(),
                        connection_id,
                        data: message.data.freeze(),
                    };
                    // Waiting here is the back-pressure: webrtc-rs stops reading, SCTP throttles
                    // the sender. If the receiver is gone the message has nowhere to go.
                    let _ = traffic.send(received).await;
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        view.close_channel(connection_id);
        forward(PcEvent::ChannelClosed);
        if opened {
            info!(name: "rtc.channel.closed", connection = connection_id.get());
            let _ = traffic.send(RtcEvent::ChannelClosed { peer, connection_id }).await;
        }
    };
    tokio::spawn(task.instrument(Span::current()));
}
