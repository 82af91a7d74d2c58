//! `mambatag serve` end to end with the real binary: raw PCM on stdin as the source, the API
//! over real HTTP/SSE/WebSocket on 127.0.0.1, configuration errors, SIGHUP, SIGTERM and the
//! systemd notification socket.

mod live_support;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use live_support::*;

const LONG: Duration = Duration::from_secs(30);

fn pipe_config(dir: &std::path::Path, extra: &str) -> String {
    format!(
        r#"model = "{model}"
[api]
listen = "127.0.0.1:0"
{extra}
[sinks.jsonl]
path = "{dir}/events.jsonl"

{STDIN_SOURCE}"#,
        model = tiny_model().display(),
        dir = dir.display()
    )
}

#[test]
fn every_endpoint_answers_and_events_flow() {
    let dir = scratch("endpoints");
    let mut d = serve(&dir, &pipe_config(&dir, ""), &[]);
    let addr = d.addr();
    let mut sse = SseClient::connect(addr, "", None);
    let mut sse_other = SseClient::connect(addr, "?source=nosuch", None);
    // WebSocket with per-frame scores.
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(LONG)).unwrap();
    let (mut ws, _) =
        tungstenite::client(format!("ws://{addr}/ws?scores=true"), tcp).expect("ws handshake");

    let stop = Arc::new(AtomicBool::new(false));
    // Silence then a sine: with the test model, `impact` comes on with the sine.
    let mut audio = pcm(0.5, 16000, false);
    audio.extend(pcm(1.5, 16000, true));
    let feeder = feed(d.stdin(), audio, 16000, stop.clone());

    let onset = sse
        .wait(LONG, |e| e.event == "onset")
        .expect("an onset on the SSE stream");
    assert_eq!(onset.data["source"], "in");
    assert!(onset.data["label"].is_string() && onset.data["score"].as_f64().unwrap() > 0.0);
    assert!(onset.data["latency"]["engine_ms"].as_f64().is_some());
    sse.wait(LONG, |e| e.event == "onset" && e.data["label"] == "impact")
        .expect("`impact` comes on with the sine");

    // WebSocket: frames with scores, and the same events.
    let mut frames = 0;
    let mut events = 0;
    let end = Instant::now() + LONG;
    while (frames < 5 || events < 1) && Instant::now() < end {
        let m = ws.read().expect("ws message");
        if let tungstenite::Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            match v["type"].as_str().unwrap() {
                "frame" => {
                    assert_eq!(v["scores"].as_object().unwrap().len(), 8);
                    frames += 1;
                }
                "onset" | "offset" => events += 1,
                _ => {}
            }
        }
    }
    assert!(
        frames >= 5 && events >= 1,
        "ws: {frames} frames, {events} events"
    );

    let (st, body) = http("GET", &d.url("/health"), None);
    assert_eq!((st, body.contains("ok")), (200, true));
    let status = get_json(&d.url("/status"));
    let src = &status["sources"][0];
    assert_eq!(src["name"], "in");
    assert_eq!(src["state"], "running");
    assert!(src["frames"].as_u64().unwrap() > 10, "{status}");
    assert_eq!(src["drops"], 0);
    assert!(src["top"].as_array().unwrap().len() == 3, "{status}");
    assert!(status["step_latency_mean_ms"].as_f64().unwrap() > 0.0);
    let labels = get_json(&d.url("/labels"));
    assert_eq!(labels["labels"].as_array().unwrap().len(), 8);
    assert!(labels["labels"][0]["on"].as_f64().unwrap() > 0.0);
    let (st, metrics) = http("GET", &d.url("/metrics"), None);
    assert_eq!(st, 200);
    for needle in [
        "mambatag_frames_total{source=\"in\"}",
        "mambatag_dropped_samples_total{source=\"in\"} 0",
        "mambatag_events_total{source=\"in\",label=\"impact\",kind=\"onset\"}",
        "mambatag_step_seconds_bucket{le=\"+Inf\"}",
        "mambatag_source_state{source=\"in\",state=\"running\"} 1",
        "mambatag_nan_samples_total{source=\"in\"} 0",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // Bad requests are 4xx.
    assert_eq!(http("GET", &d.url("/nope"), None).0, 404);
    assert_eq!(http("POST", &d.url("/status"), None).0, 405);
    assert_eq!(http("GET", &d.url("/events?bogus=1"), None).0, 400);
    assert_eq!(http("GET", &d.url("/ws?scores=maybe"), None).0, 400);
    let plain_ws = http("GET", &d.url("/ws"), None).0;
    assert!(
        (400..500).contains(&plain_ws),
        "GET /ws without upgrade: {plain_ws}"
    );

    // The filtered SSE stream got none of the events of `in`.
    assert!(sse_other
        .wait(Duration::from_millis(300), |e| e.event == "onset")
        .is_none());

    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0), "{}", d.log_text());
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    sse.wait(LONG, |e| e.event == "end")
        .expect("`end` closes the SSE stream");
    let jsonl = read(&dir.join("events.jsonl"));
    assert!(jsonl.lines().any(|l| l.contains("\"onset\"")), "{jsonl}");
}

