//! Live sources: microphones (cpal), raw PCM from stdin or a pipe, and files that grow.
//!
//! Every live source runs on its own thread and delivers model-rate hops through a crossbeam
//! channel as [`SourceMsg`]s; the daemon's engine thread (or `mambatag listen`) consumes them.
//!
//! ```text
//! cpal audio callback ──ringbuf (lock-free, no allocation)──▶ conditioning thread
//!     downmix → NaN/Inf → 0 (counted) → LiveResampler → Framer ──crossbeam──▶ engine thread
//! ```
//!
//! The audio callback ([`capture`]) only converts samples to `f32` into a stack buffer and
//! pushes them into a `ringbuf`; it never locks, allocates or blocks. When the ring is full the
//! samples that do not fit are dropped and counted (`overflow_samples`), never silently.
//!
//! **Non-finite samples.** Files are refused when they hold NaN/Inf (`source::downmix`), but a
//! live stream must not stop because a driver or a pipe produced a bad sample: live sources
//! replace NaN and ±Inf with 0 and count them (`nan_samples`, metric
//! `mambatag_nan_samples_total`).
//!
//! **Device loss** ([`mic`]): the source reports [`SourceEvent::Down`], retries with backoff
//! (100 ms, then every 200 ms) and reports [`SourceEvent::Up`] with the gap's length when the
//! device is back. The rule for the stream's state across a gap: open events are closed at the
//! last frame before the loss, the recurrent state and the smoothing are reset (audio before
//! and after a gap is not continuous), and the stream's timeline continues with the gap's
//! length added so event times keep tracking the wall clock. Short dropouts inside a running
//! stream (ring overflow, xruns) keep the state.

#[cfg(feature = "mic")]
pub mod capture;
/// Built without the `mic` feature: the same entry points, each saying that capture is not
/// available in this build.
#[cfg(not(feature = "mic"))]
#[path = "capture_off.rs"]
pub mod capture;
pub mod mic;
pub mod pcm;
pub mod resample;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::engine::slots::StreamId;
use crate::frame::Framer;

pub use resample::LiveResampler;

/// What a build without the `mic` feature says when asked for capture.
pub const MIC_UNAVAILABLE: &str = "this mambatag was built without microphone capture (the \
    `mic` cargo feature, on by default; rebuild without `--no-default-features`)";

/// One input device as `mambatag devices` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub index: usize,
    /// The ALSA PCM name (e.g. `pulse`, `hw:CARD=PCH,DEV=0`): what `device = "…"` matches first.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    pub default: bool,
    pub default_rate: Option<u32>,
    pub default_channels: Option<u16>,
    pub default_format: Option<String>,
    /// Supported sample formats (from the device's config ranges).
    pub formats: Vec<String>,
    /// Supported rate range over all configs.
    pub rates: Option<(u32, u32)>,
    pub max_channels: Option<u16>,
}

/// Flags the error callback raises.
#[derive(Debug, Default)]
pub struct StreamFlags {
    /// The device is gone (DeviceNotAvailable, StreamInvalidated, HostUnavailable).
    pub lost: AtomicBool,
    /// Callbacks so far (a stream that never calls back is also treated as lost).
    pub callbacks: AtomicU64,
}

/// Model-rate hops from one source, in order. `samples.len()` is a multiple of the hop.
#[derive(Debug)]
pub struct HopBlock {
    pub samples: Vec<f32>,
    /// When the conditioning thread took the newest of these samples from the device ring.
    pub captured: Instant,
}

/// What a source thread tells its consumer.
#[derive(Debug)]
pub enum SourceEvent {
    /// The source is (again) delivering audio. `gap_seconds` is the length of the outage
    /// that ended (0 on the first start).
    Up {
        description: String,
        gap_seconds: f64,
    },
    Hops(HopBlock),
    /// The device went away; a gap begins. More `Up`/`Hops` follow when it comes back.
    Down {
        reason: String,
    },
    /// No more audio will come (end of a pipe, source stopped).
    Ended,
    /// The source gave up with an error (no more messages follow).
    Failed(String),
}

#[derive(Debug)]
pub struct SourceMsg {
    pub id: StreamId,
    pub event: SourceEvent,
}

/// What a source is doing, for `/status` and the `mambatag_source_state` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    Starting = 0,
    Running = 1,
    Reconnecting = 2,
    Ended = 3,
    Failed = 4,
}

