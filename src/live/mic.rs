//! A microphone source: one thread that owns the cpal stream, conditions what the callback
//! pushed into the ring, and reconnects when the device goes away.
//!
//! Loss is detected two ways: the backend's error callback (device not available, stream
//! invalidated, backend error) and a stall check — a running stream that delivers nothing for
//! [`STALL`] counts as lost (some servers just stop calling back when a source disappears).
//! Retries back off from 100 ms to [`MAX_BACKOFF`], so a device that comes back is reopened
//! within half a second plus the backend's own start-up time.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::capture::Capture;
use super::{HopBlock, LiveConditioner, SourceEvent, SourceLink, SourceState};

/// A running stream without callbacks for this long is treated as lost.
pub const STALL: Duration = Duration::from_millis(1500);
/// A freshly opened stream gets this long for its first callback (PulseAudio's ALSA plugin
/// can take 1–2 s).
pub const FIRST_CALLBACK: Duration = Duration::from_secs(4);
pub const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// Ring overflows are logged at most this often (they are always counted).
const OVERFLOW_LOG: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct MicConfig {
    /// `default`, an index, an ALSA PCM id or a device name.
    pub device: String,
    /// Requested device buffer in frames (None: the device default).
    pub buffer_frames: Option<u32>,
}

/// Runs the source until `link.stop` is set; sends `Ended` at the end.
pub fn run(cfg: MicConfig, link: SourceLink) {
    let me = std::thread::current();
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<Instant> = None;
    let mut logged_failure = false;
    let mut raw: Vec<f32> = Vec::with_capacity(96_000);
    let mut hops: Vec<f32> = Vec::with_capacity(16_000);
    link.stats.set_state(SourceState::Starting);
    'outer: while !link.stopped() {
        let mut cap = match Capture::open(
            &cfg.device,
            cfg.buffer_frames,
            link.stats.clone(),
            me.clone(),
        ) {
            Ok(c) => c,
            Err(e) => {
                if !logged_failure {
                    tracing::warn!(device = %cfg.device, "input device unavailable, retrying: {e:#}");
                    logged_failure = true;
                }
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    link.stats.set_state(SourceState::Reconnecting);
                    if !link.send(SourceEvent::Down {
                        reason: format!("{e:#}"),
                    }) {
                        break;
                    }
                }
                sleep_unless_stopped(&link, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let opened = Instant::now();
        let mut cond = LiveConditioner::new(cap.rate, cap.channels, link.rate, link.hop);
        let mut announced = false;
        let mut last_callbacks = 0u64;
        let mut last_progress = opened;
        let mut last_overflow = link.stats.overflow_samples.load(Ordering::Relaxed);
        let mut last_overflow_log: Option<Instant> = None;
        let reason = loop {
            if link.stopped() {
                break None;
            }
            std::thread::park_timeout(Duration::from_millis(20));
            raw.clear();
            cap.drain(&mut raw);
            let now = Instant::now();
            let cbs = cap.flags.callbacks.load(Ordering::Relaxed);
            if cbs != last_callbacks {
                last_callbacks = cbs;
                last_progress = now;
            }
            if !raw.is_empty() {
                if !announced {
                    // Audio flows: the device is up (again).
                    let gap = down_since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
                    if gap > 0.0 {
                        link.stats.add_gap(gap);
                    }
                    tracing::info!(
                        device = %cfg.device,
                        "capturing from {} (first audio {:.0} ms after opening)",
                        cap.description,
                        opened.elapsed().as_secs_f64() * 1e3
                    );
                    link.stats.set_state(SourceState::Running);
                    if !link.send(SourceEvent::Up {
                        description: cap.description.clone(),
                        gap_seconds: gap,
                    }) {
                        break 'outer;
                    }
                    announced = true;
                    backoff = Duration::from_millis(100);
                    logged_failure = false;
                }
                let frames = raw.len() / cap.channels.max(1);
                link.stats
                    .frames_in
                    .fetch_add(frames as u64, Ordering::Relaxed);
                let bad = cond.push_interleaved(&raw);
                if bad > 0 {
                    link.stats.nan_samples.fetch_add(bad, Ordering::Relaxed);
                }
                hops.clear();
                cond.take_hops(&mut hops);
                if !hops.is_empty() {
                    let n = (hops.len() / link.hop) as u64;
                    link.stats.hops_out.fetch_add(n, Ordering::Relaxed);
                    link.stats.in_flight.fetch_add(n, Ordering::Relaxed);
                    let block = HopBlock {
                        samples: hops.clone(),
                        captured: now,
                    };
                    if !link.send(SourceEvent::Hops(block)) {
                        break 'outer;
                    }
                }
            }
            let over = link.stats.overflow_samples.load(Ordering::Relaxed);
            if over != last_overflow
                && last_overflow_log.is_none_or(|t| now.duration_since(t) >= OVERFLOW_LOG)
            {
                tracing::warn!(
                    device = %cfg.device,
                    "capture ring overflowed: {} samples dropped so far (the conditioning thread fell behind)",
                    over
                );
                last_overflow = over;
                last_overflow_log = Some(now);
            }
            if cap.flags.lost.load(Ordering::Relaxed) {
                break Some("the device reported an error (unplugged or server gone)".to_string());
            }
            let limit = if announced { STALL } else { FIRST_CALLBACK };
            if now.duration_since(last_progress) > limit {
                break Some(format!(
                    "no audio from the device for {:.1} s",
                    now.duration_since(last_progress).as_secs_f64()
                ));
            }
        };
        release(cap);
        let Some(reason) = reason else { break };
        tracing::warn!(device = %cfg.device, "input lost: {reason}; reconnecting");
        if down_since.is_none() {
            // A stream that never delivered keeps the outage that started before it.
            down_since = Some(if announced { last_progress } else { opened });
            link.stats.set_state(SourceState::Reconnecting);
            if !link.send(SourceEvent::Down { reason }) {
                break;
            }
        }
        sleep_unless_stopped(&link, backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    link.stats.set_state(SourceState::Ended);
    link.send(SourceEvent::Ended);
}

/// Drops a capture on a helper thread. Closing a stream whose server died can block forever
/// inside the backend (ALSA's PulseAudio plugin waits on its dead main loop); the source
/// must not hang with it, so at worst that helper thread is leaked.
fn release(cap: Capture) {
    let r = std::thread::Builder::new()
        .name("capture-close".into())
        .spawn(move || drop(cap));
    if let Err(e) = r {
        tracing::error!("cannot start a thread to close the capture stream: {e}");
    }
}

fn sleep_unless_stopped(link: &SourceLink, d: Duration) {
    let end = Instant::now() + d;
    while !link.stopped() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
