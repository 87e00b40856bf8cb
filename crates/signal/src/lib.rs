//! tether signaling: wire protocol, WebSocket client and relay server
#![forbid(unsafe_code)]
