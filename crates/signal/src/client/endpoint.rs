//! Where the server is and how a socket to it is opened and registered.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;

use crate::error::SignalError;
use crate::protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, Register, Registered, ServerMessage, close_code,
    decode_server_message, encode_client_message,
};

/// The client's side of a WebSocket connection.
pub(super) type ClientSocket = WebSocketStream<TcpStream>;

/// Largest frame the client accepts from the server.
const MAX_INBOUND_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// A parsed `ws://` URL.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    url: String,
    host: String,
    port: u16,
}

impl Endpoint {
    pub(super) fn parse(url: &str) -> Result<Endpoint, SignalError> {
        let invalid = |reason| SignalError::InvalidUrl { url: url.to_owned(), reason };
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a url"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => {
                return Err(invalid("wss:// needs tls, which this build does not include"));
            }
            _ => return Err(invalid("scheme must be ws://")),
        }
        let host = uri.host().ok_or_else(|| invalid("missing host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Endpoint { url: url.to_owned(), host, port: uri.port_u16().unwrap_or(80) })
    }

    /// Opens TCP and performs the WebSocket handshake (no `register` yet).
    pub(super) async fn open(&self) -> Result<ClientSocket, SignalError> {
        let stream =
            TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|source| {
                SignalError::Unreachable { addr: format!("{}:{}", self.host, self.port), source }
            })?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_INBOUND_FRAME_BYTES))
            .max_frame_size(Some(MAX_INBOUND_FRAME_BYTES));
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(self.url.as_str(), stream, Some(config))
                .await
                .map_err(SignalError::websocket)?;
        Ok(socket)
    }
}

/// Sends `register` and waits for `registered` (or the refusal). Any
/// `error` frame here answers the `register`, the only frame sent so far.
///
/// Not bounded by itself: the caller applies the connect timeout.
pub(super) async fn register(
    socket: &mut ClientSocket,
    register: Register,
) -> Result<Registered, SignalError> {
    let generation = register.generation.unwrap_or(0);
    let text = encode_client_message(&ClientMessage::Register(register));
    socket.send(Message::text(text)).await.map_err(SignalError::websocket)?;
    loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(SignalError::websocket(error)),
            None => {
                return Err(SignalError::ClosedByServer {
                    code: 1006,
                    reason: "stream ended".into(),
                });
            }
        };
        match message {
            Message::Text(text) => match decode_server_message(text.as_str()) {
                Ok(ServerMessage::Registered(registered)) => return Ok(registered),
                Ok(ServerMessage::Error { code, message, .. }) => {
                    debug!(name: "signal.client.register_refused", code = code.as_str(), %message);
                    return Err(match code {
                        ErrorCode::AuthFailed | ErrorCode::TokenOutdated => {
                            SignalError::AuthRejected { message }
                        }
                        ErrorCode::VersionUnsupported => {
                            SignalError::VersionUnsupported { client: PROTOCOL_VERSION, message }
                        }
                        ErrorCode::StaleGeneration => SignalError::Superseded { generation },
                        code => SignalError::Server { code, message },
                    });
                }
                Ok(other) => {
                    return Err(SignalError::Protocol(format!(
                        "expected `registered`, got {other:?}"
                    )));
                }
                Err(error) => return Err(SignalError::Protocol(error.to_string())),
            },
            Message::Close(frame) => {
                let (code, reason) = frame
                    .map(|frame| (u16::from(frame.code), frame.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(close_error(code, reason, generation));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Binary(_) => {
                return Err(SignalError::Protocol("unexpected binary frame".into()));
            }
        }
    }
}

/// Maps a close received before `registered` to an error.
fn close_error(code: u16, reason: String, generation: u64) -> SignalError {
    match code {
        close_code::STALE_GENERATION => SignalError::Superseded { generation },
        close_code::AUTH_FAILED | close_code::TOKEN_REFRESH => {
            SignalError::AuthRejected { message: reason }
        }
        close_code::VERSION_UNSUPPORTED => {
            SignalError::VersionUnsupported { client: PROTOCOL_VERSION, message: reason }
        }
        _ => SignalError::ClosedByServer { code, reason },
    }
}

/// Closes a socket politely, bounded by `within`.
pub(super) async fn close_quietly(mut socket: ClientSocket, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        let _ = socket.close(None).await;
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}
