//! `mambatag tag`: files, folders (`-r`), globs, manifests (`--list`) and stdin through the
//! batch runner. Every input is tried; a failed input prints one line naming it and the reason,
//! the others go on, and the exit status is 0 only if all succeeded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};

use mambatag::batch::{self, BatchOptions, Report};
use mambatag::engine::Engine;
use mambatag::events::EventParams;
use mambatag::resample::Quality;
use mambatag::sink::plot::PlotRecorder;
use mambatag::sink::{Format, Writer};
use mambatag::source::{AudioSource, FileSource, PcmFormat, PcmSource};

use super::{EventArgs, ModelArgs};

/// File name extensions `-r` picks up in folders.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "ogg", "oga", "m4a", "mp4", "aac", "alac", "aif", "aiff", "aifc",
    "caf", "mkv", "mka", "webm",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// The step graph: one hop per call (what live sources use).
    Step,
    /// The chunk graph: many hops per call (fast offline; same scores within 1e-4).
    Chunk,
    /// Chunk when the model ships a chunk graph, else step.
    Auto,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// Audio files, folders (with -r), glob patterns, or `-` for raw PCM on stdin (needs --rate).
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Also write per-frame scores.
    #[arg(long)]
    pub frames: bool,
    /// Write one file per input into this directory (mirroring the input tree) instead of stdout.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Descend into folders and tag every audio file in them.
    #[arg(short, long)]
    pub recursive: bool,
    /// Read input paths from this file, one per line (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Process only shard I of N (0-based): a deterministic subset for cluster job arrays.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Skip inputs whose output (with --out) is already complete.
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// Streams run side by side as rows of one batched call (per engine). Default: 8 on the
    /// CPU; with --device cuda, 4 per core (a GPU call wants many rows).
    #[arg(long)]
    pub lanes: Option<usize>,
    /// Engines working in parallel, each on its own thread with --threads ORT threads
    /// (default: one per core, at most one per input; with --device cuda, one).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Which graph runs the files.
    #[arg(long = "engine", value_enum, default_value_t = EngineKind::Auto)]
    pub engine_kind: EngineKind,
    #[command(flatten)]
    pub events: EventArgs,
    /// Resampler quality.
    #[arg(long = "resample", value_enum, default_value_t = Quality::Fft)]
    pub quality: Quality,
    /// Raw PCM input (`-`): sample rate in Hz.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Raw PCM input (`-`): interleaved channels.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Raw PCM input (`-`): sample format.
    #[arg(long, value_enum, default_value_t = PcmFormat::S16le)]
    pub sample_format: PcmFormat,
    /// Also write a PNG per input (needs --out): each label's score over time, events shaded.
    #[arg(long, requires = "out")]
    pub plot: bool,
    /// Never draw the progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

/// One thing to tag, and where its output goes under --out.
#[derive(Debug, Clone)]
struct Input {
    path: PathBuf,
    /// Output path relative to --out, without the format extension.
    mirror: PathBuf,
}

