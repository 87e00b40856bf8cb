//! HTTP/1.1 handling: `/ws` (WebSocket upgrade), `/healthz`, `/metrics`,
//! the embedder's extra routes, and an optional static directory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;

use tether_signal::protocol::{REGISTER_HEADER, REGISTER_HEADER_TAKEN, WEBSOCKET_PATH};

use crate::metrics::Refused;

use super::admission::Pending;
use super::{ServerState, session};

/// The connection's place among the unregistered, until a WebSocket upgrade
/// takes it into its session.
type PendingSlot = Arc<Mutex<Option<Pending>>>;

type HttpResponse = Response<Full<Bytes>>;

/// Largest file the static directory serves.
const MAX_STATIC_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Serves one connection (TCP, or TLS over it) until it closes, is
/// upgraded, or shutdown.
pub(super) async fn serve_connection<S>(
    stream: S,
    remote: SocketAddr,
    pending: Pending,
    state: &Arc<ServerState>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let evicted = pending.evicted().clone();
    let slot: PendingSlot = Arc::new(Mutex::new(Some(pending)));
    let service_state = Arc::clone(state);
    let service_slot = Arc::clone(&slot);
    let service = service_fn(move |request| {
        let state = Arc::clone(&service_state);
        let slot = Arc::clone(&service_slot);
        async move { Ok::<_, Infallible>(route(request, remote, &slot, &state).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    // Eviction matters only while the connection is still plain HTTP; once
    // upgraded, the session watches it.
    let evicted_while_http = async {
        evicted.cancelled().await;
        if slot.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = evicted_while_http => {
            debug!(name: "signal.server.http_evicted", %remote);
        }
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(name: "signal.server.http_error", %remote, %error);
            }
        }
        () = state.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(state.limits.close_timeout, connection).await;
        }
    }
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    text_response(status, "text/plain; charset=utf-8", body)
}

async fn route(
    mut request: Request<Incoming>,
    remote: SocketAddr,
    slot: &PendingSlot,
    state: &Arc<ServerState>,
) -> HttpResponse {
    let path = request.uri().path();
    if path == WEBSOCKET_PATH {
        return upgrade(&mut request, remote, slot, state);
    }
    let is_get = request.method() == Method::GET || request.method() == Method::HEAD;
    match path {
        "/healthz" if is_get => return plain(StatusCode::OK, "ok\n"),
        "/metrics" if is_get => {
            return text_response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics_snapshot().render_prometheus(),
            );
        }
        _ => {}
    }
    let (parts, _body) = request.into_parts();
    if let Some(routes) = &state.extra_routes
        && let Some(response) = routes.handle(&parts)
    {
        return response.map(Full::new);
    }
    if let Some(dir) = &state.static_dir
        && is_get
        && let Some(response) = serve_static(dir, parts.uri.path()).await
    {
        return response;
    }
    plain(StatusCode::NOT_FOUND, "not found\n")
}

fn header_has_token(request: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    request.headers().get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    })
}

/// Answers a WebSocket upgrade request (RFC 6455 section 4.2) and hands the
/// upgraded connection to a session task.
fn upgrade(
    request: &mut Request<Incoming>,
    remote: SocketAddr,
    slot: &PendingSlot,
    state: &Arc<ServerState>,
) -> HttpResponse {
    if request.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "websocket upgrade requires GET\n");
    }
    if let Some(allowed) = &state.allowed_origins
        && let Some(origin) = request.headers().get(header::ORIGIN)
        && !allowed.iter().any(|allowed| allowed.as_bytes() == origin.as_bytes())
    {
        state.metrics.refused(Refused::Origin);
        debug!(name: "signal.server.refused", %remote, reason = "origin", origin = ?origin);
        return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    if !header_has_token(request, header::UPGRADE, "websocket")
        || !header_has_token(request, header::CONNECTION, "upgrade")
    {
        let mut response = plain(StatusCode::UPGRADE_REQUIRED, "websocket upgrade required\n");
        response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return response;
    }
    if request.headers().get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = plain(StatusCode::UPGRADE_REQUIRED, "websocket version 13 required\n");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing sec-websocket-key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return plain(StatusCode::BAD_REQUEST, "bad sec-websocket-key\n");
    };
    let Some(pending) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return plain(StatusCode::BAD_REQUEST, "one websocket upgrade per connection\n");
    };
    // A `register` in the upgrade request is the session's first message (PROTOCOL.md §2).
    // A value that is not text is ignored, and the client, told nothing, sends its frame.
    let early_register = request
        .headers()
        .get(REGISTER_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let register_taken = early_register.is_some();
    let on_upgrade = hyper::upgrade::on(request);
    let limits = &state.limits;
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.hard_frame_bytes.saturating_mul(2))
        .max_message_size(Some(limits.hard_frame_bytes))
        .max_frame_size(Some(limits.hard_frame_bytes));
    let session_state = Arc::clone(state);
    state.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session::run(socket, remote, pending, early_register, session_state).await;
            }
            Err(error) => debug!(name: "signal.server.upgrade_failed", %remote, %error),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if register_taken {
        headers.insert(REGISTER_HEADER, HeaderValue::from_static(REGISTER_HEADER_TAKEN));
    }
    response
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Serves `request_path` from `dir`. Segments that are empty, start with a
/// dot, or contain a backslash are refused, so nothing outside `dir` (and
/// no hidden file) is reachable by the path alone.
async fn serve_static(dir: &Path, request_path: &str) -> Option<HttpResponse> {
    let mut relative = request_path.trim_start_matches('/').to_owned();
    if relative.is_empty() || relative.ends_with('/') {
        relative.push_str("index.html");
    }
    let safe = relative
        .split('/')
        .all(|segment| !segment.is_empty() && !segment.starts_with('.') && !segment.contains('\\'));
    if !safe {
        return None;
    }
    let path = dir.join(&relative);
    let metadata = tokio::fs::metadata(&path).await.ok()?;
    if !metadata.is_file() || metadata.len() > MAX_STATIC_FILE_BYTES {
        return None;
    }
    let body = tokio::fs::read(&path).await.ok()?;
    Some(text_response(StatusCode::OK, content_type(&path), body))
}
