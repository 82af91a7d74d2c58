//! Helpers for the service tests: a `mambatag serve` child process with its own config and
//! log, HTTP/SSE clients on 127.0.0.1, and a private PulseAudio server (virtual microphone).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mambatag"))
}

pub fn tiny_model() -> PathBuf {
    repo().join("models/test-tiny")
}

/// A `pipe` source named `in`: 16 kHz s16le mono on the daemon's stdin.
pub const STDIN_SOURCE: &str =
    "[[source]]\nname = \"in\"\nkind = \"pipe\"\npath = \"-\"\nrate = 16000\n";

/// Runs `mambatag serve EXTRA --config DIR/c.toml` with `text` as the file and expects it to
/// refuse the configuration; returns stderr.
pub fn serve_refuses(name: &str, text: &str, extra: &[&str]) -> String {
    let dir = scratch(name);
    std::fs::write(dir.join("c.toml"), text).unwrap();
    let out = Command::new(bin())
        .arg("serve")
        .args(extra)
        .arg("--config")
        .arg(dir.join("c.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{name}: accepted: {err}");
    err
}

/// A fresh scratch directory under target/ for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = repo()
        .join("target/live-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal to a process (`kill -SIG PID`).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A running `mambatag serve`.
pub struct Served {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub addr: Option<SocketAddr>,
}

/// Starts `mambatag serve --config DIR/c.toml` with `config` as the file's text; stdin is
/// piped (for `path = "-"` sources). Waits until the API address appears in the log.
pub fn serve(dir: &Path, config: &str, env: &[(&str, &str)]) -> Served {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("daemon.log");
    let logf = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,mambatag=info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(logf);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start mambatag serve");
    let mut s = Served {
        child,
        dir: dir.to_path_buf(),
        config: cfg,
        log,
        addr: None,
    };
    let addr = wait_for(Duration::from_secs(30), || {
        let text = s.log_text();
        if let Some(i) = text.find("API listening on http://") {
            let rest = &text[i + "API listening on http://".len()..];
            let a: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                .collect();
            return a.parse::<SocketAddr>().ok();
        }
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!("mambatag serve exited ({st}) at start:\n{text}");
        }
        None
    });
    s.addr = Some(addr.unwrap_or_else(|| panic!("no API address in the log:\n{}", s.log_text())));
    s
}

impl Served {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap()
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let r = wait_for(timeout, || self.child.try_wait().ok().flatten());
        r.map(|s| s.code().unwrap_or(-1))
    }
    /// Takes the stdin pipe (for pipe sources).
    pub fn stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// GET (or another method) with an optional bearer token: (status, body).
pub fn http(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let resp = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some(t) = token {
                r = r.header("Authorization", &format!("Bearer {t}"));
            }
            r.call()
        }
        "POST" => {
            let mut r = agent.post(url);
            if let Some(t) = token {
                r = r.header("Authorization", &format!("Bearer {t}"));
            }
            r.send("")
        }
        m => panic!("method {m}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, body)
}

pub fn get_json(url: &str) -> serde_json::Value {
    let (st, body) = http("GET", url, None);
    assert_eq!(st, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: serde_json::Value,
    pub at: Instant,
}

/// A live SSE subscription read on a background thread.
pub struct SseClient {
    pub rx: mpsc::Receiver<Sse>,
    pub seen: Vec<Sse>,
}

impl SseClient {
    pub fn connect(addr: SocketAddr, query: &str, token: Option<&str>) -> Self {
        let mut s = TcpStream::connect(addr).expect("connect for SSE");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET /events{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n"
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "SSE status: {status}");
        std::thread::spawn(move || {
            // Headers, then chunked body: we only look at `event:`/`data:` lines.
            let mut event = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end();
                if let Some(e) = l.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = l.strip_prefix("data:") {
                    let data = serde_json::from_str(d.trim()).unwrap_or(serde_json::Value::Null);
                    let ev = Sse {
                        event: std::mem::take(&mut event),
                        data,
                        at: Instant::now(),
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for an event matching `f` (events seen on the way are kept in `seen`).
    pub fn wait(&mut self, timeout: Duration, mut f: impl FnMut(&Sse) -> bool) -> Option<Sse> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if f(&e) {
                        return Some(e);
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

/// Raw s16le mono PCM of a 1 kHz sine (half scale) or silence.
pub fn pcm(seconds: f64, rate: u32, sine: bool) -> Vec<u8> {
    let n = (seconds * rate as f64) as usize;
    let mut out = Vec::with_capacity(n * 2);
    for i in 0..n {
        let v = if sine {
            (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / rate as f64).sin() * 0.5
        } else {
            0.0
        };
        out.extend_from_slice(&((v * 32767.0) as i16).to_le_bytes());
    }
    out
}

/// Feeds `pcm` to `w` in real time-ish pieces of 20 ms on a thread, then keeps feeding
/// silence until the pipe closes or `stop` is set.
pub fn feed(
    mut w: impl Write + Send + 'static,
    first: Vec<u8>,
    rate: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let piece = (rate as usize / 50) * 2;
        let silence = vec![0u8; piece];
        for c in first.chunks(piece) {
            if w.write_all(c).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if w.write_all(&silence).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// A private PulseAudio server with a null sink whose monitor is the source `vmic`.
pub struct Pulse {
    pub runtime: PathBuf,
    sink_module: Option<String>,
    remap_module: Option<String>,
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Pulse {
    pub fn start(dir: &Path) -> Self {
        let runtime = dir.join("pulse");
        std::fs::create_dir_all(&runtime).unwrap();
        Self::spawn_server(&runtime, dir);
        let mut p = Self {
            runtime,
            sink_module: None,
            remap_module: None,
        };
        p.load_sink();
        p
    }

    /// Kills the server (the sound server "crashes"); `start_again` brings it back.
    pub fn kill_server(&mut self) {
        let pid = std::fs::read_to_string(self.runtime.join("pid")).unwrap_or_default();
        let pid: u32 = pid.trim().parse().expect("pulseaudio pid file");
        let _ = Command::new("kill").arg(pid.to_string()).status();
        wait_for(Duration::from_secs(10), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        })
        .expect("pulseaudio exits");
        self.sink_module = None;
        self.remap_module = None;
    }

    pub fn start_again(&mut self, dir: &Path) {
        Self::spawn_server(&self.runtime, dir);
        self.load_sink();
    }

    fn spawn_server(runtime: &Path, dir: &Path) {
        let out = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=yes",
                "--system=false",
                "--exit-idle-time=-1",
                "--use-pid-file=yes",
                "--load=module-native-protocol-unix",
            ])
            .env("PULSE_RUNTIME_PATH", runtime)
            .env("HOME", dir)
            .output()
            .expect("pulseaudio");
        assert!(
            out.status.success(),
            "pulseaudio did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn pactl(&self, args: &[&str]) -> String {
        let out = Command::new("pactl")
            .args(args)
            .env("PULSE_RUNTIME_PATH", &self.runtime)
            .output()
            .expect("pactl");
        assert!(
            out.status.success(),
            "pactl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Loads the null sink and the `vmic` source (the microphone comes back).
    pub fn load_sink(&mut self) {
        self.sink_module = Some(self.pactl(&[
            "load-module",
            "module-null-sink",
            "sink_name=vmic_sink",
            "rate=48000",
            "channels=2",
        ]));

        self.remap_module = Some(self.pactl(&[
            "load-module",
            "module-remap-source",
            "master=vmic_sink.monitor",
            "source_name=vmic",
        ]));
        self.pactl(&["set-default-sink", "vmic_sink"]);
        self.pactl(&["set-default-source", "vmic"]);
    }

    /// Unloads them (the microphone is unplugged).
    pub fn unload_sink(&mut self) {
        if let Some(m) = self.remap_module.take() {
            self.pactl(&["unload-module", &m]);
        }
        if let Some(m) = self.sink_module.take() {
            self.pactl(&["unload-module", &m]);
        }
    }

    /// Plays a file into the sink (what the microphone hears); returns the paplay child.
    pub fn play(&self, file: &Path) -> Child {
        Command::new("paplay")
            .arg(file)
            .env("PULSE_RUNTIME_PATH", &self.runtime)
            .spawn()
            .expect("paplay")
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.runtime.join("pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<u32>() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// Reads the whole of a small file, or "".
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}
