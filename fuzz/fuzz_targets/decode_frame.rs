//! Feeds arbitrary bytes to both frame decoders. Neither may panic, and
//! whatever decodes must survive an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_signal::protocol::{
    decode_client_frame, decode_client_message, decode_server_frame, decode_server_message,
    encode_client_message, encode_server_message,
};

fuzz_target!(|frame: &[u8]| {
    if let Ok(message) = decode_client_frame(frame) {
        let again = decode_client_message(&encode_client_message(&message));
        assert_eq!(again.as_ref(), Ok(&message));
    }
    if let Ok(message) = decode_server_frame(frame) {
        let again = decode_server_message(&encode_server_message(&message));
        assert_eq!(again.as_ref(), Ok(&message));
    }
});
