//! `mambatag serve` configuration: TOML, every table `deny_unknown_fields`.
//!
//! Errors name the file, the line and column, and the key: `mambatag.toml:12:9: key
//! `source.device`: …`. Relative paths (model, sink files, PCM inputs) are taken relative to
//! the working directory, except sink files, which go under `$STATE_DIRECTORY` when systemd
//! sets it. `config/mambatag.toml` documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::engine::Device;
use crate::events::EventParams;
use crate::model::{ModelInfo, ModelPackage};
use crate::source::PcmFormat;

/// A configuration error with its location (`file:line:col: what`; line 0 = no position, e.g.
/// an unreadable file or a key that was missing altogether: `file: what`).
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {what}", position(*.line, *.col))]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub what: String,
}

fn position(line: usize, col: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{col}")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Model package directory or `.onnx` file. Default: `$MAMBATAG_MODEL`, `models/default`,
    /// `/usr/share/mambatag/models/default`.
    #[serde(default)]
    pub model: Option<Spanned<PathBuf>>,
    /// `cpu`, `cuda` or `auto`.
    #[serde(default)]
    pub device: Option<Spanned<Device>>,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "one")]
    pub threads: usize,
    /// `auto` (the package's fused-operator graph when it has one), `onnx` or `fused`.
    #[serde(default)]
    pub kernels: crate::engine::Kernels,
    /// CUDA execution provider settings (`device = "cuda"` or `"auto"`).
    #[serde(default)]
    pub cuda: crate::engine::CudaOptions,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub sinks: SinksConfig,
    #[serde(default, rename = "source")]
    pub sources: Vec<Spanned<SourceConfig>>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on; `""` turns the API off.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Bearer token; required when `listen` is not a loopback address.
    #[serde(default)]
    pub token: Option<String>,
    /// Allow `/ws?scores=true` (per-frame scores).
    #[serde(default = "yes")]
    pub frame_scores: bool,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:7878".to_string())
}
fn yes() -> bool {
    true
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token: None,
            frame_scores: true,
        }
    }
}

/// A threshold: `0.6` (on; off = 0.7 × on) or `[0.6, 0.4]` (on, off).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ThresholdValue {
    On(f32),
    OnOff([f32; 2]),
}

impl ThresholdValue {
    fn to_override(self, label: &str) -> String {
        match self {
            ThresholdValue::On(on) => format!("{label}={on}"),
            ThresholdValue::OnOff([on, off]) => format!("{label}={on}:{off}"),
        }
    }
}

pub type Thresholds = BTreeMap<String, Spanned<ThresholdValue>>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Moving average over this many frames.
    #[serde(default = "default_smooth")]
    pub smooth: usize,
    /// Events shorter than this (seconds) are dropped.
    #[serde(default = "default_min_duration")]
    pub min_duration: f64,
    /// Label → threshold for every source.
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn default_smooth() -> usize {
    crate::events::DEFAULT_SMOOTH
}
fn default_min_duration() -> f64 {
    crate::events::DEFAULT_MIN_DURATION
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            smooth: default_smooth(),
            min_duration: default_min_duration(),
            thresholds: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Events as JSON lines in a file, rotated by size.
    #[serde(default)]
    pub jsonl: Option<JsonlConfig>,
    /// Events to the log (stderr / journal) at level info, target `mambatag::event`.
    #[serde(default = "yes_opt")]
    pub log: Option<bool>,
    /// Events and per-label states to an MQTT broker.
    #[serde(default)]
    pub mqtt: Option<Spanned<MqttConfig>>,
}

/// `[sinks.mqtt]`: see `daemon::mqtt` for the topics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `host:port`, or `host` for port 1883 (plain TCP; `mqtt://` may prefix it).
    pub broker: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Topic prefix.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// 0, 1 or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Seconds between keep-alive pings; the broker sends the last will after 1.5× this.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: u64,
    /// Publish Home Assistant discovery configs (one binary sensor per source and label).
    #[serde(default)]
    pub discovery: bool,
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
}

/// `mambatag-HOSTNAME`: brokers disconnect a client when another connects with its id, so
/// two daemons must not share one.
fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if host.is_empty() {
        "mambatag".into()
    } else {
        format!("mambatag-{host}")
    }
}
fn default_topic() -> String {
    "mambatag".into()
}
fn default_qos() -> u8 {
    1
}
fn default_keep_alive() -> u64 {
    30
}
fn default_discovery_prefix() -> String {
    "homeassistant".into()
}

