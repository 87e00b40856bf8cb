//! The browser peer (the repository's `web/` folder), embedded in the binary
//! and served by `tether serve` next to `/ws`, plus the `--demo` token route.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use tether_relay::ExtraRoutes;
use tether_relay::auth::{HmacSecret, TokenClaims};
use tether_signal::protocol::PeerId;

/// Where `--demo` hands out tokens: `GET /demo/token?peer=ID`.
pub(crate) const DEMO_TOKEN_PATH: &str = "/demo/token";

/// Lifetime of a demo token. The page asks for a fresh one on every
/// signaling attempt, so a short one is enough.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// One file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            path: concat!("/", $name),
            content_type: $content_type,
            body: include_str!(concat!("../../../../web/", $name)),
        }
    };
}

/// Every file the page loads (`web/*.html`, `*.css`, `*.js`; a test checks
/// this list against the folder).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("answerer.js", "text/javascript; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("budget.js", "text/javascript; charset=utf-8"),
    asset!("connection.js", "text/javascript; charset=utf-8"),
    asset!("detour.js", "text/javascript; charset=utf-8"),
    asset!("frame.js", "text/javascript; charset=utf-8"),
    asset!("offerer.js", "text/javascript; charset=utf-8"),
    asset!("peer.js", "text/javascript; charset=utf-8"),
    asset!("reliable.js", "text/javascript; charset=utf-8"),
    asset!("sdp.js", "text/javascript; charset=utf-8"),
    asset!("session.js", "text/javascript; charset=utf-8"),
    asset!("signaling.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
];

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Development edits show up on reload; nothing here is secret or large.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn page_asset(path: &str) -> Option<Response<Bytes>> {
    let path = if path == "/" { "/index.html" } else { path };
    let asset = ASSETS.iter().find(|asset| asset.path == path)?;
    Some(respond(StatusCode::OK, asset.content_type, Bytes::from_static(asset.body.as_bytes())))
}

/// Decodes `%XX` escapes and `+` (a query value); `None` when malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value)).flatten()
    })
}

