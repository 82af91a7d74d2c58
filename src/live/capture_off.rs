//! Capture without the `mic` feature (no cpal, no ALSA): every entry point fails with an
//! error that says how to get capture, so `mambatag devices` exits non-zero and a mic source
//! reports itself down instead of panicking. The service config refuses mic sources up front
//! (`daemon::config`).

use std::sync::Arc;
use std::thread::Thread;

use anyhow::{bail, Result};

pub use super::{DeviceInfo, StreamFlags};
use super::{SourceStats, MIC_UNAVAILABLE as UNAVAILABLE};

pub fn list_devices() -> Result<Vec<DeviceInfo>> {
    bail!(UNAVAILABLE)
}

/// Never constructed in this build (`open` always fails); the fields are those the mic source
/// reads.
pub struct Capture {
    pub rate: u32,
    pub channels: usize,
    pub flags: Arc<StreamFlags>,
    pub description: String,
}

impl Capture {
    pub fn open(
        _spec: &str,
        _buffer_frames: Option<u32>,
        _stats: Arc<SourceStats>,
        _wake: Thread,
    ) -> Result<Self> {
        bail!(UNAVAILABLE)
    }

    pub fn drain(&mut self, _buf: &mut Vec<f32>) -> usize {
        0
    }
}