#[test]
fn sigterm_closes_open_events_everywhere_and_exits_0() {
    let dir = scratch("sigterm");
    let mut d = serve(&dir, &pipe_config(&dir, ""), &[]);
    let mut sse = SseClient::connect(d.addr(), "", None);
    let stop = Arc::new(AtomicBool::new(false));
    // A continuous sine keeps `impact` on until the end.
    let feeder = feed(d.stdin(), pcm(60.0, 16000, true), 16000, stop.clone());
    sse.wait(LONG, |e| e.event == "onset" && e.data["label"] == "impact")
        .expect("impact onset");
    let open_before: Vec<String> = {
        let st = get_json(&d.url("/status"));
        st["sources"][0]["active"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        open_before.contains(&"impact".to_string()),
        "{open_before:?}"
    );
    signal(d.pid(), "TERM");
    let off = sse
        .wait(LONG, |e| e.event == "offset" && e.data["label"] == "impact")
        .expect("an offset for the open `impact` event");
    assert!(off.data["offset"].as_f64().unwrap() >= off.data["onset"].as_f64().unwrap());
    sse.wait(LONG, |e| e.event == "end").expect("end");
    assert_eq!(d.wait_exit(LONG), Some(0), "{}", d.log_text());
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    // Every open event got its offset, in the SSE stream and in the JSONL file.
    let jsonl = read(&dir.join("events.jsonl"));
    for label in &open_before {
        assert!(
            sse.seen
                .iter()
                .any(|e| e.event == "offset" && e.data["label"] == label.as_str()),
            "no SSE offset for {label}"
        );
        assert!(
            jsonl.lines().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["type"] == "offset" && v["label"] == label.as_str()
            }),
            "no JSONL offset for {label}:\n{jsonl}"
        );
    }
}

