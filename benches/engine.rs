//! Criterion benchmarks of the engine: one step at batch 1 and 16 (per call), the whole file
//! pipeline (decode + resample + model + events) on a 44.1 kHz stereo FLAC, and the fused ops'
//! selective-scan CPU kernel alone at each vector level this CPU has (`ssm_row/LEVEL`: one batch
//! row of 250 hops at the default model's shape, d_inner 256, d_state 16, dt_rank 8).
//!
//! Model: `MAMBATAG_BENCH_MODEL` (a package dir or .onnx), default `models/default` when present,
//! else `models/test-tiny`. File: `MAMBATAG_BENCH_FILE`, default a 30 s FLAC made with sox.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mambatag::batch::{self, BatchOptions, Report};
use mambatag::engine::fused::cpu::{Simd, SsmCase};
use mambatag::engine::{Engine, EngineOptions};
use mambatag::events::EventParams;
use mambatag::model::ModelPackage;
use mambatag::resample::Quality;
use mambatag::source::{AudioSource, FileSource};

fn model() -> PathBuf {
    package().step
}

fn package() -> ModelPackage {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = std::env::var_os("MAMBATAG_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let d = root.join("models/default");
            if d.join("step.onnx").is_file() {
                d
            } else {
                root.join("models/test-tiny")
            }
        });
    ModelPackage::locate(&p).expect("bench model")
}

fn flac() -> PathBuf {
    if let Some(p) = std::env::var_os("MAMBATAG_BENCH_FILE") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-44k1-stereo-30s.flac");
    if !p.is_file() {
        let st = std::process::Command::new("sox")
            .args(["-n", "-r", "44100", "-c", "2", "-b", "16"])
            .arg(&p)
            .args([
                "synth",
                "30",
                "pinknoise",
                "vol",
                "0.3",
                ":",
                "synth",
                "30",
                "sine",
                "440",
                "vol",
                "0.2",
            ])
            .status()
            .expect("sox makes the benchmark file");
        assert!(st.success());
    }
    p
}

fn steps(c: &mut Criterion) {
    let path = model();
    for b in [1usize, 16] {
        let mut e = Engine::load(&path, &EngineOptions::default(), b, 1).unwrap();
        for r in 0..b {
            for (i, x) in e.input_mut(r).iter_mut().enumerate() {
                *x = ((i * 7919 + r * 104729) % 1000) as f32 / 5000.0 - 0.1;
            }
        }
        let adv = vec![true; b];
        let mut g = c.benchmark_group("step");
        g.throughput(Throughput::Elements(b as u64));
        g.bench_function(format!("batch{b}"), |bench| {
            bench.iter(|| e.run(&adv).unwrap())
        });
        g.finish();
    }
}

fn file(c: &mut Criterion) {
    let pkg = package();
    let f = flac();
    // What `mambatag tag FILE` runs: the chunk graph when the model has one, one lane.
    let graph = pkg.chunk.clone().unwrap_or(pkg.step.clone());
    let mut e = vec![Engine::load(&graph, &EngineOptions::default(), 1, 0).unwrap()];
    let info = e[0].info().clone();
    let opts = BatchOptions {
        lanes: 1,
        quality: Quality::Fft,
        events: EventParams::from_model(&info, &[], 5, 0.05).unwrap(),
        frames: false,
    };
    let open =
        |_: usize| -> anyhow::Result<Box<dyn AudioSource>> { Ok(Box::new(FileSource::open(&f)?)) };
    let mut g = c.benchmark_group("file");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("flac44k1_stereo_30s", |b| {
        b.iter(|| batch::run(&mut e, 1, &open, &opts, |_: Report<'_>| Ok(())).unwrap())
    });
    g.finish();
}

fn ssm_kernel(c: &mut Criterion) {
    let case = SsmCase::new(250, 256, 16, 8);
    let (t, e, n) = (case.dims.t, case.dims.e, case.dims.n);
    let (mut out, mut h) = (vec![0.0; t * e], vec![0.0; n * e]);
    let mut g = c.benchmark_group("ssm_row");
    g.throughput(Throughput::Elements(t as u64));
    for level in [Simd::Scalar, Simd::Avx2, Simd::Avx512] {
        if level > Simd::detected() {
            continue;
        }
        g.bench_function(format!("{level:?}"), |b| {
            b.iter(|| case.run(level, &mut out, &mut h))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // no plots: the comparison plots of a group with several functions need system fonts,
    // which headless machines (CI, the GPU host) lack
    config = Criterion::default().without_plots();
    targets = steps, file, ssm_kernel
}
criterion_main!(benches);
