//! Feeds arbitrary text as a token to the relay's token check, with a
//! secret and a token file configured, demo tokens refused. It may never
//! panic; and a token minted for some claims must verify exactly for the
//! peer it names.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use tether_relay::auth::{Authenticator, HmacSecret, TokenClaims};
use tether_signal::protocol::PeerId;

fn secret() -> HmacSecret {
    HmacSecret::new(b"fuzzing-secret-0123456789abcdef".to_vec()).expect("long enough")
}

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::with_secret(secret())
            .add_token_file_text("fuzz", "alice s3cret\nbob v1.a.b\n")
            .expect("valid token file")
    })
}

fuzz_target!(|input: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let alice = PeerId::new("alice").expect("valid peer id");
    let token = String::from_utf8_lossy(input);
    let _ = authenticator().verify(&alice, &token, now);
    // Bytes that make a peer id: the minted token proves it, and only it.
    if let Ok(text) = std::str::from_utf8(input)
        && let Ok(peer) = PeerId::new(text)
    {
        let minted = TokenClaims::new(peer.clone(), now + Duration::from_secs(60)).mint(&secret());
        assert!(authenticator().verify(&peer, &minted, now).is_ok());
        if peer != alice {
            assert!(authenticator().verify(&alice, &minted, now).is_err());
        }
        let expired = authenticator().verify(&peer, &minted, now + Duration::from_secs(60));
        assert!(expired.is_err());
    }
});
