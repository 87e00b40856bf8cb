//! The driver task of one committed connection ("link"): reads frames into
//! events, writes queued frames, pings, matches probe pongs, and declares
//! the link dead after `dead_after` without any inbound frame.

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use crate::protocol::{ErrorCode, ServerMessage, close_code, decode_server_message};

use super::endpoint::ClientSocket;
use super::{LossCause, Shared, SignalEvent};

/// What the rest of the client asks of a link.
#[derive(Debug)]
pub(super) enum Command {
    /// Write one TEXT frame.
    Frame(String),
    /// Send a WebSocket ping with `payload`; answer `reply` with the arrival
    /// time of the pong carrying the same payload.
    Probe { payload: Bytes, reply: oneshot::Sender<Instant> },
    /// Fault injection: drop the socket at once, as a network failure would.
    Sever,
}

/// Timing of a link.
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkTiming {
    pub(super) ping_interval: Duration,
    pub(super) dead_after: Duration,
    pub(super) close_timeout: Duration,
}

/// Everything the driver owns.
pub(super) struct Link {
    pub(super) socket: ClientSocket,
    pub(super) generation: u64,
    pub(super) commands: mpsc::Receiver<Command>,
    /// Cancelled by `disconnect` or by a newer link (deliberate close).
    pub(super) stop: CancellationToken,
    /// Cancelled when the driver has finished (socket closed).
    pub(super) ended: CancellationToken,
    pub(super) events: mpsc::UnboundedSender<SignalEvent>,
    pub(super) shared: Weak<Shared>,
    pub(super) timing: LinkTiming,
}

/// How the driver loop ended.
enum Exit {
    /// Deliberately stopped: close politely, report nothing.
    Stopped,
    /// Spontaneous loss.
    Lost(LossCause),
}

impl Link {
    pub(super) async fn drive(mut self) {
        let _ended = self.ended.clone().drop_guard();
        let exit = self.run().await;
        match exit {
            Exit::Stopped => {
                let frame = CloseFrame {
                    code: CloseCode::from(close_code::NORMAL),
                    reason: "disconnect".into(),
                };
                let timing = self.timing;
                let socket = &mut self.socket;
                let _ = tokio::time::timeout(timing.close_timeout, async {
                    let _ = socket.close(Some(frame)).await;
                    while let Some(Ok(_)) = socket.next().await {}
                })
                .await;
                debug!(name: "signal.client.link.closed", generation = self.generation);
            }
            Exit::Lost(cause) => {
                if let Some(shared) = self.shared.upgrade() {
                    shared.link_lost(self.generation, cause);
                }
            }
        }
    }

