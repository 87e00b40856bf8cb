//! The UniFFI bindings generator, built from the same `uniffi` as the
//! library so that the metadata it reads always matches
//! (`cargo run -p tether-ffi --features bindgen-cli --bin uniffi-bindgen`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
