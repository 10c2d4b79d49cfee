//! Fuzz targets for ringwire's stock decoders. The bodies live in `targets.rs`, which the
//! workspace's stable tests also include to replay the corpus.

#[path = "targets.rs"]
mod targets;

pub use targets::{http_decode, len32_decode, lines_decode, replay, resp_decode};
