//! The fused-operator graphs (`step-fused.onnx`, `chunk-fused.onnx`: each layer's conv and
//! selective-state update as the `ai.mambatag` MambaConv/MambaSsm ops; `step-layer.onnx`: each
//! whole layer as one MambaLayer op, the embedding and head as MambaEmbed/MambaHead; CPU
//! kernels here) against the standard-operator step graph, which is independent arithmetic: same scores
//! frame by frame, with state carried, idle rows, slot resets and chunked calls.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mambatag::engine::{graph_for, Engine, EngineOptions, Kernels};
use mambatag::model::ModelPackage;

fn default_model() -> PathBuf {
    repo().join("models/default")
}

fn opts(kernels: Kernels) -> EngineOptions {
    EngineOptions {
        kernels,
        ..Default::default()
    }
}

#[test]
fn packages_ship_fused_graphs() {
    for m in [tiny_model(), default_model()] {
        let pkg = ModelPackage::locate(&m).unwrap();
        let chunk = pkg.chunk.as_ref().unwrap();
        for (gpu, step, chunk_graph) in [
            (false, "step-fused.onnx", "chunk-fused.onnx"),
            (true, "step-layer.onnx", "chunk-fused.onnx"),
        ] {
            let s = graph_for(&pkg.step, Kernels::Auto, gpu).unwrap();
            assert!(s.ends_with(step), "{}", s.display());
            let c = graph_for(chunk, Kernels::Auto, gpu).unwrap();
            assert!(c.ends_with(chunk_graph), "{}", c.display());
            assert_eq!(graph_for(&pkg.step, Kernels::Onnx, gpu).unwrap(), pkg.step);
        }
        let l = graph_for(&pkg.step, Kernels::Layer, false).unwrap();
        assert!(l.ends_with("step-layer.onnx"), "{}", l.display());
        // there is no layer chunk graph: --kernels layer runs chunks on the fused graph
        let c = graph_for(chunk, Kernels::Layer, false).unwrap();
        assert!(c.ends_with("chunk-fused.onnx"), "{}", c.display());
    }
}

/// 3 rows over 1,500 steps: row 1 idles every 7th step (its state must stay put), row 2 is
/// reset at step 600 (as a new stream joining) — `kernels` and standard engines side by side.
fn step_parity(model: &Path, steps: usize, kernels: Kernels) -> f32 {
    let pkg = ModelPackage::locate(model).unwrap();
    let mut a = Engine::load(&pkg.step, &opts(Kernels::Onnx), 3, 1).unwrap();
    let mut b = Engine::load(&pkg.step, &opts(kernels), 3, 1).unwrap();
    let mut max = 0.0f32;
    for t in 0..steps {
        if t == 600 {
            a.reset_row(2).unwrap();
            b.reset_row(2).unwrap();
        }
        max = max.max(step_both(&mut a, &mut b, t, &[true, t % 7 != 0, true]));
    }
    max
}

#[test]
fn fused_step_matches_standard_step_on_test_tiny() {
    let d = step_parity(&tiny_model(), 1500, Kernels::Fused);
    println!("test-tiny: fused vs standard step, max abs score difference {d:e}");
    assert!(d <= 1e-5, "{d}");
}

#[test]
fn fused_step_matches_standard_step_on_default_model() {
    let d = step_parity(&default_model(), 1500, Kernels::Fused);
    println!("default: fused vs standard step, max abs score difference {d:e}");
    assert!(d <= 1e-5, "{d}");
}

#[test]
fn layer_step_matches_standard_step() {
    for model in [tiny_model(), default_model()] {
        let d = step_parity(&model, 1500, Kernels::Layer);
        println!(
            "{}: layer vs standard step, max abs score difference {d:e}",
            model.display()
        );
        assert!(d <= 1e-5, "{}: {d}", model.display());
    }
}

