//! The service behind `mambatag serve` (and `mambatag listen`).
//!
//! ```text
//! source threads (mic / pipe / follow) ──SourceMsg──▶ engine thread ──bus──▶ SSE/WS clients
//!                                                         │
//!                                                         ├──────────────▶ sink thread (JSONL file, log)
//!                                                         └──bus──▶ MQTT thread ([`mqtt`])
//! ```
//!
//! One [`Daemon`] owns everything. Threads: one per source, one engine thread that steps all
//! streams in one batched call ([`engine`]), one sink thread, one API thread running a
//! single-threaded tokio runtime ([`crate::api`]; tokio is used for network I/O only), and the
//! caller's thread, which handles signals and the systemd watchdog ([`serve`]).
//!
//! **Shutdown** is one path, [`Daemon::shutdown`], used by SIGTERM/SIGINT, by `listen`'s
//! Ctrl-C and by the tests (through the real binary):
//! 1. sources stop (each thread sees its stop flag; a pipe blocked in `read` is waited for at
//!    most [`SOURCE_STOP_WAIT`] and then left behind);
//! 2. the engine drains — every hop already queued is stepped, then every open event is
//!    closed with an offset at its stream's current time, then `end` is published;
//! 3. the sink thread writes what is left and flushes the JSONL file;
//! 4. the API stops after the `end` message reached SSE/WebSocket clients.
//!
//! **Reload** ([`Daemon::reload`], SIGHUP): the configuration file is read and checked and
//! the model is loaded on the side; if anything is invalid the old configuration and model keep
//! serving and the reason is logged (metric `mambatag_reload_failures_total`). On success every
//! stream's open events are closed, its state is reset under the new model, sources whose
//! settings changed restart, and new sources start. `api.listen` changes need a restart.

pub mod bus;
pub mod config;
pub mod engine;
pub mod mqtt;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, Sender};

use crate::engine::slots::StreamId;
use crate::engine::EngineOptions;
use crate::events::EventParams;
use crate::live::{mic, pcm, SourceLink, SourceMsg, SourceStats};
use crate::model::ModelInfo;
use crate::sink::RotatingJsonl;

use self::bus::{Bus, BusMsg, Kind};
use self::config::{JsonlConfig, Loaded, SourceConfig, SourceKind};
use self::engine::{Ctl, Heartbeat};
use self::stats::{SourceEntry, Stats};

/// How long shutdown waits for a source thread to notice its stop flag.
pub const SOURCE_STOP_WAIT: Duration = Duration::from_secs(2);

