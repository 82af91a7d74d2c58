//! The MQTT sink against a real broker (mosquitto) and a real subscriber (mosquitto_sub):
//! events and retained per-label states, Home Assistant discovery, `offline` on shutdown, a
//! broker that comes up after the daemon, the last will when the daemon dies, a reload that
//! moves the topic, and configuration errors.

mod live_support;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use live_support::*;

const LONG: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto broker on 127.0.0.1:`port`, killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(port: u16, dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join(format!("broker-{port}.log"))).unwrap();
        let child = Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto is needed for the MQTT tests (apt-get install mosquitto)");
        let up = wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "mosquitto did not listen on {port}");
        Self { child, port }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_sub -t '#'` printing `RETAIN TOPIC PAYLOAD` per message, collected on a thread.
struct Sub {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    fn start(port: u16) -> Self {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "#"])
            .args(["-F", "%r %t %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub is needed (apt-get install mosquitto-clients)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        let s = Self { child, lines };
        // Subscribed once a probe published after the start comes back.
        let seen = wait_for(Duration::from_secs(10), || {
            pub_msg(port, "probe/sub", "x", false);
            std::thread::sleep(Duration::from_millis(100));
            s.has(|l| l.ends_with("probe/sub x")).then_some(())
        });
        assert!(seen.is_some(), "mosquitto_sub never subscribed");
        s
    }

    fn has(&self, f: impl Fn(&str) -> bool) -> bool {
        self.lines.lock().unwrap().iter().any(|l| f(l))
    }

    fn wait(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let hit = wait_for(LONG, || {
            self.lines.lock().unwrap().iter().find(|l| f(l)).cloned()
        });
        hit.unwrap_or_else(|| panic!("no message {what}; got:\n{}", self.text()))
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pub_msg(port: u16, topic: &str, msg: &str, retain: bool) {
    let mut c = Command::new("mosquitto_pub");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        topic,
        "-m",
        msg,
    ]);
    if retain {
        c.arg("-r");
    }
    let _ = c.status();
}

/// The retained message of `topic` right now (a fresh subscriber's first message).
fn retained(port: u16, topic: &str) -> Option<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-C", "1", "-W", "2", "--retained-only"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn config(port: u16, topic: &str) -> String {
    format!(
        r#"model = "{model}"
[api]
listen = "127.0.0.1:0"
[sinks]
log = false
[sinks.mqtt]
broker = "127.0.0.1:{port}"
topic = "{topic}"
keep_alive = 2
discovery = true

{STDIN_SOURCE}"#,
        model = tiny_model().display(),
    )
}

#[test]
fn events_and_states_reach_a_real_broker() {
    let dir = scratch("mqtt-flow");
    let broker = Broker::start(free_port(), &dir);
    let port = broker.port;
    let sub = Sub::start(port);
    let mut d = serve(&dir, &config(port, "home/tags"), &[]);
    let mut sse = SseClient::connect(d.addr(), "", None);

    sub.wait("online", |l| {
        l == "1 home/tags/status online" || l == "0 home/tags/status online"
    });
    // Every state starts OFF (retained), with a discovery config per label.
    sub.wait("impact OFF", |l| {
        l.ends_with(" home/tags/in/state/impact OFF")
    });
    let disc = sub.wait("discovery", |l| {
        l.contains(" homeassistant/binary_sensor/home_tags/in_impact/config ")
    });
    let json: serde_json::Value =
        serde_json::from_str(disc.split_once("/config ").unwrap().1).unwrap();
    assert_eq!(json["state_topic"], "home/tags/in/state/impact");
    assert_eq!(json["availability_topic"], "home/tags/status");
    assert_eq!(json["payload_on"], "ON");
    assert_eq!(json["device_class"], "sound");

    // Silence then a sine: with the test model, `impact` comes on with the sine.
    let stop = Arc::new(AtomicBool::new(false));
    let mut audio = pcm(0.5, 16000, false);
    audio.extend(pcm(1.5, 16000, true));
    let feeder = feed(d.stdin(), audio, 16000, stop.clone());
    let sse_onset = sse
        .wait(LONG, |e| e.event == "onset" && e.data["label"] == "impact")
        .expect("impact onset on SSE");
    let ev = sub.wait("impact onset event", |l| {
        l.starts_with("0 home/tags/in/events ")
            && l.contains("\"impact\"")
            && l.contains("\"onset\"")
    });
    let ev: serde_json::Value = serde_json::from_str(ev.split_once("/events ").unwrap().1).unwrap();
    // The same event as the API's.
    assert_eq!(ev, sse_onset.data);
    sub.wait("impact ON", |l| l == "0 home/tags/in/state/impact ON");
    assert_eq!(
        retained(port, "home/tags/in/state/impact").as_deref(),
        Some("ON")
    );

    let status = get_json(&d.url("/status"));
    assert_eq!(status["mqtt"]["connected"], true, "{status}");
    assert_eq!(status["mqtt"]["broker"], format!("127.0.0.1:{port}"));
    assert!(
        status["mqtt"]["published"].as_u64().unwrap() >= 17,
        "{status}"
    );
    assert_eq!(status["mqtt"]["dropped"], 0, "{status}");
    let (_, metrics) = http("GET", &d.url("/metrics"), None);
    assert!(metrics.contains("mambatag_mqtt_connected 1"), "{metrics}");

    // SIGTERM: the open event is closed (OFF), then `offline`, before the process exits.
    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0), "{}", d.log_text());
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    sub.wait("impact OFF after the drain", |l| {
        l == "0 home/tags/in/state/impact OFF"
    });
    sub.wait("offline", |l| l == "0 home/tags/status offline");
    assert_eq!(
        retained(port, "home/tags/status").as_deref(),
        Some("offline")
    );
    assert_eq!(
        retained(port, "home/tags/in/state/impact").as_deref(),
        Some("OFF"),
        "{}",
        sub.text()
    );
    let text = sub.text();
    let on = text.find("home/tags/in/state/impact ON").unwrap();
    let off = text.rfind("home/tags/in/state/impact OFF").unwrap();
    let offline = text.rfind("home/tags/status offline").unwrap();
    assert!(on < off && off < offline, "order:\n{text}");
    // A clean DISCONNECT, so that `offline` was ours and not the last will.
    let log = read(&dir.join(format!("broker-{port}.log")));
    let ours: Vec<&str> = log.lines().filter(|l| l.contains(" mambatag-")).collect();
    assert!(
        ours.last().is_some_and(|l| l.ends_with(" disconnected.")),
        "{log}"
    );
}

#[test]
fn a_late_broker_a_dead_daemon_and_a_moved_topic() {
    let dir = scratch("mqtt-late");
    let port = free_port();
    // No broker yet: the daemon starts anyway and says why it is not connected.
    let mut d = serve(&dir, &config(port, "mambatag"), &[]);
    let status = wait_for(LONG, || {
        let s = get_json(&d.url("/status"));
        (!s["mqtt"]["last_error"].as_str().unwrap_or("").is_empty()).then_some(s)
    })
    .expect("an MQTT error in /status");
    assert_eq!(status["mqtt"]["connected"], false, "{status}");
    assert!(
        d.log_text().contains(&format!("127.0.0.1:{port}")) && d.log_text().contains("retrying"),
        "{}",
        d.log_text()
    );
    let (_, metrics) = http("GET", &d.url("/metrics"), None);
    assert!(metrics.contains("mambatag_mqtt_connected 0"), "{metrics}");

    // The broker comes up: the daemon connects on its own and announces itself.
    let broker = Broker::start(port, &dir);
    let t0 = Instant::now();
    let on = wait_for(LONG, || retained(port, "mambatag/status"));
    assert_eq!(on.as_deref(), Some("online"));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(
        retained(port, "mambatag/in/state/speech").as_deref(),
        Some("OFF")
    );
    assert_eq!(get_json(&d.url("/status"))["mqtt"]["connected"], true);

    // SIGHUP with another topic and one more source: the old prefix goes offline, the new one
    // online, with the states of the sources of the new configuration.
    let sub = Sub::start(port);
    let hall = dir.join("hall.raw");
    std::fs::write(&hall, b"").unwrap();
    let more = format!(
        "{}\n[[source]]\nname = \"hall\"\nkind = \"follow\"\npath = \"{}\"\nrate = 16000\n",
        config(port, "house"),
        hall.display()
    );
    std::fs::write(&d.config, more).unwrap();
    signal(d.pid(), "HUP");
    sub.wait("old prefix offline", |l| l == "0 mambatag/status offline");
    sub.wait("new prefix online", |l| l == "0 house/status online");
    sub.wait("new states", |l| l == "0 house/in/state/speech OFF");
    sub.wait("the added source's states", |l| {
        l == "0 house/hall/state/speech OFF"
    });

    // Killed without a chance to say goodbye: the broker publishes the last will.
    let _stdin = d.stdin();
    signal(d.pid(), "KILL");
    let _ = d.wait_exit(LONG);
    sub.wait("the last will", |l| l == "0 house/status offline");
    assert_eq!(retained(port, "house/status").as_deref(), Some("offline"));
    drop(broker);
}

fn check_fails(name: &str, mqtt: &str) -> String {
    let text = format!(
        "model = \"{}\"\n[sinks.mqtt]\n{mqtt}\n",
        tiny_model().display()
    );
    let err = serve_refuses(name, &text, &["--check"]);
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_mqtt_settings_are_named() {
    for (name, mqtt, key, why) in [
        ("no-broker", "topic = \"x\"", "broker", "missing field"),
        (
            "bad-broker",
            "broker = \"localhost:99999\"",
            "sinks.mqtt.broker",
            "not a broker address",
        ),
        (
            "tls",
            "broker = \"mqtts://example.org:8883\"",
            "sinks.mqtt.broker",
            "plain TCP",
        ),
        (
            "qos",
            "broker = \"localhost\"\nqos = 3",
            "sinks.mqtt.qos",
            "0, 1 or 2",
        ),
        (
            "wildcard",
            "broker = \"localhost\"\ntopic = \"home/#\"",
            "sinks.mqtt.topic",
            "no `+`/`#`",
        ),
        (
            "password",
            "broker = \"localhost\"\npassword = \"p\"",
            "sinks.mqtt.password",
            "username",
        ),
        (
            "keepalive",
            "broker = \"localhost\"\nkeep_alive = 0",
            "sinks.mqtt.keep_alive",
            "1 to 65535",
        ),
        (
            "unknown",
            "broker = \"localhost\"\nport = 1883",
            "port",
            "unknown field",
        ),
    ] {
        let e = check_fails(&format!("mqtt-{name}"), mqtt);
        assert!(
            e.contains("c.toml:") && e.contains(key) && e.contains(why),
            "{name}: expected `{key}` and `{why}` in: {e}"
        );
    }
}

/// The commented `[sinks.mqtt]` block of the shipped configuration is valid once uncommented.
#[test]
fn the_shipped_mqtt_example_is_valid() {
    let text = read(&repo().join("config/mambatag.toml"));
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == "# [sinks.mqtt]" {
            inside = true;
        } else if inside && !line.starts_with("# ") {
            inside = false;
        }
        let line = if inside {
            line.trim_start_matches("# ")
                .replace("\"mambatag-HOSTNAME\"", "\"mambatag-test\"")
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert!(out.contains("\n[sinks.mqtt]\nbroker = "), "{out}");
    let dir = scratch("mqtt-shipped");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, out).unwrap();
    let o = Command::new(bin())
        .args(["serve", "--check", "--config"])
        .arg(&cfg)
        .env("MAMBATAG_MODEL", tiny_model())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
