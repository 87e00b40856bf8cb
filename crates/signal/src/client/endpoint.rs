//! Where the server is and how a socket to it is opened and registered.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;

use super::tls::TlsTrust;
use crate::error::SignalError;
use crate::protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, REGISTER_HEADER, REGISTER_HEADER_TAKEN, Register,
    Registered, ServerMessage, close_code, decode_server_message, encode_client_message,
};

/// The client's side of a WebSocket connection.
pub(super) type ClientSocket = WebSocketStream<Transport>;

/// The byte stream under the WebSocket: plain TCP for `ws://`, TLS for `wss://`.
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The local address and the server's address of `socket`'s TCP connection, when the OS
/// reports them.
pub(super) fn addresses(socket: &ClientSocket) -> (Option<IpAddr>, Option<SocketAddr>) {
    let tcp = match socket.get_ref() {
        Transport::Plain(stream) => stream,
        Transport::Tls(stream) => stream.get_ref().0,
    };
    (tcp.local_addr().ok().map(|addr| addr.ip()), tcp.peer_addr().ok())
}

/// The local address this host would send to `server` from now: a connected UDP socket takes
/// the route's source address (connecting one sends nothing). `None` when there is no route.
pub(super) fn route_source(server: SocketAddr) -> Option<IpAddr> {
    let unspecified: IpAddr = match server {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = std::net::UdpSocket::bind((unspecified, 0)).ok()?;
    socket.connect(server).ok()?;
    socket.local_addr().ok().map(|addr| addr.ip())
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Largest frame the client accepts from the server.
const MAX_INBOUND_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// When a TCP connect has not completed after this long, a second one races it. A link that
/// just came up (a handoff) may drop the first SYN, and the kernel resends it only after 1 s;
/// Chromium's backup connect job waits the same 250 ms. The loser is dropped unused.
const BACKUP_CONNECT_AFTER: Duration = Duration::from_millis(250);

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    url: String,
    host: String,
    port: u16,
    /// Set for `wss://`: whom the TLS handshake trusts.
    tls: Option<TlsTrust>,
}

impl Endpoint {
    pub(super) fn parse(url: &str, trust: &TlsTrust) -> Result<Endpoint, SignalError> {
        let invalid = |reason| SignalError::InvalidUrl { url: url.to_owned(), reason };
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a url"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("ws") => (None, 80),
            Some("wss") => (Some(trust.clone()), 443),
            _ => return Err(invalid("scheme must be ws:// or wss://")),
        };
        let host = uri.host().ok_or_else(|| invalid("missing host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(default_port);
        Ok(Endpoint { url: url.to_owned(), host, port, tls })
    }

    /// A TCP connection to the endpoint: the first of two attempts, the second started
    /// [`BACKUP_CONNECT_AFTER`] after the first unless it finished. Fails only when both did.
    async fn connect_tcp(&self) -> io::Result<TcpStream> {
        let target = (self.host.as_str(), self.port);
        let first = TcpStream::connect(target);
        tokio::pin!(first);
        tokio::select! {
            result = &mut first => return result,
            () = tokio::time::sleep(BACKUP_CONNECT_AFTER) => {}
        }
        debug!(name: "signal.client.backup_connect", url = %self.url);
        let second = TcpStream::connect(target);
        tokio::pin!(second);
        tokio::select! {
            result = &mut first => match result {
                Ok(stream) => Ok(stream),
                Err(error) => second.await.map_err(|_| error),
            },
            result = &mut second => match result {
                Ok(stream) => Ok(stream),
                Err(error) => first.await.map_err(|_| error),
            },
        }
    }

    /// Opens TCP, then TLS for `wss://`, and performs the WebSocket handshake, with `register`
    /// in the upgrade request when given (PROTOCOL.md §2): the socket comes back with whether
    /// the server took it.
    pub(super) async fn open(&self, register: Option<&Register>) -> Result<Opened, SignalError> {
        let addr = format!("{}:{}", self.host, self.port);
        let stream = self
            .connect_tcp()
            .await
            .map_err(|source| SignalError::Unreachable { addr: addr.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let stream = match &self.tls {
            None => Transport::Plain(stream),
            Some(trust) => Transport::Tls(Box::new(trust.connect(stream, &self.host).await?)),
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_INBOUND_FRAME_BYTES))
            .max_frame_size(Some(MAX_INBOUND_FRAME_BYTES));
        let mut request =
            self.url.as_str().into_client_request().map_err(SignalError::websocket)?;
        // A value a header cannot carry goes as the first frame instead.
        let header = register
            .map(|register| encode_client_message(&ClientMessage::Register(register.clone())))
            .and_then(|text| HeaderValue::from_str(&text).ok());
        if let Some(header) = header {
            request.headers_mut().insert(REGISTER_HEADER, header);
        }
        let (socket, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(SignalError::websocket)?;
        let register_sent = response
            .headers()
            .get(REGISTER_HEADER)
            .is_some_and(|value| value.as_bytes() == REGISTER_HEADER_TAKEN.as_bytes());
        Ok(Opened { socket, register_sent })
    }
}

/// Whether `address` is still one of this host's addresses: binding a UDP socket to it fails
/// with `AddrNotAvailable` once the interface lost it (a handoff), and sends nothing. Any other
/// error answers "yes", the cautious answer for [`SignalClient::rebuild`](super::SignalClient::rebuild).
pub(super) fn is_local_address(address: IpAddr) -> bool {
    match std::net::UdpSocket::bind((address, 0)) {
        Ok(_) => true,
        Err(error) => error.kind() != io::ErrorKind::AddrNotAvailable,
    }
}

/// A socket whose WebSocket handshake is done.
pub(super) struct Opened {
    pub(super) socket: ClientSocket,
    /// Whether the server took the `register` of the upgrade request: it answers with
    /// `registered` (or refuses) without a `register` frame.
    pub(super) register_sent: bool,
}

/// The servers of one deployment: `url` first, then the fallbacks. A
/// connection attempt starts at the one that last worked and moves on to the
/// next when one cannot be reached, so a client whose server died is
/// registered on another within one attempt.
#[derive(Debug)]
pub(super) struct Endpoints {
    all: Vec<Endpoint>,
    /// Index of the endpoint the next attempt starts with.
    preferred: AtomicUsize,
}

impl Endpoints {
    pub(super) fn parse(
        url: &str,
        fallbacks: &[String],
        trust: &TlsTrust,
    ) -> Result<Endpoints, SignalError> {
        let all = std::iter::once(url)
            .chain(fallbacks.iter().map(String::as_str))
            .map(|url| Endpoint::parse(url, trust))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoints { all, preferred: AtomicUsize::new(0) })
    }

    /// The URL the next attempt starts with.
    pub(super) fn preferred_url(&self) -> &str {
        &self.all[self.preferred_index()].url
    }

    fn preferred_index(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.all.len()
    }

    /// Opens a socket to the preferred endpoint, or else to the next ones in
    /// turn, by `deadline`. Each endpoint gets an equal share of the time
    /// left, so one that swallows packets cannot use up the others' time;
    /// one that refuses at once costs nothing. The one that opened becomes
    /// preferred. Returns its index with the socket, for [`Self::failed`].
    pub(super) async fn open(
        &self,
        deadline: tokio::time::Instant,
        bound: Duration,
        register: Option<&Register>,
    ) -> Result<(usize, Opened), SignalError> {
        let start = self.preferred_index();
        let count = self.all.len();
        let mut last_error = None;
        for step in 0..count {
            let index = (start + step) % count;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / u32::try_from(count - step).unwrap_or(u32::MAX);
            let endpoint = &self.all[index];
            match tokio::time::timeout(share, endpoint.open(register)).await {
                Ok(Ok(opened)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((index, opened));
                }
                Ok(Err(error)) => {
                    debug!(name: "signal.client.endpoint_failed", url = %endpoint.url, kind = error.kind().name(), %error);
                    last_error = Some(error);
                }
                Err(_) => {
                    debug!(name: "signal.client.endpoint_failed", url = %endpoint.url, kind = "timeout");
                    last_error = Some(SignalError::Timeout { what: "connect", after: bound });
                }
            }
        }
        Err(last_error.unwrap_or(SignalError::Timeout { what: "connect", after: bound }))
    }

    /// The endpoint at `index` opened but then refused or dropped the
    /// registration (e.g. it is shutting down): the next attempt starts with
    /// the one after it.
    pub(super) fn failed(&self, index: usize) {
        let next = (index + 1) % self.all.len();
        let _ = self.preferred.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How many servers there are.
    pub(super) fn len(&self) -> usize {
        self.all.len()
    }
}

/// Sends `register`, unless the upgrade request carried it and the server took it
/// (`register_sent`), and waits for `registered` (or the refusal). Any `error` frame here
/// answers the `register`, the only message sent so far.
///
/// Not bounded by itself: the caller applies the connect timeout.
pub(super) async fn register(
    socket: &mut ClientSocket,
    register: Register,
    register_sent: bool,
) -> Result<Registered, SignalError> {
    let generation = register.generation.unwrap_or(0);
    if !register_sent {
        let text = encode_client_message(&ClientMessage::Register(register));
        socket.send(Message::text(text)).await.map_err(SignalError::websocket)?;
    }
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::{is_local_address, route_source};

    #[test]
    fn an_address_of_this_host_is_local_and_one_it_lacks_is_not() {
        assert!(is_local_address(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // TEST-NET-3 (RFC 5737) is assigned to no interface here.
        assert!(!is_local_address(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77))));
    }

    #[test]
    fn the_route_to_a_server_leaves_from_the_address_the_kernel_picks() {
        // Loopback is reached from loopback, whichever port.
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(route_source((loopback, 9).into()), Some(loopback));
        assert_eq!(
            route_source((IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 443).into()),
            Some(loopback)
        );
    }
}
