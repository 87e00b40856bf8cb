//! Reliable, ordered messaging to each peer across ICE restarts and full
//! reconnects: a binary framing on the data channel ([`frame`]) and a
//! sans-IO stream state machine per peer ([`stream`]), and the sealed detour through signaling
//! while the data path is being replaced ([`detour`]).

pub mod detour;
pub mod frame;
pub mod stream;

pub use frame::{Frame, FrameError};
pub use stream::{
    BufferFull, HelloTurn, MessageId, ReliableStream, StreamConfig, StreamError, StreamStats,
};
