//! `mambatag tag`: every input is tried; a failed input prints one line naming it and the
//! reason, the others go on, and the exit status is 0 only if all succeeded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use mambatag::engine::Engine;
use mambatag::events::EventParams;
use mambatag::pipeline::{tag_source, Output, TagOptions};
use mambatag::resample::Quality;
use mambatag::sink::{Format, Writer};
use mambatag::source::{AudioSource, FileSource, PcmFormat, PcmSource};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct TagArgs {
    /// Audio files, or `-` for raw PCM on stdin (needs --rate).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Also write per-frame scores.
    #[arg(long)]
    pub frames: bool,
    /// Write one file per input into this directory instead of stdout.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Per-label thresholds, LABEL=ON or LABEL=ON:OFF (repeatable). Defaults come from the model.
    #[arg(long = "threshold", value_name = "LABEL=ON[:OFF]")]
    pub thresholds: Vec<String>,
    /// Moving-average window over frames before thresholding.
    #[arg(long, default_value_t = 5)]
    pub smooth: usize,
    /// Events shorter than this many seconds are dropped.
    #[arg(long, default_value_t = 0.05)]
    pub min_duration: f64,
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
}

pub fn run(a: TagArgs) -> Result<ExitCode> {
    if a.frames && a.format == Format::Audacity {
        bail!("--frames cannot be written as an Audacity label track; use --format jsonl or csv");
    }
    if a.frames && a.format == Format::Csv && a.out.is_none() {
        bail!("--frames with --format csv needs --out DIR (frame rows go to NAME.frames.csv)");
    }
    if a.inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        bail!("stdin (`-`) can be given only once");
    }
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--out {}: cannot create directory", dir.display()))?;
    }
    let pkg = a.model.package()?;
    let mut engine = Engine::load(&pkg.step, &a.model.engine_options(), 1, 1)?;
    let info = engine.info().clone();
    let params = EventParams::from_model(&info, &a.thresholds, a.smooth, a.min_duration)?;
    let opts = TagOptions {
        quality: a.quality,
        events: params,
    };

    let stdout = std::io::stdout();
    let mut shared: Option<Writer> = if a.out.is_none() {
        let w = Writer::new(
            a.format,
            &info.labels,
            Box::new(BufWriter::new(stdout)),
            None,
        );
        Some(w)
    } else {
        None
    };
    if let Some(w) = shared.as_mut() {
        w.begin()?;
    }
    let mut failed = 0usize;
    for input in &a.inputs {
        let name = if input.as_os_str() == "-" {
            "-".to_string()
        } else {
            input.display().to_string()
        };
        let res = (|| -> Result<()> {
            let source = open_source(input, &a)?;
            match &a.out {
                None => {
                    let w = shared.as_mut().unwrap();
                    tag_into(&mut engine, source, &opts, &name, a.frames, w)?;
                    w.flush()
                }
                Some(dir) => {
                    let out = OutFiles::new(dir, input, a.format, a.frames)?;
                    let mut w = out.writer(a.format, &info.labels)?;
                    w.begin()?;
                    let r = tag_into(&mut engine, source, &opts, &name, a.frames, &mut w)
                        .and_then(|_| w.flush());
                    drop(w);
                    match r {
                        Ok(()) => out.commit(),
                        Err(e) => {
                            out.abort();
                            Err(e)
                        }
                    }
                }
            }
        })();
        if let Err(e) = res {
            failed += 1;
            eprintln!("mambatag: {name}: {e:#}");
        }
    }
    if failed > 0 {
        eprintln!("mambatag: {failed} of {} inputs failed", a.inputs.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn open_source(input: &Path, a: &TagArgs) -> Result<Box<dyn AudioSource>> {
    if input.as_os_str() == "-" {
        let rate = a.rate.ok_or_else(|| {
            anyhow!("raw PCM on stdin needs --rate HZ (and --channels, --sample-format)")
        })?;
        let src = PcmSource::new("-", std::io::stdin(), rate, a.channels, a.sample_format)?;
        return Ok(Box::new(src));
    }
    Ok(Box::new(FileSource::open(input)?))
}

fn tag_into(
    engine: &mut Engine,
    source: Box<dyn AudioSource>,
    opts: &TagOptions,
    name: &str,
    frames: bool,
    w: &mut Writer,
) -> Result<()> {
    tag_source(engine, source, opts, |o| match o {
        Output::Frame { time, scores } if frames => w.frame(name, time, scores),
        Output::Frame { .. } => Ok(()),
        Output::Event(e) => w.event(name, &e),
    })?;
    Ok(())
}

/// Output files of one input, written under temporary names and renamed when complete.
struct OutFiles {
    events: PathBuf,
    frames: Option<PathBuf>,
}

impl OutFiles {
    fn new(dir: &Path, input: &Path, format: Format, frames: bool) -> Result<Self> {
        let base = if input.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            input
                .file_name()
                .ok_or_else(|| anyhow!("has no file name"))?
                .to_string_lossy()
                .into_owned()
        };
        let events = dir.join(format!("{base}.{}", format.extension()));
        let frames =
            (frames && format == Format::Csv).then(|| dir.join(format!("{base}.frames.csv")));
        Ok(Self { events, frames })
    }

    fn tmp(p: &Path) -> PathBuf {
        let mut s = p.as_os_str().to_owned();
        s.push(".part");
        PathBuf::from(s)
    }

    fn writer(&self, format: Format, labels: &[String]) -> Result<Writer> {
        let create = |p: &Path| -> Result<Box<dyn Write + Send>> {
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
        for p in std::iter::once(&self.events).chain(self.frames.iter()) {
            std::fs::rename(Self::tmp(p), p)
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        Ok(())
    }

    fn abort(&self) {
        for p in std::iter::once(&self.events).chain(self.frames.iter()) {
            let _ = std::fs::remove_file(Self::tmp(p));
        }
    }
}