impl Input {
    fn name(&self) -> String {
        if self.is_stdin() {
            "-".into()
        } else {
            self.path.display().to_string()
        }
    }
    fn is_stdin(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}

pub fn run(a: TagArgs) -> Result<ExitCode> {
    if a.frames && a.format == Format::Audacity {
        bail!("--frames cannot be written as an Audacity label track; use --format jsonl or csv");
    }
    if a.frames && a.format == Format::Csv && a.out.is_none() {
        bail!("--frames with --format csv needs --out DIR (frame rows go to NAME.frames.csv)");
    }
    if a.inputs.is_empty() && a.list.is_none() {
        bail!("nothing to tag: give files, folders with -r, or --list FILE");
    }
    let (mut inputs, mut failures) = expand_inputs(&a)?;
    if inputs.iter().filter(|i| i.is_stdin()).count() > 1 {
        bail!("stdin (`-`) can be given only once");
    }
    if let Some(s) = &a.shard {
        let (i, n) = parse_shard(s)?;
        // Sorted by path so every member of a job array sees the same order.
        inputs.sort_by(|x, y| x.path.cmp(&y.path));
        inputs = inputs
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, x)| x)
            .collect();
        // Patterns or folders that matched nothing are reported by shard 0 alone.
        if i != 0 {
            failures.clear();
        }
    }
    let out_dir = a.out.clone();
    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--out {}: cannot create directory", dir.display()))?;
    }
    let mut skipped = 0usize;
    if a.resume {
        let dir = out_dir.as_ref().unwrap();
        let before = inputs.len();
        inputs.retain(|i| !OutFiles::new(dir, i, a.format, a.frames).complete());
        skipped = before - inputs.len();
    }

    let pkg = a.model.package()?;
    let (graph, kind) = match (a.engine_kind, &pkg.chunk) {
        (EngineKind::Step, _) | (EngineKind::Auto, None) => (pkg.step.clone(), "step"),
        (EngineKind::Chunk | EngineKind::Auto, Some(c)) => (c.clone(), "chunk"),
        (EngineKind::Chunk, None) => {
            bail!("--engine chunk: {} has no chunk.onnx", pkg.root.display())
        }
    };
    if a.jobs == Some(0) {
        bail!("--jobs 0: at least one engine is needed");
    }
    if a.lanes == Some(0) {
        bail!("--lanes 0: at least one lane per engine is needed");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One GPU engine with many lanes beats many engines sharing a GPU; each lane decodes on
    // its own thread, so the lanes keep the cores busy.
    let gpu = a.model.device == mambatag::engine::Device::Cuda;
    let jobs = a
        .jobs
        .unwrap_or(if gpu {
            1
        } else {
            (cores / a.model.threads).max(1)
        })
        .min(inputs.len().max(1));
    let lanes = a
        .lanes
        .unwrap_or(if gpu { 4 * cores } else { 8 })
        .min(inputs.len().div_ceil(jobs).max(1));
    let mut engines = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        engines.push(Engine::load(&graph, &a.model.engine_options(), lanes, 0)?);
    }
    tracing::info!(
        graph = kind,
        jobs,
        lanes,
        frames_per_call = engines[0].frames_per_call(),
        "engines ready"
    );
    let info = engines[0].info().clone();
    let params = EventParams::from_model(
        &info,
        &a.events.thresholds,
        a.events.smooth,
        a.events.min_duration,
    )?;
    let opts = BatchOptions {
        lanes,
        quality: a.quality,
        events: params,
        frames: a.frames || a.plot,
    };

    for (name, why) in &failures {
        eprintln!("mambatag: {name}: {why}");
    }
    let total = inputs.len() + failures.len();
    let mut failed = failures.len();

    // Outputs: one shared stdout writer, or one writer per input under --out.
    let mut shared: Option<Writer> = out_dir.is_none().then(|| {
        Writer::new(
            a.format,
            &info.labels,
            Box::new(BufWriter::new(std::io::stdout())),
            None,
        )
    });
    if let Some(w) = shared.as_mut() {
        w.begin()?;
    }
    let mut per_job: HashMap<usize, (OutFiles, Writer)> = HashMap::new();
    let mut plots: HashMap<usize, PlotRecorder> = HashMap::new();
    let show_bar = !a.quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let bar = show_bar.then(|| {
        let b = indicatif::ProgressBar::new(inputs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} files · {msg} · ETA {eta}",
            )
            .unwrap(),
        );
        b
    });
    let started = Instant::now();
    let mut audio_seconds = 0.0f64;
    let mut ok = 0usize;
    let stdin_once = Mutex::new(Some(()));
    let open = |job: usize| -> Result<Box<dyn AudioSource>> {
        let i = &inputs[job];
        if i.is_stdin() {
            stdin_once
                .lock()
                .unwrap()
                .take()
                .ok_or_else(|| anyhow!("stdin already read"))?;
            let rate = a.rate.ok_or_else(|| {
                anyhow!("raw PCM on stdin needs --rate HZ (and --channels, --sample-format)")
            })?;
            return Ok(Box::new(PcmSource::new(
                "-",
                std::io::stdin(),
                rate,
                a.channels,
                a.sample_format,
            )?));
        }
        Ok(Box::new(FileSource::open(&i.path)?))
    };
    let writer_for = |job: usize, per_job: &mut HashMap<usize, (OutFiles, Writer)>| -> Result<()> {
        if let (Some(dir), false) = (out_dir.as_ref(), per_job.contains_key(&job)) {
            let of = OutFiles::new(dir, &inputs[job], a.format, a.frames);
            let mut w = of.writer(a.format, &info.labels)?;
            w.begin()?;
            per_job.insert(job, (of, w));
        }
        Ok(())
    };
    batch::run(&mut engines, inputs.len(), &open, &opts, |r| match r {
        Report::Frame { job, time, scores } => {
            if a.plot {
                plots
                    .entry(job)
                    .or_insert_with(|| PlotRecorder::new(&info.labels, info.hop_seconds()))
                    .frame(scores);
            }
            if !a.frames {
                return Ok(());
            }
            writer_for(job, &mut per_job)?;
            let name = inputs[job].name();
            match shared.as_mut() {
                Some(w) => w.frame(&name, time, scores),
                None => per_job.get_mut(&job).unwrap().1.frame(&name, time, scores),
            }
        }
        Report::Event { job, event } => {
            if let Some(p) = plots.get_mut(&job) {
                p.event(&event);
            }
            writer_for(job, &mut per_job)?;
            let name = inputs[job].name();
            match shared.as_mut() {
                Some(w) => w.event(&name, &event),
                None => per_job.get_mut(&job).unwrap().1.event(&name, &event),
            }
        }
        Report::Done { job, result } => {
            let name = inputs[job].name();
            let result = result.and_then(|s| {
                match shared.as_mut() {
                    Some(w) => w.flush()?,
                    None => {
                        writer_for(job, &mut per_job)?;
                        let (of, mut w) = per_job.remove(&job).unwrap();
                        w.flush()?;
                        drop(w);
                        of.commit()?;
                    }
                }
                if let Some(p) = plots.remove(&job) {
                    let mut png = out_dir
                        .as_ref()
                        .unwrap()
                        .join(&inputs[job].mirror)
                        .into_os_string();
                    png.push(".png");
                    let png = PathBuf::from(png);
                    p.render(&png, &name)?;
                }
                Ok(s)
            });
            match result {
                Ok(s) => {
                    ok += 1;
                    audio_seconds += s.seconds;
                }
                Err(e) => {
                    if let Some((of, w)) = per_job.remove(&job) {
                        drop(w);
                        of.abort();
                    }
                    failed += 1;
                    let msg = format!("mambatag: {name}: {e:#}");
                    match &bar {
                        Some(b) => b.println(msg),
                        None => eprintln!("{msg}"),
                    }
                }
            }
            if let Some(b) = &bar {
                let wall = started.elapsed().as_secs_f64().max(1e-9);
                b.set_message(format!(
                    "{:.2} h audio · {:.0}× real time",
                    audio_seconds / 3600.0,
                    audio_seconds / wall
                ));
                b.inc(1);
            }
            Ok(())
        }
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let wall = started.elapsed().as_secs_f64();
    if total > 1 || skipped > 0 {
        eprintln!(
            "mambatag: {ok} ok, {failed} failed{} · {:.3} h of audio in {:.1} s ({:.0}× real time)",
            if skipped > 0 {
                format!(", {skipped} skipped (--resume)")
            } else {
                String::new()
            },
            audio_seconds / 3600.0,
            wall,
            audio_seconds / wall.max(1e-9)
        );
    }
    if failed > 0 {
        eprintln!("mambatag: {failed} of {total} inputs failed");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || anyhow!("--shard {s}: expected I/N with 0 ≤ I < N (e.g. 3/16)");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

fn is_audio(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A path made safe to put under --out: relative, no `..`.
fn sanitize(p: &Path) -> PathBuf {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(PathBuf::from(s)),
            Component::ParentDir => Some(PathBuf::from("_")),
            _ => None,
        })
        .collect()
}

/// Files, folders, globs and the manifest → the inputs, plus early failures (name, reason).
/// Inputs that failed before tagging started: (name, reason).
type EarlyFailures = Vec<(String, String)>;

fn expand_inputs(a: &TagArgs) -> Result<(Vec<Input>, EarlyFailures)> {
    let mut raw: Vec<(PathBuf, bool)> = a.inputs.iter().map(|p| (p.clone(), false)).collect();
    if let Some(list) = &a.list {
        let text = if list.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("--list -: cannot read stdin")?
        } else {
            std::fs::read_to_string(list)
                .with_context(|| format!("--list {}: cannot read", list.display()))?
        };
        raw.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| (PathBuf::from(l), true)),
        );
    }
    let mut inputs = Vec::new();
    let mut failures = Vec::new();
    for (p, from_list) in raw {
        if p.as_os_str() == "-" {
            inputs.push(Input {
                path: p,
                mirror: PathBuf::from("stdin"),
            });
            continue;
        }
        let s = p.to_string_lossy();
        if !p.exists() && s.contains(['*', '?', '[']) {
            let mut n = 0;
            match glob::glob(&s) {
                Ok(paths) => {
                    for m in paths.flatten() {
                        if m.is_file() {
                            n += 1;
                            inputs.push(Input {
                                mirror: sanitize(&m),
                                path: m,
                            });
                        }
                    }
                }
                Err(e) => failures.push((s.to_string(), format!("bad glob pattern: {e}"))),
            }
            if n == 0 {
                failures.push((s.to_string(), "no file matches this pattern".into()));
            }
            continue;
        }
        if p.is_dir() && a.recursive {
            let mut found = Vec::new();
            walk(&p, &mut found);
            found.sort();
            if found.is_empty() {
                failures.push((
                    p.display().to_string(),
                    "folder holds no audio files".into(),
                ));
            }
            for f in found {
                let rel = f
                    .strip_prefix(&p)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| sanitize(&f));
                inputs.push(Input {
                    path: f,
                    mirror: rel,
                });
            }
            continue;
        }
        let mirror = if from_list {
            sanitize(&p)
        } else {
            p.file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| sanitize(&p))
        };
        inputs.push(Input { path: p, mirror });
    }
    Ok((inputs, failures))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(_) if is_audio(&p) && p.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// Output files of one input, written under temporary names and renamed when complete.
