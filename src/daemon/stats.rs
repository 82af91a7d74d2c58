//! Counters shared by the engine thread, the sources and the API, and their Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::live::{SourceState, SourceStats};

/// A fixed-bucket histogram of seconds, lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// Bucket bounds (seconds) for step and event latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9 / n as f64
        }
    }

    /// The upper bound of the bucket holding quantile `q` (NaN without observations).
    pub fn quantile(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return f64::NAN;
        }
        let target = (q * n as f64).ceil().max(1.0) as u64;
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            if cum >= target {
                return *b;
            }
        }
        f64::INFINITY
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// One source as the API shows it.
pub struct SourceEntry {
    pub name: String,
    pub kind: String,
    pub stats: Arc<SourceStats>,
    /// Frames tagged (engine side).
    pub frames: AtomicU64,
    pub description: Mutex<String>,
    /// Top smoothed scores of the last frame, refreshed every few frames.
    pub top: Mutex<Vec<(String, f32)>>,
    pub active: Mutex<Vec<String>>,
}

impl SourceEntry {
    pub fn new(name: &str, kind: &str, stats: Arc<SourceStats>) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            stats,
            frames: AtomicU64::new(0),
            description: Mutex::new(String::new()),
            top: Mutex::new(Vec::new()),
            active: Mutex::new(Vec::new()),
        }
    }
}

/// Everything `/status` and `/metrics` report.
pub struct Stats {
    pub started: Instant,
    /// Sources by name (replaced on reload).
    pub sources: Mutex<BTreeMap<String, Arc<SourceEntry>>>,
    pub labels: Mutex<Vec<(String, f32, f32)>>,
    pub model: Mutex<String>,
    pub step_latency: Histogram,
    /// From the engine receiving a hop to its event being published.
    pub event_latency: Histogram,
    /// From the conditioning thread taking the audio off the device ring to the event.
    pub capture_latency: Histogram,
    /// (source, label, kind) → count.
    pub events: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    pub steps: AtomicU64,
    pub batch_rows: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Bus messages SSE/WS clients missed because they lagged.
    pub client_lagged: AtomicU64,
    pub clients: AtomicU64,
    pub mqtt: Arc<super::mqtt::MqttStats>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            sources: Mutex::new(BTreeMap::new()),
            labels: Mutex::new(Vec::new()),
            model: Mutex::new(String::new()),
            step_latency: Histogram::new(LATENCY_BUCKETS),
            event_latency: Histogram::new(LATENCY_BUCKETS),
            capture_latency: Histogram::new(LATENCY_BUCKETS),
            events: Mutex::new(BTreeMap::new()),
            steps: AtomicU64::new(0),
            batch_rows: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            client_lagged: AtomicU64::new(0),
            clients: AtomicU64::new(0),
            mqtt: Arc::default(),
        }
    }
}

#[derive(Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub kind: String,
    pub state: &'static str,
    pub description: String,
    pub frames: u64,
    pub input_frames: u64,
    pub drops: u64,
    pub nan_samples: u64,
    pub device_errors: u64,
    pub gaps: u64,
    pub gap_seconds: f64,
    pub active: Vec<String>,
    pub top: Vec<TopTag>,
}

