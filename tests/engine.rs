//! The engine against the Python reference, chunking invariance, and slot behaviour.

mod common;

use common::*;
use mambatag::engine::slots::SlotTable;
use mambatag::engine::{Engine, EngineOptions};
use mambatag::pipeline::Conditioner;
use mambatag::resample::Quality;
use mambatag::source::{AudioSource, FileSource};

fn engine(cap: usize) -> Engine {
    Engine::load(
        &tiny_model().join("step.onnx"),
        &EngineOptions::default(),
        cap,
        1,
    )
    .expect("load tiny model")
}

/// `device_rows`: touch state rows only through ONNX Runtime copies of raw row views, the code
/// path the CUDA engine uses, here on the CPU EP so CI covers it.
fn engine_with(cap: usize, device_rows: bool) -> Engine {
    let opts = EngineOptions {
        force_device_row_ops: device_rows,
        ..Default::default()
    };
    Engine::load(&tiny_model().join("step.onnx"), &opts, cap, 1).expect("load tiny model")
}

fn read_all(path: &std::path::Path) -> (Vec<f32>, u32) {
    let mut s = FileSource::open(path).unwrap();
    let mut x = Vec::new();
    while s.read(&mut x).unwrap() {}
    (x, s.info().rate)
}

/// Runs `pieces` of native-rate audio through conditioner + engine row 0; returns all scores.
fn scores_for(e: &mut Engine, rate: u32, pieces: &[&[f32]]) -> Vec<f32> {
    let mut c = Conditioner::new(rate, 16000, 160, Quality::Fft).unwrap();
    e.reset_row(0).unwrap();
    let mut out = Vec::new();
    let adv = vec![true; e.capacity()];
    let drain = |c: &mut Conditioner, e: &mut Engine, out: &mut Vec<f32>| {
        while let Some(h) = c.next_hop() {
            e.input_mut(0).copy_from_slice(h);
            e.run(&adv).unwrap();
            out.extend_from_slice(e.scores(0));
        }
    };
    for p in pieces {
        c.push(p).unwrap();
        drain(&mut c, e, &mut out);
    }
    c.finish().unwrap();
    drain(&mut c, e, &mut out);
    out
}

#[test]
fn matches_python_reference() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_model().join("reference.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(r["scores"].clone()).unwrap();
    let (x, rate) = read_all(&tiny_model().join("fixture.wav"));
    assert_eq!(rate, 16000);
    let mut e = engine(1);
    let got = scores_for(&mut e, rate, &[&x]);
    let c = e.info().num_labels();
    assert_eq!(got.len() / c, want.len(), "frame count");
    let mut max = 0.0f64;
    for (t, row) in want.iter().enumerate() {
        for (k, w) in row.iter().enumerate() {
            max = max.max((got[t * c + k] as f64 - w).abs());
        }
    }
    println!("max abs error vs reference: {max:e}");
    assert!(max <= 1e-4, "max abs error {max}");
    // Not a flat model: the parity check means something only if the scores move.
    let spread =
        got.iter().cloned().fold(f32::MIN, f32::max) - got.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.5, "scores barely move ({spread})");
}

#[test]
fn chunking_does_not_change_scores() {
    let (x, rate) = read_all(&sine_wav());
    // Make the signal less trivial than a steady sine: add decaying bursts.
    let x: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v * (1.0 + ((i / 4410) % 3) as f32) * 0.5)
        .collect();
    let mut e = engine(1);
    let whole = scores_for(&mut e, rate, &[&x]);
    let ones: Vec<&[f32]> = x.chunks(1).collect();
    let by_one = scores_for(&mut e, rate, &ones);
    let mut seed = 12345u64;
    let mut pieces: Vec<&[f32]> = Vec::new();
    let mut pos = 0;
    while pos < x.len() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = (1 + (seed >> 33) % 3000) as usize;
        let end = (pos + n).min(x.len());
        pieces.push(&x[pos..end]);
        pos = end;
    }
    let random = scores_for(&mut e, rate, &pieces);
    assert_eq!(whole.len(), 200 * e.info().num_labels());
    assert_eq!(whole, by_one, "1-sample pieces differ");
    assert_eq!(whole, random, "random pieces differ");
}

