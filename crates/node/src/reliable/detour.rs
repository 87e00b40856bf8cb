//! The detour: reliable-messaging frames sealed end to end and carried through the signaling
//! server while the peers' data path is being replaced (docs/MESSAGING.md rule 10).
//!
//! Each side sends a fresh ephemeral P-256 key share on every data channel ([`Frame::Key`]);
//! from the two shares both derive one AES-256-GCM key per direction. A sealed batch is
//!
//! | bytes | field |
//! |---|---|
//! | 8 | `sender_session` (the sender's stream session) |
//! | 8 | `receiver_session` (the receiver's stream session) |
//! | 8 | `counter` (per sending key, from 0) |
//! | n + 16 | AES-256-GCM of `flags: u8` then the frames, each `len: u32` then the frame, with its tag |
//!
//! `flags` bit 0 (`path_down`): the sender's own channel cannot carry frames now; the other
//! bits are 0 and ignored.
//!
//! The nonce is four zero bytes then `counter`; the 24-byte header is the associated data. The
//! key of the direction from `S` to `R` is HKDF-SHA256 with salt `tether-detour-v1`, the ECDH
//! shared secret (the x coordinate) as input, and `S`'s public key then `R`'s as info.
//!
//! Everything here is pure except [`KeyShare::generate`], which draws the ephemeral key.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::SystemRandom;

use super::frame::{Frame, FrameError, PUBLIC_KEY_LEN};

/// HKDF salt, and the version of this scheme.
const SALT: &[u8] = b"tether-detour-v1";
/// `sender_session`, `receiver_session`, `counter`.
pub const HEADER_LEN: usize = 24;
/// The AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed batch adds to its frames, besides each frame's 4-byte length.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;
/// `flags` bit 0.
const PATH_DOWN: u8 = 1;
/// Bytes each frame adds in a batch.
pub const FRAME_OVERHEAD: usize = 4;

/// A detour batch that could not be opened or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DetourError {
    /// The system random generator or the key agreement failed, or the peer's key share is not
    /// a point on P-256.
    #[error("key agreement failed")]
    Agreement,
    /// Shorter than a header, the flags and a tag.
    #[error("sealed batch too short ({0} bytes)")]
    Truncated(usize),
    /// No key this side holds opens it (a key not agreed yet, or tampered bytes).
    #[error("sealed batch does not open")]
    Unsealed,
    /// A frame length runs past the batch.
    #[error("batch frame length {len} runs past the batch")]
    Framing {
        /// The length read.
        len: usize,
    },
    /// A frame in the batch does not decode.
    #[error("batch frame: {0}")]
    Frame(#[from] FrameError),
}

/// This side's key share for one channel: the public half goes out in [`Frame::Key`]; the
/// private half is used once, when the peer's share arrives.
pub struct KeyShare {
    private: EphemeralPrivateKey,
    public: [u8; PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare").finish_non_exhaustive()
    }
}

impl KeyShare {
    /// A fresh ephemeral key share.
    ///
    /// # Errors
    ///
    /// [`DetourError::Agreement`] when the system random generator fails.
    pub fn generate() -> Result<Self, DetourError> {
        let private = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new())
            .map_err(|_| DetourError::Agreement)?;
        let computed = private.compute_public_key().map_err(|_| DetourError::Agreement)?;
        let public = <[u8; PUBLIC_KEY_LEN]>::try_from(computed.as_ref())
            .map_err(|_| DetourError::Agreement)?;
        Ok(Self { private, public })
    }

    /// The public key, for [`Frame::Key`].
    #[must_use]
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// Agrees keys with the peer's share.
    ///
    /// # Errors
    ///
    /// [`DetourError::Agreement`] when `peer` is not a valid P-256 point.
    pub fn agree(self, peer: &[u8; PUBLIC_KEY_LEN]) -> Result<DetourKeys, DetourError> {
        let own = self.public;
        let peer_key = UnparsedPublicKey::new(&ECDH_P256, peer);
        agree_ephemeral(self.private, &peer_key, |shared| DetourKeys::derive(shared, &own, peer))
            .map_err(|_| DetourError::Agreement)?
    }
}

/// The two keys of one agreement: sealing towards the peer, opening from it.
pub struct DetourKeys {
    seal: LessSafeKey,
    open: LessSafeKey,
    /// The next nonce counter of `seal` (each key seals at most 2^64 batches; a channel's
    /// keys are replaced long before).
    counter: u64,
    /// The peer's public key, which names this agreement.
    peer_public: [u8; PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for DetourKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetourKeys").field("counter", &self.counter).finish_non_exhaustive()
    }
}

