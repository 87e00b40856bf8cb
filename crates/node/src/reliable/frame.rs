//! The wire format of reliable messaging on a data channel (docs/MESSAGING.md).
//!
//! Every data-channel message is one binary frame; integers are big-endian:
//!
//! | type | layout after the type byte | meaning |
//! |---|---|---|
//! | `1` Hello | `version: u8`, `session: u64`, `resume_from: u64`, `peer_session: u64`, `delivered: u64` | first frame on every new channel, each way |
//! | `2` Data  | `seq: u64`, `payload: bytes` | one application message |
//! | `3` Ack   | `delivered: u64` | every message up to `delivered` was delivered |
//! | `4` Key   | `public_key: [u8; 65]` | this channel's key share for the detour (rule 10) |

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The messaging protocol version carried in Hello.
pub const VERSION: u8 = 1;

const HELLO: u8 = 1;
const DATA: u8 = 2;
const ACK: u8 = 3;
const KEY: u8 = 4;
/// An uncompressed P-256 public key (`0x04 || x || y`).
pub const PUBLIC_KEY_LEN: usize = 65;
const HELLO_LEN: usize = 2 + 4 * 8;

/// One frame on a data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a channel: who I am, and how much of your stream I have.
    Hello {
        /// The sender's stream session (random per node instance).
        session: u64,
        /// The sequence number the sender's stream resumes at (its first
        /// unacknowledged message); a receiver new to `session` starts there.
        resume_from: u64,
        /// The receiver's session as the sender last saw it (0: none).
        peer_session: u64,
        /// The sender delivered every message of `peer_session` up to here.
        delivered: u64,
    },
    /// One application message.
    Data {
        /// Its sequence number in the sender's session, from 1.
        seq: u64,
        /// The message.
        payload: Bytes,
    },
    /// Cumulative acknowledgement.
    Ack {
        /// Every message up to here was delivered.
        delivered: u64,
    },
    /// The sender's key share for sealing frames on the detour through signaling
    /// (MESSAGING.md rule 10): an ephemeral P-256 public key, fresh per channel.
    Key {
        /// Uncompressed SEC1 encoding.
        public_key: [u8; PUBLIC_KEY_LEN],
    },
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Zero bytes.
    #[error("empty frame")]
    Empty,
    /// The type byte is not one we know.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Too short for its type.
    #[error("truncated {kind} frame ({len} bytes)")]
    Truncated {
        /// The frame type.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// Hello from a protocol version we do not speak.
    #[error("unsupported messaging version {0}")]
    Version(u8),
    /// Bytes after a fixed-size frame.
    #[error("{kind} frame has {extra} trailing bytes")]
    Trailing {
        /// The frame type.
        kind: &'static str,
        /// How many.
        extra: usize,
    },
}

impl Frame {
    /// Encodes the frame.
    pub fn encode(&self) -> Bytes {
        match self {
            Frame::Hello { session, resume_from, peer_session, delivered } => {
                let mut buf = BytesMut::with_capacity(HELLO_LEN);
                buf.put_u8(HELLO);
                buf.put_u8(VERSION);
                buf.put_u64(*session);
                buf.put_u64(*resume_from);
                buf.put_u64(*peer_session);
                buf.put_u64(*delivered);
                buf.freeze()
            }
            Frame::Data { seq, payload } => {
                let mut buf = BytesMut::with_capacity(9 + payload.len());
                buf.put_u8(DATA);
                buf.put_u64(*seq);
                buf.put_slice(payload);
                buf.freeze()
            }
            Frame::Ack { delivered } => {
                let mut buf = BytesMut::with_capacity(9);
                buf.put_u8(ACK);
                buf.put_u64(*delivered);
                buf.freeze()
            }
            Frame::Key { public_key } => {
                let mut buf = BytesMut::with_capacity(1 + PUBLIC_KEY_LEN);
                buf.put_u8(KEY);
                buf.put_slice(public_key);
                buf.freeze()
            }
        }
    }

    /// Decodes one frame; never panics.
    ///
    /// # Errors
    ///
    /// [`FrameError`] naming what is wrong.
    pub fn decode(mut bytes: Bytes) -> Result<Frame, FrameError> {
        let len = bytes.len();
        if bytes.is_empty() {
            return Err(FrameError::Empty);
        }
        let kind = bytes.get_u8();
        let need = |kind: &'static str, n: usize, bytes: &Bytes| {
            if bytes.remaining() < n { Err(FrameError::Truncated { kind, len }) } else { Ok(()) }
        };
        let exact = |kind: &'static str, bytes: &Bytes| {
            if bytes.has_remaining() {
                Err(FrameError::Trailing { kind, extra: bytes.remaining() })
            } else {
                Ok(())
            }
        };
        match kind {
            HELLO => {
                need("hello", HELLO_LEN - 1, &bytes)?;
                let version = bytes.get_u8();
                if version != VERSION {
                    return Err(FrameError::Version(version));
                }
                let frame = Frame::Hello {
                    session: bytes.get_u64(),
                    resume_from: bytes.get_u64(),
                    peer_session: bytes.get_u64(),
                    delivered: bytes.get_u64(),
                };
                exact("hello", &bytes)?;
                Ok(frame)
            }
            DATA => {
                need("data", 8, &bytes)?;
                let seq = bytes.get_u64();
                Ok(Frame::Data { seq, payload: bytes })
            }
            ACK => {
                need("ack", 8, &bytes)?;
                let frame = Frame::Ack { delivered: bytes.get_u64() };
                exact("ack", &bytes)?;
                Ok(frame)
            }
            KEY => {
                need("key", PUBLIC_KEY_LEN, &bytes)?;
                let mut public_key = [0; PUBLIC_KEY_LEN];
                bytes.copy_to_slice(&mut public_key);
                exact("key", &bytes)?;
                Ok(Frame::Key { public_key })
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for frame in [
            Frame::Hello { session: 7, resume_from: 3, peer_session: u64::MAX, delivered: 42 },
            Frame::Data { seq: 1, payload: Bytes::from_static(b"hello") },
            Frame::Data { seq: u64::MAX, payload: Bytes::new() },
            Frame::Ack { delivered: 0 },
            Frame::Key { public_key: [4; PUBLIC_KEY_LEN] },
        ] {
            assert_eq!(Frame::decode(frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn bad_frames_get_errors_not_panics() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"", FrameError::Empty),
            (&[9, 0, 0], FrameError::UnknownType(9)),
            (&[2, 0, 0, 0], FrameError::Truncated { kind: "data", len: 4 }),
            (&[3, 0, 0, 0, 0, 0, 0, 0, 1, 5], FrameError::Trailing { kind: "ack", extra: 1 }),
            (&[1, 2], FrameError::Truncated { kind: "hello", len: 2 }),
            (&[4; PUBLIC_KEY_LEN], FrameError::Truncated { kind: "key", len: PUBLIC_KEY_LEN }),
            (&[4; PUBLIC_KEY_LEN + 2], FrameError::Trailing { kind: "key", extra: 1 }),
        ];
        for (bytes, want) in cases {
            assert_eq!(Frame::decode(Bytes::copy_from_slice(bytes)).as_ref(), Err(want));
        }
        let mut hello = Frame::Hello { session: 1, resume_from: 1, peer_session: 0, delivered: 0 }
            .encode()
            .to_vec();
        hello[1] = 9;
        assert_eq!(Frame::decode(hello.into()), Err(FrameError::Version(9)));
    }
}
