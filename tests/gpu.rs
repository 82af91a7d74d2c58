//! GPU suite (needs `--features cuda` and an NVIDIA GPU): `cargo test --features cuda --test gpu
//! -- --ignored`. CI has no GPU; the same slot/IoBinding code paths run on the CPU EP in
//! tests/engine.rs (`device_style_row_copies_behave_the_same`).
//!
//! Model: `$MAMBATAG_GPU_MODEL`, else models/default when present, else models/test-tiny.
//! GPU graph: `$MAMBATAG_GPU_KERNELS` (`auto` = the layer step graph, default; `onnx`; `fused`; `layer`). The
//! CPU reference is always the standard-operator graph, so the fused CUDA kernels are checked
//! against independent arithmetic.

mod common;

use std::path::PathBuf;

use common::*;
use mambatag::engine::slots::SlotTable;
use mambatag::engine::{Device, Engine, EngineOptions, Kernels};
use mambatag::model::ModelPackage;

fn package() -> ModelPackage {
    let p = std::env::var_os("MAMBATAG_GPU_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let d = repo().join("models/default");
            if d.join("step.onnx").is_file() {
                d
            } else {
                tiny_model()
            }
        });
    ModelPackage::locate(&p).unwrap()
}

fn gpu_kernels() -> Kernels {
    match std::env::var("MAMBATAG_GPU_KERNELS").as_deref() {
        Ok("onnx") => Kernels::Onnx,
        Ok("fused") => Kernels::Fused,
        Ok("layer") => Kernels::Layer,
        _ => Kernels::Auto,
    }
}