struct RunningSource {
    config: SourceConfig,
    stop: Arc<AtomicBool>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

enum SinkCtl {
    Configure {
        jsonl: Option<JsonlConfig>,
        log: bool,
    },
}

/// A running service.
pub struct Daemon {
    loaded: Loaded,
    info: ModelInfo,
    pub stats: Arc<Stats>,
    pub bus: Bus,
    beat: Heartbeat,
    ctl: Sender<Ctl>,
    src_tx: Sender<SourceMsg>,
    engine: Option<JoinHandle<()>>,
    sink_ctl: Sender<SinkCtl>,
    sink: Option<JoinHandle<()>>,
    sources: BTreeMap<String, RunningSource>,
    next_id: StreamId,
    api: Option<crate::api::ApiHandle>,
    token: Arc<RwLock<Option<String>>>,
    mqtt: Option<mqtt::MqttSink>,
}

fn engine_options(loaded: &Loaded) -> EngineOptions {
    EngineOptions {
        device: loaded.device(),
        threads: loaded.config.threads,
        kernels: loaded.config.kernels,
        cuda: loaded.config.cuda.clone(),
        ..Default::default()
    }
}

impl Daemon {
    /// Starts everything a configuration describes. Any error here is a start-up error.
    pub fn start(loaded: Loaded) -> Result<Self> {
        let stats = Arc::new(Stats::default());
        let bus = Bus::new();
        let beat: Heartbeat = Arc::new(AtomicU64::new(0));
        let pkg = loaded.model_package()?;
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let (src_tx, src_rx) = crossbeam_channel::bounded(1024);
        let (sink_tx, sink_rx) = crossbeam_channel::unbounded::<Arc<BusMsg>>();
        let (info, engine) = engine::spawn(
            pkg,
            engine_options(&loaded),
            engine::Links {
                bus: bus.clone(),
                sink: sink_tx,
                stats: stats.clone(),
                beat: beat.clone(),
                ctl: ctl_rx,
                src: src_rx,
            },
        )
        .map_err(|e| {
            let key = if format!("{e:#}").contains("cuda") || format!("{e:#}").contains("CUDA") {
                "device"
            } else {
                "model"
            };
            let span = match key {
                "device" => loaded.config.device.as_ref().map(|d| d.span()),
                _ => loaded.config.model.as_ref().map(|m| m.span()),
            };
            anyhow!(loaded.error_at(span.unwrap_or(0..0), key, &format!("{e:#}")))
        })?;
        // Thresholds name labels: check them against the model before anything starts.
        let params = match loaded.event_params(&info) {
            Ok(p) => p,
            Err(e) => {
                let _ = ctl_tx.send(Ctl::Drain);
                let _ = engine.join();
                return Err(e.into());
            }
        };
        let (sink_ctl, sink_ctl_rx) = crossbeam_channel::unbounded();
        let sink = std::thread::Builder::new()
            .name("sinks".into())
            .spawn(move || sink_thread(sink_rx, sink_ctl_rx))?;
        let _ = sink_ctl.send(SinkCtl::Configure {
            jsonl: loaded.config.sinks.jsonl.clone(),
            log: loaded.config.sinks.log.unwrap_or(true),
        });
        let token = Arc::new(RwLock::new(loaded.config.api.token.clone()));
        let mut d = Self {
            info,
            stats,
            bus,
            beat,
            ctl: ctl_tx,
            src_tx,
            engine: Some(engine),
            sink_ctl,
            sink: Some(sink),
            sources: BTreeMap::new(),
            next_id: 1,
            api: None,
            token,
            mqtt: None,
            loaded,
        };
        // Subscribed before any source starts, so the broker misses no event.
        if let Some(m) = d.loaded.config.sinks.mqtt.clone() {
            match d.start_mqtt(m.into_inner(), &d.loaded) {
                Ok(s) => d.mqtt = Some(s),
                Err(e) => {
                    d.shutdown_inner();
                    return Err(e);
                }
            }
        }
        let listen = d.loaded.config.api.listen.get_ref().clone();
        if !listen.is_empty() {
            let api = crate::api::start(
                &listen,
                crate::api::ApiState {
                    stats: d.stats.clone(),
                    bus: d.bus.clone(),
                    token: d.token.clone(),
                    frame_scores: d.loaded.config.api.frame_scores,
                },
            )
            .map_err(|e| {
                anyhow!(d.loaded.error_at(
                    d.loaded.config.api.listen.span(),
                    "api.listen",
                    &format!("{e:#}")
                ))
            });
            match api {
                Ok(a) => d.api = Some(a),
                Err(e) => {
                    d.shutdown_inner();
                    return Err(e);
                }
            }
        }
        let sources: Vec<SourceConfig> = d
            .loaded
            .config
            .sources
            .iter()
            .map(|s| s.get_ref().clone())
            .collect();
        for (cfg, p) in sources.into_iter().zip(params) {
            d.start_source(cfg, p)?;
        }
        Ok(d)
    }

    fn topology(&self, loaded: &Loaded) -> mqtt::Topology {
        mqtt::Topology {
            sources: loaded
                .config
                .sources
                .iter()
                .map(|s| s.get_ref().name.clone())
                .collect(),
            labels: self.info.labels.clone(),
            model: self.info.name.clone(),
        }
    }

    /// The MQTT sink for `loaded`'s sources (on a reload, the configuration being applied, not
    /// the one it replaces).
    fn start_mqtt(&self, cfg: config::MqttConfig, loaded: &Loaded) -> Result<mqtt::MqttSink> {
        mqtt::MqttSink::start(
            cfg,
            self.bus.subscribe(),
            self.topology(loaded),
            self.stats.mqtt.clone(),
        )
    }