/// chunk-fused.onnx (T = 64 per call, then a 23-frame tail through a T = 23 engine handed the
/// state) against the standard step graph, two rows of different audio.
#[test]
fn fused_chunk_matches_standard_step() {
    for model in [tiny_model(), default_model()] {
        let pkg = ModelPackage::locate(&model).unwrap();
        let frames = 64 * 5 + 23;
        let mut step = Engine::load(&pkg.step, &opts(Kernels::Onnx), 2, 1).unwrap();
        let chunk = pkg.chunk.as_ref().unwrap();
        let mut c64 = Engine::load(chunk, &opts(Kernels::Fused), 2, 64).unwrap();
        let mut c23 = Engine::load(chunk, &opts(Kernels::Fused), 2, 23).unwrap();
        let labels = step.info().num_labels();
        let mut want = vec![Vec::new(); 2];
        let mut got = vec![Vec::new(); 2];
        let mut buf = vec![0.0; 160];
        for t in 0..frames {
            for r in 0..2 {
                hop_audio(t, r, &mut buf);
                step.input_mut(r).copy_from_slice(&buf);
            }
            step.run(&[true, true]).unwrap();
            for (r, w) in want.iter_mut().enumerate() {
                w.extend_from_slice(step.scores(r));
            }
        }
        for call in 0..5 {
            for r in 0..2 {
                for k in 0..64 {
                    hop_audio(call * 64 + k, r, &mut buf);
                    c64.input_mut(r)[k * 160..(k + 1) * 160].copy_from_slice(&buf);
                }
            }
            c64.run(&[true, true]).unwrap();
            for (r, g) in got.iter_mut().enumerate() {
                g.extend_from_slice(c64.scores(r));
            }
        }
        for r in 0..2 {
            let snap = c64.snapshot_row(r).unwrap();
            c23.restore_row(r, &snap).unwrap();
            for k in 0..23 {
                hop_audio(320 + k, r, &mut buf);
                c23.input_mut(r)[k * 160..(k + 1) * 160].copy_from_slice(&buf);
            }
        }
        c23.run(&[true, true]).unwrap();
        for (r, g) in got.iter_mut().enumerate() {
            g.extend_from_slice(c23.scores(r));
        }
        for r in 0..2 {
            assert_eq!(got[r].len(), frames * labels);
            let d = max_abs_diff(&want[r], &got[r]);
            println!("{}: chunk-fused vs step, row {r}: {d:e}", model.display());
            assert!(d <= 1e-4, "{}: row {r}: {d}", model.display());
        }
    }
}

