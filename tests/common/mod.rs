//! Shared helpers for the integration tests: paths, fixture generation with sox/ffmpeg, and
//! running the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model() -> PathBuf {
    repo().join("models/test-tiny")
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mambatag"))
}

/// Runs the mambatag binary.
pub fn mambatag(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run mambatag")
}

/// Runs the mambatag binary with `input` on its stdin.
pub fn mambatag_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mambatag");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().expect("wait for mambatag")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fixtures generated for this test run (not committed).
pub fn fixtures() -> PathBuf {
    let d = repo().join("target/test-fixtures");
    std::fs::create_dir_all(&d).unwrap();
    d
}

static LOCK: Mutex<()> = Mutex::new(());

/// Makes `name` in the fixtures folder with `cmd` (the output path is appended) unless it exists.
pub fn fixture(name: &str, program: &str, args: &[&str]) -> PathBuf {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = fixtures().join(name);
    if path.is_file() {
        return path;
    }
    let tmp = fixtures().join(format!("tmp-{}-{name}", std::process::id()));
    let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if program == "ffmpeg" {
        full.insert(0, "-y".into());
        full.insert(1, "-loglevel".into());
        full.insert(2, "error".into());
        // ffmpeg picks the container from the extension; the temp name keeps it.
    }
    full.push(tmp.display().to_string());
    let out = Command::new(program)
        .args(&full)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is needed to make test fixtures (apt-get install {program}): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {full:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// 2 s of a 1 kHz sine at half scale, stereo, 44.1 kHz, 16-bit WAV: the source of most fixtures.
pub fn sine_wav() -> PathBuf {
    sox_synth(
        "sine1k-44k1-stereo.wav",
        44100,
        2,
        &["-b", "16", "-e", "signed-integer"],
        2.0,
    )
}

/// A sox-synthesised 1 kHz sine (`vol 0.5`) in any rate/encoding.
pub fn sox_synth(name: &str, rate: u32, channels: u32, enc: &[&str], secs: f64) -> PathBuf {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = fixtures().join(name);
    if path.is_file() {
        return path;
    }
    let tmp = fixtures().join(format!("tmp-{}-{name}", std::process::id()));
    let rate_s = rate.to_string();
    let ch_s = channels.to_string();
    let secs_s = secs.to_string();
    let mut args: Vec<&str> = vec!["-n", "-r", &rate_s, "-c", &ch_s];
    args.extend_from_slice(enc);
    let tmp_s = tmp.display().to_string();
    let ext = Path::new(name).extension().unwrap().to_str().unwrap();
    args.extend_from_slice(&[
        "-t", ext, &tmp_s, "synth", &secs_s, "sine", "1000", "vol", "0.5",
    ]);
    let out = Command::new("sox")
        .args(&args)
        .output()
        .expect("sox is needed to make test fixtures (apt-get install sox)");
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// Converts `src` with ffmpeg (`args` go between input and output).
pub fn ffmpeg(name: &str, src: &Path, args: &[&str]) -> PathBuf {
    let mut full = vec!["-i", src.to_str().unwrap()];
    full.extend_from_slice(args);
    fixture(name, "ffmpeg", &full)
}

/// Goertzel power of `f` Hz in `x` sampled at `rate`.
pub fn tone_power(x: &[f32], rate: f64, f: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f / rate;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = v as f64 + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
}

/// Deterministic test audio: tones, chirps and noise bursts, hop by hop.
pub fn hop_audio(t: usize, row: usize, out: &mut [f32]) {
    let mut seed = (t as u64 * 7919 + row as u64 * 104_729) | 1;
    for (i, x) in out.iter_mut().enumerate() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let s = (t * 160 + i) as f32 / 16000.0;
        let f = 200.0 + 50.0 * ((t / 300) % 40) as f32 + 30.0 * row as f32;
        let tone = (2.0 * std::f32::consts::PI * f * s).sin()
            * if (t / 150).is_multiple_of(2) {
                0.4
            } else {
                0.05
            };
        *x = tone
            + n * if (t / 97).is_multiple_of(3) {
                0.3
            } else {
                0.01
            };
    }
}

/// The per-frame lines of a `tag --frames` run's stdout: each frame's time and its scores (in
/// the line's label order, the same for every line and run).
pub fn frame_lines(out: &str) -> Vec<(f64, Vec<f32>)> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter_map(|v| {
            let scores = v.get("scores")?.as_object()?;
            let t = v.get("time")?.as_f64()?;
            Some((
                t,
                scores
                    .values()
                    .map(|s| s.as_f64().unwrap() as f32)
                    .collect(),
            ))
        })
        .collect()
}

/// All scores of all frames of a `tag --frames` run's stdout, frame after frame.
pub fn frame_scores(out: &str) -> Vec<f32> {
    frame_lines(out).into_iter().flat_map(|(_, s)| s).collect()
}

/// Largest absolute difference between two equally long score vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "score count");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// One lock-step hop of two step engines with the same rows: every row gets `hop_audio(t, row)`,
/// both run with `adv`, and the result is the largest score difference over the rows that
/// advanced.
pub fn step_both(
    a: &mut mambatag::engine::Engine,
    b: &mut mambatag::engine::Engine,
    t: usize,
    adv: &[bool],
) -> f32 {
    let mut buf = vec![0.0; 160];
    for r in 0..adv.len() {
        hop_audio(t, r, &mut buf);
        a.input_mut(r).copy_from_slice(&buf);
        b.input_mut(r).copy_from_slice(&buf);
    }
    a.run(adv).unwrap();
    b.run(adv).unwrap();
    (0..adv.len())
        .filter(|&r| adv[r])
        .map(|r| max_abs_diff(a.scores(r), b.scores(r)))
        .fold(0.0, f32::max)
}
