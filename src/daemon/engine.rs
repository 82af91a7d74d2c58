//! The single engine thread: every active stream steps together in one batched `[B, …]` call.
//!
//! Sources deliver hops through one crossbeam channel; each stream keeps a queue. A round
//! fills the input row of every stream that has a hop, runs [`Engine::run`] with an advance
//! mask (streams without a new hop keep their state), feeds each advanced row's scores to
//! that stream's [`EventDetector`] and publishes onsets/offsets on the bus. Source markers
//! (`Up`, `Down`, `Ended`) travel in the same queues, so they apply exactly between the hops
//! they arrived between.
//!
//! Control messages (register a source, reload, drain) come on a second channel and are
//! always handled before source messages, so a source registered before its thread started
//! is known when its first message arrives.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::{Receiver, Sender};
use serde_json::json;

use crate::engine::slots::{SlotTable, StreamId};
use crate::engine::{Engine, EngineOptions};
use crate::events::{EventDetector, EventParams, EventUpdate};
use crate::live::{SourceEvent, SourceMsg};
use crate::model::{ModelInfo, ModelPackage};

use super::bus::{secs, wall, Bus, BusMsg, Kind};
use super::stats::{SourceEntry, Stats};

/// Computes the new event parameters (by source name) once the new model is loaded.
pub type ParamsFn =
    Box<dyn FnOnce(&ModelInfo) -> Result<HashMap<String, EventParams>, String> + Send>;

pub enum Ctl {
    Register {
        id: StreamId,
        name: String,
        params: EventParams,
        entry: Arc<SourceEntry>,
    },
    /// Load a new model and switch to it; on any error keep the old one.
    Reload {
        model: ModelPackage,
        opts: EngineOptions,
        params: ParamsFn,
        reply: Sender<Result<ModelInfo, String>>,
    },
    /// Process everything queued, close open events, publish `End`, exit.
    Drain,
}

enum Item {
    Hops {
        samples: Vec<f32>,
        captured: Instant,
        arrived: Instant,
    },
    Up {
        description: String,
        gap: f64,
    },
    Down {
        reason: String,
    },
    End,
}

struct Stream {
    name: String,
    entry: Arc<SourceEntry>,
    params: EventParams,
    detector: EventDetector,
    queue: VecDeque<Item>,
    /// Samples of the front `Hops` item already used.
    front_used: usize,
    /// Stream time (s) at which the current detector started.
    base: f64,
    /// Frames of the current detector.
    frames: u64,
    down_at: Option<f64>,
    ended: bool,
}

impl Stream {
    fn now(&self, hop_s: f64) -> f64 {
        self.base + self.frames as f64 * hop_s
    }
    fn has_hop(&self) -> bool {
        matches!(self.queue.front(), Some(Item::Hops { .. }))
    }
}

/// The heartbeat the watchdog checks: milliseconds since `Stats::started` at the last loop.
pub type Heartbeat = Arc<AtomicU64>;

pub struct EngineThread {
    engine: Engine,
    info: ModelInfo,
    slots: SlotTable,
    streams: BTreeMap<StreamId, Stream>,
    bus: Bus,
    sink: Sender<Arc<BusMsg>>,
    stats: Arc<Stats>,
    beat: Heartbeat,
    updates: Vec<EventUpdate>,
}

/// What the engine thread talks to.
pub struct Links {
    pub bus: Bus,
    pub sink: Sender<Arc<BusMsg>>,
    pub stats: Arc<Stats>,
    pub beat: Heartbeat,
    pub ctl: Receiver<Ctl>,
    pub src: Receiver<SourceMsg>,
}

/// Loads the model and starts the thread; returns once the model is loaded (or failed).
pub fn spawn(
    model: ModelPackage,
    opts: EngineOptions,
    links: Links,
) -> Result<(ModelInfo, std::thread::JoinHandle<()>)> {
    let Links {
        bus,
        sink,
        stats,
        beat,
        ctl,
        src,
    } = links;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let h = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let engine = match Engine::load(&model.step, &opts, 1, 1) {
                Ok(e) => e,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let info = engine.info().clone();
            let _ = tx.send(Ok(info.clone()));
            let mut t = EngineThread {
                slots: SlotTable::new(engine.capacity()),
                engine,
                info,
                streams: BTreeMap::new(),
                bus,
                sink,
                stats,
                beat,
                updates: Vec::new(),
            };
            t.describe_model();
            t.run(ctl, src);
        })?;
    match rx.recv() {
        Ok(Ok(info)) => Ok((info, h)),
        Ok(Err(e)) => {
            let _ = h.join();
            Err(e)
        }
        Err(_) => {
            let _ = h.join();
            anyhow::bail!("the engine thread died while loading the model")
        }
    }
}