#[test]
fn a_token_is_required_off_loopback() {
    let dir = scratch("token");
    // Without a token a non-loopback address is a configuration error.
    let cfg = pipe_config(&dir, "").replace("127.0.0.1:0", "0.0.0.0:0");
    std::fs::write(dir.join("c.toml"), &cfg).unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(dir.join("c.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("c.toml:3:") && err.contains("api.listen") && err.contains("token"),
        "{err}"
    );

    let cfg = pipe_config(&dir, "token = \"s3cret\"").replace("127.0.0.1:0", "0.0.0.0:0");
    let d = serve(&dir, &cfg, &[]);
    // Connect through loopback (the only network the tests use).
    let port = d.addr().port();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    assert_eq!(http("GET", &url("/health"), None).0, 200);
    for p in ["/status", "/labels", "/metrics", "/events"] {
        assert_eq!(http("GET", &url(p), None).0, 401, "{p} without token");
        assert_eq!(
            http("GET", &url(p), Some("wrong")).0,
            401,
            "{p} wrong token"
        );
    }
    for p in ["/status", "/labels", "/metrics"] {
        assert_eq!(
            http("GET", &url(p), Some("s3cret")).0,
            200,
            "{p} with token"
        );
    }
    // The SSE stream opens (200) with the token.
    let _sse = SseClient::connect(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "",
        Some("s3cret"),
    );
}

fn start_fails(name: &str, text: &str) -> String {
    serve_refuses(name, text, &[])
}

#[test]
fn configuration_errors_name_file_line_and_key() {
    let model = tiny_model().display().to_string();
    let e = start_fails(
        "unknown-key",
        &format!("model = \"{model}\"\n[api]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n"),
    );
    assert!(
        e.contains("c.toml:4:") && e.contains("api.lisen") && e.contains("unknown field"),
        "{e}"
    );
    let e = start_fails(
        "bad-type",
        &format!("model = \"{model}\"\nthreads = \"two\"\n"),
    );
    assert!(
        e.contains("c.toml:2:") && e.contains("key `threads`"),
        "{e}"
    );
    let e = start_fails("missing-model", "model = \"/no/such/model\"\n");
    assert!(
        e.contains("c.toml:1:") && e.contains("key `model`") && e.contains("/no/such/model"),
        "{e}"
    );
    let e = start_fails(
        "bad-device",
        &format!("model = \"{model}\"\n\ndevice = \"tpu\"\n"),
    );
    assert!(e.contains("c.toml:3:") && e.contains("key `device`"), "{e}");
    if !cfg!(feature = "cuda") {
        let e = start_fails(
            "cuda-device",
            &format!("model = \"{model}\"\ndevice = \"cuda\"\n"),
        );
        assert!(
            e.contains("c.toml:2:") && e.contains("key `device`") && e.contains("cuda"),
            "{e}"
        );
    }
    let e = start_fails(
        "bad-label",
        &format!("model = \"{model}\"\n[events.thresholds]\nspeach = 0.5\n"),
    );
    assert!(e.contains("c.toml:3:") && e.contains("speach"), "{e}");
    let e = start_fails(
        "pipe-no-rate",
        &format!("model = \"{model}\"\n[[source]]\nname = \"x\"\nkind = \"pipe\"\npath = \"-\"\n"),
    );
    assert!(e.contains("c.toml:") && e.contains("source.rate"), "{e}");
}

#[test]
fn sighup_keeps_the_old_config_when_the_new_one_is_bad_and_applies_a_good_one() {
    let dir = scratch("sighup");
    let good = pipe_config(&dir, "");
    let mut d = serve(&dir, &good, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(d.stdin(), Vec::new(), 16000, stop.clone());
    wait_for(LONG, || {
        let st = get_json(&d.url("/status"));
        (st["sources"][0]["frames"].as_u64()? > 0).then_some(())
    })
    .expect("frames");

    // 1. An unknown key: refused, old config keeps serving.
    std::fs::write(&d.config, format!("{good}\nbogus = 1\n")).unwrap();
    signal(d.pid(), "HUP");
    wait_for(LONG, || {
        let (_, m) = http("GET", &d.url("/metrics"), None);
        m.contains("mambatag_reload_failures_total 1").then_some(())
    })
    .unwrap_or_else(|| panic!("reload not refused:\n{}", d.log_text()));
    // 2. A missing model: refused too.
    std::fs::write(
        &d.config,
        good.replace(&tiny_model().display().to_string(), "/no/model"),
    )
    .unwrap();
    signal(d.pid(), "HUP");
    wait_for(LONG, || {
        let (_, m) = http("GET", &d.url("/metrics"), None);
        m.contains("mambatag_reload_failures_total 2").then_some(())
    })
    .expect("second refusal");
    let log = d.log_text();
    assert!(
        log.contains("reload refused") && log.contains("bogus"),
        "{log}"
    );
    let st = get_json(&d.url("/status"));
    assert_eq!(st["sources"][0]["name"], "in");
    let before = st["sources"][0]["frames"].as_u64().unwrap();
    wait_for(LONG, || {
        let st = get_json(&d.url("/status"));
        (st["sources"][0]["frames"].as_u64()? > before).then_some(())
    })
    .expect("still tagging after refused reloads");

    // 3. A good change: a threshold for `impact` and a second source (a followed file).
    let follow = dir.join("follow.pcm");
    std::fs::write(&follow, pcm(0.5, 16000, true)).unwrap();
    let new = format!(
        "{}\n[[source]]\nname = \"tail\"\nkind = \"follow\"\npath = \"{}\"\nrate = 16000\nfrom_start = true\n[source.thresholds]\nimpact = 0.9\n",
        good,
        follow.display()
    );
    std::fs::write(&d.config, new).unwrap();
    signal(d.pid(), "HUP");
    wait_for(LONG, || {
        let st = get_json(&d.url("/status"));
        let names: Vec<&str> = st["sources"]
            .as_array()?
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        (names == ["in", "tail"] && st["reloads"] == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("reload not applied:\n{}", d.log_text()));
    // The followed file is tagged as it grows.
    wait_for(LONG, || {
        let st = get_json(&d.url("/status"));
        let tail = st["sources"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "tail")?
            .clone();
        (tail["frames"].as_u64()? >= 50).then_some(())
    })
    .expect("the followed file is read");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&follow)
        .unwrap();
    f.write_all(&pcm(0.5, 16000, true)).unwrap();
    wait_for(LONG, || {
        let st = get_json(&d.url("/status"));
        let tail = st["sources"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "tail")?
            .clone();
        (tail["frames"].as_u64()? >= 100).then_some(())
    })
    .expect("appended audio is tagged");
    // Two streams share one batched call.
    let (_, m) = http("GET", &d.url("/metrics"), None);
    assert!(m.contains("mambatag_batch_rows 2"), "{m}");

    // 4. Only a threshold of `in` changes: applied without restarting the source.
    let frames_of = |name: &str| -> u64 {
        let st = get_json(&d.url("/status"));
        st["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["frames"].as_u64())
            .unwrap_or(0)
    };
    let before = frames_of("in");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let text = text.replacen(
        "rate = 16000\n",
        "rate = 16000\n[source.thresholds]\nspeech = 0.8\n",
        1,
    );
    std::fs::write(&d.config, text).unwrap();
    signal(d.pid(), "HUP");
    wait_for(LONG, || {
        (get_json(&d.url("/status"))["reloads"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("threshold reload not applied:\n{}", d.log_text()));
    assert!(frames_of("in") >= before, "`in` was restarted");
    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0));
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
}

#[test]
fn ready_and_watchdog_notifications_reach_the_notify_socket() {
    let dir = scratch("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    let t0 = Instant::now();
    let mut d = serve(
        &dir,
        &pipe_config(&dir, ""),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let mut buf = [0u8; 4096];
    let mut ready = None;
    let mut pings = 0;
    let end = Instant::now() + LONG;
    while Instant::now() < end && (ready.is_none() || pings < 3) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => break,
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("READY=1") && ready.is_none() {
            ready = Some(t0.elapsed());
        }
        if msg.contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    let ready = ready.expect("READY=1");
    assert!(pings >= 3, "watchdog fed {pings} times");
    eprintln!("READY after {ready:?} (process start to notification)");
    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0));
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 sent");
}

#[test]
fn the_shipped_config_is_valid() {
    let out = std::process::Command::new(bin())
        .args(["serve", "--check", "--config"])
        .arg(repo().join("config/mambatag.toml"))
        .env("MAMBATAG_MODEL", tiny_model())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nan_in_live_pcm_is_zeroed_and_counted() {
    let dir = scratch("nan");
    let cfg = pipe_config(&dir, "").replace("rate = 16000", "rate = 16000\nformat = \"f32le\"");
    let mut d = serve(&dir, &cfg, &[]);
    let mut w = d.stdin();
    let mut bytes = Vec::new();
    for i in 0..3200 {
        let v = if i % 100 == 0 { f32::NAN } else { 0.1 };
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    w.write_all(&bytes).unwrap();
    w.flush().unwrap();
    wait_for(LONG, || {
        let st = get_json(&d.url("/status"));
        let s = &st["sources"][0];
        (s["nan_samples"].as_u64()? == 32 && s["frames"].as_u64()? == 20).then_some(())
    })
    .unwrap_or_else(|| panic!("{}", get_json(&d.url("/status"))));
    drop(w);
    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0));
}

/// RSS benchmark (not a timed test): `cargo test --release --test daemon -- --ignored
/// --nocapture rss`. Runs `serve` with `models/default` (skipped when absent) and one pipe
/// source fed 12 s of `demo/demo.flac` in real time; prints the peak RSS and step times.
#[test]
#[ignore]
fn rss_with_the_default_model() {
    let model = repo().join("models/default");
    if !model.join("step.onnx").is_file() {
        eprintln!("SKIPPED: no models/default");
        return;
    }
    let dir = scratch("rss");
    let pcm_path = dir.join("demo.pcm");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(repo().join("demo/demo.flac"))
        .args(["-f", "s16le", "-ac", "1", "-ar", "16000"])
        .arg(&pcm_path)
        .status()
        .expect("ffmpeg")
        .success();
    assert!(ok);
    let audio = std::fs::read(&pcm_path).unwrap();
    let cfg = pipe_config(&dir, "").replace(
        &tiny_model().display().to_string(),
        &model.display().to_string(),
    );
    let mut d = serve(&dir, &cfg, &[]);
    let mut w = d.stdin();
    let start = Instant::now();
    let piece = 640; // 20 ms
    let mut k = 0usize;
    while start.elapsed() < Duration::from_secs(12) {
        let off = (k * piece) % (audio.len() - piece);
        w.write_all(&audio[off..off + piece]).unwrap();
        k += 1;
        let due = start + Duration::from_millis(20 * k as u64);
        if let Some(s) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(s);
        }
    }
    let status = read(&std::path::PathBuf::from(format!(
        "/proc/{}/status",
        d.pid()
    )));
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .to_string();
    let st = get_json(&d.url("/status"));
    println!(
        "default model: {hwm}; frames {}, step mean {:.3} ms, p50 ≤ {} ms, p99 ≤ {} ms",
        st["frames"],
        st["step_latency_mean_ms"],
        st["step_latency_p50_ms"],
        st["step_latency_p99_ms"]
    );
    drop(w);
    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0));
}

#[test]
fn sighup_switches_to_another_model() {
    let other = repo().join("models/default");
    if !other.join("step.onnx").is_file() {
        eprintln!("SKIPPED: no models/default to switch to");
        return;
    }
    let dir = scratch("swap");
    let cfg = pipe_config(&dir, "");
    let mut d = serve(&dir, &cfg, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut sse = SseClient::connect(d.addr(), "", None);
    let feeder = feed(d.stdin(), pcm(0.5, 16000, true), 16000, stop.clone());
    sse.wait(LONG, |e| e.event == "onset")
        .expect("an onset with the test model");
    let before = get_json(&d.url("/labels"));
    assert!(before["model"].as_str().unwrap().contains("test-tiny"));
    std::fs::write(
        &d.config,
        cfg.replace(
            &tiny_model().display().to_string(),
            &other.display().to_string(),
        ),
    )
    .unwrap();
    let hup = Instant::now();
    signal(d.pid(), "HUP");
    let after = wait_for(LONG, || {
        let l = get_json(&d.url("/labels"));
        (!l["model"].as_str()?.contains("test-tiny")).then_some(l)
    })
    .unwrap_or_else(|| panic!("model not switched:\n{}", d.log_text()));
    assert_ne!(
        before["labels"], after["labels"],
        "thresholds differ between the models"
    );
    // Open events were closed at the switch, and tagging goes on with the new model.
    sse.wait(LONG, |e| e.event == "offset" && e.at >= hup)
        .expect("offsets at the switch");
    let frames = get_json(&d.url("/status"))["frames"].as_u64().unwrap();
    wait_for(LONG, || {
        (get_json(&d.url("/status"))["frames"].as_u64()? > frames + 20).then_some(())
    })
    .expect("frames after the switch");
    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0), "{}", d.log_text());
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
}