fn options(device: Device) -> EngineOptions {
    EngineOptions {
        device,
        kernels: if device == Device::Cpu {
            Kernels::Onnx
        } else {
            gpu_kernels()
        },
        cuda: mambatag::engine::CudaOptions {
            cuda_graph: std::env::var_os("MAMBATAG_GPU_CUDA_GRAPH").is_some(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn load(device: Device, cap: usize) -> Engine {
    Engine::load(&package().step, &options(device), cap, 1).expect("load model")
}

#[test]
#[ignore = "needs a GPU (--features cuda)"]
fn gpu_matches_cpu_over_10000_frames() {
    let mut cpu = load(Device::Cpu, 1);
    let mut gpu = load(Device::Cuda, 1);
    assert_eq!(gpu.device(), Device::Cuda);
    let mut max = 0.0f32;
    for t in 0..10_000 {
        max = max.max(step_both(&mut cpu, &mut gpu, t, &[true]));
    }
    println!("GPU vs CPU max abs score difference over 10000 frames: {max:e}");
    assert!(max <= 1e-3, "{max}");
}

/// A stream that joins a batch of `others` streams mid-way (and idles for 10 of its rounds):
/// the largest difference of its scores from the same audio alone, and the engine it ran in.
fn joined_vs_alone(others: usize, want: &[Vec<f32>]) -> (f32, Engine, SlotTable) {
    let frames = want.len();
    let mut buf = vec![0.0; 160];
    let mut e = load(Device::Cuda, 1);
    let mut slots = SlotTable::new(1);
    for id in 0..others as u64 {
        slots.join(&mut e, id).unwrap();
    }
    assert_eq!(e.capacity(), others.next_power_of_two());
    let mut got = Vec::new();
    let mut t = 0;
    let mut round = 0;
    while t < frames {
        if round == 37 {
            slots.join(&mut e, 999).unwrap();
        }
        for r in 0..others {
            hop_audio(round, r, e.input_mut(r));
        }
        let joined = slots.row_of(999);
        let idle = (100..110).contains(&round);
        if let Some(r) = joined {
            hop_audio(t, 5, &mut buf);
            e.input_mut(r).copy_from_slice(&buf);
        }
        let adv = slots.advance_mask(|r, id| id != 999 || (Some(r) == joined && !idle));
        e.run(&adv).unwrap();
        if let (Some(r), false) = (joined, idle) {
            got.push(e.scores(r).to_vec());
            t += 1;
        }
        round += 1;
    }
    let max = got
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    (max, e, slots)
}

/// Joining a batch of 64 rows and one of 256 (on the layer graph, those run other kernels
/// than one row alone: `layer_mixh1` below the SM count, `layer_mixh2` above it).
#[test]
#[ignore = "needs a GPU (--features cuda)"]
fn gpu_slot_joining_mid_batch_scores_as_alone() {
    let frames = 400;
    let mut alone = load(Device::Cuda, 1);
    let mut want = Vec::new();
    let mut buf = vec![0.0; 160];
    for t in 0..frames {
        hop_audio(t, 5, &mut buf);
        alone.input_mut(0).copy_from_slice(&buf);
        alone.run(&[true]).unwrap();
        want.push(alone.scores(0).to_vec());
    }
    for others in [40, 200] {
        let (max, mut e, slots) = joined_vs_alone(others, &want);
        let b = e.capacity();
        println!("joined-mid-batch vs alone on GPU: max abs difference {max:e} (batch {b} vs 1; cuBLAS may pick other kernels)");
        assert!(max <= 1e-4, "batch {b}: {max}");
        // Snapshot to host and restore into another row: same continuation.
        let r = slots.row_of(999).unwrap();
        let snap = e.snapshot_row(r).unwrap();
        e.restore_row(0, &snap).unwrap();
        assert_eq!(e.snapshot_row(0).unwrap(), snap);
    }
}

#[test]
#[ignore = "needs a GPU (--features cuda)"]
fn gpu_batch_growth_mid_stream_matches_cpu() {
    // With CUDA graphs a resize must capture new graphs: replaying the old one would run the
    // old batch size on freed buffers.
    let mut cpu = load(Device::Cpu, 1);
    let mut gpu = load(Device::Cuda, 1);
    let (mut cs, mut gs) = (SlotTable::new(1), SlotTable::new(1));
    cs.join(&mut cpu, 0).unwrap();
    gs.join(&mut gpu, 0).unwrap();
    let mut max = 0.0f32;
    for t in 0..300 {
        if t == 100 || t == 200 {
            for id in 1..(if t == 100 { 3 } else { 9 }) {
                cs.join(&mut cpu, id).unwrap();
                gs.join(&mut gpu, id).unwrap();
            }
        }
        assert_eq!(cpu.capacity(), gpu.capacity());
        let adv = vec![true; cpu.capacity()];
        max = max.max(step_both(&mut cpu, &mut gpu, t, &adv));
    }
    assert_eq!(gpu.capacity(), 16);
    println!("batch growing 1 → 4 → 16 mid-stream, GPU vs CPU: max abs difference {max:e}");
    assert!(max <= 1e-3, "{max}");
}

/// Under `--kernels auto` a GPU engine runs the layer step graph up to `LAYER_MAX_BATCH` rows
/// and the fused step graph above: growing 16 → 256 → 1,024 rows mid-stream switches graphs
/// with the state carried over, and every row still matches the CPU (256 rows: the layer
/// graph's three launches with `layer_mixh2`).
#[test]
#[ignore = "needs a GPU (--features cuda)"]
fn gpu_growth_past_the_layer_graph_batch_matches_cpu() {
    let big = 1024;
    assert!(big > mambatag::engine::LAYER_MAX_BATCH);
    let mut cpu = load(Device::Cpu, 16);
    let mut gpu = load(Device::Cuda, 16);
    let mut max = 0.0f32;
    for t in 0..150 {
        if t == 40 || t == 90 {
            let n = if t == 40 { 256 } else { big };
            cpu.resize(n).unwrap();
            gpu.resize(n).unwrap();
        }
        let adv = vec![true; cpu.capacity()];
        max = max.max(step_both(&mut cpu, &mut gpu, t, &adv));
    }
    println!("batch growing 16 → 256 → {big} mid-stream (graph switch), GPU vs CPU: max abs difference {max:e}");
    assert!(max <= 1e-3, "{max}");
}

/// The chunk graph on the GPU (fused: one MambaSsm launch walks all T hops per call) against
/// the CPU standard step graph, 4 rows of different audio, 2,000 frames = 8 calls of T = 250.
#[test]
#[ignore = "needs a GPU (--features cuda)"]
fn gpu_chunk_matches_cpu_step() {
    let pkg = package();
    let Some(chunk) = pkg.chunk.as_ref() else {
        println!("no chunk graph in this package; skipped");
        return;
    };
    let (rows, t_len, calls) = (4, 250, 8);
    let mut cpu = load(Device::Cpu, rows);
    // no CUDA graphs here: the standard chunk graph's Scan cannot be captured
    let mut opts = options(Device::Cuda);
    opts.cuda.cuda_graph = false;
    let mut gpu = Engine::load(chunk, &opts, rows, t_len).expect("load chunk");
    assert_eq!(gpu.device(), Device::Cuda);
    let labels = cpu.info().num_labels();
    let mut max = 0.0f32;
    let mut buf = vec![0.0; 160];
    for c in 0..calls {
        let mut want = vec![Vec::new(); rows];
        for k in 0..t_len {
            let t = c * t_len + k;
            for r in 0..rows {
                hop_audio(t, r, &mut buf);
                cpu.input_mut(r).copy_from_slice(&buf);
                gpu.input_mut(r)[k * 160..(k + 1) * 160].copy_from_slice(&buf);
            }
            cpu.run(&[true; 4]).unwrap();
            for (r, w) in want.iter_mut().enumerate() {
                w.extend_from_slice(cpu.scores(r));
            }
        }
        gpu.run(&[true; 4]).unwrap();
        for (r, w) in want.iter().enumerate() {
            let got = gpu.scores(r);
            assert_eq!(got.len(), t_len * labels);
            for (a, b) in w.iter().zip(got) {
                max = max.max((a - b).abs());
            }
        }
    }
    println!(
        "chunk graph on GPU vs CPU step graph, 4 rows x 2000 frames: max abs difference {max:e}"
    );
    assert!(max <= 1e-3, "{max}");
}