impl EngineThread {
    fn describe_model(&self) {
        let i = &self.info;
        *self.stats.model.lock().unwrap() =
            format!("{} {} ({})", i.name, i.version, i.path.display());
        *self.stats.labels.lock().unwrap() = i
            .labels
            .iter()
            .zip(&i.thresholds)
            .map(|(l, &t)| (l.clone(), t, t * crate::events::DEFAULT_OFF_RATIO))
            .collect();
    }

    fn run(&mut self, ctl: Receiver<Ctl>, src: Receiver<SourceMsg>) {
        let mut draining = false;
        loop {
            self.beat.store(
                self.stats.started.elapsed().as_millis() as u64,
                Ordering::Relaxed,
            );
            while let Ok(c) = ctl.try_recv() {
                draining |= self.control(c);
            }
            let ready = self.streams.values().any(Stream::has_hop);
            if !ready {
                if draining && src.is_empty() {
                    break;
                }
                crossbeam_channel::select! {
                    recv(ctl) -> c => {
                        match c {
                            Ok(c) => draining |= self.control(c),
                            Err(_) => draining = true,
                        }
                        continue;
                    }
                    recv(src) -> m => if let Ok(m) = m { self.source_msg(m) },
                    default(Duration::from_millis(100)) => {}
                }
            }
            while let Ok(m) = src.try_recv() {
                self.source_msg(m);
            }
            self.apply_markers();
            if let Err(e) = self.step() {
                tracing::error!("model step failed: {e:#}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Drain: everything queued has been stepped; close what is open.
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            self.finish(id);
            self.streams.remove(&id);
        }
        self.bus.publish(Arc::new(BusMsg {
            kind: Kind::End,
            name: "end",
            source: String::new(),
            json: json!({"type": "end", "wall": secs(wall())}).to_string(),
        }));
        tracing::info!("engine drained");
    }

    /// Returns true when the thread should drain and exit.
    fn control(&mut self, c: Ctl) -> bool {
        match c {
            Ctl::Register {
                id,
                name,
                params,
                entry,
            } => {
                let detector =
                    EventDetector::new(&self.info.labels, params.clone(), self.info.hop_seconds());
                if let Err(e) = self.slots.join(&mut self.engine, id) {
                    tracing::error!(source = %name, "cannot add a stream slot: {e:#}");
                    return false;
                }
                self.stats
                    .batch_rows
                    .store(self.engine.capacity() as u64, Ordering::Relaxed);
                self.streams.insert(
                    id,
                    Stream {
                        name,
                        entry,
                        params,
                        detector,
                        queue: VecDeque::new(),
                        front_used: 0,
                        base: 0.0,
                        frames: 0,
                        down_at: None,
                        ended: false,
                    },
                );
                false
            }
            Ctl::Reload {
                model,
                opts,
                params,
                reply,
            } => {
                let r = self.reload(model, opts, params);
                let _ = reply.send(r);
                false
            }
            Ctl::Drain => true,
        }
    }

    fn reload(
        &mut self,
        model: ModelPackage,
        opts: EngineOptions,
        params: ParamsFn,
    ) -> Result<ModelInfo, String> {
        let engine = Engine::load(&model.step, &opts, self.engine.capacity(), 1)
            .map_err(|e| format!("{e:#}"))?;
        let info = engine.info().clone();
        let mut by_name = params(&info)?;
        // Switch: close open events at the current time, fresh state and detectors.
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in &ids {
            self.finish(*id);
        }
        self.engine = engine;
        self.info = info.clone();
        self.slots = SlotTable::new(self.engine.capacity());
        let hop_s = self.info.hop_seconds();
        for id in ids {
            if let Err(e) = self.slots.join(&mut self.engine, id) {
                tracing::error!("cannot add a stream slot: {e:#}");
            }
            let s = self.streams.get_mut(&id).unwrap();
            if let Some(p) = by_name.remove(&s.name) {
                s.params = p;
            }
            s.base = s.now(hop_s);
            s.frames = 0;
            s.detector = EventDetector::new(&self.info.labels, s.params.clone(), hop_s);
        }
        self.stats
            .batch_rows
            .store(self.engine.capacity() as u64, Ordering::Relaxed);
        self.describe_model();
        Ok(info)
    }

    fn source_msg(&mut self, m: SourceMsg) {
        let Some(s) = self.streams.get_mut(&m.id) else {
            return;
        };
        let item = match m.event {
            SourceEvent::Hops(b) => Item::Hops {
                samples: b.samples,
                captured: b.captured,
                arrived: Instant::now(),
            },
            SourceEvent::Up {
                description,
                gap_seconds,
            } => Item::Up {
                description,
                gap: gap_seconds,
            },
            SourceEvent::Down { reason } => Item::Down { reason },
            SourceEvent::Ended => Item::End,
            SourceEvent::Failed(e) => {
                tracing::error!(source = %s.name, "source failed: {e}");
                Item::End
            }
        };
        s.queue.push_back(item);
    }

    /// Applies the markers at the front of every queue (up to the next hop).
    fn apply_markers(&mut self) {
        let hop_s = self.info.hop_seconds();
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            loop {
                let s = self.streams.get_mut(&id).unwrap();
                let item = match s.queue.front() {
                    None | Some(Item::Hops { .. }) => break,
                    Some(_) => s.queue.pop_front().unwrap(),
                };
                match item {
                    Item::Up { description, gap } => {
                        *s.entry.description.lock().unwrap() = description.clone();
                        let name = s.name.clone();
                        let mut msgs = vec![(
                            "source",
                            json!({"type": "source", "source": name, "state": "up",
                                   "description": description, "wall": secs(wall())}),
                        )];
                        if let Some(at) = s.down_at.take() {
                            // The outage ends: the timeline skips the gap's length.
                            s.base = at + gap;
                            s.frames = 0;
                            s.detector =
                                EventDetector::new(&self.info.labels, s.params.clone(), hop_s);
                            msgs.push((
                                "gap",
                                json!({"type": "gap", "source": name, "start": secs(at),
                                       "seconds": secs(gap), "wall": secs(wall())}),
                            ));
                            self.stats.count_event(&name, "", "gap");
                        }
                        for (n, j) in msgs {
                            self.publish(n, &name, j.to_string());
                        }
                    }
                    Item::Down { reason } => {
                        if s.down_at.is_some() {
                            continue;
                        }
                        let at = s.now(hop_s);
                        s.down_at = Some(at);
                        let name = s.name.clone();
                        tracing::warn!(source = %name, "source down: {reason}");
                        self.finish(id);
                        // Fresh state: leaving and re-joining zeroes the row.
                        self.slots.leave(id);
                        if let Err(e) = self.slots.join(&mut self.engine, id) {
                            tracing::error!(source = %name, "cannot reset the stream state: {e:#}");
                        }
                        self.publish(
                            "source",
                            &name,
                            json!({"type": "source", "source": name, "state": "down",
                                   "reason": reason, "at": secs(at), "wall": secs(wall())})
                            .to_string(),
                        );
                    }
                    Item::End => {
                        s.ended = true;
                        let name = s.name.clone();
                        self.finish(id);
                        self.slots.leave(id);
                        self.streams.remove(&id);
                        self.publish(
                            "source",
                            &name,
                            json!({"type": "source", "source": name, "state": "ended",
                                   "wall": secs(wall())})
                            .to_string(),
                        );
                        break;
                    }
                    Item::Hops { .. } => unreachable!(),
                }
            }
        }
    }

    /// Closes the open events of stream `id` at its current time (detector stays usable).
    fn finish(&mut self, id: StreamId) {
        let hop_s = self.info.hop_seconds();
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let end = s.frames as f64 * hop_s;
        let mut ups = std::mem::take(&mut self.updates);
        s.detector.finish(end, &mut ups);
        let (name, base) = (s.name.clone(), s.base);
        for u in ups.drain(..) {
            self.emit(&name, base, u, None);
        }
        self.updates = ups;
        if let Some(s) = self.streams.get(&id) {
            s.entry.active.lock().unwrap().clear();
        }
    }

    /// One batched call over every stream that has a hop.
    fn step(&mut self) -> Result<()> {
        let hop = self.info.hop;
        let cap = self.engine.capacity();
        let mut advance = vec![false; cap];
        let mut rows: Vec<(StreamId, usize, Instant, Instant)> = Vec::new();
        for (&id, s) in self.streams.iter_mut() {
            let Some(Item::Hops {
                samples,
                captured,
                arrived,
            }) = s.queue.front()
            else {
                continue;
            };
            let Some(row) = self.slots.row_of(id) else {
                continue;
            };
            let from = s.front_used;
            self.engine
                .input_mut(row)
                .copy_from_slice(&samples[from..from + hop]);
            advance[row] = true;
            rows.push((id, row, *captured, *arrived));
            s.entry.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            s.front_used += hop;
            if s.front_used >= samples.len() {
                s.queue.pop_front();
                s.front_used = 0;
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        self.engine.run(&advance)?;
        self.stats.step_latency.observe(t0.elapsed().as_secs_f64());
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        let hop_s = self.info.hop_seconds();
        let frames_wanted = self.bus.wants_frames();
        let mut ups = std::mem::take(&mut self.updates);
        for (id, row, captured, arrived) in rows {
            let scores = self.engine.scores(row);
            let s = self.streams.get_mut(&id).unwrap();
            s.detector.push(scores, &mut ups);
            s.frames += 1;
            let n = s.entry.frames.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(10) || !ups.is_empty() {
                let mut top: Vec<(String, f32)> = self
                    .info
                    .labels
                    .iter()
                    .cloned()
                    .zip(s.detector.smoothed().iter().copied())
                    .collect();
                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                top.truncate(3);
                *s.entry.top.lock().unwrap() = top;
            }
            let frame_json = frames_wanted.then(|| {
                let m: serde_json::Map<String, serde_json::Value> = self
                    .info
                    .labels
                    .iter()
                    .zip(scores)
                    .map(|(l, &v)| (l.clone(), json!(v)))
                    .collect();
                json!({"type": "frame", "source": s.name, "time": secs(s.now(hop_s)), "scores": m})
                    .to_string()
            });
            let (name, base) = (s.name.clone(), s.base);
            if !ups.is_empty() {
                let active: Vec<String> = s.detector.active_labels().map(String::from).collect();
                *s.entry.active.lock().unwrap() = active;
            }
            for u in ups.drain(..) {
                self.emit(&name, base, u, Some((captured, arrived)));
            }
            if let Some(j) = frame_json {
                self.bus.publish(Arc::new(BusMsg {
                    kind: Kind::Frame,
                    name: "frame",
                    source: name,
                    json: j,
                }));
            }
        }
        self.updates = ups;
        Ok(())
    }

    fn emit(&self, source: &str, base: f64, u: EventUpdate, timing: Option<(Instant, Instant)>) {
        let latency = timing.map(|(captured, arrived)| {
            let now = Instant::now();
            let e = now.duration_since(arrived).as_secs_f64();
            let c = now.duration_since(captured).as_secs_f64();
            self.stats.event_latency.observe(e);
            self.stats.capture_latency.observe(c);
            (c, e)
        });
        let lat =
            latency.map(|(c, e)| json!({"capture_ms": secs(c * 1e3), "engine_ms": secs(e * 1e3)}));
        let (name, j) = match u {
            EventUpdate::Onset {
                label,
                onset,
                score,
            } => {
                self.stats.count_event(source, &label, "onset");
                (
                    "onset",
                    json!({"type": "onset", "source": source, "label": label,
                           "onset": secs(base + onset), "score": score,
                           "wall": secs(wall()), "latency": lat}),
                )
            }
            EventUpdate::Offset(e) => {
                self.stats.count_event(source, &e.label, "offset");
                (
                    "offset",
                    json!({"type": "offset", "source": source, "label": e.label,
                           "onset": secs(base + e.onset), "offset": secs(base + e.offset),
                           "score": e.score, "wall": secs(wall()), "latency": lat}),
                )
            }
        };
        self.publish(name, source, j.to_string());
    }

    fn publish(&self, name: &'static str, source: &str, json: String) {
        let msg = Arc::new(BusMsg {
            kind: Kind::Event,
            name,
            source: source.to_string(),
            json,
        });
        self.bus.publish(msg.clone());
        let _ = self.sink.send(msg);
    }
}
