//! Raw PCM sources for the daemon: stdin, a named pipe, or a file that keeps growing.
//!
//! - `pipe`: reads until end of file (stdin with `path = "-"`, or a FIFO that is reopened
//!   when its writer goes away — each reopen is a gap).
//! - `follow`: like `tail -F` — reads a raw PCM file from its current end (or its start with
//!   `from_start`), waits for more, and reopens it when it is truncated or replaced (rotation).
//!
//! Samples are s16le or f32le, interleaved; NaN/Inf become 0 and are counted.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::source::PcmFormat;

use super::{HopBlock, LiveConditioner, SourceEvent, SourceLink, SourceState};

#[derive(Debug, Clone)]
pub struct PcmConfig {
    /// `-` for stdin.
    pub path: PathBuf,
    pub rate: u32,
    pub channels: usize,
    pub format: PcmFormat,
    /// Follow a growing file instead of reading a stream to its end.
    pub follow: bool,
    /// With `follow`: start at the beginning of the file instead of its end.
    pub from_start: bool,
}

const READ_BYTES: usize = 16 * 1024;

/// Decodes whole frames of `bytes` into `out`.
fn decode(format: PcmFormat, bytes: &[u8], out: &mut Vec<f32>) {
    match format {
        PcmFormat::S16le => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
        ),
        PcmFormat::F32le => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
    }
}

struct Pump {
    cfg: PcmConfig,
    cond: LiveConditioner,
    bytes: Vec<u8>,
    carry: usize,
    samples: Vec<f32>,
    hops: Vec<f32>,
}

impl Pump {
    fn new(cfg: PcmConfig, link: &SourceLink) -> Self {
        Self {
            cond: LiveConditioner::new(cfg.rate, cfg.channels, link.rate, link.hop),
            cfg,
            bytes: vec![0; READ_BYTES],
            carry: 0,
            samples: Vec::new(),
            hops: Vec::new(),
        }
    }

    /// Handles `n` new bytes after the carried ones; false if the consumer is gone.
    fn feed(&mut self, n: usize, link: &SourceLink) -> bool {
        let frame = self.cfg.format.bytes() * self.cfg.channels;
        let have = self.carry + n;
        let whole = have / frame * frame;
        if whole > 0 {
            self.samples.clear();
            decode(self.cfg.format, &self.bytes[..whole], &mut self.samples);
            link.stats
                .frames_in
                .fetch_add((whole / frame) as u64, Ordering::Relaxed);
            let bad = self.cond.push_interleaved(&self.samples);
            if bad > 0 {
                link.stats.nan_samples.fetch_add(bad, Ordering::Relaxed);
            }
            self.hops.clear();
            self.cond.take_hops(&mut self.hops);
            if !self.hops.is_empty() {
                // Backpressure: wait while the engine has enough of ours queued.
                while link.stats.in_flight.load(Ordering::Relaxed) > super::MAX_IN_FLIGHT {
                    if link.stopped() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let n = (self.hops.len() / link.hop) as u64;
                link.stats.hops_out.fetch_add(n, Ordering::Relaxed);
                link.stats.in_flight.fetch_add(n, Ordering::Relaxed);
                let block = HopBlock {
                    samples: std::mem::take(&mut self.hops),
                    captured: Instant::now(),
                };
                if !link.send(SourceEvent::Hops(block)) {
                    return false;
                }
            }
        }
        self.bytes.copy_within(whole..have, 0);
        self.carry = have - whole;
        true
    }
}

/// Runs the source until end of stream or `link.stop`; sends `Ended` (or `Failed`) at the end.
pub fn run(cfg: PcmConfig, link: SourceLink) {
    link.stats.set_state(SourceState::Starting);
    let res = if cfg.follow {
        follow(cfg, &link)
    } else {
        pipe(cfg, &link)
    };
    match res {
        Ok(()) => {
            link.stats.set_state(SourceState::Ended);
            link.send(SourceEvent::Ended);
        }
        Err(e) => {
            tracing::error!(source_id = link.id, "PCM source failed: {e}");
            link.stats.set_state(SourceState::Failed);
            link.send(SourceEvent::Failed(e));
        }
    }
}

fn up(link: &SourceLink, what: String, gap: f64) -> bool {
    link.stats.set_state(SourceState::Running);
    if gap > 0.0 {
        link.stats.add_gap(gap);
    }
    link.send(SourceEvent::Up {
        description: what,
        gap_seconds: gap,
    })
}

/// Reads stdin or a pipe to its end. Blocking reads: a stop request takes effect when the
/// writer sends more data or closes (stdin of a daemon that is being stopped usually closes).
fn pipe(cfg: PcmConfig, link: &SourceLink) -> Result<(), String> {
    let desc = format!(
        "raw PCM {} ({} Hz × {} {:?})",
        cfg.path.display(),
        cfg.rate,
        cfg.channels,
        cfg.format
    );
    let mut reader: Box<dyn Read + Send> = if cfg.path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(&cfg.path).map_err(|e| format!("{}: {e}", cfg.path.display()))?)
    };
    let mut pump = Pump::new(cfg, link);
    if !up(link, desc, 0.0) {
        return Ok(());
    }
    loop {
        if link.stopped() {
            return Ok(());
        }
        let carry = pump.carry;
        let n = match reader.read(&mut pump.bytes[carry..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read error: {e}")),
        };
        if !pump.feed(n, link) {
            return Ok(());
        }
    }
}

/// Follows a growing file; reopens it after truncation or replacement.
fn follow(cfg: PcmConfig, link: &SourceLink) -> Result<(), String> {
    let path = cfg.path.clone();
    let desc = format!(
        "followed raw PCM {} ({} Hz × {} {:?})",
        path.display(),
        cfg.rate,
        cfg.channels,
        cfg.format
    );
    let mut pump = Pump::new(cfg.clone(), link);
    let mut file: Option<(File, u64)> = None; // (file, inode)
    let mut first = true;
    let mut down_since: Option<Instant> = None;
    let mut pos = 0u64;
    while !link.stopped() {
        if file.is_none() {
            match File::open(&path).and_then(|f| {
                let m = f.metadata()?;
                Ok((f, m))
            }) {
                Ok((mut f, m)) => {
                    pos = if first && !cfg.from_start { m.len() } else { 0 };
                    f.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
                    let gap = down_since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
                    if !up(link, desc.clone(), gap) {
                        return Ok(());
                    }
                    file = Some((f, m.ino()));
                    first = false;
                }
                Err(e) => {
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        link.stats.set_state(SourceState::Reconnecting);
                        if !link.send(SourceEvent::Down {
                            reason: format!("{}: {e}", path.display()),
                        }) {
                            return Ok(());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let (f, ino) = file.as_mut().unwrap();
        let carry = pump.carry;
        match f.read(&mut pump.bytes[carry..]) {
            Ok(0) => {
                // At the end: replaced or truncated? Else wait for more.
                let replaced = match std::fs::metadata(&path) {
                    Ok(m) => m.ino() != *ino || m.len() < pos,
                    Err(_) => true,
                };
                if replaced {
                    file = None;
                    pump.carry = 0;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(n) => {
                pos += n as u64;
                if !pump.feed(n, link) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: read error: {e}", path.display())),
        }
    }
    Ok(())
}
