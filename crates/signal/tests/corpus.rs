//! Decodes every file of the fuzz seed corpus (fuzz/corpus/decode_frame):
//! nothing panics, everything that decodes survives a round trip, and files
//! named `<client|server>-ok-*` / `<client|server>-err-<code>-*` decode to
//! exactly that outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tether_signal::protocol::{
    ErrorCode, decode_client_frame, decode_client_message, decode_server_frame,
    decode_server_message, encode_client_message, encode_server_message,
};

fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode_frame");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The outcome a file's name promises: `Ok(())` or `Err(code)`.
fn expectation(name: &str) -> Option<(&str, Result<(), String>)> {
    let mut parts = name.splitn(4, '-');
    let direction = parts.next()?;
    match parts.next()? {
        "ok" => Some((direction, Ok(()))),
        "err" => Some((direction, Err(parts.next()?.to_owned()))),
        _ => None,
    }
}

fn code_name(code: ErrorCode) -> String {
    code.as_str().to_owned()
}

#[test]
fn every_corpus_file_decodes_sensibly() {
    let files = corpus_files();
    assert!(files.len() >= 30, "the seed corpus went missing: {} files", files.len());
    let mut checked = 0;
    for (name, bytes) in &files {
        let client = decode_client_frame(bytes);
        let server = decode_server_frame(bytes);
        if let Ok(message) = &client {
            assert_eq!(
                decode_client_message(&encode_client_message(message)).as_ref(),
                Ok(message),
                "{name}"
            );
        }
        if let Ok(message) = &server {
            assert_eq!(
                decode_server_message(&encode_server_message(message)).as_ref(),
                Ok(message),
                "{name}"
            );
        }
        let Some((direction, expected)) = expectation(name) else { continue };
        let outcome = match direction {
            "client" => client.map(|_| ()).map_err(|error| code_name(error.code)),
            "server" => server.map(|_| ()).map_err(|error| code_name(error.code)),
            other => panic!("{name}: unknown direction {other}"),
        };
        assert_eq!(outcome, expected, "{name}");
        checked += 1;
    }
    // Counted independently of `expectation`: a file named for a direction
    // promises an outcome, so one whose name does not parse (and would be
    // skipped silently above) fails here.
    let promised =
        files.iter().filter(|(name, _)| name.starts_with("client-") || name.starts_with("server-"));
    assert_eq!(
        checked,
        promised.count(),
        "a `client-*`/`server-*` file does not name its outcome as \
         `<client|server>-ok-*` or `<client|server>-err-<code>-*`"
    );
}
