//! Per-peer delivery: the instance holding a peer subscribes to the peer's
//! subject ([`Cluster::hold`]); any instance relays to it with one publish
//! ([`Cluster::deliver`]).
//!
//! Wire format (one NATS message per frame), JSON:
//! `{"v":1,"from":"<peer id>","room":"<room>","id":7,"frame":{…}}` where
//! `frame` is the server message to write to the recipient's session,
//! embedded as is, `room` is the sender's room (absent: none) and `id` is
//! the sender's message id when it gave one.

use std::sync::Arc;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tether_signal::protocol::{PeerId, RoomId};
use tracing::{trace, warn};

use super::{Cluster, ClusterError, Counters, subjects};

/// The version of the frame format this code writes and reads.
const FRAME_VERSION: u8 = 1;

/// One message for a peer, as it travels between instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sending peer, as the sending instance authenticated it.
    pub from: PeerId,
    /// The room the sender registered in (`None`: no room). The receiving
    /// instance drops a frame whose room is not its recipient's, so rooms
    /// stay a boundary across instances.
    pub room: Option<RoomId>,
    /// The sender's message id, when it gave one.
    pub id: Option<u64>,
    /// The server message to write to the recipient's session: JSON text of
    /// one object (what `encode_server_message` produced).
    pub text: String,
}

#[derive(Serialize)]
struct WireOut<'a> {
    v: u8,
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    frame: &'a RawValue,
}

#[derive(Deserialize)]
struct WireIn<'a> {
    v: u8,
    from: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow)]
    frame: &'a RawValue,
}

pub(super) fn encode(frame: &Frame) -> Result<Vec<u8>, ClusterError> {
    let raw: &RawValue = serde_json::from_str(&frame.text)
        .map_err(|err| ClusterError::InvalidFrame { reason: err.to_string() })?;
    if !raw.get().starts_with('{') {
        return Err(ClusterError::InvalidFrame { reason: "not an object".to_owned() });
    }
    let wire = WireOut {
        v: FRAME_VERSION,
        from: frame.from.as_str(),
        room: frame.room.as_ref().map(RoomId::as_str),
        id: frame.id,
        frame: raw,
    };
    serde_json::to_vec(&wire).map_err(|err| ClusterError::InvalidFrame { reason: err.to_string() })
}

pub(super) fn decode(payload: &[u8]) -> Result<Frame, String> {
    let wire: WireIn<'_> = serde_json::from_slice(payload).map_err(|err| err.to_string())?;
    if wire.v != FRAME_VERSION {
        return Err(format!("unknown frame version {}", wire.v));
    }
    let from = PeerId::new(wire.from).map_err(|err| err.to_string())?;
    let room = wire.room.map(RoomId::new).transpose().map_err(|err| err.to_string())?;
    let text = wire.frame.get();
    if !text.starts_with('{') {
        return Err("frame is not a json object".to_owned());
    }
    Ok(Frame { from, room, id: wire.id, text: text.to_owned() })
}

/// The frames addressed to one peer held by this instance; made by
/// [`Cluster::hold`]. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Inbox {
    peer: PeerId,
    subscriber: async_nats::Subscriber,
    counters: Arc<Counters>,
}

impl Inbox {
    /// The peer this inbox receives for.
    pub fn peer(&self) -> &PeerId {
        &self.peer
    }

    /// The next well-formed frame. Malformed messages are counted
    /// ([`super::ClusterStats::malformed`]), logged and skipped. `None` when
    /// the connection was closed for good.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a frame is taken off the subscription only when it is
    /// returned (or dropped as malformed).
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let message = self.subscriber.next().await?;
            match decode(&message.payload) {
                Ok(frame) => {
                    Counters::bump(&self.counters.delivered);
                    trace!(name: "relay.cluster.frame_in", to = %self.peer, from = %frame.from);
                    return Some(frame);
                }
                Err(reason) => {
                    Counters::bump(&self.counters.malformed);
                    warn!(name: "relay.cluster.malformed", kind = "frame", to = %self.peer, %reason);
                }
            }
        }
    }
}

