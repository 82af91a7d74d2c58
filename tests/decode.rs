//! Real decoders on real files: one fixture per container/codec, made with sox and ffmpeg.
//! Each must decode to the right duration and, after resampling to the model rate, still be a
//! 1 kHz tone.

mod common;

use common::*;
use mambatag::pipeline::Conditioner;
use mambatag::resample::Quality;
use mambatag::source::{AudioSource, FileSource};

/// Decodes a whole file to mono at its own rate.
fn decode(path: &std::path::Path) -> (Vec<f32>, u32, usize, String) {
    let mut src = FileSource::open(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let mut out = Vec::new();
    while src
        .read(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
    {}
    let i = src.info().clone();
    (out, i.rate, i.channels, i.codec)
}

fn check_tone(path: &std::path::Path, rate: u32, channels: usize, secs: f64, slack: f64) {
    let (x, r, c, codec) = decode(path);
    assert_eq!(r, rate, "{}: rate", path.display());
    assert_eq!(c, channels, "{}: channels", path.display());
    let dur = x.len() as f64 / r as f64;
    assert!(
        dur >= secs - 0.001 && dur <= secs + slack,
        "{} ({codec}): decoded {dur:.4} s, expected {secs} s",
        path.display()
    );
    // Resample to 16 kHz and look for the tone there.
    let mut cond = Conditioner::new(r, 16000, 160, Quality::Fft).unwrap();
    cond.push(&x).unwrap();
    cond.finish().unwrap();
    let mut y = Vec::new();
    while let Some(h) = cond.next_hop() {
        y.extend_from_slice(h);
    }
    let mid = &y[y.len() / 4..y.len() * 3 / 4];
    let p1k = tone_power(mid, 16000.0, 1000.0);
    for f in [500.0, 1500.0, 2000.0, 3000.0] {
        let p = tone_power(mid, 16000.0, f);
        assert!(
            p1k > 100.0 * p,
            "{} ({codec}): 1 kHz power {p1k:e} vs {f} Hz {p:e}",
            path.display()
        );
    }
    // vol 0.5 → amplitude 0.5 → Goertzel power (A/2)^2 = 0.0625 (lossy codecs lose a little).
    assert!(
        (0.04..0.08).contains(&p1k),
        "{} ({codec}): 1 kHz power {p1k}",
        path.display()
    );
}

#[test]
fn wav_pcm16_stereo_44k1() {
    check_tone(&sine_wav(), 44100, 2, 2.0, 0.0);
}

#[test]
fn wav_float32_48k() {
    let p = sox_synth(
        "sine-f32.wav",
        48000,
        1,
        &["-b", "32", "-e", "floating-point"],
        2.0,
    );
    check_tone(&p, 48000, 1, 2.0, 0.0);
}

#[test]
fn wav_ulaw_and_alaw_8k() {
    let u = sox_synth("sine-ulaw.wav", 8000, 1, &["-e", "u-law"], 2.0);
    check_tone(&u, 8000, 1, 2.0, 0.0);
    let a = sox_synth("sine-alaw.wav", 8000, 1, &["-e", "a-law"], 2.0);
    check_tone(&a, 8000, 1, 2.0, 0.0);
}

#[test]
fn flac_and_aiff() {
    let f = sox_synth("sine.flac", 44100, 2, &["-b", "16"], 2.0);
    check_tone(&f, 44100, 2, 2.0, 0.0);
    let a = sox_synth("sine.aiff", 22050, 1, &["-b", "16"], 2.0);
    check_tone(&a, 22050, 1, 2.0, 0.0);
}

#[test]
fn mp3() {
    let p = ffmpeg(
        "sine.mp3",
        &sine_wav(),
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    // MP3 without a gapless header keeps encoder delay/padding.
    check_tone(&p, 44100, 2, 2.0, 0.1);
}

#[test]
fn ogg_vorbis() {
    let p = ffmpeg("sine.ogg", &sine_wav(), &["-c:a", "libvorbis", "-q:a", "4"]);
    check_tone(&p, 44100, 2, 2.0, 0.05);
}

#[test]
fn m4a_aac_and_alac() {
    let p = ffmpeg(
        "sine-aac.m4a",
        &sine_wav(),
        &["-c:a", "aac", "-b:a", "128k"],
    );
    // The edit list trims the encoder's priming and padding (symphonia alone keeps both).
    check_tone(&p, 44100, 2, 2.0, 0.0);
    let p = ffmpeg("sine-alac.m4a", &sine_wav(), &["-c:a", "alac"]);
    check_tone(&p, 44100, 2, 2.0, 0.0);
}

#[test]
fn mkv_webm_and_caf() {
    let p = ffmpeg("sine-flac.mkv", &sine_wav(), &["-c:a", "flac"]);
    check_tone(&p, 44100, 2, 2.0, 0.0);
    let p = ffmpeg("sine.webm", &sine_wav(), &["-c:a", "libvorbis"]);
    check_tone(&p, 44100, 2, 2.0, 0.05);
    let p = ffmpeg("sine.caf", &sine_wav(), &["-c:a", "pcm_s16le"]);
    check_tone(&p, 44100, 2, 2.0, 0.0);
}

#[test]
fn many_channels_are_averaged() {
    let p = sox_synth("sine-6ch.wav", 48000, 6, &["-b", "16"], 1.0);
    check_tone(&p, 48000, 6, 1.0, 0.0);
}

/// Lossy codecs put encoder delay before the audio; the decoded audio must start where the
/// original did (else every event time in the file runs late). A 1 kHz tone starts at exactly
/// 0.5 s (sample 22,050; its first sample above 0.1 is 22,052).
#[test]
fn lossy_codecs_keep_the_timing() {
    let src = fixture(
        "onset-0.5s.wav",
        "ffmpeg",
        &[
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=if(gte(t\\,0.5)\\,0.5*sin(2*PI*1000*t)\\,0)|if(gte(t\\,0.5)\\,0.5*sin(2*PI*1000*t)\\,0):s=44100:d=2",
            "-c:a",
            "pcm_s16le",
        ],
    );
    let cases: [(&str, &[&str], usize); 6] = [
        ("onset.flac", &["-c:a", "flac"], 0),
        ("onset.mp3", &["-c:a", "libmp3lame", "-b:a", "128k"], 0),
        ("onset.ogg", &["-c:a", "libvorbis"], 0),
        // Priming 1,024 frames, padding 888: only the edit list says so.
        ("onset-aac.m4a", &["-c:a", "aac", "-b:a", "128k"], 0),
        ("onset-alac.m4a", &["-c:a", "alac"], 0),
        // Matroska's Vorbis ends on a whole packet (56 frames more here).
        ("onset.webm", &["-c:a", "libvorbis"], 256),
    ];
    let (x, ..) = decode(&src);
    assert_eq!(x.len(), 88200);
    let onset = |x: &[f32]| x.iter().position(|v| v.abs() > 0.1).unwrap();
    assert_eq!(onset(&x), 22052);
    for (name, args, extra) in cases {
        let p = ffmpeg(name, &src, args);
        let (y, rate, _, codec) = decode(&p);
        assert_eq!(rate, 44100);
        assert!(
            (88200..=88200 + extra).contains(&y.len()),
            "{name} ({codec}): {} frames decoded, 88,200 encoded",
            y.len()
        );
        let at = onset(&y);
        assert!(
            at.abs_diff(22052) <= 8,
            "{name} ({codec}): the tone starts at frame {at}, not 22,052 ({:+.1} ms)",
            (at as f64 - 22052.0) / 44.1
        );
    }
}