struct OutFiles {
    events: PathBuf,
    frames: Option<PathBuf>,
}

impl OutFiles {
    fn new(dir: &Path, input: &Input, format: Format, frames: bool) -> Self {
        let base = dir.join(&input.mirror);
        let with = |suffix: &str| {
            let mut s = base.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        let events = with(&format!(".{}", format.extension()));
        let frames = (frames && format == Format::Csv).then(|| with(".frames.csv"));
        Self { events, frames }
    }

    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.events).chain(self.frames.iter())
    }

    /// Every output exists under its final name (they are renamed into place only when whole).
    fn complete(&self) -> bool {
        self.all().all(|p| p.is_file())
    }

    fn tmp(p: &Path) -> PathBuf {
        let mut s = p.as_os_str().to_owned();
        s.push(".part");
        PathBuf::from(s)
    }

    fn writer(&self, format: Format, labels: &[String]) -> Result<Writer> {
        let create = |p: &Path| -> Result<Box<dyn Write + Send>> {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let f = File::create(Self::tmp(p))
                .with_context(|| format!("cannot create {}", p.display()))?;
            Ok(Box::new(BufWriter::new(f)))
        };
        let ev = create(&self.events)?;
        let fr = match &self.frames {
            Some(p) => Some(create(p)?),
            None => None,
        };
        Ok(Writer::new(format, labels, ev, fr))
    }

    fn commit(&self) -> Result<()> {
        for p in self.all() {
            std::fs::rename(Self::tmp(p), p)
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        Ok(())
    }

    fn abort(&self) {
        for p in self.all() {
            let _ = std::fs::remove_file(Self::tmp(p));
        }
    }
}
