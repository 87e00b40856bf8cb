//! tether WebRTC peers on webrtc-rs: data channels, ICE restart
#![forbid(unsafe_code)]
