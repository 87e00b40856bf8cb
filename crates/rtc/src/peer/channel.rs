//! The reader of one data channel: publishes it while open, forwards its messages.

use std::sync::Arc;

use tether_signal::protocol::PeerId;
use tokio::sync::mpsc;
use tracing::{Instrument, Span, info, trace};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use super::connection::Internal;
use super::view::PeerView;
use crate::event::{ConnectionId, RtcEvent};
use crate::negotiation::input::PcEvent;

/// The SCTP stream of tether's data channel, which both sides create negotiated out of band
/// (NEGOTIATION.md §3).
pub(super) const CHANNEL_STREAM_ID: u16 = 0;

/// Reads a data channel of peer connection `connection_id` until it closes, publishing it
/// while open.
pub(super) fn watch_channel(
    peer: PeerId,
    view: Arc<PeerView>,
    internal: mpsc::UnboundedSender<Internal>,
    traffic: mpsc::Sender<RtcEvent>,
    connection_id: ConnectionId,
    channel: Arc<dyn DataChannel>,
) {
    let forward = move |event: PcEvent| {
        let _ = internal.send(Internal { connection_id, event, channel: None });
    };
    let task = async move {
        let mut opened = false;
        while let Some(event) = channel.poll().await {
            // webrtc-rs may deliver a message before the open event: the channel is open then,
            // and consumers must hear so before they see the message.
            let opens = matches!(event, DataChannelEvent::OnOpen | DataChannelEvent::OnMessage(_));
            if opens && !opened && view.open_channel(connection_id, &channel) {
                opened = true;
                forward(PcEvent::ChannelOpened);
                let opened_event = RtcEvent::ChannelOpened { peer: peer.clone(), connection_id };
                let _ = traffic.send(opened_event).await;
            }
            match event {
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
