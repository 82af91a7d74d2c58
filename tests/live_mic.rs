//! The virtual microphone: a private PulseAudio server with a null sink, reached by cpal
//! through ALSA's `pulse` device. A clip played into the sink with `paplay` must come out of
//! the daemon's SSE stream as the expected event; unloading and reloading the sink must show
//! up as `down`, `gap` and `up`, and tagging must resume.

mod live_support;

use std::time::Duration;

use live_support::*;

const LONG: Duration = Duration::from_secs(20);

fn skip() -> bool {
    for p in ["pulseaudio", "pactl", "paplay", "sox"] {
        if !have(p) {
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

#[test]
fn mic_events_reach_sse_and_the_source_survives_unplugging() {
    if skip() {
        return;
    }
    let dir = scratch("vmic");
    let mut pulse = Pulse::start(&dir);
    let clip = sine_clip(&dir);
    let cfg = format!(
        r#"model = "{}"
[api]
listen = "127.0.0.1:0"
[events]
min_duration = 0.05
[[source]]
name = "mic"
kind = "mic"
device = "pulse"
buffer_frames = 480
"#,
        tiny_model().display()
    );
    let rt = pulse.runtime.display().to_string();
    let home = dir.display().to_string();
    let mut d = serve(&dir, &cfg, &[("PULSE_RUNTIME_PATH", &rt), ("HOME", &home)]);
    let mut sse = SseClient::connect(d.addr(), "", None);
    sse.wait(LONG, |e| e.event == "source" && e.data["state"] == "up")
        .unwrap_or_else(|| panic!("the mic never came up:\n{}", d.log_text()));
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
fn devices_lists_the_pulse_device() {
    if skip() {
        return;
    }
    let dir = scratch("devices");
    let pulse = Pulse::start(&dir);
    let out = std::process::Command::new(bin())
        .args(["devices", "--json"])
        .env("PULSE_RUNTIME_PATH", &pulse.runtime)
        .env("HOME", &dir)
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
