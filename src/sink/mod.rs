//! Where results go. File-style outputs (JSONL, CSV, Audacity label tracks) live in
//! [`format`]; network sinks (HTTP/SSE/WS, MQTT) and metrics belong to the daemon.

pub mod format;
pub mod plot;

pub use format::{Format, Writer};
pub mod jsonl;

pub use jsonl::RotatingJsonl;