impl Cluster {
    /// Subscribes to `peer`'s subject: once this returns, the NATS server
    /// has the subscription, and frames any instance
    /// [`deliver`](Cluster::deliver)s to `peer` arrive on the returned
    /// [`Inbox`]. (With a cluster of NATS servers, interest reaches the other
    /// servers a moment later.) Call it when a peer registers here, before
    /// announcing the registration, and drop the inbox when the session ends.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Broker`] when the connection is closed or the server
    /// did not confirm the subscription.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelling leaves no subscription behind.
    pub async fn hold(&self, peer: &PeerId) -> Result<Inbox, ClusterError> {
        let subscriber = self
            .inner
            .client
            .subscribe(subjects::peer_subject(peer))
            .await
            .map_err(|err| ClusterError::Broker { op: "subscribe", reason: err.to_string() })?;
        self.flush().await?;
        Ok(Inbox { peer: peer.clone(), subscriber, counters: self.inner.counters.clone() })
    }

    /// Publishes `frame` to whichever instance holds `to`. Fire and forget,
    /// as NATS core is: when no instance holds `to` the frame is dropped by
    /// the broker. While the broker is unreachable the client buffers a
    /// bounded number of messages, then this waits for room.
    ///
    /// # Errors
    ///
    /// [`ClusterError::InvalidFrame`] when `frame.text` is not a JSON object;
    /// [`ClusterError::Broker`] when the connection is closed for good.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the frame was either handed to the client or not at all.
    pub async fn deliver(&self, to: &PeerId, frame: &Frame) -> Result<(), ClusterError> {
        let payload = encode(frame)?;
        self.inner
            .client
            .publish(subjects::peer_subject(to), payload.into())
            .await
            .map_err(|err| ClusterError::Broker { op: "publish", reason: err.to_string() })?;
        Counters::bump(&self.inner.counters.published);
        trace!(name: "relay.cluster.frame_out", %to, from = %frame.from);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn frame(text: &str) -> Frame {
        Frame {
            from: PeerId::new("a.b@c").unwrap(),
            room: None,
            id: Some(7),
            text: text.to_owned(),
        }
    }

    #[test]
    fn frames_round_trip_with_the_payload_embedded_verbatim() {
        let original = frame(r#"{"type":"offer","from":"a.b@c","sdp":"v=0\r\n"}"#);
        let bytes = encode(&original).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"v":1,"from":"a.b@c","id":7,"frame":{"type""#), "{text}");
        assert_eq!(decode(&bytes).unwrap(), original);
        let no_id = Frame { id: None, ..original.clone() };
        assert_eq!(decode(&encode(&no_id).unwrap()).unwrap(), no_id);
        let in_room = Frame { room: Some(RoomId::new("lobby").unwrap()), ..original };
        let bytes = encode(&in_room).unwrap();
        assert!(std::str::from_utf8(&bytes).unwrap().contains(r#""room":"lobby""#));
        assert_eq!(decode(&bytes).unwrap(), in_room);
    }

    #[test]
    fn senders_cannot_publish_non_objects() {
        for text in ["", "[1]", "\"x\"", "{", "1"] {
            assert!(
                matches!(encode(&frame(text)), Err(ClusterError::InvalidFrame { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"null",
            b"{}",
            br#"{"v":2,"from":"a","frame":{}}"#,
            br#"{"v":1,"from":"a b","frame":{}}"#,
            br#"{"v":1,"from":"","frame":{}}"#,
            br#"{"v":1,"from":"a","frame":[]}"#,
            br#"{"v":1,"from":"a","frame":"x"}"#,
            br#"{"v":1,"from":"a","id":-1,"frame":{}}"#,
            br#"{"v":1,"from":"a"}"#,
            br#"{"v":1,"from":"a","room":"a b","frame":{}}"#,
            br#"{"v":1,"from":"a","room":7,"frame":{}}"#,
        ];
        for case in cases {
            assert!(decode(case).is_err(), "{}", String::from_utf8_lossy(case));
        }
        assert!(decode(br#"{"v":1,"from":"a","frame":{}}"#).is_ok());
    }
}
