//! The event bus: what the engine thread publishes, fanned out to SSE/WebSocket clients
//! (a `tokio::sync::broadcast` channel, whose `send` never blocks the engine) and to the
//! file/log sinks (a crossbeam channel to the sink thread).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

/// What a bus message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `onset`, `offset`, `gap`, `source`: every client and sink gets these.
    Event,
    /// Per-frame scores: only WebSocket clients that asked for them.
    Frame,
    /// The daemon is stopping; nothing follows.
    End,
}

#[derive(Debug)]
pub struct BusMsg {
    pub kind: Kind,
    /// `onset`, `offset`, `gap`, `source`, `frame`, `end` (the SSE event name).
    pub name: &'static str,
    pub source: String,
    /// One JSON object (no newline).
    pub json: String,
}

/// Messages a slow client may fall behind by before it misses some (counted).
pub const CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<BusMsg>>,
    /// WebSocket clients that want per-frame scores; frames are only built when > 0.
    frame_clients: Arc<AtomicUsize>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            tx,
            frame_clients: Arc::new(AtomicUsize::new(0)),
        }
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusMsg>> {
        self.tx.subscribe()
    }
    pub fn publish(&self, msg: Arc<BusMsg>) {
        // No receivers is fine: nobody is listening right now.
        let _ = self.tx.send(msg);
    }
    pub fn wants_frames(&self) -> bool {
        self.frame_clients.load(Ordering::Relaxed) > 0
    }
    /// Registers a frame-score client for as long as the guard lives.
    pub fn frame_guard(&self) -> FrameGuard {
        self.frame_clients.fetch_add(1, Ordering::Relaxed);
        FrameGuard(self.frame_clients.clone())
    }
}

pub struct FrameGuard(Arc<AtomicUsize>);

impl Drop for FrameGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Unix time in seconds (for the `wall` field of events).
pub fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Rounds seconds to the microsecond for output.
pub fn secs(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}
