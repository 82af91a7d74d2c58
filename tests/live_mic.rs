//! The virtual microphone: a private PulseAudio server with a null sink, reached by cpal
//! through ALSA's `pulse` device. A clip played into the sink with `paplay` must come out of
//! the daemon's SSE stream as the expected event; unloading and reloading the sink must show
//! up as `down`, `gap` and `up`, and tagging must resume.
#![cfg(feature = "mic")]

mod live_support;

use std::time::Duration;

use live_support::*;

const LONG: Duration = Duration::from_secs(20);

fn skip() -> bool {
    for p in ["pulseaudio", "pactl", "paplay", "sox"] {
        if !have(p) {
            // CI installs everything (scripts/test-deps.sh): there a missing tool is a failure,
            // not a reason to pass without testing.
            assert!(
                std::env::var_os("CI").is_none(),
                "`{p}` is not installed on CI"
            );
            eprintln!("SKIPPED: `{p}` is not installed (scripts/test-deps.sh installs it)");
            return true;
        }
    }
    false
}

/// 1.5 s of a 1 kHz sine, 48 kHz stereo: with the test model `impact` comes on with it (and
/// is off on silence).
fn sine_clip(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("sine.wav");
    let ok = std::process::Command::new("sox")
        .args(["-n", "-r", "48000", "-c", "2", "-b", "16"])
        .arg(&p)
        .args(["synth", "1.5", "sine", "1000", "vol", "0.5"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    p
}

/// `mambatag serve` with one `mic` source on the virtual microphone (`events` and `source`:
/// extra TOML for the `[events]` table and the source), and an SSE client that has seen the
/// source come `up`.
fn serve_mic(
    dir: &std::path::Path,
    pulse: &Pulse,
    events: &str,
    source: &str,
) -> (Served, SseClient) {
    let cfg = format!(
        "model = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[events]\n{events}[[source]]\nname = \"mic\"\nkind = \"mic\"\ndevice = \"pulse\"\n{source}",
        tiny_model().display()
    );
    let rt = pulse.runtime.display().to_string();
    let d = serve(dir, &cfg, &[("PULSE_RUNTIME_PATH", &rt)]);
    let mut sse = SseClient::connect(d.addr(), "", None);
    sse.wait(LONG, |e| e.event == "source" && e.data["state"] == "up")
        .unwrap_or_else(|| panic!("the mic never came up:\n{}", d.log_text()));
    (d, sse)
}

#[test]
fn mic_events_reach_sse_and_the_source_survives_unplugging() {
    if skip() {
        return;
    }
    let dir = scratch("vmic");
    let mut pulse = Pulse::start(&dir);
    let clip = sine_clip(&dir);
    let (mut d, mut sse) = serve_mic(
        &dir,
        &pulse,
        "min_duration = 0.05\n",
        "buffer_frames = 480\n",
    );
    // Let the silence settle (`impact` is off on silence), then play the clip.
    std::thread::sleep(Duration::from_millis(500));
    let mut play = pulse.play(&clip);
    let on = sse
        .wait(LONG, |e| e.event == "onset" && e.data["label"] == "impact")
        .unwrap_or_else(|| panic!("no `impact` onset from the played clip:\n{:?}", sse.seen));
    assert_eq!(on.data["source"], "mic");
    let _ = play.wait();

    // Unplug: the source reports it and the open events close.
    pulse.unload_sink();
    sse.wait(LONG, |e| e.event == "source" && e.data["state"] == "down")
        .unwrap_or_else(|| panic!("no `down` after unloading the sink:\n{}", d.log_text()));
    let st = get_json(&d.url("/status"));
    assert_eq!(st["sources"][0]["state"], "reconnecting", "{st}");
    std::thread::sleep(Duration::from_millis(700));

    // Plug back in: `up` and a `gap` event; tagging resumes.
    pulse.load_sink();
    let back = std::time::Instant::now();
    let gap = sse
        .wait(LONG, |e| e.event == "gap")
        .unwrap_or_else(|| panic!("no `gap` after reloading the sink:\n{}", d.log_text()));
    eprintln!(
        "resumed {:?} after the device came back; gap {} s",
        gap.at.duration_since(back),
        gap.data["seconds"]
    );
    assert!(gap.data["seconds"].as_f64().unwrap() > 0.5);
    std::thread::sleep(Duration::from_millis(300));
    let mut play = pulse.play(&clip);
    sse.wait(LONG, |e| e.event == "onset" && e.data["label"] == "impact")
        .unwrap_or_else(|| panic!("no `impact` onset after reconnecting:\n{}", d.log_text()));
    let _ = play.wait();
    let (_, m) = http("GET", &d.url("/metrics"), None);
    assert!(
        m.contains("mambatag_source_gaps_total{source=\"mic\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mambatag_source_state{source=\"mic\",state=\"running\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mambatag_events_total{source=\"mic\",label=\"\",kind=\"gap\"} 1"),
        "{m}"
    );

    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0), "{}", d.log_text());
}

