//! The UniFFI bindings generator, built from the same `uniffi` as the
//! library so that the metadata it reads always matches
//! (`cargo run -p tether-ffi-bindgen -- generate --library ...`; used by
//! `crates/ffi/generate.sh` and by maturin when it builds the Python wheel).

fn main() {
    uniffi::uniffi_bindgen_main()
}