fn direction_key(
    shared: &[u8],
    from: &[u8; PUBLIC_KEY_LEN],
    to: &[u8; PUBLIC_KEY_LEN],
) -> Result<LessSafeKey, DetourError> {
    let prk = Salt::new(HKDF_SHA256, SALT).extract(shared);
    let info = [from.as_slice(), to.as_slice()];
    let okm = prk.expand(&info, &AES_256_GCM).map_err(|_| DetourError::Agreement)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

impl DetourKeys {
    /// The keys for the ECDH output `shared` between `own` and `peer` public keys (public for
    /// the shared test vectors; [`KeyShare::agree`] is the way in).
    ///
    /// # Errors
    ///
    /// [`DetourError::Agreement`] only if HKDF refuses the output length, which it does not
    /// for 32 bytes.
    pub fn derive(
        shared: &[u8],
        own: &[u8; PUBLIC_KEY_LEN],
        peer: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<Self, DetourError> {
        Ok(Self {
            seal: direction_key(shared, own, peer)?,
            open: direction_key(shared, peer, own)?,
            counter: 0,
            peer_public: *peer,
        })
    }

    /// The peer's public key this agreement used.
    #[must_use]
    pub fn peer_public(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.peer_public
    }

    /// Seals `frames` (already encoded) from `sender_session` to `receiver_session`; `path_down`
    /// says the sender's own channel cannot carry them.
    pub fn seal(
        &mut self,
        sender_session: u64,
        receiver_session: u64,
        path_down: bool,
        frames: &[Bytes],
    ) -> Bytes {
        let counter = self.counter;
        self.counter = self.counter.wrapping_add(1);
        let mut header = [0; HEADER_LEN];
        header[..8].copy_from_slice(&sender_session.to_be_bytes());
        header[8..16].copy_from_slice(&receiver_session.to_be_bytes());
        header[16..].copy_from_slice(&counter.to_be_bytes());
        let mut body: Vec<u8> =
            Vec::with_capacity(batch_len(frames.iter().map(Bytes::len)) - HEADER_LEN);
        body.put_u8(if path_down { PATH_DOWN } else { 0 });
        for frame in frames {
            // Invariant: a batch is bounded by the signaling frame size, far below 4 GiB.
            body.put_u32(u32::try_from(frame.len()).unwrap_or(u32::MAX));
            body.put_slice(frame);
        }
        // Sealing fails only for a body over AES-GCM's limit (64 GiB): ours are kilobytes.
        let _ = self.seal.seal_in_place_append_tag(nonce(counter), Aad::from(header), &mut body);
        let mut sealed = BytesMut::with_capacity(HEADER_LEN + body.len());
        sealed.put_slice(&header);
        sealed.put_slice(&body);
        sealed.freeze()
    }

    /// Opens a batch this side's peer sealed.
    ///
    /// # Errors
    ///
    /// [`DetourError::Truncated`] or [`DetourError::Unsealed`]; a batch that opens but holds
    /// a bad frame is [`DetourError::Framing`] or [`DetourError::Frame`].
    pub fn open(&self, sealed: &[u8]) -> Result<OpenedBatch, DetourError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(DetourError::Truncated(sealed.len()));
        }
        let (header, body) = sealed.split_at(HEADER_LEN);
        let mut fields = header;
        let sender_session = fields.get_u64();
        let receiver_session = fields.get_u64();
        let counter = fields.get_u64();
        let mut body = body.to_vec();
        let plain = self
            .open
            .open_in_place(nonce(counter), Aad::from(header), &mut body)
            .map_err(|_| DetourError::Unsealed)?;
        let mut plain = Bytes::copy_from_slice(plain);
        // A batch without its flags byte is malformed.
        if !plain.has_remaining() {
            return Err(DetourError::Framing { len: 0 });
        }
        let path_down = plain.get_u8() & PATH_DOWN != 0;
        let mut frames = Vec::new();
        while plain.has_remaining() {
            if plain.remaining() < 4 {
                return Err(DetourError::Framing { len: plain.remaining() });
            }
            let len = plain.get_u32() as usize;
            if len > plain.remaining() {
                return Err(DetourError::Framing { len });
            }
            frames.push(Frame::decode(plain.split_to(len))?);
        }
        Ok(OpenedBatch { sender_session, receiver_session, path_down, frames })
    }
}

/// The size of a sealed batch of frames of these encoded sizes.
pub fn batch_len(frames: impl IntoIterator<Item = usize>) -> usize {
    SEAL_OVERHEAD + frames.into_iter().map(|len| FRAME_OVERHEAD + len).sum::<usize>()
}