    async fn run(&mut self) -> Exit {
        let timing = self.timing;
        let mut last_inbound = Instant::now();
        let mut ping =
            tokio::time::interval_at(last_inbound + timing.ping_interval, timing.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probes: Vec<(Bytes, oneshot::Sender<Instant>)> = Vec::new();
        let mut keepalive_sequence: u64 = 0;
        let mut replaced = false;
        // One watchdog timer, re-armed only when it fires early (inbound
        // frames moved the deadline on), instead of a new timer per frame.
        let watchdog = tokio::time::sleep_until(last_inbound + timing.dead_after);
        tokio::pin!(watchdog);
        let stop_token = self.stop.clone();
        let stopped = stop_token.cancelled();
        tokio::pin!(stopped);
        loop {
            let dead_at = last_inbound + timing.dead_after;
            tokio::select! {
                biased;
                () = &mut stopped => return Exit::Stopped,
                () = &mut watchdog => {
                    if Instant::now() >= dead_at {
                        return Exit::Lost(LossCause::PingTimeout { silent_for: timing.dead_after });
                    }
                    watchdog.as_mut().reset(dead_at);
                }
                inbound = self.socket.next() => {
                    let message = match inbound {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => return Exit::Lost(LossCause::Io(error.to_string())),
                        None if replaced => return Exit::Lost(LossCause::Replaced),
                        None => return Exit::Lost(LossCause::StreamEnded),
                    };
                    last_inbound = Instant::now();
                    match message {
                        Message::Text(text) => self.on_text(text.as_str(), &mut replaced),
                        Message::Pong(payload) => {
                            probes.retain(|(_, reply)| !reply.is_closed());
                            if let Some(index) = probes.iter().position(|(sent, _)| *sent == payload) {
                                let (_, reply) = probes.swap_remove(index);
                                let _ = reply.send(last_inbound);
                            }
                        }
                        Message::Close(frame) => {
                            if replaced {
                                return Exit::Lost(LossCause::Replaced);
                            }
                            let (code, reason) = frame
                                .map(|frame| (u16::from(frame.code), frame.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            if code == close_code::REPLACED {
                                return Exit::Lost(LossCause::Replaced);
                            }
                            return Exit::Lost(LossCause::ClosedByServer { code, reason });
                        }
                        Message::Ping(_) | Message::Frame(_) => {}
                        Message::Binary(_) => {
                            debug!(name: "signal.client.unexpected_binary", generation = self.generation);
                        }
                    }
                }
                command = self.commands.recv() => {
                    let outgoing = match command {
                        Some(Command::Frame(text)) => Message::text(text),
                        Some(Command::Probe { payload, reply }) => {
                            probes.push((payload.clone(), reply));
                            Message::Ping(payload)
                        }
                        Some(Command::Sever) => {
                            return Exit::Lost(LossCause::Io("severed (fault injection)".into()));
                        }
                        // Every sender is gone: the client was dropped.
                        None => return Exit::Stopped,
                    };
                    if let Some(exit) = self.write(outgoing, dead_at).await {
                        return exit;
                    }
                }
                _ = ping.tick() => {
                    keepalive_sequence += 1;
                    let mut payload = Vec::with_capacity(9);
                    payload.push(b'k');
                    payload.extend_from_slice(&keepalive_sequence.to_be_bytes());
                    trace!(name: "signal.client.keepalive", generation = self.generation);
                    if let Some(exit) = self.write(Message::Ping(payload.into()), dead_at).await {
                        return exit;
                    }
                }
            }
        }
    }

    /// Writes one frame; a write that fails or stalls past the death
    /// deadline ends the link.
    async fn write(&mut self, message: Message, dead_at: Instant) -> Option<Exit> {
        let written = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Some(Exit::Stopped),
            written = tokio::time::timeout_at(dead_at, self.socket.send(message)) => written,
        };
        match written {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(Exit::Lost(LossCause::Io(error.to_string()))),
            Err(_) => {
                Some(Exit::Lost(LossCause::PingTimeout { silent_for: self.timing.dead_after }))
            }
        }
    }

    fn on_text(&self, text: &str, replaced: &mut bool) {
        let event = match decode_server_message(text) {
            Ok(ServerMessage::Relay { from, payload }) => SignalEvent::Relay { from, payload },
            Ok(ServerMessage::PeerJoined { peer_id }) => SignalEvent::PeerJoined(peer_id),
            Ok(ServerMessage::PeerLeft { peer_id }) => SignalEvent::PeerLeft(peer_id),
            Ok(ServerMessage::Error { code: ErrorCode::Replaced, .. }) => {
                *replaced = true;
                return;
            }
            Ok(ServerMessage::Error { code, message, .. }) if code.closes_connection() => {
                // The close frame that follows ends the link and names the cause.
                debug!(name: "signal.client.server_closing", code = code.as_str(), %message);
                return;
            }
            Ok(ServerMessage::Error { code, message, id }) => {
                debug!(name: "signal.client.server_error", code = code.as_str(), %message, id);
                SignalEvent::ServerError { code, message, id }
            }
            Ok(ServerMessage::Registered(_) | ServerMessage::Pong { .. }) => return,
            Err(error) => {
                warn!(name: "signal.client.undecodable", generation = self.generation, %error);
                return;
            }
        };
        let _ = self.events.send(event);
    }
}