#[derive(Serialize)]
pub struct TopTag {
    pub label: String,
    pub score: f32,
}

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub model: String,
    pub uptime_seconds: f64,
    pub sources: Vec<SourceStatus>,
    pub frames: u64,
    pub drops: u64,
    pub steps: u64,
    pub step_latency_mean_ms: f64,
    /// Upper bounds of the histogram buckets holding the 50th/99th percentile (null if none).
    pub step_latency_p50_ms: Option<f64>,
    pub step_latency_p99_ms: Option<f64>,
    pub event_latency_mean_ms: f64,
    pub reloads: u64,
    pub failed_reloads: u64,
    /// The MQTT sink (null when none is configured).
    pub mqtt: Option<super::mqtt::MqttStatus>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Stats {
    pub fn count_event(&self, source: &str, label: &str, kind: &'static str) {
        let mut m = self.events.lock().unwrap();
        *m.entry((source.to_string(), label.to_string(), kind))
            .or_insert(0) += 1;
    }

    pub fn status(&self) -> Status {
        let sources: Vec<SourceStatus> = self
            .sources
            .lock()
            .unwrap()
            .values()
            .map(|e| SourceStatus {
                name: e.name.clone(),
                kind: e.kind.clone(),
                state: e.stats.state().name(),
                description: e.description.lock().unwrap().clone(),
                frames: e.frames.load(Ordering::Relaxed),
                input_frames: e.stats.frames_in.load(Ordering::Relaxed),
                drops: e.stats.overflow_samples.load(Ordering::Relaxed),
                nan_samples: e.stats.nan_samples.load(Ordering::Relaxed),
                device_errors: e.stats.device_errors.load(Ordering::Relaxed),
                gaps: e.stats.gaps.load(Ordering::Relaxed),
                gap_seconds: e.stats.gap_micros.load(Ordering::Relaxed) as f64 / 1e6,
                active: e.active.lock().unwrap().clone(),
                top: e
                    .top
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(l, s)| TopTag {
                        label: l.clone(),
                        score: *s,
                    })
                    .collect(),
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            model: self.model.lock().unwrap().clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            frames: sources.iter().map(|s| s.frames).sum(),
            drops: sources.iter().map(|s| s.drops).sum(),
            sources,
            steps: self.steps.load(Ordering::Relaxed),
            step_latency_mean_ms: self.step_latency.mean() * 1e3,
            step_latency_p50_ms: finite(self.step_latency.quantile(0.5) * 1e3),
            step_latency_p99_ms: finite(self.step_latency.quantile(0.99) * 1e3),
            event_latency_mean_ms: self.event_latency.mean() * 1e3,
            reloads: self.reloads_ok.load(Ordering::Relaxed),
            failed_reloads: self.reloads_failed.load(Ordering::Relaxed),
            mqtt: self.mqtt.status(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let sources: Vec<Arc<SourceEntry>> =
            self.sources.lock().unwrap().values().cloned().collect();
        let counter =
            |o: &mut String, name: &str, help: &str, f: &dyn Fn(&SourceEntry) -> String| {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
                for s in &sources {
                    let _ = writeln!(o, "{name}{{source=\"{}\"}} {}", esc(&s.name), f(s));
                }
            };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        counter(&mut o, "mambatag_frames_total", "Frames tagged.", &|s| {
            ld(&s.frames)
        });
        counter(
            &mut o,
            "mambatag_input_frames_total",
            "Native-rate frames received from the source.",
            &|s| ld(&s.stats.frames_in),
        );
        counter(
            &mut o,
            "mambatag_dropped_samples_total",
            "Samples dropped because the capture ring was full.",
            &|s| ld(&s.stats.overflow_samples),
        );
        counter(
            &mut o,
            "mambatag_nan_samples_total",
            "NaN/Inf input samples replaced by 0.",
            &|s| ld(&s.stats.nan_samples),
        );
        counter(
            &mut o,
            "mambatag_device_errors_total",
            "Errors reported by the audio backend.",
            &|s| ld(&s.stats.device_errors),
        );
        counter(
            &mut o,
            "mambatag_source_gaps_total",
            "Outages of the source (device lost and back).",
            &|s| ld(&s.stats.gaps),
        );
        counter(
            &mut o,
            "mambatag_source_gap_seconds_total",
            "Total length of the source's outages.",
            &|s| {
                format!(
                    "{}",
                    s.stats.gap_micros.load(Ordering::Relaxed) as f64 / 1e6
                )
            },
        );
        let _ = writeln!(
            o,
            "# HELP mambatag_source_state 1 for the state the source is in.\n# TYPE mambatag_source_state gauge"
        );
        for s in &sources {
            let cur = s.stats.state();
            for st in SourceState::ALL {
                let _ = writeln!(
                    o,
                    "mambatag_source_state{{source=\"{}\",state=\"{}\"}} {}",
                    esc(&s.name),
                    st.name(),
                    u8::from(st == cur)
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP mambatag_events_total Events by source, label and kind (onset/offset/gap).\n# TYPE mambatag_events_total counter"
        );
        for ((src, label, kind), n) in self.events.lock().unwrap().iter() {
            let _ = writeln!(
                o,
                "mambatag_events_total{{source=\"{}\",label=\"{}\",kind=\"{kind}\"}} {n}",
                esc(src),
                esc(label)
            );
        }
        self.step_latency.render(
            &mut o,
            "mambatag_step_seconds",
            "Duration of one batched model call.",
        );
        self.event_latency.render(
            &mut o,
            "mambatag_event_latency_seconds",
            "From a hop's arrival at the engine to its event on the bus.",
        );
        self.capture_latency.render(
            &mut o,
            "mambatag_capture_latency_seconds",
            "From taking the audio off the device ring to its event on the bus.",
        );
        let g = |o: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut o,
            "mambatag_steps_total",
            "Batched model calls.",
            "counter",
            ld(&self.steps),
        );
        g(
            &mut o,
            "mambatag_batch_rows",
            "Rows of the batch (stream slots).",
            "gauge",
            ld(&self.batch_rows),
        );
        g(
            &mut o,
            "mambatag_reloads_total",
            "Successful configuration reloads.",
            "counter",
            ld(&self.reloads_ok),
        );
        g(
            &mut o,
            "mambatag_reload_failures_total",
            "Reloads refused (the old configuration kept serving).",
            "counter",
            ld(&self.reloads_failed),
        );
        g(
            &mut o,
            "mambatag_clients",
            "Connected SSE/WebSocket clients.",
            "gauge",
            ld(&self.clients),
        );
        g(
            &mut o,
            "mambatag_client_lagged_messages_total",
            "Messages slow SSE/WebSocket clients missed.",
            "counter",
            ld(&self.client_lagged),
        );
        if let Some(m) = self.mqtt.status() {
            g(
                &mut o,
                "mambatag_mqtt_connected",
                "1 while the MQTT sink is connected to its broker.",
                "gauge",
                u8::from(m.connected).to_string(),
            );
            g(
                &mut o,
                "mambatag_mqtt_messages_total",
                "Messages handed to the MQTT client.",
                "counter",
                m.published.to_string(),
            );
            g(
                &mut o,
                "mambatag_mqtt_dropped_total",
                "MQTT messages dropped (broker unreachable, queue full or the sink lagging).",
                "counter",
                m.dropped.to_string(),
            );
            g(
                &mut o,
                "mambatag_mqtt_connections_total",
                "Successful connections to the MQTT broker.",
                "counter",
                m.connects.to_string(),
            );
        }
        g(
            &mut o,
            "mambatag_uptime_seconds",
            "Seconds since start.",
            "gauge",
            format!("{:.3}", self.started.elapsed().as_secs_f64()),
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_text() {
        let h = Histogram::new(LATENCY_BUCKETS);
        assert!(h.quantile(0.5).is_nan());
        for _ in 0..98 {
            h.observe(0.0002);
        }
        h.observe(0.003);
        h.observe(2.0);
        assert_eq!(h.quantile(0.5), 0.00025);
        assert_eq!(h.quantile(0.99), 0.005);
        assert_eq!(h.quantile(1.0), f64::INFINITY);
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.00025\"} 98\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 99\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 100\nx_sum "), "{s}");
        assert!(s.contains("x_count 100"), "{s}");
    }
}
