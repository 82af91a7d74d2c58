//! The chunk graph (`chunk.onnx`, T hops per call) against the step graph: same scores frame
//! by frame, with state carried across calls, including a shorter last call.

mod common;

use common::*;
use mambatag::engine::{Engine, EngineOptions};
use mambatag::model::GraphKind;
use mambatag::pipeline::Conditioner;
use mambatag::resample::Quality;
use mambatag::source::{AudioSource, FileSource};

const TOL: f32 = 1e-4;

/// fixture.wav (2 s at 16 kHz) as model-rate hops, concatenated.
fn fixture_hops() -> Vec<f32> {
    let mut s = FileSource::open(&tiny_model().join("fixture.wav")).unwrap();
    let mut x = Vec::new();
    while s.read(&mut x).unwrap() {}
    let rate = s.info().rate;
    assert_eq!(rate, 16000);
    let mut c = Conditioner::new(rate, 16000, 160, Quality::Fft).unwrap();
    c.push(&x).unwrap();
    c.finish().unwrap();
    let mut hops = Vec::new();
    while let Some(h) = c.next_hop() {
        hops.extend_from_slice(h);
    }
    hops
}

fn load(graph: &str, cap: usize, t: usize) -> Engine {
    Engine::load(&tiny_model().join(graph), &EngineOptions::default(), cap, t)
        .unwrap_or_else(|e| panic!("load {graph}: {e:#}"))
}

/// Row 0 of a step engine over all hops: `frames × labels` scores.
fn step_scores(hops: &[f32]) -> Vec<f32> {
    let mut e = load("step.onnx", 1, 1);
    let mut out = Vec::new();
    for h in hops.chunks_exact(160) {
        e.input_mut(0).copy_from_slice(h);
        e.run(&[true]).unwrap();
        out.extend_from_slice(e.scores(0));
    }
    out
}

#[test]
fn chunk_graph_metadata() {
    let e = load("chunk.onnx", 1, 50);
    assert_eq!(e.info().graph, GraphKind::Chunk);
    assert!(e.info().chunk_frames.is_some_and(|t| t > 0));
    assert_eq!(e.frames_per_call(), 50);
    assert_eq!(e.samples_per_call(), 50 * 160);
    assert_eq!(e.scores(0).len(), 50 * e.info().num_labels());
}

/// Full calls of T = 64 frames carry state; the 8-frame tail runs in a second chunk engine
/// loaded with T = 8 and given the first engine's state (the graph's T is symbolic).
#[test]
fn chunk_matches_step_with_shorter_tail() {
    let hops = fixture_hops();
    let frames = hops.len() / 160;
    assert_eq!(frames, 200);
    let want = step_scores(&hops);

    let t = 64;
    let full = frames / t;
    let tail = frames - full * t;
    assert!(tail > 0 && tail < t);
    // row 1 gets different audio: rows must not leak into each other
    let mut e = load("chunk.onnx", 2, t);
    let c = e.info().num_labels();
    let mut got = Vec::new();
    for k in 0..full {
        let piece = &hops[k * t * 160..(k + 1) * t * 160];
        e.input_mut(0).copy_from_slice(piece);
        for (d, s) in e.input_mut(1).iter_mut().zip(piece.iter().rev()) {
            *d = 0.5 * s;
        }
        e.run(&[true, true]).unwrap();
        got.extend_from_slice(e.scores(0));
    }
    let snap = e.snapshot_row(0).unwrap();
    let mut e2 = load("chunk.onnx", 1, tail);
    e2.restore_row(0, &snap).unwrap();
    e2.input_mut(0).copy_from_slice(&hops[full * t * 160..]);
    e2.run(&[true]).unwrap();
    got.extend_from_slice(e2.scores(0));
    assert_eq!(got.len(), frames * c);

    let err = max_abs_diff(&got, &want);
    println!("chunk (T={t}, tail {tail}) vs step: max abs diff {err:e} over {frames} frames");
    assert!(err <= TOL, "max abs diff {err} > {TOL}");
}

/// The preferred T from the metadata, with the short last call zero-padded (as `mambatag tag`
/// does): the real frames match the step graph; padding only affects frames after them.
#[test]
fn chunk_matches_step_with_padded_last_call() {
    let hops = fixture_hops();
    let frames = hops.len() / 160;
    let want = step_scores(&hops);
    for t in [7usize, 37, 250] {
        let mut e = load("chunk.onnx", 1, t);
        let c = e.info().num_labels();
        let mut got = Vec::new();
        for piece in hops.chunks(t * 160) {
            let n = piece.len() / 160;
            let input = e.input_mut(0);
            input[..piece.len()].copy_from_slice(piece);
            input[piece.len()..].fill(0.0);
            e.run(&[true]).unwrap();
            got.extend_from_slice(&e.scores(0)[..n * c]);
        }
        let err = max_abs_diff(&got, &want);
        println!("chunk (T={t}, padded tail) vs step: max abs diff {err:e} over {frames} frames");
        assert!(err <= TOL, "T={t}: max abs diff {err} > {TOL}");
    }
}