#[test]
fn mic_survives_a_sound_server_restart() {
    if skip() {
        return;
    }
    let dir = scratch("vmic-restart");
    let mut pulse = Pulse::start(&dir);
    let clip = sine_clip(&dir);
    let (mut d, mut sse) = serve_mic(&dir, &pulse, "", "");
    pulse.kill_server();
    sse.wait(LONG, |e| e.event == "source" && e.data["state"] == "down")
        .unwrap_or_else(|| panic!("no `down` after the server died:\n{}", d.log_text()));
    pulse.start_again(&dir);
    sse.wait(LONG, |e| e.event == "gap")
        .unwrap_or_else(|| panic!("no `gap` after the server came back:\n{}", d.log_text()));
    std::thread::sleep(Duration::from_millis(300));
    let mut play = pulse.play(&clip);
    sse.wait(LONG, |e| e.event == "onset" && e.data["label"] == "impact")
        .unwrap_or_else(|| panic!("no `impact` onset after the restart:\n{}", d.log_text()));
    let _ = play.wait();
    signal(d.pid(), "TERM");
    assert_eq!(d.wait_exit(LONG), Some(0), "{}", d.log_text());
}

#[test]
fn devices_lists_the_pulse_device() {
    if skip() {
        return;
    }
    let dir = scratch("devices");
    let pulse = Pulse::start(&dir);
    let out = std::process::Command::new(bin())
        .args(["devices", "--json"])
        .env("PULSE_RUNTIME_PATH", &pulse.runtime)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pulse_dev = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "pulse")
        .unwrap_or_else(|| panic!("no `pulse` device in {v}"));
    assert!(pulse_dev["default_rate"].as_u64().unwrap() > 0);
    assert!(pulse_dev["default_channels"].as_u64().unwrap() > 0);
    assert!(!pulse_dev["formats"].as_array().unwrap().is_empty());
    assert!(pulse_dev["index"].is_u64());
}

