//! `mambatag bench`: step latency (batch 1, per stream-frame), batched cost per stream, and the
//! end-to-end real-time factor on a file. Prints a table, or one JSON object with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use mambatag::batch::{self, BatchOptions, Report};
use mambatag::engine::Engine;
use mambatag::events::{self, EventParams};
use mambatag::resample::Quality;
use mambatag::source::{AudioSource, FileSource};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Timed steps per measurement.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Batch sizes (streams per call) to measure besides 1 and 16.
    #[arg(long = "streams", value_delimiter = ',')]
    pub streams: Vec<usize>,
    /// Audio file for the end-to-end real-time factor (e.g. a 44.1 kHz stereo FLAC).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also measure the chunk graph (offline path) at these batch sizes: stream-frames per second.
    #[arg(long = "chunk-streams", value_delimiter = ',')]
    pub chunk_streams: Vec<usize>,
    /// Fewest steps timed at any batch size (above 16 streams the count is scaled down as
    /// `steps × 16 / streams`; raise this for a firmer p99 at large batches).
    #[arg(long = "min-steps", default_value_t = 50)]
    pub min_steps: usize,
    /// Hops per chunk-graph call (0: the model's preferred `mambatag.chunk_frames`).
    #[arg(long = "chunk-frames", default_value_t = 0)]
    pub chunk_frames: usize,
}

struct BatchResult {
    /// Mean per call: audio upload, session run, scores download.
    input_us: f64,
    model_us: f64,
    output_us: f64,
    /// `output_us` includes waiting for the run (see `Timings::overlapped`).
    overlapped: bool,
    streams: usize,
    p50_us: f64,
    p99_us: f64,
    per_stream_us: f64,
}

fn measure(engine: &mut Engine, steps: usize) -> Result<BatchResult> {
    let b = engine.capacity();
    // Deterministic noise so the front end sees something realistic.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for r in 0..b {
        for x in engine.input_mut(r).iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *x = ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
        }
    }
    let advance = vec![true; b];
    let warm = (steps / 10).max(20);
    for _ in 0..warm {
        engine.run(&advance)?;
    }
    engine.take_timings();
    let mut times = Vec::with_capacity(steps);
    let t_all = Instant::now();
    for _ in 0..steps {
        let t = Instant::now();
        engine.run(&advance)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = t_all.elapsed().as_secs_f64() * 1e6;
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    let tm = engine.take_timings();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / tm.calls.max(1) as f64;
    Ok(BatchResult {
        input_us: per(tm.input),
        model_us: per(tm.model),
        output_us: per(tm.output),
        overlapped: tm.overlapped,
        streams: b,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        per_stream_us: total / steps as f64 / b as f64,
    })
}