#[test]
fn batch_rows_are_independent_and_idle_rows_keep_state() {
    slots_case(false);
}

#[test]
fn device_style_row_copies_behave_the_same() {
    slots_case(true);
    snapshot_case(true);
}

fn slots_case(device_rows: bool) {
    let (x, _) = read_all(&tiny_model().join("fixture.wav"));
    let hops: Vec<&[f32]> = x.chunks_exact(160).collect();
    // Alone.
    let mut solo = engine(1);
    let mut alone = Vec::new();
    for h in &hops {
        solo.input_mut(0).copy_from_slice(h);
        solo.run(&[true]).unwrap();
        alone.push(solo.scores(0).to_vec());
    }
    // In a batch of 4 with noise in the other rows, joining at frame 50 after the batch grew,
    // and idling (advance = false) for 10 frames in the middle.
    let mut e = engine_with(1, device_rows);
    let mut slots = SlotTable::new(1);
    slots.join(&mut e, 100).unwrap();
    slots.join(&mut e, 101).unwrap();
    slots.join(&mut e, 102).unwrap();
    assert_eq!(e.capacity(), 4, "grows to a power of two");
    let mut got = Vec::new();
    let mut noise = 1u32;
    let mut t = 0usize;
    let mut round = 0usize;
    while t < hops.len() {
        if round == 50 {
            let row = slots.join(&mut e, 7).unwrap();
            assert_eq!(row, 3);
        }
        for r in 0..3 {
            for v in e.input_mut(r).iter_mut() {
                noise = noise.wrapping_mul(1664525).wrapping_add(1013904223);
                *v = (noise >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            }
        }
        let joined = slots.row_of(7).is_some();
        let idle = (80..90).contains(&round);
        if joined {
            e.input_mut(3)
                .copy_from_slice(if idle { &[9.0; 160] } else { hops[t] });
        }
        let adv = slots.advance_mask(|r, _| r != 3 || (joined && !idle));
        e.run(&adv).unwrap();
        if joined && !idle {
            got.push(e.scores(3).to_vec());
            t += 1;
        }
        round += 1;
    }
    assert_eq!(got, alone, "a slot in a batch must score exactly as alone");
}

#[test]
fn snapshot_restore_and_reset() {
    snapshot_case(false);
}

fn snapshot_case(device_rows: bool) {
    let (x, _) = read_all(&tiny_model().join("fixture.wav"));
    let hops: Vec<&[f32]> = x.chunks_exact(160).collect();
    let mut e = engine_with(2, device_rows);
    for h in &hops[..100] {
        e.input_mut(0).copy_from_slice(h);
        e.run(&[true, false]).unwrap();
    }
    let snap = e.snapshot_row(0).unwrap();
    let mut first = Vec::new();
    for h in &hops[100..] {
        e.input_mut(0).copy_from_slice(h);
        e.run(&[true, false]).unwrap();
        first.push(e.scores(0).to_vec());
    }
    // Restore into the other row and replay: same scores.
    e.restore_row(1, &snap).unwrap();
    let mut second = Vec::new();
    for h in &hops[100..] {
        e.input_mut(1).copy_from_slice(h);
        e.run(&[false, true]).unwrap();
        second.push(e.scores(1).to_vec());
    }
    assert_eq!(first, second);
    // Reset equals a fresh engine.
    e.reset_row(0).unwrap();
    let mut fresh = engine(1);
    e.input_mut(0).copy_from_slice(hops[0]);
    e.run(&[true, false]).unwrap();
    fresh.input_mut(0).copy_from_slice(hops[0]);
    fresh.run(&[true]).unwrap();
    assert_eq!(e.scores(0), fresh.scores(0));
    assert!(e.restore_row(0, &snap[..1]).is_err());
}
