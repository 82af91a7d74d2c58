//! The MQTT sink: events and per-label states to a broker, for home automation.
//!
//! Topics, under the configured prefix `T` (default `mambatag`):
//!
//! | topic | payload | retained |
//! |---|---|---|
//! | `T/status` | `online`; `offline` on shutdown, and as the last will if the daemon dies | yes |
//! | `T/SOURCE/events` | every event's JSON, as on `/events` (`onset`, `offset`, `gap`, `source`) | no |
//! | `T/SOURCE/state/LABEL` | `ON` while an event of LABEL is open on SOURCE, else `OFF` | yes |
//! | `DISCOVERY/binary_sensor/T/SOURCE_LABEL/config` | Home Assistant discovery (`discovery = true`) | yes |
//!
//! One thread runs a single-threaded tokio runtime (network I/O only) with two tasks: the
//! client's event loop, which connects, reconnects with backoff (1 s doubling to 30 s) and keeps
//! the session alive, and the publisher, which reads the event bus (a broadcast receiver: the
//! engine never waits for the broker). Every (re)connection republishes `online` and every
//! state, so subscribers see the truth after an outage; events that happen while the broker is
//! unreachable are held (up to 1,024, then the oldest are dropped and counted) and published
//! on reconnection, with their original `wall` times.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Result};
use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::bus::{BusMsg, Kind};
use super::config::MqttConfig;

/// Publish requests the client may hold before new ones count as dropped.
const QUEUE: usize = 4096;
/// Events kept for the broker while it is unreachable (the oldest are dropped beyond this).
const HOLD: usize = 1024;
/// How long shutdown waits for `offline` and the disconnect to reach the broker.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// What `/status` and `/metrics` say about the sink.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub configured: AtomicBool,
    pub connected: AtomicBool,
    pub published: AtomicU64,
    pub dropped: AtomicU64,
    pub connects: AtomicU64,
    pub broker: Mutex<String>,
    pub last_error: Mutex<String>,
}

#[derive(Serialize)]
pub struct MqttStatus {
    pub broker: String,
    pub connected: bool,
    pub published: u64,
    pub dropped: u64,
    pub connects: u64,
    pub last_error: String,
}

impl MqttStats {
    pub fn status(&self) -> Option<MqttStatus> {
        self.configured.load(Ordering::Relaxed).then(|| MqttStatus {
            broker: self.broker.lock().unwrap().clone(),
            connected: self.connected.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap().clone(),
        })
    }
}

/// The sources and labels whose states the sink publishes, and the model's name.
#[derive(Debug, Clone)]
pub struct Topology {
    pub sources: Vec<String>,
    pub labels: Vec<String>,
    pub model: String,
}

enum Ctl {
    Topology(Topology),
}

/// A running MQTT sink.
pub struct MqttSink {
    pub config: MqttConfig,
    ctl: mpsc::UnboundedSender<Ctl>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<JoinHandle<()>>,
}