impl SourceState {
    pub const ALL: [SourceState; 5] = [
        SourceState::Starting,
        SourceState::Running,
        SourceState::Reconnecting,
        SourceState::Ended,
        SourceState::Failed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Running => "running",
            SourceState::Reconnecting => "reconnecting",
            SourceState::Ended => "ended",
            SourceState::Failed => "failed",
        }
    }
    fn from_u8(v: u8) -> Self {
        Self::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(SourceState::Failed)
    }
}

/// Counters of one source, shared between its thread, the engine thread and the API.
#[derive(Debug, Default)]
pub struct SourceStats {
    state: AtomicU8,
    /// Native-rate frames (samples per channel) received.
    pub frames_in: AtomicU64,
    /// Samples lost because the device ring was full (the conditioning thread fell behind).
    pub overflow_samples: AtomicU64,
    /// NaN/Inf samples replaced by 0.
    pub nan_samples: AtomicU64,
    /// Device errors reported by the backend (xruns included).
    pub device_errors: AtomicU64,
    /// Completed outages and their total length in microseconds.
    pub gaps: AtomicU64,
    pub gap_micros: AtomicU64,
    /// Hops sent to the engine.
    pub hops_out: AtomicU64,
    /// Hops sent but not yet stepped by the engine. Sources that can wait (pipes, followed
    /// files) pause above [`MAX_IN_FLIGHT`] so a fast reader cannot fill memory; microphones
    /// never wait (their ring would overflow instead, counted).
    pub in_flight: AtomicU64,
}

/// Hops a waiting source may have queued at the engine (2 s of audio).
pub const MAX_IN_FLIGHT: u64 = 200;

impl SourceStats {
    pub fn state(&self) -> SourceState {
        SourceState::from_u8(self.state.load(Ordering::Relaxed))
    }
    pub fn set_state(&self, s: SourceState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }
    pub fn add_gap(&self, seconds: f64) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.gap_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Everything a source thread needs besides its own configuration.
#[derive(Clone)]
pub struct SourceLink {
    pub id: StreamId,
    pub tx: crossbeam_channel::Sender<SourceMsg>,
    pub stats: Arc<SourceStats>,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// Model sample rate and hop.
    pub rate: u32,
    pub hop: usize,
}

impl SourceLink {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Sends an event; false if the consumer is gone.
    pub fn send(&self, event: SourceEvent) -> bool {
        self.tx.send(SourceMsg { id: self.id, event }).is_ok()
    }
}

/// Interleaved native-rate samples → model-rate hops, with NaN sanitising and low latency.
pub struct LiveConditioner {
    channels: usize,
    resampler: LiveResampler,
    framer: Framer,
    mono: Vec<f32>,
    resampled: Vec<f32>,
}

impl LiveConditioner {
    pub fn new(rate_in: u32, channels: usize, rate_out: u32, hop: usize) -> Self {
        Self {
            channels: channels.max(1),
            resampler: LiveResampler::new(rate_in, rate_out),
            framer: Framer::new(hop),
            mono: Vec::with_capacity(8192),
            resampled: Vec::with_capacity(8192),
        }
    }

    /// Adds interleaved samples (whole frames); returns how many non-finite samples were zeroed.
    pub fn push_interleaved(&mut self, data: &[f32]) -> u64 {
        let mut bad = 0u64;
        self.mono.clear();
        let ch = self.channels;
        let inv = 1.0 / ch as f32;
        for f in data.chunks_exact(ch) {
            let mut s = 0.0f32;
            for &x in f {
                if x.is_finite() {
                    s += x;
                } else {
                    bad += 1;
                }
            }
            self.mono.push(s * inv);
        }
        self.resampled.clear();
        self.resampler.push(&self.mono, &mut self.resampled);
        self.framer.push(&self.resampled);
        bad
    }

    /// Moves every complete hop into `out`.
    pub fn take_hops(&mut self, out: &mut Vec<f32>) {
        while let Some(h) = self.framer.next_hop() {
            out.extend_from_slice(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditioner_zeroes_nan_and_counts() {
        let mut c = LiveConditioner::new(16000, 2, 16000, 160);
        let mut data = vec![0.5f32; 400];
        data[3] = f32::NAN;
        data[10] = f32::INFINITY;
        assert_eq!(c.push_interleaved(&data), 2);
        let mut out = Vec::new();
        c.take_hops(&mut out);
        assert_eq!(out.len(), 160);
        assert!(out.iter().all(|x| x.is_finite()));
        assert!((out[1] - 0.25).abs() < 1e-6, "{}", out[1]);
    }
}