impl MqttConfig {
    /// The broker's host and port (1883 when none is given); checked by [`Self::check`].
    pub fn host_port(&self) -> (String, u16) {
        let b = self.broker.trim();
        let b = b.strip_prefix("mqtt://").unwrap_or(b).trim_end_matches('/');
        match b.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().unwrap_or(0),
            ),
            _ => (b.to_string(), 1883),
        }
    }

    /// What is wrong with the settings, as `(key, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let b = self.broker.trim();
        if b.starts_with("mqtts://") || b.starts_with("ssl://") || b.starts_with("ws") {
            return Err((
                "sinks.mqtt.broker",
                format!("`{b}`: only plain TCP (`host:port`) is supported; use a local broker or a TLS-terminating bridge"),
            ));
        }
        let (host, port) = self.host_port();
        if host.is_empty() || host.contains('/') || port == 0 {
            return Err((
                "sinks.mqtt.broker",
                format!("`{b}` is not a broker address like 127.0.0.1:1883"),
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(("sinks.mqtt.client_id", "must not be empty".into()));
        }
        let t = self.topic.trim_end_matches('/');
        if t.is_empty() || t.contains(['+', '#', '\0']) || t.starts_with('/') {
            return Err((
                "sinks.mqtt.topic",
                format!(
                    "`{}` is not a topic prefix (not empty, no `+`/`#`, no leading `/`)",
                    self.topic
                ),
            ));
        }
        let d = &self.discovery_prefix;
        if self.discovery && (d.is_empty() || d.contains(['+', '#', '\0'])) {
            return Err((
                "sinks.mqtt.discovery_prefix",
                format!("`{d}` is not a topic prefix"),
            ));
        }
        if self.qos > 2 {
            return Err((
                "sinks.mqtt.qos",
                format!("{} (must be 0, 1 or 2)", self.qos),
            ));
        }
        if self.keep_alive == 0 || self.keep_alive > 65535 {
            return Err((
                "sinks.mqtt.keep_alive",
                format!("{} s (must be 1 to 65535)", self.keep_alive),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err((
                "sinks.mqtt.password",
                "a password needs `username` too".into(),
            ));
        }
        Ok(())
    }
}

fn yes_opt() -> Option<bool> {
    Some(true)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    pub path: PathBuf,
    /// Rotate when the file reaches this size.
    #[serde(default = "max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`events.jsonl.1` … `.N`).
    #[serde(default = "keep")]
    pub keep: usize,
}

fn max_bytes() -> u64 {
    16 * 1024 * 1024
}
fn keep() -> usize {
    5
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A capture device (cpal).
    Mic,
    /// Raw PCM from stdin (`path = "-"`) or a named pipe, to its end.
    Pipe,
    /// Raw PCM appended to a file (`tail -F`).
    Follow,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    /// mic: `default`, an index, an ALSA PCM id or a device name.
    #[serde(default)]
    pub device: Option<String>,
    /// mic: requested device buffer in frames.
    #[serde(default)]
    pub buffer_frames: Option<u32>,
    /// pipe/follow: the input (`-` = stdin).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// pipe/follow: sample rate (Hz).
    #[serde(default)]
    pub rate: Option<u32>,
    #[serde(default = "one")]
    pub channels: usize,
    #[serde(default = "s16le")]
    pub format: PcmFormat,
    /// follow: read the file from its start instead of its current end.
    #[serde(default)]
    pub from_start: bool,
    /// Label → threshold for this source (over `[events.thresholds]`).
    #[serde(default)]
    pub thresholds: BTreeMap<String, ThresholdValue>,
}

fn s16le() -> PcmFormat {
    PcmFormat::S16le
}

/// A loaded configuration and the text it came from (for error locations).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub text: String,
    pub config: Config,
}

fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(pos, |i| pos - i - 1) + 1;
    (line, col)
}