#[test]
fn kernels_fused_without_a_fused_graph_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let step = dir.path().join("step.onnx");
    std::fs::copy(tiny_model().join("step.onnx"), &step).unwrap();
    for (kernels, says, file) in [
        (Kernels::Fused, "no fused graph", "step-fused.onnx"),
        (Kernels::Layer, "no layer graph", "step-layer.onnx"),
    ] {
        let e = Engine::load(&step, &opts(kernels), 1, 1)
            .err()
            .expect("must fail");
        let msg = format!("{e:#}");
        assert!(msg.contains(says) && msg.contains(file), "{msg}");
    }
    // auto falls back to the standard graph
    let e = Engine::load(&step, &opts(Kernels::Auto), 1, 1).unwrap();
    assert_eq!(e.info().num_labels(), 8);
    // and the CLI says the same, exit 2
    let wav = sine_wav();
    let o = mambatag(&[
        "tag",
        "--model",
        dir.path().to_str().unwrap(),
        "--kernels",
        "fused",
        wav.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no fused graph"), "{}", stderr(&o));
}

/// A graph in tests/data whose fused op gets a wrongly shaped input: loading works (the ops'
/// shapes are checked when they run), the first step fails with an error that names the op,
/// the input and the shapes (`want`), and the CLI exits non-zero naming `op` — no panic.
fn assert_broken_graph_fails_clearly(file: &str, want: &str, op: &str) {
    let bad = repo().join("tests/data").join(file);
    let mut e = Engine::load(&bad, &opts(Kernels::Auto), 1, 1).expect("loads");
    let err = format!("{:#}", e.run(&[true]).expect_err("the step must fail"));
    assert!(err.contains(want), "{err}");
    let wav = sine_wav();
    let o = mambatag(&[
        "tag",
        "--model",
        bad.to_str().unwrap(),
        wav.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let msg = stderr(&o);
    assert!(msg.contains(op), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
}

/// Layer 0's `A` is `[N-1, E]`.
#[test]
fn a_broken_fused_graph_is_a_clear_error() {
    assert_broken_graph_fails_clearly(
        "bad-fused-step.onnx",
        "MambaSsm A: shape [3, 32], expected [4, 32]",
        "MambaSsm",
    );
}

/// `--kernels auto` with a layer-graph switch point (on a GPU 512 rows; here 1, to run the same
/// code on the CPU): one stream runs the layer step graph, and a batch that grows past it
/// switches to the fused step graph with every row's state carried over; scores match the
/// standard graph throughout. Without the option the CPU never runs the layer graph.
#[test]
fn auto_engine_switches_graphs_as_the_batch_grows() {
    let pkg = ModelPackage::locate(&default_model()).unwrap();
    let plain = Engine::load(&pkg.step, &opts(Kernels::Auto), 1, 1).unwrap();
    assert!(plain.info().path.ends_with("step-fused.onnx"));
    let o = EngineOptions {
        layer_max_batch: Some(1),
        ..opts(Kernels::Auto)
    };
    let mut auto = Engine::load(&pkg.step, &o, 1, 1).unwrap();
    assert!(
        auto.info().path.ends_with("step-layer.onnx"),
        "{}",
        auto.info().path.display()
    );
    let mut std = Engine::load(&pkg.step, &opts(Kernels::Onnx), 1, 1).unwrap();
    let mut max = 0.0f32;
    for t in 0..400 {
        if t == 150 {
            auto.resize(3).unwrap();
            std.resize(3).unwrap();
        }
        let adv = vec![true; std.capacity()];
        max = max.max(step_both(&mut auto, &mut std, t, &adv));
    }
    println!("auto (layer graph, then fused from 3 rows) vs standard: {max:e}");
    assert!(max <= 1e-5, "{max}");
}

/// A layer graph whose layer-0 `in_w` lacks a row (made from test-tiny's step-layer.onnx by
/// dropping the last row of `l0_in_w`).
#[test]
fn a_broken_layer_graph_is_a_clear_error() {
    assert_broken_graph_fails_clearly(
        "bad-layer-step.onnx",
        "MambaLayer in_w: shape [15, 64], expected [16, 64]",
        "MambaLayer",
    );
}

/// A layer graph whose `MambaHead` weight lacks a row (made from test-tiny's step-layer.onnx by
/// dropping the last row of `head_w`).
#[test]
fn a_broken_head_is_a_clear_error() {
    assert_broken_graph_fails_clearly(
        "bad-head-step.onnx",
        "MambaHead w: shape [15, 8], expected [16, 8]",
        "MambaHead",
    );
}

/// The fused CPU kernels at each vector level (`MAMBATAG_CPU_SIMD`) on the default model through
/// the CLI: AVX2 and AVX-512 byte-identical (same per-lane arithmetic), the scalar build (no
/// FMA) within float rounding, and a bad value reported and ignored. On a CPU without AVX-512
/// the first comparison runs AVX2 twice, which the output says.
#[test]
fn cpu_simd_levels_give_the_same_frames() {
    let model = repo().join("models/default");
    let demo = repo().join("demo/demo.flac");
    let run = |level: Option<&str>| {
        let mut c = std::process::Command::new(bin());
        c.args([
            "tag",
            "--frames",
            "--kernels",
            "fused",
            "--engine",
            "chunk",
            "--model",
        ])
        .arg(&model)
        .arg(&demo);
        match level {
            Some(l) => c.env("MAMBATAG_CPU_SIMD", l),
            None => c.env_remove("MAMBATAG_CPU_SIMD"),
        };
        let o = c.output().expect("run mambatag");
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let best = run(None);
    let avx2 = run(Some("avx2"));
    let level = mambatag::engine::fused::cpu::Simd::detected();
    println!(
        "this CPU's vector level: {level:?} (the first comparison needs Avx512 to compare two)"
    );
    assert!(stdout(&best).lines().count() >= 900, "9 s of frames");
    assert_eq!(
        stdout(&best),
        stdout(&avx2),
        "AVX-512 and AVX2 frames differ"
    );
    let scalar = run(Some("scalar"));
    let max = max_abs_diff(
        &frame_scores(&stdout(&best)),
        &frame_scores(&stdout(&scalar)),
    );
    println!("scalar vs vector kernels, default model on demo.flac: max abs difference {max:e}");
    assert!(max <= 1e-5, "{max}");
    let bad = run(Some("avx-2"));
    assert!(
        stderr(&bad).contains("MAMBATAG_CPU_SIMD=\"avx-2\" is not one of"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(stdout(&bad), stdout(&best));
}
