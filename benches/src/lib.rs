//! Benches and end-to-end harnesses. The criterion benches live in `benches/benches/`.
#![forbid(unsafe_code)]