/// The dotted key at `pos`: the nearest `[table]` / `[[table]]` header above it and the
/// `key =` on its line.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = text[start..end].trim();
    let mut table = None;
    for l in text[..start].lines().rev() {
        let l = l.trim();
        if l.starts_with('[') {
            table = Some(l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            break;
        }
    }
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line.split_once('=').map(|(k, _)| k.trim().to_string())?;
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

impl Loaded {
    /// Reads and parses `path`; syntax, unknown keys and wrong types fail here.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            col: 0,
            what: format!("cannot read the configuration: {e}"),
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            let pos = e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(&text, pos);
            let what = match key_at(&text, pos) {
                Some(k) => format!("key `{k}`: {}", e.message().trim()),
                None => e.message().trim().to_string(),
            };
            ConfigError {
                file: file.clone(),
                line,
                col,
                what,
            }
        })?;
        let loaded = Self {
            path: path.to_path_buf(),
            text,
            config,
        };
        loaded.check()?;
        Ok(loaded)
    }

    /// An error at a byte span of the file.
    pub fn error_at(&self, span: std::ops::Range<usize>, key: &str, msg: &str) -> ConfigError {
        let (line, col) = if span == (0..0) {
            (0, 0)
        } else {
            line_col(&self.text, span.start)
        };
        ConfigError {
            file: self.path.display().to_string(),
            line,
            col,
            what: format!("key `{key}`: {msg}"),
        }
    }

    /// Checks that need no model: addresses, tokens, sources, the model path, the device.
    fn check(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        if let Some(d) = &c.device {
            if *d.get_ref() == Device::Cuda && !cfg!(feature = "cuda") {
                return Err(self.error_at(
                    d.span(),
                    "device",
                    "`cuda` needs a build with `--features cuda` (use `cpu` or `auto`)",
                ));
            }
        }
        if c.threads == 0 {
            return Err(self.error_at(0..0, "threads", "must be at least 1"));
        }
        if c.cuda.device_id < 0 {
            return Err(self.error_at(
                0..0,
                "cuda.device_id",
                "must be 0 or more (`nvidia-smi -L` lists the GPUs)",
            ));
        }
        self.model_package()?;
        let listen = c.api.listen.get_ref();
        if !listen.is_empty() {
            let addr: SocketAddr = listen.parse().map_err(|_| {
                self.error_at(
                    c.api.listen.span(),
                    "api.listen",
                    &format!("`{listen}` is not an address like 127.0.0.1:7878"),
                )
            })?;
            let token = c.api.token.as_deref().unwrap_or("");
            if !addr.ip().is_loopback() && token.trim().is_empty() {
                return Err(self.error_at(
                    c.api.listen.span(),
                    "api.listen",
                    &format!("`{listen}` is reachable from other hosts: set `api.token` (clients send `Authorization: Bearer TOKEN`)"),
                ));
            }
        }
        if let Some(m) = &c.sinks.mqtt {
            m.get_ref()
                .check()
                .map_err(|(key, msg)| self.error_at(m.span(), key, &msg))?;
        }
        if c.events.smooth == 0 {
            return Err(self.error_at(0..0, "events.smooth", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for s in &c.sources {
            let span = s.span();
            let s = s.get_ref();
            if s.name.trim().is_empty() {
                return Err(self.error_at(span, "source.name", "must not be empty"));
            }
            if !names.insert(s.name.clone()) {
                return Err(self.error_at(
                    span,
                    "source.name",
                    &format!("two sources are named `{}`", s.name),
                ));
            }
            match s.kind {
                SourceKind::Mic => {
                    if !cfg!(feature = "mic") {
                        return Err(self.error_at(
                            span,
                            "source.kind",
                            &format!("source `{}`: {}", s.name, crate::live::MIC_UNAVAILABLE),
                        ));
                    }
                    if s.path.is_some() || s.rate.is_some() {
                        return Err(self.error_at(
                            span,
                            "source.kind",
                            &format!("source `{}`: `path`/`rate` are for pipe and follow sources; a mic uses `device`", s.name),
                        ));
                    }
                }
                SourceKind::Pipe | SourceKind::Follow => {
                    if s.path.is_none() {
                        return Err(self.error_at(
                            span,
                            "source.path",
                            &format!("source `{}` needs `path` (`-` for stdin)", s.name),
                        ));
                    }
                    match s.rate {
                        None => {
                            return Err(self.error_at(
                                span,
                                "source.rate",
                                &format!("source `{}` needs `rate` (Hz)", s.name),
                            ))
                        }
                        Some(r) => {
                            if let Err(e) = crate::source::check_format(r, s.channels) {
                                return Err(self.error_at(
                                    span,
                                    "source.rate",
                                    &format!("source `{}`: {e}", s.name),
                                ));
                            }
                        }
                    }
                    if s.kind == SourceKind::Follow && s.path.as_deref() == Some(Path::new("-")) {
                        return Err(self.error_at(
                            span,
                            "source.path",
                            "a follow source needs a file, not stdin",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The model package the configuration names (or the default one).
    pub fn model_package(&self) -> Result<ModelPackage, ConfigError> {
        match &self.config.model {
            Some(m) => ModelPackage::locate(m.get_ref())
                .map_err(|e| self.error_at(m.span(), "model", &e.to_string())),
            None => {
                let p = crate::default_model_path().ok_or_else(|| {
                    self.error_at(
                        0..0,
                        "model",
                        "not set and no default model found ($MAMBATAG_MODEL, models/default, /usr/share/mambatag/models/default)",
                    )
                })?;
                ModelPackage::locate(&p).map_err(|e| self.error_at(0..0, "model", &e.to_string()))
            }
        }
    }

    pub fn device(&self) -> Device {
        self.config
            .device
            .as_ref()
            .map(|d| *d.get_ref())
            .unwrap_or_default()
    }

    /// Event parameters of every source (in order), checked against the model's labels.
    pub fn event_params(&self, info: &ModelInfo) -> Result<Vec<EventParams>, ConfigError> {
        let ev = &self.config.events;
        let mut global = Vec::new();
        for (label, v) in &ev.thresholds {
            let o = v.get_ref().to_override(label);
            EventParams::from_model(info, std::slice::from_ref(&o), ev.smooth, ev.min_duration)
                .map_err(|e| {
                    self.error_at(
                        v.span(),
                        &format!("events.thresholds.{label}"),
                        &e.to_string().replace("--threshold ", ""),
                    )
                })?;
            global.push(o);
        }
        let mut out = Vec::new();
        for s in &self.config.sources {
            let span = s.span();
            let s = s.get_ref();
            let mut all = global.clone();
            all.extend(s.thresholds.iter().map(|(l, v)| v.to_override(l)));
            let p =
                EventParams::from_model(info, &all, ev.smooth, ev.min_duration).map_err(|e| {
                    self.error_at(
                        span.clone(),
                        "source.thresholds",
                        &format!(
                            "source `{}`: {}",
                            s.name,
                            e.to_string().replace("--threshold ", "")
                        ),
                    )
                })?;
            out.push(p);
        }
        Ok(out)
    }

    /// Where a sink file goes: absolute as given, else under `$STATE_DIRECTORY` (systemd) or
    /// the working directory.
    pub fn sink_path(p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated; the first is ours.
            Some(d) => {
                let d = d.to_string_lossy();
                PathBuf::from(d.split(':').next().unwrap_or(".")).join(p)
            }
            None => p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Loaded::read(&p)
    }

    #[test]
    fn unknown_keys_name_line_and_key() {
        let e = parse("threads = 1\n\n[api]\nlisten = \"127.0.0.1:1\"\nbogus = 3\n").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.to_string().contains("api.bogus"), "{e}");
    }

    #[test]
    fn positions_print_only_when_known() {
        let e = parse("threads = 1\n\n[api]\nlisten = \"127.0.0.1:1\"\nbogus = 3\n").unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}:5:", e.file)), "{e}");
        let e = Loaded::read(Path::new("/nonexistent/mambatag.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/mambatag.toml: cannot read the configuration: "),
            "{e}"
        );
    }

    #[test]
    fn negative_cuda_device_is_refused() {
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/test-tiny");
        let text = format!("model = \"{model}\"\n[cuda]\ndevice_id = -1\n");
        let e = parse(&text).and_then(|l| l.check()).unwrap_err();
        assert!(
            e.to_string()
                .contains("key `cuda.device_id`: must be 0 or more"),
            "{e}"
        );
    }

    #[test]
    fn bad_types_name_the_key() {
        let e = parse("threads = \"two\"\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("key `threads`"), "{e}");
    }

    #[test]
    fn key_at_finds_array_tables() {
        let t = "[[source]]\nname = \"a\"\nkind = \"radio\"\n";
        assert_eq!(key_at(t, t.find("radio").unwrap()).unwrap(), "source.kind");
    }
}