fn demo_token(secret: &HmacSecret, query: Option<&str>) -> Response<Bytes> {
    let plain = "text/plain; charset=utf-8";
    let Some(peer) = query_value(query, "peer") else {
        return respond(StatusCode::BAD_REQUEST, plain, Bytes::from_static(b"missing ?peer=ID\n"));
    };
    match PeerId::new(peer) {
        Ok(peer) => {
            let mut response = respond(
                StatusCode::OK,
                plain,
                // Marked demo: refused by servers not in demo mode, even
                // under the same secret.
                Bytes::from(
                    TokenClaims::new(peer, SystemTime::now() + DEMO_TOKEN_TTL).demo().mint(secret),
                ),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => respond(StatusCode::BAD_REQUEST, plain, Bytes::from(format!("{error}\n"))),
    }
}

/// The routes `tether serve` adds: the embedded page (unless `page` is off,
/// when `--static-dir` serves a folder instead), and with a demo secret the
/// token route that mints a token for any peer id (local demos only).
pub(crate) fn routes(page: bool, demo: Option<HmacSecret>) -> Option<ExtraRoutes> {
    if !page && demo.is_none() {
        return None;
    }
    Some(ExtraRoutes::new(move |parts| handle(page, demo.as_ref(), parts)))
}

fn handle(
    page: bool,
    demo: Option<&HmacSecret>,
    parts: &http::request::Parts,
) -> Option<Response<Bytes>> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return None;
    }
    let path = parts.uri.path();
    if path == DEMO_TOKEN_PATH {
        return demo.map(|secret| demo_token(secret, parts.uri.query()));
    }
    if page { page_asset(path) } else { None }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tether::reliable::{Frame, FrameError};

    use super::*;

    #[test]
    fn every_page_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .filter(|name| [".html", ".css", ".js"].iter().any(|ext| name.ends_with(ext)))
                    .map(|name| format!("/{name}"))
                    .collect()
            })
            .unwrap_or_default();
        let embedded: BTreeSet<String> = ASSETS.iter().map(|asset| asset.path.to_owned()).collect();
        assert_eq!(embedded, on_disk, "ASSETS must list exactly the files of web/");
        assert!(embedded.contains("/index.html"));
    }

    fn get(page: bool, demo: Option<&HmacSecret>, uri: &str) -> Option<Response<Bytes>> {
        let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
        handle(page, demo, &parts)
    }

    #[test]
    fn page_routes_answer_known_files_only() {
        let content_type = |uri| {
            get(true, None, uri).map(|r| (r.status(), r.headers()[header::CONTENT_TYPE].clone()))
        };
        assert_eq!(
            content_type("/"),
            Some((StatusCode::OK, HeaderValue::from_static("text/html; charset=utf-8")))
        );
        assert_eq!(
            content_type("/app.js"),
            Some((StatusCode::OK, HeaderValue::from_static("text/javascript; charset=utf-8")))
        );
        assert!(get(true, None, "/nope.js").is_none());
        assert!(get(true, None, "/tests/vectors/frames.json").is_none());
        // Without --demo there is no token route; a POST is not ours.
        assert!(get(true, None, "/demo/token?peer=web").is_none());
        let (parts, ()) = http::Request::post("/").body(()).unwrap().into_parts();
        assert!(handle(true, None, &parts).is_none());
        assert!(routes(false, None).is_none());
    }

    #[test]
    fn demo_tokens_are_minted_for_valid_peer_ids_only() {
        let secret = HmacSecret::new(b"0123456789abcdef0123".to_vec()).unwrap();
        assert!(get(false, Some(&secret), "/").is_none(), "page off: only the token route");
        let response = get(false, Some(&secret), "/demo/token?peer=w%40b").unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let token = String::from_utf8(response.into_body().to_vec()).unwrap();
        let production = tether_relay::auth::Authenticator::with_secret(secret.clone());
        assert!(
            production.verify(&PeerId::new("w@b").unwrap(), &token, SystemTime::now()).is_err(),
            "a demo token is not a production token"
        );
        let auth = production.accept_demo_tokens();
        assert!(
            auth.verify(&PeerId::new("w@b").unwrap(), &token, std::time::SystemTime::now()).is_ok(),
            "the token proves the peer id"
        );
        assert!(
            auth.verify(&PeerId::new("other").unwrap(), &token, std::time::SystemTime::now())
                .is_err()
        );
        for bad in
            ["/demo/token", "/demo/token?peer=", "/demo/token?peer=a%20b", "/demo/token?peer=%zz"]
        {
            let status = get(false, Some(&secret), bad).map(|r| r.status());
            assert_eq!(status, Some(StatusCode::BAD_REQUEST), "{bad}");
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len() / 2)
            .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect()
    }

    fn u64_field(frame: &serde_json::Value, name: &str) -> u64 {
        frame[name]
            .as_str()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("vector field {name} must be a decimal string: {frame}"))
    }

    /// The vectors web/tests/unit/frame.test.js checks the page's encoder
    /// against are what the Rust encoder produces, byte for byte.
    #[test]
    fn browser_frame_vectors_match_the_rust_encoder() {
        let text = include_str!("../../../../web/tests/vectors/frames.json");
        let vectors: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let frames = vectors["frames"].as_array().cloned().unwrap_or_default();
        assert!(frames.len() >= 6, "the vector file has frames");
        for vector in frames {
            let json = &vector["frame"];
            let frame = match json["type"].as_str() {
                Some("hello") => Frame::Hello {
                    session: u64_field(json, "session"),
                    resume_from: u64_field(json, "resume_from"),
                    peer_session: u64_field(json, "peer_session"),
                    delivered: u64_field(json, "delivered"),
                },
                Some("data") => Frame::Data {
                    seq: u64_field(json, "seq"),
                    payload: Bytes::from(hex(json["payload"].as_str().unwrap_or_default())),
                },
                Some("ack") => Frame::Ack { delivered: u64_field(json, "delivered") },
                Some("key") => Frame::Key {
                    public_key: hex(json["public_key"].as_str().unwrap_or_default())
                        .try_into()
                        .unwrap_or_else(|key| panic!("a key vector is 65 bytes: {key:?}")),
                },
                other => panic!("unknown vector type {other:?}"),
            };
            let want = hex(vector["hex"].as_str().unwrap_or_default());
            assert_eq!(frame.encode().to_vec(), want, "{json}");
            assert_eq!(Frame::decode(Bytes::from(want)), Ok(frame));
        }
        let bad = vectors["bad"].as_array().cloned().unwrap_or_default();
        assert!(bad.len() >= 10);
        for vector in bad {
            let bytes = Bytes::from(hex(vector["hex"].as_str().unwrap_or_default()));
            let code = match Frame::decode(bytes) {
                Err(FrameError::Empty) => "empty",
                Err(FrameError::UnknownType(_)) => "unknown_type",
                Err(FrameError::Truncated { .. }) => "truncated",
                Err(FrameError::Version(_)) => "version",
                Err(FrameError::Trailing { .. }) => "trailing",
                other => panic!("{vector} decoded to {other:?}"),
            };
            assert_eq!(Some(code), vector["error"].as_str(), "{vector}");
        }
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(query_value(Some("a=1&peer=x%3Ay"), "peer").as_deref(), Some("x:y"));
        assert_eq!(query_value(Some("peer"), "peer").as_deref(), Some(""));
        assert_eq!(query_value(None, "peer"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("✓"));
        assert_eq!(percent_decode("%ff"), None);
    }
}
