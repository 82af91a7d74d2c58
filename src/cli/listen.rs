//! `mambatag listen`: live tags from a microphone in the terminal.
//!
//! Runs the same [`Daemon`] as `serve` with one mic source and no API, and prints what the
//! event bus carries: one line per onset/offset/gap, plus a status line with the strongest
//! tags (redrawn in place on a terminal). Ctrl-C stops through the daemon's shutdown path, so
//! open events get their offsets.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use toml::Spanned;

use mambatag::daemon::bus::Kind;
use mambatag::daemon::config::{
    ApiConfig, Config, EventsConfig, Loaded, SinksConfig, SourceConfig, SourceKind, ThresholdValue,
};
use mambatag::daemon::{Daemon, Signal};

use super::{EventArgs, ModelArgs};

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Input device: `default`, an index or name from `mambatag devices`.
    #[arg(short = 'D', long = "input", default_value = "default")]
    pub input: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub events: EventArgs,
    /// Print the raw JSON messages instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ListenArgs) -> Result<ExitCode> {
    a.model.check()?;
    mambatag::events::check_logic(a.events.smooth, a.events.min_duration)?;
    let sig = mambatag::daemon::signals()?;
    let model = match &a.model.model {
        Some(p) => p.clone(),
        None => mambatag::default_model_path().ok_or_else(|| {
            anyhow!("no model given and no models/default found; pass --model PATH")
        })?,
    };
    let mut thresholds = std::collections::BTreeMap::new();
    for t in &a.events.thresholds {
        let (label, th) = mambatag::events::parse_override(t)?;
        thresholds.insert(
            label,
            Spanned::new(0..0, ThresholdValue::OnOff([th.on, th.off])),
        );
    }
    let config = Config {
        model: Some(Spanned::new(0..0, model)),
        device: Some(Spanned::new(0..0, a.model.device)),
        threads: a.model.threads,
        kernels: a.model.kernels,
        cuda: a.model.engine_options().cuda,
        api: ApiConfig {
            listen: Spanned::new(0..0, String::new()),
            token: None,
            frame_scores: false,
        },
        events: EventsConfig {
            smooth: a.events.smooth,
            min_duration: a.events.min_duration,
            thresholds,
        },
        sinks: SinksConfig {
            jsonl: None,
            log: Some(false),
            mqtt: None,
        },
        sources: vec![Spanned::new(
            0..0,
            SourceConfig {
                name: "mic".into(),
                kind: SourceKind::Mic,
                device: Some(a.input.clone()),
                buffer_frames: Some(480),
                path: None,
                rate: None,
                channels: 1,
                format: mambatag::source::PcmFormat::S16le,
                from_start: false,
                thresholds: Default::default(),
            },
        )],
    };
    let loaded = Loaded {
        path: PathBuf::from("(command line)"),
        text: String::new(),
        config,
    };
    let d = Daemon::start(loaded)?;
    let mut rx = d.bus.subscribe();
    let json = a.json;
    let tty = std::io::stdout().is_terminal() && !json;
    let stats = d.stats.clone();
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        loop {
            let m = match rx.blocking_recv() {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            };
            if m.kind == Kind::End {
                break;
            }
            if m.kind != Kind::Event {
                continue;
            }
            if json {
                let _ = writeln!(out, "{}", m.json);
            } else {
                let v: serde_json::Value = serde_json::from_str(&m.json).unwrap_or_default();
                let line = match m.name {
                    "onset" => format!(
                        "{:>9.2}s  + {:<12} {:.2}",
                        v["onset"].as_f64().unwrap_or(0.0),
                        v["label"].as_str().unwrap_or(""),
                        v["score"].as_f64().unwrap_or(0.0)
                    ),
                    "offset" => format!(
                        "{:>9.2}s  - {:<12} ({:.2} s, peak {:.2})",
                        v["offset"].as_f64().unwrap_or(0.0),
                        v["label"].as_str().unwrap_or(""),
                        v["offset"].as_f64().unwrap_or(0.0) - v["onset"].as_f64().unwrap_or(0.0),
                        v["score"].as_f64().unwrap_or(0.0)
                    ),
                    "gap" => format!(
                        "           gap of {:.2} s (device lost and back)",
                        v["seconds"].as_f64().unwrap_or(0.0)
                    ),
                    "source" => match v["state"].as_str().unwrap_or("") {
                        "up" => format!(
                            "           listening: {}",
                            v["description"].as_str().unwrap_or("")
                        ),
                        "down" => format!(
                            "           input lost: {} (retrying)",
                            v["reason"].as_str().unwrap_or("")
                        ),
                        other => format!("           input {other}"),
                    },
                    _ => format!("           {}", m.json),
                };
                if tty {
                    let _ = write!(out, "\r\x1b[2K");
                }
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        }
    });
    loop {
        match sig.recv_timeout(Duration::from_millis(200)) {
            Ok(Signal::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Ok(Signal::Reload) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if tty {
            let st = stats.status();
            if let Some(s) = st.sources.first() {
                let top: Vec<String> = s
                    .top
                    .iter()
                    .map(|t| format!("{} {:.2}", t.label, t.score))
                    .collect();
                let mut out = std::io::stdout();
                let _ = write!(
                    out,
                    "\r\x1b[2K[{}] {:.1} s  {}  active: {}",
                    s.state,
                    s.frames as f64 * d.info().hop_seconds(),
                    top.join("  "),
                    if s.active.is_empty() {
                        "-".to_string()
                    } else {
                        s.active.join(", ")
                    }
                );
                let _ = out.flush();
            }
        }
    }
    d.shutdown()?;
    let _ = printer.join();
    if tty {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