/// Counts of zero would time nothing (`--steps 0`) or measure a batch other than the one asked
/// for (`--streams 0`): refuse them by name instead.
fn check(a: &BenchArgs) -> Result<()> {
    if a.steps == 0 {
        anyhow::bail!("--steps 0: at least one timed step is needed");
    }
    if a.min_steps == 0 {
        anyhow::bail!("--min-steps 0: at least one timed step is needed");
    }
    for (flag, list) in [
        ("--streams", &a.streams),
        ("--chunk-streams", &a.chunk_streams),
    ] {
        if list.contains(&0) {
            anyhow::bail!("{flag} 0: a batch needs at least one stream");
        }
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    check(&a)?;
    let pkg = a.model.package()?;
    let opts = a.model.engine_options();
    let mut engine = Engine::load(&pkg.step, &opts, 1, 1)?;
    let info = engine.info().clone();
    let mut sizes = vec![1usize, 16];
    sizes.extend(a.streams.iter().copied());
    sizes.sort_unstable();
    sizes.dedup();
    let mut results = Vec::new();
    // A batch size that fails (too large for the memory, the GPU's grid) is reported and the
    // others still run; the exit status says so at the end. 1 and 16 streams must work.
    let mut failed: Vec<(&str, usize, String)> = Vec::new();
    for &b in &sizes {
        let steps = if b <= 16 {
            a.steps
        } else {
            (a.steps * 16 / b).max(a.min_steps)
        };
        match engine.resize(b).and_then(|_| measure(&mut engine, steps)) {
            Ok(r) => results.push(r),
            Err(e) if b != 1 && b != 16 => {
                eprintln!("mambatag: bench: {b} streams: {e:#}");
                failed.push(("step", b, format!("{e:#}")));
            }
            Err(e) => return Err(e),
        }
    }
    // Offline path: the chunk graph, T hops per call.
    let mut chunk_rows = Vec::new();
    if !a.chunk_streams.is_empty() {
        let c = pkg.chunk.as_ref().ok_or_else(|| {
            anyhow::anyhow!("--chunk-streams: {} has no chunk.onnx", pkg.root.display())
        })?;
        let mut ce = Engine::load(c, &opts, 1, a.chunk_frames)?;
        let t = ce.frames_per_call();
        for &b in &a.chunk_streams {
            let calls = (a.steps / 20 / b).clamp(3, 50);
            let r = match ce.resize(b).and_then(|_| measure(&mut ce, calls)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("mambatag: bench: chunk graph, {b} streams: {e:#}");
                    failed.push(("chunk", b, format!("{e:#}")));
                    continue;
                }
            };
            // Frames per second over all streams: B·T frames per call.
            let fps = (b * t) as f64 / (r.per_stream_us * b as f64) * 1e6;
            // the session run alone (on CUDA: without the audio upload and scores download)
            let fps_model = (b * t) as f64 / r.model_us.max(1e-3) * 1e6;
            chunk_rows.push((b, t, r.p50_us, fps, fps_model));
        }
    }
    let mut file_rtf = None;
    let mut file_seconds = None;
    if let Some(f) = &a.file {
        // What `mambatag tag FILE` runs: the chunk graph when the model has one, one lane.
        let graph = pkg.chunk.as_ref().unwrap_or(&pkg.step);
        let mut fe = vec![Engine::load(graph, &opts, 1, 0)?];
        let bopts = BatchOptions {
            lanes: 1,
            quality: Quality::Fft,
            events: EventParams::from_model(
                &info,
                &[],
                events::DEFAULT_SMOOTH,
                events::DEFAULT_MIN_DURATION,
            )?,
            frames: false,
        };
        let open = |_: usize| -> Result<Box<dyn AudioSource>> {
            Ok(Box::new(
                FileSource::open(f).map_err(|e| anyhow::anyhow!("{}: {e:#}", f.display()))?,
            ))
        };
        let t = Instant::now();
        let mut seconds = 0.0;
        batch::run(&mut fe, 1, &open, &bopts, |r| match r {
            Report::Done { result, .. } => {
                seconds = result?.seconds;
                Ok(())
            }
            _ => Ok(()),
        })?;
        let wall = t.elapsed().as_secs_f64();
        file_rtf = Some(seconds / wall);
        file_seconds = Some(seconds);
    }
    let hop_us = info.hop_seconds() * 1e6;
    // The largest batch whose p99 step still fits in one hop: that many live streams keep up.
    let max_rt = results
        .iter()
        .filter(|r| r.p99_us <= hop_us)
        .map(|r| r.streams)
        .max()
        .unwrap_or(0);
    let by_streams = |n: usize| results.iter().find(|r| r.streams == n);
    let (b1, b16) = by_streams(1)
        .zip(by_streams(16))
        .ok_or_else(|| anyhow::anyhow!("bench: no result for 1 or 16 streams"))?;
    let status = if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if a.json {
        let batches: Vec<_> = results
            .iter()
            .map(|r| serde_json::json!({"streams": r.streams, "step_us_p50": r.p50_us, "step_us_p99": r.p99_us, "us_per_stream": r.per_stream_us, "upload_us": r.input_us, "run_us": r.model_us, "download_us": r.output_us, "stream_frames_per_s": 1e6 / r.per_stream_us, "realtime": r.p99_us <= hop_us}))
            .collect();
        let j = serde_json::json!({
            "model": info.name, "device": format!("{:?}", engine.device()).to_lowercase(), "threads": opts.threads,
            "step_us_p50": b1.p50_us, "step_us_p99": b1.p99_us,
            "batch16_us_per_stream": b16.per_stream_us,
            "file_rtf": file_rtf, "file_seconds": file_seconds,
            "max_realtime_streams": max_rt,
            "chunk": chunk_rows.iter().map(|(b, t, p50, fps, fpm)| serde_json::json!({"streams": b, "frames_per_call": t, "call_us_p50": p50, "frames_per_s": fps, "realtime_factor": fps * info.hop_seconds(), "model_frames_per_s": fpm, "model_realtime_factor": fpm * info.hop_seconds()})).collect::<Vec<_>>(),
            "batches": batches,
            "failed": failed.iter().map(|(g, b, e)| serde_json::json!({"graph": g, "streams": b, "error": e})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string(&j)?);
        return Ok(status);
    }
    println!(
        "model {} {} · device {:?} · {} thread(s) · state {} B/stream",
        info.name,
        info.version,
        engine.device(),
        opts.threads,
        info.state_bytes_per_stream()
    );
    println!(
        "{:>8} {:>12} {:>12} {:>16} {:>16} {:>9}",
        "streams", "step p50 µs", "step p99 µs", "µs/stream-frame", "stream-frames/s", "real time"
    );
    for r in &results {
        println!(
            "{:>8} {:>12.1} {:>12.1} {:>16.2} {:>16.0} {:>9}",
            r.streams,
            r.p50_us,
            r.p99_us,
            r.per_stream_us,
            1e6 / r.per_stream_us,
            if r.p99_us <= hop_us { "yes" } else { "no" }
        );
    }
    println!("largest batch with p99 step ≤ {hop_us:.0} µs (real time): {max_rt} streams");
    for r in &results {
        if r.overlapped {
            println!(
                "  {} streams: mean per step {:.1} µs audio upload + {:.1} µs queueing the run + {:.1} µs waiting for it and the scores download",
                r.streams, r.input_us, r.model_us, r.output_us
            );
        } else if r.input_us + r.output_us > 0.05 * r.model_us {
            println!(
                "  {} streams: mean per step {:.1} µs audio upload + {:.1} µs session run + {:.1} µs scores download",
                r.streams, r.input_us, r.model_us, r.output_us
            );
        }
    }
    for (b, t, p50, fps, fpm) in &chunk_rows {
        println!(
            "chunk graph: {b} streams × {t} frames per call: {:.1} ms per call, {fps:.0} frames/s ({:.0}× real time with audio in/scores out); session run alone {fpm:.0} frames/s ({:.0}×)",
            p50 / 1000.0,
            fps * info.hop_seconds(),
            fpm * info.hop_seconds()
        );
    }
    if let (Some(rtf), Some(secs)) = (file_rtf, file_seconds) {
        println!(
            "file: {secs:.1} s of audio, {rtf:.0}× real time (decode + resample + model + events, as `tag` runs it)"
        );
    }
    for (g, b, e) in &failed {
        println!("failed: {g} graph, {b} streams: {e}");
    }
    Ok(status)
}