    /// The address the API listens on (None when it is off).
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.api.as_ref().map(|a| a.addr)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// True while the engine thread goes round its loop (it does at least every 100 ms).
    pub fn engine_alive(&self, within: Duration) -> bool {
        let now = self.stats.started.elapsed().as_millis() as u64;
        let beat = self.beat.load(Ordering::Relaxed);
        now.saturating_sub(beat) <= within.as_millis() as u64
            && self.engine.as_ref().is_some_and(|h| !h.is_finished())
    }

    fn start_source(&mut self, cfg: SourceConfig, params: EventParams) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let stats = Arc::new(SourceStats::default());
        let kind = match cfg.kind {
            SourceKind::Mic => "mic",
            SourceKind::Pipe => "pipe",
            SourceKind::Follow => "follow",
        };
        let entry = Arc::new(SourceEntry::new(&cfg.name, kind, stats.clone()));
        self.stats
            .sources
            .lock()
            .unwrap()
            .insert(cfg.name.clone(), entry.clone());
        self.ctl
            .send(Ctl::Register {
                id,
                name: cfg.name.clone(),
                params,
                entry,
            })
            .map_err(|_| anyhow!("the engine thread is gone"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let link = SourceLink {
            id,
            tx: self.src_tx.clone(),
            stats,
            stop: stop.clone(),
            rate: self.info.sample_rate,
            hop: self.info.hop,
        };
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let c = cfg.clone();
        let thread = std::thread::Builder::new()
            .name(format!("src-{}", cfg.name))
            .spawn(move || {
                match c.kind {
                    SourceKind::Mic => mic::run(
                        mic::MicConfig {
                            device: c.device.clone().unwrap_or_else(|| "default".into()),
                            buffer_frames: c.buffer_frames,
                        },
                        link,
                    ),
                    SourceKind::Pipe | SourceKind::Follow => pcm::run(
                        pcm::PcmConfig {
                            path: c.path.clone().unwrap_or_default(),
                            rate: c.rate.unwrap_or(16000),
                            channels: c.channels,
                            format: c.format,
                            follow: c.kind == SourceKind::Follow,
                            from_start: c.from_start,
                        },
                        link,
                    ),
                }
                let _ = done_tx.send(());
            })?;
        tracing::info!(source = %cfg.name, kind, "source started");
        self.sources.insert(
            cfg.name.clone(),
            RunningSource {
                config: cfg,
                stop,
                done,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    fn stop_sources(&mut self, names: &[String]) {
        for n in names {
            if let Some(s) = self.sources.get(n) {
                s.stop.store(true, Ordering::Relaxed);
            }
        }
        let deadline = Instant::now() + SOURCE_STOP_WAIT;
        for n in names {
            if let Some(mut s) = self.sources.remove(n) {
                let left = deadline.saturating_duration_since(Instant::now());
                if s.done.recv_timeout(left).is_ok() {
                    if let Some(t) = s.thread.take() {
                        let _ = t.join();
                    }
                } else {
                    tracing::warn!(source = %n, "source did not stop in time (blocked read); leaving it");
                }
            }
            self.stats.sources.lock().unwrap().remove(n);
        }
    }

    /// Re-reads the configuration file and the model. On error the old ones keep serving.
    pub fn reload(&mut self) -> Result<()> {
        let r = self.reload_inner();
        match &r {
            Ok(()) => {
                self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!("configuration and model reloaded");
            }
            Err(e) => {
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload refused, the old configuration keeps serving: {e:#}");
            }
        }
        r
    }

    fn reload_inner(&mut self) -> Result<()> {
        if self.loaded.text.is_empty() {
            return Err(anyhow!("nothing to reload (no configuration file)"));
        }
        let new = Loaded::read(&self.loaded.path)?;
        let pkg = new.model_package()?;
        let check = new.clone();
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.ctl
            .send(Ctl::Reload {
                model: pkg,
                opts: engine_options(&new),
                params: Box::new(move |info| {
                    let params = check.event_params(info).map_err(|e| e.to_string())?;
                    Ok(check
                        .config
                        .sources
                        .iter()
                        .map(|s| s.get_ref().name.clone())
                        .zip(params)
                        .collect::<HashMap<_, _>>())
                }),
                reply: reply_tx,
            })
            .map_err(|_| anyhow!("the engine thread is gone"))?;
        let info = reply_rx
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow!("the engine did not answer the reload"))?
            .map_err(|e| {
                let key = if e.contains("cuda") || e.contains("CUDA") {
                    "device"
                } else {
                    "model"
                };
                anyhow!("{}: {key}: {e}", new.path.display())
            })?;
        // The model and thresholds are in; now sources, sinks and the token.
        let params = new.event_params(&info)?;
        let rate_changed = info.sample_rate != self.info.sample_rate || info.hop != self.info.hop;
        self.info = info;
        if new.config.api.listen.get_ref() != self.loaded.config.api.listen.get_ref() {
            tracing::warn!("api.listen changed; the new address takes effect after a restart");
        }
        *self.token.write().unwrap() = new.config.api.token.clone();
        let _ = self.sink_ctl.send(SinkCtl::Configure {
            jsonl: new.config.sinks.jsonl.clone(),
            log: new.config.sinks.log.unwrap_or(true),
        });
        let want_mqtt = new.config.sinks.mqtt.as_ref().map(|m| m.get_ref().clone());
        if self.mqtt.as_ref().map(|m| &m.config) != want_mqtt.as_ref() {
            if let Some(old) = self.mqtt.take() {
                old.stop();
            }
            self.stats.mqtt.configured.store(false, Ordering::Relaxed);
            if let Some(m) = want_mqtt {
                self.mqtt = Some(self.start_mqtt(m, &new)?);
            }
        } else if let Some(m) = &self.mqtt {
            m.set_topology(self.topology(&new));
        }
        let wanted: BTreeMap<String, (SourceConfig, EventParams)> = new
            .config
            .sources
            .iter()
            .map(|s| s.get_ref().clone())
            .zip(params)
            .map(|(s, p)| (s.name.clone(), (s, p)))
            .collect();
        let stop: Vec<String> = self
            .sources
            .iter()
            .filter(|(n, r)| {
                // Thresholds apply without a restart (every detector is rebuilt on reload).
                let same = |a: &SourceConfig, b: &SourceConfig| {
                    let (mut a, mut b) = (a.clone(), b.clone());
                    a.thresholds.clear();
                    b.thresholds.clear();
                    a == b
                };
                rate_changed || wanted.get(*n).is_none_or(|(c, _)| !same(c, &r.config))
            })
            .map(|(n, _)| n.clone())
            .collect();
        self.stop_sources(&stop);
        for (name, (cfg, p)) in wanted {
            match self.sources.get_mut(&name) {
                Some(r) => r.config = cfg,
                None => self.start_source(cfg, p)?,
            }
        }
        self.loaded = new;
        Ok(())
    }

    /// The one shutdown path: sources stop → engine drains (offsets for open events) →
    /// sinks flush → API closes.
    pub fn shutdown(mut self) -> Result<()> {
        self.shutdown_inner();
        Ok(())
    }

    fn shutdown_inner(&mut self) {
        let names: Vec<String> = self.sources.keys().cloned().collect();
        self.stop_sources(&names);
        let _ = self.ctl.send(Ctl::Drain);
        if let Some(h) = self.engine.take() {
            let _ = h.join();
        }
        if let Some(h) = self.sink.take() {
            let _ = h.join();
        }
        if let Some(m) = self.mqtt.take() {
            m.stop();
        }
        if let Some(api) = self.api.take() {
            api.stop(Duration::from_secs(2));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.engine.is_some() {
            self.shutdown_inner();
        }
    }
}

/// Writes events to the JSONL file and the log; exits (flushing) when the engine is gone.
fn sink_thread(events: Receiver<Arc<BusMsg>>, ctl: Receiver<SinkCtl>) {
    let mut file: Option<(JsonlConfig, RotatingJsonl)> = None;
    let mut log = true;
    let configure =
        |c: SinkCtl, file: &mut Option<(JsonlConfig, RotatingJsonl)>, log: &mut bool| {
            let SinkCtl::Configure { jsonl, log: l } = c;
            *log = l;
            match jsonl {
                None => *file = None,
                Some(j) => {
                    if file.as_ref().is_some_and(|(c, _)| *c == j) {
                        return;
                    }
                    let path = Loaded::sink_path(&j.path);
                    match RotatingJsonl::open(&path, j.max_bytes, j.keep) {
                        Ok(f) => *file = Some((j, f)),
                        Err(e) => tracing::error!("JSONL sink: {e:#}"),
                    }
                }
            }
        };
    loop {
        crossbeam_channel::select! {
            recv(ctl) -> c => if let Ok(c) = c { configure(c, &mut file, &mut log) },
            recv(events) -> m => {
                let Ok(m) = m else { break };
                if m.kind != Kind::Event {
                    continue;
                }
                // Configuration first: a Configure sent before this event must apply.
                while let Ok(c) = ctl.try_recv() {
                    configure(c, &mut file, &mut log);
                }
                if log {
                    tracing::info!(target: "mambatag::event", source = %m.source, "{}", m.json);
                }
                if let Some((_, f)) = file.as_mut() {
                    if let Err(e) = f.write_line(&m.json) {
                        tracing::error!("JSONL sink: {e:#}");
                    }
                }
            }
        }
    }
    if let Some((_, mut f)) = file {
        if let Err(e) = f.flush() {
            tracing::error!("JSONL sink: {e:#}");
        }
    }
}

/// A thread running a single-threaded tokio runtime (network I/O only: the API, the MQTT
/// sink) until the future that `f` makes (inside the runtime) ends.
pub fn io_thread<F, Fut>(name: &str, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let label = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async move { f().await }),
                Err(e) => tracing::error!("{label}: cannot start its runtime: {e}"),
            }
        })
}

/// What the signal thread reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Reload,
    Stop,
}

/// Starts a thread that turns SIGHUP into [`Signal::Reload`] and SIGTERM/SIGINT into
/// [`Signal::Stop`].
pub fn signals() -> Result<Receiver<Signal>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut sigs = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in sigs.forever() {
                let sig = if s == SIGHUP {
                    Signal::Reload
                } else {
                    Signal::Stop
                };
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// `mambatag serve`: start, tell systemd READY, feed the watchdog, reload on SIGHUP, stop on
/// SIGTERM/SIGINT through [`Daemon::shutdown`].
pub fn serve(config: &Path) -> Result<()> {
    let t0 = Instant::now();
    let sig = signals()?;
    let loaded = Loaded::read(config)?;
    let mut d = Daemon::start(loaded)?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
    let status = format!(
        "serving {} source(s) with {}{}",
        d.sources.len(),
        d.info.name,
        d.api_addr()
            .map(|a| format!(", API on http://{a}"))
            .unwrap_or_default()
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    tracing::info!("ready in {ready_ms:.0} ms: {status}");
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(Duration::from_secs(1), |w| {
        (w / 3).max(Duration::from_millis(20))
    });
    let alive_within = watchdog.map_or(Duration::from_secs(5), |w| w.max(Duration::from_secs(1)));
    let mut last_ping = Instant::now() - tick;
    loop {
        if watchdog.is_some() && last_ping.elapsed() >= tick {
            if d.engine_alive(alive_within) {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("engine thread stalled; not feeding the watchdog");
            }
            last_ping = Instant::now();
        }
        match sig.recv_timeout(tick) {
            Ok(Signal::Reload) => {
                let _ = sd_notify::notify(&[
                    sd_notify::NotifyState::Reloading,
                    sd_notify::NotifyState::monotonic_usec_now()?,
                ]);
                let _ = d.reload();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            Ok(Signal::Stop) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    tracing::info!("stopping");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    d.shutdown()?;
    tracing::info!("stopped");
    Ok(())
}