/// What [`DetourKeys::open`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedBatch {
    /// The sender's stream session.
    pub sender_session: u64,
    /// The receiver's stream session, as the sender knows it.
    pub receiver_session: u64,
    /// The sender's own channel could not carry frames when it sealed this.
    pub path_down: bool,
    /// The frames, in the order sent.
    pub frames: Vec<Frame>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pair() -> (DetourKeys, DetourKeys) {
        let alice = KeyShare::generate().unwrap();
        let bob = KeyShare::generate().unwrap();
        let (alice_public, bob_public) = (alice.public_key(), bob.public_key());
        (alice.agree(&bob_public).unwrap(), bob.agree(&alice_public).unwrap())
    }

    #[test]
    fn what_one_side_seals_the_other_opens_and_nobody_else() {
        let (mut alice, mut bob) = pair();
        let frames = [
            Frame::Data { seq: 7, payload: Bytes::from_static(b"hi") }.encode(),
            Frame::Ack { delivered: 3 }.encode(),
            Frame::Data { seq: 8, payload: Bytes::new() }.encode(),
        ];
        let sealed = alice.seal(11, 22, true, &frames);
        assert_eq!(sealed.len(), batch_len(frames.iter().map(Bytes::len)));
        let opened = bob.open(&sealed).unwrap();
        assert_eq!((opened.sender_session, opened.receiver_session), (11, 22));
        assert!(opened.path_down);
        let decoded: Vec<Bytes> = opened.frames.iter().map(Frame::encode).collect();
        assert_eq!(decoded, frames);
        // Each direction has its own key: alice cannot open her own batch, nor bob's as his.
        assert_eq!(alice.open(&sealed), Err(DetourError::Unsealed));
        let back = bob.seal(22, 11, false, &frames[..1]);
        let back = alice.open(&back).unwrap();
        assert_eq!((back.frames.len(), back.path_down), (1, false));
        // Another agreement's keys open nothing of this one.
        let (_, stranger) = pair();
        assert_eq!(stranger.open(&sealed), Err(DetourError::Unsealed));
        // A new counter each time: the same frames seal differently.
        assert_ne!(alice.seal(11, 22, true, &frames), sealed);
    }

    #[test]
    fn tampered_or_short_batches_are_refused_without_panicking() {
        let (mut alice, bob) = pair();
        let sealed = alice.seal(1, 2, false, &[Frame::Ack { delivered: 1 }.encode()]).to_vec();
        for at in [0, 8, 16, HEADER_LEN, HEADER_LEN + 1, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert_eq!(bob.open(&tampered), Err(DetourError::Unsealed), "byte {at}");
        }
        for len in 0..SEAL_OVERHEAD {
            assert_eq!(bob.open(&sealed[..len]), Err(DetourError::Truncated(len)));
        }
        // Sealed by the right key but badly framed inside.
        let bad = alice.seal(1, 2, false, &[Bytes::from_static(&[9])]);
        assert!(matches!(bob.open(&bad), Err(DetourError::Frame(FrameError::UnknownType(9)))));
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn public(text: &str) -> [u8; PUBLIC_KEY_LEN] {
        unhex(text).try_into().unwrap()
    }

    /// web/tests/vectors/detour.json pins the derivation and the sealing byte for byte, here and
    /// in the page (web/detour.js); ECDH itself is standard and not pinned.
    #[test]
    fn the_shared_vectors_seal_and_open_byte_for_byte() {
        let text = include_str!("../../../../web/tests/vectors/detour.json");
        let vectors: serde_json::Value = serde_json::from_str(text).unwrap();
        let shared = unhex(vectors["shared_secret"].as_str().unwrap());
        let (a, b) = (
            public(vectors["public_a"].as_str().unwrap()),
            public(vectors["public_b"].as_str().unwrap()),
        );
        let mut keys_a = DetourKeys::derive(&shared, &a, &b).unwrap();
        let mut keys_b = DetourKeys::derive(&shared, &b, &a).unwrap();
        let batches = vectors["batches"].as_array().unwrap();
        assert!(batches.len() >= 3);
        for batch in batches {
            let number = |field: &str| batch[field].as_str().unwrap().parse::<u64>().unwrap();
            let (sealer, opener) = match batch["from"].as_str() {
                Some("a") => (&mut keys_a, &keys_b),
                _ => (&mut keys_b, &keys_a),
            };
            assert_eq!(sealer.counter, number("counter"), "{batch}");
            let frames: Vec<Bytes> = batch["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|frame| Bytes::from(unhex(frame.as_str().unwrap())))
                .collect();
            let path_down = batch["path_down"].as_bool().unwrap();
            let sealed = sealer.seal(
                number("sender_session"),
                number("receiver_session"),
                path_down,
                &frames,
            );
            assert_eq!(sealed.to_vec(), unhex(batch["sealed"].as_str().unwrap()), "{batch}");
            let opened = opener.open(&sealed).unwrap();
            assert_eq!(opened.path_down, path_down);
            let reencoded: Vec<Bytes> = opened.frames.iter().map(Frame::encode).collect();
            assert_eq!(reencoded, frames);
        }
        for bad in vectors["bad"].as_array().unwrap() {
            let sealed = unhex(bad["sealed"].as_str().unwrap());
            assert!(keys_b.open(&sealed).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_share_that_is_not_a_curve_point_is_refused() {
        let share = KeyShare::generate().unwrap();
        assert!(matches!(share.agree(&[4; PUBLIC_KEY_LEN]), Err(DetourError::Agreement)));
    }
}