/// A topic level made of a name: MQTT wildcards and separators become `_`.
pub fn topic_level(name: &str) -> String {
    name.chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// An id Home Assistant accepts (`[a-zA-Z0-9_-]`).
fn object_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl MqttSink {
    /// Starts the sink; `events` must be subscribed before the first event can happen. Never
    /// fails for an unreachable broker (it keeps retrying); fails only if the thread cannot
    /// start.
    pub fn start(
        config: MqttConfig,
        events: broadcast::Receiver<Arc<BusMsg>>,
        topology: Topology,
        stats: Arc<MqttStats>,
    ) -> Result<Self> {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let stop = Arc::new(tokio::sync::Notify::new());
        stats.configured.store(true, Ordering::Relaxed);
        stats.connected.store(false, Ordering::Relaxed);
        *stats.broker.lock().unwrap() = config.broker.clone();
        let (c, s) = (config.clone(), stop.clone());
        let thread = super::io_thread("mqtt", move || run(c, events, topology, stats, ctl_rx, s))
            .map_err(|e| anyhow!("cannot start the MQTT thread: {e}"))?;
        Ok(Self {
            config,
            ctl: ctl_tx,
            stop,
            thread: Some(thread),
        })
    }

    /// New sources or labels (after a reload): states of removed ones are cleared.
    pub fn set_topology(&self, t: Topology) {
        let _ = self.ctl.send(Ctl::Topology(t));
    }

    /// Publishes what is already on the bus, then `offline`, disconnects and ends (at most
    /// [`STOP_WAIT`] for the broker to take it). Used at shutdown, after the engine drained,
    /// and by a reload that changes the broker settings.
    pub fn stop(mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Topics {
    prefix: String,
    discovery: Option<String>,
}

impl Topics {
    fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    fn events(&self, source: &str) -> String {
        format!("{}/{}/events", self.prefix, topic_level(source))
    }
    fn state(&self, source: &str, label: &str) -> String {
        format!(
            "{}/{}/state/{}",
            self.prefix,
            topic_level(source),
            topic_level(label)
        )
    }
    fn discovery(&self, source: &str, label: &str) -> Option<String> {
        self.discovery.as_ref().map(|d| {
            format!(
                "{d}/binary_sensor/{}/{}_{}/config",
                object_id(&self.prefix),
                object_id(source),
                object_id(label)
            )
        })
    }
}

/// A state topic's payload.
fn state_payload(on: bool) -> Vec<u8> {
    if on { "ON" } else { "OFF" }.into()
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// What the event-loop task tells the publisher.
enum Conn {
    Up,
    Down(String),
    Closed,
}

fn options(c: &MqttConfig, topics: &Topics) -> MqttOptions {
    let (host, port) = c.host_port();
    let mut o = MqttOptions::new(c.client_id.clone(), host, port);
    o.set_keep_alive(Duration::from_secs(c.keep_alive.max(1)));
    o.set_last_will(LastWill::new(topics.status(), "offline", qos(c.qos), true));
    if let Some(user) = &c.username {
        o.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
    }
    o
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        ConnectionError::Io(e) => e.to_string(),
        ConnectionError::NetworkTimeout => "connection timed out".into(),
        other => other.to_string(),
    }
}

async fn run(
    c: MqttConfig,
    mut events: broadcast::Receiver<Arc<BusMsg>>,
    topology: Topology,
    stats: Arc<MqttStats>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    stop: Arc<tokio::sync::Notify>,
) {
    let topics = Topics {
        prefix: c.topic.trim_end_matches('/').to_string(),
        discovery: c.discovery.then(|| c.discovery_prefix.clone()),
    };
    let (client, mut el) = AsyncClient::new(options(&c, &topics), QUEUE);
    let stopping = Arc::new(AtomicBool::new(false));
    let (conn_tx, mut conn) = mpsc::unbounded_channel();
    let loop_stopping = stopping.clone();
    let event_loop = tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_secs(1);
                    let _ = conn_tx.send(Conn::Up);
                }
                // After our DISCONNECT, keep reading until the broker closes the connection:
                // closing first, with its acks unread, would reset the socket, and the broker
                // would drop the last messages (and publish the will).
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {}
                Ok(_) => {}
                Err(e) => {
                    if loop_stopping.load(Ordering::Relaxed) {
                        let _ = conn_tx.send(Conn::Closed);
                        break;
                    }
                    let _ = conn_tx.send(Conn::Down(describe(&e)));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });

    let q = qos(c.qos);
    let mut topo = topology;
    // (source, label) → on
    let mut states: BTreeMap<(String, String), bool> = BTreeMap::new();
    let reset_states = |topo: &Topology, states: &mut BTreeMap<(String, String), bool>| {
        let old = std::mem::take(states);
        for s in &topo.sources {
            for l in &topo.labels {
                let k = (s.clone(), l.clone());
                let on = old.get(&k).copied().unwrap_or(false);
                states.insert(k, on);
            }
        }
        old.into_keys()
            .filter(|k| !states.contains_key(k))
            .collect::<Vec<_>>()
    };
    reset_states(&topo, &mut states);
    let mut connected = false;
    let mut outage_logged = false;
    // Events (and retained-state deletions) that happen while the broker is unreachable wait
    // here, oldest dropped first beyond HOLD; states are simply republished on connection.
    let held: RefCell<VecDeque<(String, bool, Vec<u8>)>> = RefCell::new(VecDeque::new());
    let publish = |topic: String, retain: bool, payload: Vec<u8>, connected: bool| {
        if !connected {
            let mut h = held.borrow_mut();
            if h.len() == HOLD {
                h.pop_front();
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            h.push_back((topic, retain, payload));
            return;
        }
        match client.try_publish(topic, q, retain, payload) {
            Ok(()) => stats.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
    };
    let announce = |topo: &Topology, states: &BTreeMap<(String, String), bool>| {
        publish(topics.status(), true, b"online".to_vec(), true);
        for ((s, l), on) in states {
            if let Some(t) = topics.discovery(s, l) {
                let cfg = serde_json::json!({
                    "name": l,
                    "unique_id": format!("{}_{}_{}", object_id(&c.client_id), object_id(s), object_id(l)),
                    "state_topic": topics.state(s, l),
                    "availability_topic": topics.status(),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "device_class": "sound",
                    "device": {
                        "identifiers": [format!("{}_{}", object_id(&c.client_id), object_id(s))],
                        "name": format!("mambatag {s}"),
                        "model": topo.model,
                        "manufacturer": "mambatag",
                    },
                });
                publish(t, true, cfg.to_string().into_bytes(), true);
            }
            publish(topics.state(s, l), true, state_payload(*on), true);
        }
    };

    let mut deadline: Option<tokio::time::Instant> = None;
    let finish = |connected: bool| {
        stopping.store(true, Ordering::Relaxed);
        if connected {
            publish(topics.status(), true, b"offline".to_vec(), true);
            let _ = client.try_disconnect();
        } else {
            // Never reached the broker: what was held for it is lost.
            let lost = std::mem::take(&mut *held.borrow_mut()).len();
            stats.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        }
        Some(tokio::time::Instant::now() + STOP_WAIT)
    };
    let handle =
        |m: &BusMsg, states: &mut BTreeMap<(String, String), bool>, connected: bool| match m.kind {
            Kind::Frame => false,
            Kind::End => true,
            Kind::Event => {
                publish(
                    topics.events(&m.source),
                    false,
                    m.json.clone().into_bytes(),
                    connected,
                );
                if m.name == "onset" || m.name == "offset" {
                    let label = serde_json::from_str::<serde_json::Value>(&m.json)
                        .ok()
                        .and_then(|v| v["label"].as_str().map(str::to_string));
                    if let Some(label) = label {
                        let on = m.name == "onset";
                        if connected {
                            // (else the connection will announce the state)
                            publish(
                                topics.state(&m.source, &label),
                                true,
                                state_payload(on),
                                true,
                            );
                        }
                        states.insert((m.source.clone(), label), on);
                    }
                }
                false
            }
        };
    loop {
        let until =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = conn.recv() => match ev {
                Some(Conn::Up) => {
                    connected = true;
                    outage_logged = false;
                    stats.connected.store(true, Ordering::Relaxed);
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(broker = %c.broker, "MQTT connected");
                    if deadline.is_none() {
                        announce(&topo, &states);
                        let waiting = std::mem::take(&mut *held.borrow_mut());
                        for (topic, retain, payload) in waiting {
                            publish(topic, retain, payload, true);
                        }
                    }
                }
                Some(Conn::Down(why)) => {
                    connected = false;
                    stats.connected.store(false, Ordering::Relaxed);
                    *stats.last_error.lock().unwrap() = why.clone();
                    if deadline.is_some() {
                        break;
                    }
                    if !outage_logged {
                        tracing::warn!(broker = %c.broker, "MQTT: {why}; retrying (events meanwhile are held for it, up to {HOLD})");
                        outage_logged = true;
                    }
                }
                Some(Conn::Closed) | None => break,
            },
            m = events.recv(), if deadline.is_none() => match m {
                Ok(m) => {
                    if handle(&m, &mut states, connected) {
                        deadline = finish(connected);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    stats.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => deadline = finish(connected),
            },
            Some(Ctl::Topology(t)) = ctl.recv(), if deadline.is_none() => {
                let removed = reset_states(&t, &mut states);
                for (s, l) in removed {
                    // An empty retained message deletes the retained state (and the entity).
                    publish(topics.state(&s, &l), true, Vec::new(), connected);
                    if let Some(d) = topics.discovery(&s, &l) {
                        publish(d, true, Vec::new(), connected);
                    }
                }
                topo = t;
                if connected {
                    // New sources, labels or model: announce everything once more (retained).
                    announce(&topo, &states);
                }
            },
            _ = stop.notified(), if deadline.is_none() => {
                // What is already on the bus (the drain's offsets) goes out first.
                while let Ok(m) = events.try_recv() {
                    if handle(&m, &mut states, connected) {
                        break;
                    }
                }
                deadline = finish(connected);
            },
            _ = tokio::time::sleep_until(until), if deadline.is_some() => break,
        }
    }
    stats.connected.store(false, Ordering::Relaxed);
    event_loop.abort();
    let _ = event_loop.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_topic_levels_and_ids() {
        assert_eq!(topic_level("kitchen/mic #1+"), "kitchen_mic _1_");
        assert_eq!(object_id("kitchen mic-1/ä"), "kitchen_mic-1__");
        let t = Topics {
            prefix: "home/tags".into(),
            discovery: Some("homeassistant".into()),
        };
        assert_eq!(t.state("a/b", "speech"), "home/tags/a_b/state/speech");
        assert_eq!(t.events("mic"), "home/tags/mic/events");
        assert_eq!(
            t.discovery("mic", "speech").unwrap(),
            "homeassistant/binary_sensor/home_tags/mic_speech/config"
        );
    }
}
