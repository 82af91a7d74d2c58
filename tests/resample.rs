//! A 1 kHz sine at 8, 22.05, 44.1, 48 and 96 kHz, resampled to the model rate (16 kHz) by every
//! quality setting, is still a 1 kHz sine: the peak is at 1 kHz, the length is exact and the
//! resampler's delay is trimmed (the output lines up with an ideal 16 kHz sine within one sample).

mod common;

use common::tone_power;
use mambatag::resample::{MonoResampler, Quality};

fn sine(rate: u32, secs: f64) -> Vec<f32> {
    let n = (rate as f64 * secs) as usize;
    (0..n)
        .map(|i| (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / rate as f64).sin() as f32 * 0.5)
        .collect()
}

#[test]
fn sine_survives_every_rate_and_quality() {
    for q in [Quality::Fft, Quality::Sinc, Quality::Linear] {
        for rate in [8000u32, 22050, 44100, 48000, 96000] {
            let x = sine(rate, 1.0);
            let mut r = MonoResampler::new(rate, 16000, q).unwrap();
            let mut y = Vec::new();
            // Uneven pieces, to exercise the internal buffering as well.
            for piece in x.chunks(777) {
                r.push(piece, &mut y).unwrap();
            }
            r.finish(&mut y).unwrap();
            assert_eq!(y.len(), 16000, "{q:?} {rate}: length");
            let mid = &y[2000..14000];
            let p1k = tone_power(mid, 16000.0, 1000.0);
            for f in [250.0, 750.0, 1250.0, 2000.0, 4000.0, 7000.0] {
                assert!(
                    p1k > 50.0 * tone_power(mid, 16000.0, f),
                    "{q:?} {rate}: leak at {f} Hz"
                );
            }
            // Aligned with the ideal output: the resampler's delay is trimmed to within one
            // output sample (62.5 µs, far below the 10 ms hop). Search the best fractional lag.
            let (mut best_err, mut best_lag) = (f64::MAX, 0.0);
            for k in -200..=200 {
                let d = k as f64 * 0.01;
                let e = (2000..14000)
                    .map(|i| {
                        let t = (i as f64 - d) / 16000.0;
                        let ideal = (2.0 * std::f64::consts::PI * 1000.0 * t).sin() * 0.5;
                        (y[i] as f64 - ideal).powi(2)
                    })
                    .sum::<f64>()
                    / 12000.0;
                if e < best_err {
                    (best_err, best_lag) = (e, d);
                }
            }
            let rms = best_err.sqrt();
            let tol = if q == Quality::Linear { 0.03 } else { 0.002 };
            assert!(
                best_lag.abs() <= 1.05,
                "{q:?} {rate}: misaligned by {best_lag} samples"
            );
            assert!(rms < tol, "{q:?} {rate}: rms deviation from ideal {rms}");
        }
    }
}