/// Latency benchmark (not a timed test): `cargo test --release --test live_mic -- --ignored
/// --nocapture latency`. Plays 1 kHz bursts through `pacat --latency-msec=10` into the
/// virtual microphone and times the `alarm` onset on the SSE stream. Prints p50/p99 of:
/// play→SSE (everything, device and PulseAudio buffering included), capture→event and
/// engine→event (the `latency` fields: from the conditioning thread taking the audio off the
/// device ring, and from the engine receiving the hop), and event→SSE client.
#[test]
#[ignore]
fn latency_benchmark() {
    use std::io::Write;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    if skip() {
        return;
    }
    let dir = scratch("latency");
    let pulse = Pulse::start(&dir);
    let (d, mut sse) = serve_mic(
        &dir,
        &pulse,
        "smooth = 1\nmin_duration = 0.0\n",
        "buffer_frames = 480\n",
    );
    let mut pacat = std::process::Command::new("pacat")
        .args([
            "--playback",
            "--raw",
            "--format=s16le",
            "--rate=48000",
            "--channels=2",
            "--latency-msec=10",
        ])
        .env("PULSE_RUNTIME_PATH", &pulse.runtime)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("pacat");
    let mut w = pacat.stdin.take().unwrap();
    // Baseline: the same audio recorded by PulseAudio's own client (`parec`, 10 ms latency);
    // the time its first loud sample arrives is what the device and server buffering cost.
    let mut parec = std::process::Command::new("parec")
        .args([
            "--raw",
            "--format=s16le",
            "--rate=48000",
            "--channels=2",
            "--latency-msec=10",
            "-d",
            "vmic",
        ])
        .env("PULSE_RUNTIME_PATH", &pulse.runtime)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("parec");
    let mut rec = parec.stdout.take().unwrap();
    let (htx, hrx) = std::sync::mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 960];
        let mut loud = false;
        while rec.read_exact(&mut buf).is_ok() {
            let now = Instant::now();
            let m = buf
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs())
                .max()
                .unwrap_or(0);
            if m > 8000 && !loud {
                loud = true;
                if htx.send(now).is_err() {
                    return;
                }
            }
            if m < 100 {
                loud = false;
            }
        }
    });
    // 5 ms pieces, paced on the wall clock; bursts of 300 ms sine every 1 s.
    let piece = 240usize;
    let sine: Vec<u8> = (0..48000)
        .flat_map(|i| {
            let v = ((2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 48000.0).sin()
                * 0.5
                * 32767.0) as i16;
            let b = v.to_le_bytes();
            [b[0], b[1], b[0], b[1]]
        })
        .collect();
    let silence = vec![0u8; piece * 4];
    let trials = 40;
    let start = Instant::now();
    let mut starts = Vec::new();
    let mut k = 0u64;
    let total_pieces = (trials as u64 + 2) * 200;
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let writer = std::thread::spawn(move || {
        while k < total_pieces {
            let due = start + Duration::from_micros(5000 * k);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let in_cycle = k % 200; // 200 × 5 ms = 1 s
            let buf = if (100..160).contains(&in_cycle) {
                if in_cycle == 100 && k >= 200 {
                    let _ = tx.send(Instant::now());
                }
                let off = ((in_cycle - 100) as usize * piece * 4) % (sine.len() - piece * 4);
                &sine[off..off + piece * 4]
            } else {
                &silence[..]
            };
            if w.write_all(buf).is_err() {
                return;
            }
            k += 1;
        }
    });
    let mut total = Vec::new();
    let mut capture = Vec::new();
    let mut engine = Vec::new();
    let mut transport = Vec::new();
    let mut engine_sse = Vec::new();
    let mut baseline = Vec::new();
    let mut beyond = Vec::new();
    for _ in 0..trials {
        let Ok(t0) = rx.recv_timeout(LONG) else { break };
        starts.push(t0);
        // With the test model, `alarm` comes on at the first hop of a sine after silence.
        let Some(e) = sse.wait(Duration::from_millis(900), |e| {
            e.event == "onset" && e.data["label"] == "alarm" && e.at >= t0
        }) else {
            continue;
        };
        let wall_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        total.push(e.at.duration_since(t0).as_secs_f64() * 1e3);
        while let Ok(h) = hrx.try_recv() {
            if h >= t0 {
                baseline.push(h.duration_since(t0).as_secs_f64() * 1e3);
                beyond.push(e.at.duration_since(h).as_secs_f64() * 1e3);
                break;
            }
        }
        capture.push(e.data["latency"]["capture_ms"].as_f64().unwrap_or(f64::NAN));
        engine.push(e.data["latency"]["engine_ms"].as_f64().unwrap_or(f64::NAN));
        let tr = (wall_now - e.data["wall"].as_f64().unwrap()) * 1e3;
        transport.push(tr);
        engine_sse.push(e.data["latency"]["engine_ms"].as_f64().unwrap_or(f64::NAN) + tr);
    }
    let _ = writer.join();
    let _ = pacat.kill();
    let _ = parec.kill();
    let _ = pacat.wait();
    let _ = parec.wait();
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let n = total.len();
    let rss = read(&std::path::PathBuf::from(format!(
        "/proc/{}/status",
        d.pid()
    )))
    .lines()
    .find(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
    .unwrap_or("")
    .to_string();
    println!("latency benchmark: {n} of {trials} bursts detected");
    for (name, v) in [
        ("play→SSE (all buffering)", &mut total),
        ("play→parec (baseline)", &mut baseline),
        ("beyond parec (ours)", &mut beyond),
        ("capture→event", &mut capture),
        ("engine→event", &mut engine),
        ("event→SSE client", &mut transport),
        ("engine→SSE client", &mut engine_sse),
    ] {
        println!(
            "{name:<26} p50 {:>7.2} ms  p99 {:>7.2} ms",
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
    println!("daemon {rss}");
    let status = get_json(&d.url("/status"));
    println!(
        "step latency mean {:.3} ms, drops {}",
        status["step_latency_mean_ms"], status["drops"]
    );
    assert!(n > trials / 2, "too few bursts detected: {n}");
}

#[test]
fn listen_prints_live_tags_and_closes_them_on_ctrl_c() {
    if skip() {
        return;
    }
    let dir = scratch("listen");
    let pulse = Pulse::start(&dir);
    let clip = sine_clip(&dir);
    let out_path = dir.join("listen.out");
    let mut child = std::process::Command::new(bin())
        .args(["listen", "--json", "-D", "pulse", "--model"])
        .arg(tiny_model())
        .env("PULSE_RUNTIME_PATH", &pulse.runtime)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &std::path::Path| -> Vec<serde_json::Value> {
        read(p)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_for(LONG, || {
        lines(&out_path)
            .iter()
            .any(|v| v["type"] == "source" && v["state"] == "up")
            .then_some(())
    })
    .expect("listen: the mic came up");
    std::thread::sleep(Duration::from_millis(300));
    let mut play = pulse.play(&clip);
    wait_for(LONG, || {
        lines(&out_path)
            .iter()
            .any(|v| v["type"] == "onset" && v["label"] == "impact")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("listen printed no impact onset:\n{}", read(&out_path)));
    let _ = play.wait();
    signal(child.id(), "INT");
    let st = wait_for(LONG, || child.try_wait().ok().flatten()).expect("listen exits on SIGINT");
    assert!(st.success());
    // Every onset got its offset.
    let v = lines(&out_path);
    let onsets = v.iter().filter(|e| e["type"] == "onset").count();
    let offsets = v.iter().filter(|e| e["type"] == "offset").count();
    assert_eq!(onsets, offsets, "{}", read(&out_path));
}
