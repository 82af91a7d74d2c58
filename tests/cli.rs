//! The real binary on good and bad inputs: every bad input gets one clear line naming it, no
//! panic, the other inputs are still tagged, and the exit status says something failed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn tiny() -> String {
    tiny_model().display().to_string()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = fixtures().join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A WAV header for `data_bytes` of audio with the given fields, followed by the data.
fn wav(path: &Path, format_tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) {
    let block = channels as u32 * bits as u32 / 8;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&format_tag.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate.wrapping_mul(block)).to_le_bytes());
    b.extend_from_slice(&(block as u16).to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn assert_no_panic(o: &std::process::Output) {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "panic: {e}");
    assert!(!e.contains("RUST_BACKTRACE"), "panic: {e}");
}

#[test]
fn tags_a_file_and_prints_jsonl_events() {
    let f = tiny_model().join("fixture.wav");
    let o = mambatag(&["tag", "--model", &tiny(), f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !lines.is_empty(),
        "the fixture triggers events with the tiny model"
    );
    for l in &lines {
        assert_eq!(l["file"], f.to_str().unwrap());
        let (on, off) = (l["onset"].as_f64().unwrap(), l["offset"].as_f64().unwrap());
        assert!(0.0 <= on && on < off && off <= 2.0, "{l}");
        assert!(l["score"].as_f64().unwrap() >= 0.5, "{l}");
        assert!(l["label"].is_string());
    }
}

#[test]
fn frames_match_the_reference_and_have_end_times() {
    let f = tiny_model().join("fixture.wav");
    let o = mambatag(&["tag", "--model", &tiny(), "--frames", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_model().join("reference.json")).unwrap(),
    )
    .unwrap();
    let labels: Vec<String> = serde_json::from_value(r["labels"].clone()).unwrap();
    let frames: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("time").is_some())
        .collect();
    assert_eq!(frames.len(), 200);
    for (t, fr) in frames.iter().enumerate() {
        assert!((fr["time"].as_f64().unwrap() - (t + 1) as f64 * 0.01).abs() < 1e-9);
        for (k, l) in labels.iter().enumerate() {
            let want = r["scores"][t][k].as_f64().unwrap();
            let got = fr["scores"][l].as_f64().unwrap();
            assert!((got - want).abs() <= 1e-4, "frame {t} {l}: {got} vs {want}");
        }
    }
}

#[test]
fn csv_audacity_and_out_dir() {
    let f = tiny_model().join("fixture.wav");
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--format",
        "csv",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let s = stdout(&o);
    let mut lines = s.lines();
    assert_eq!(lines.next().unwrap(), "file,label,onset,offset,score");
    let n_csv = lines.clone().count();
    for l in lines {
        assert_eq!(l.split(',').count(), 5, "{l}");
    }
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--format",
        "audacity",
        f.to_str().unwrap(),
    ]);
    let s = stdout(&o);
    assert_eq!(s.lines().count(), n_csv);
    for l in s.lines() {
        let p: Vec<&str> = l.split('\t').collect();
        assert_eq!(p.len(), 3, "{l}");
        assert!(p[0].parse::<f64>().unwrap() < p[1].parse::<f64>().unwrap());
    }
    let d = tmpdir("out");
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--format",
        "csv",
        "--frames",
        "--out",
        d.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    let ev = std::fs::read_to_string(d.join("fixture.wav.csv")).unwrap();
    assert_eq!(ev.lines().count(), n_csv + 1);
    let fr = std::fs::read_to_string(d.join("fixture.wav.frames.csv")).unwrap();
    assert_eq!(fr.lines().count(), 201);
    assert!(fr.starts_with("file,time,speech,music,"));
    assert!(std::fs::read_dir(&d).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".part")));
}

#[test]
fn stdin_pcm_gives_the_same_events_as_the_file() {
    let wavp = sine_wav();
    let raw = fixtures().join("sine-44k1-stereo.s16");
    if !raw.is_file() {
        let o = Command::new("sox")
            .args([wavp.to_str().unwrap(), "-t", "raw", raw.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    let args = ["tag", "--model", &tiny(), "--frames"];
    let from_file = mambatag(&[&args[..], &[wavp.to_str().unwrap()]].concat());
    let mut child = Command::new(bin())
        .args(args)
        .args([
            "-",
            "--rate",
            "44100",
            "--channels",
            "2",
            "--sample-format",
            "s16le",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(&raw).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Odd-sized writes: the reader must reassemble frames split across reads.
    let w = std::thread::spawn(move || {
        for c in data.chunks(1001) {
            stdin.write_all(c).unwrap();
        }
    });
    let o = child.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let strip = |s: String| {
        s.replace(wavp.to_str().unwrap(), "X")
            .replace("\"file\":\"-\"", "\"file\":\"X\"")
    };
    assert_eq!(strip(stdout(&o)), strip(stdout(&from_file)));
    assert!(stdout(&o).lines().count() >= 200);

    // Nothing on stdin (or less than one sample frame) is an error, not an empty result.
    for input in [&b""[..], &b"\x01"[..]] {
        let o = mambatag_stdin(&["tag", "--model", &tiny(), "--rate", "16000", "-"], input);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("-: no audio: the input ended before one whole sample frame"),
            "{}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty());
    }

    let o = mambatag(&["tag", "--model", &tiny(), "-"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("-: raw PCM on stdin needs --rate"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_inputs_fail_one_by_one_and_the_batch_goes_on() {
    let d = tmpdir("bad");
    let good = tiny_model().join("fixture.wav");
    let empty = d.join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let garbage = d.join("garbage.wav");
    std::fs::write(
        &garbage,
        b"this is not audio at all, just text pretending to be a wav file",
    )
    .unwrap();
    // Truncated: a real FLAC cut in the middle.
    let flac = sox_synth("trunc-src.flac", 44100, 2, &["-b", "16"], 2.0);
    let bytes = std::fs::read(&flac).unwrap();
    let truncated = d.join("truncated.flac");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // Cut inside its first frame: FLAC's demuxer ends such a stream without an I/O error, so
    // only the header's frame count shows that audio is missing.
    let cut_early = d.join("cut-early.flac");
    std::fs::write(&cut_early, &bytes[..bytes.len() / 30]).unwrap();
    // An MP3 cut at a third: its frames parse one by one, so it also just ends.
    let mp3 = ffmpeg(
        "trunc-src.mp3",
        &flac,
        &["-c:a", "libmp3lame", "-b:a", "128k"],
    );
    let bytes = std::fs::read(&mp3).unwrap();
    let cut_mp3 = d.join("cut.mp3");
    std::fs::write(&cut_mp3, &bytes[..bytes.len() / 3]).unwrap();
    // Unsupported codec: Opus in Ogg.
    let opus = ffmpeg("sine.opus", &sine_wav(), &["-c:a", "libopus"]);
    // Float WAV with NaN and Inf.
    let mut x = vec![0.1f32; 16000];
    x[8000] = f32::NAN;
    let nan = d.join("nan.wav");
    wav(&nan, 3, 1, 16000, 32, &f32_bytes(&x));
    x[8000] = f32::INFINITY;
    let inf = d.join("inf.wav");
    wav(&inf, 3, 1, 16000, 32, &f32_bytes(&x));
    // Absurd headers.
    let pcm = vec![0u8; 3200];
    let rate0 = d.join("rate0.wav");
    wav(&rate0, 1, 1, 0, 16, &pcm);
    let rate_huge = d.join("rate-huge.wav");
    wav(&rate_huge, 1, 1, 50_000_000, 16, &pcm);
    let chans = d.join("channels.wav");
    wav(&chans, 1, 1000, 16000, 16, &vec![0u8; 64000]);
    let missing = d.join("missing.wav");
    // A valid header and no samples: used to print nothing and exit 0.
    let header_only = d.join("header-only.wav");
    wav(&header_only, 1, 1, 16000, 16, &[]);

    let cases: Vec<(&Path, &str)> = vec![
        (&missing, "no such file"),
        (&d, "is a directory"),
        (&empty, "empty file"),
        (&garbage, "not a supported audio file"),
        (&truncated, "truncated"),
        (
            &cut_early,
            "truncated: the stream ends after 0.000 s of the 2.000 s",
        ),
        (&cut_mp3, "truncated"),
        (&opus, "unsupported codec opus"),
        (&nan, "non-finite sample"),
        (&inf, "non-finite sample"),
        (&rate0, "sample rate"),
        (&rate_huge, "absurd sample rate"),
        (&chans, "channel"),
        (&header_only, "no audio: the stream holds no samples"),
    ];
    let mut args: Vec<String> = vec!["tag".into(), "--model".into(), tiny()];
    args.push(good.display().to_string());
    for (p, _) in &cases {
        args.push(p.display().to_string());
    }
    args.push(good.display().to_string());
    let o = Command::new(bin()).args(&args).output().unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for (p, why) in &cases {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("mambatag: {}: ", p.display())))
            .unwrap_or_else(|| panic!("no error line for {}:\n{err}", p.display()));
        assert!(
            line.to_lowercase().contains(why),
            "{}: expected `{why}` in `{line}`",
            p.display()
        );
    }
    // One line per bad input, from us: no library log line repeating it (symphonia logs an
    // ERROR of its own for a file it cannot probe).
    assert!(
        !err.contains("ERROR") && !err.contains("symphonia"),
        "library log lines in: {err}"
    );
    assert!(
        err.contains(&format!(
            "{} of {} inputs failed",
            cases.len(),
            cases.len() + 2
        )),
        "{err}"
    );
    // Both good copies were tagged.
    let out = stdout(&o);
    let good_events = out
        .lines()
        .filter(|l| l.contains(&format!("\"file\":\"{}\"", good.display())))
        .count();
    let single = stdout(&mambatag(&[
        "tag",
        "--model",
        &tiny(),
        good.to_str().unwrap(),
    ]))
    .lines()
    .count();
    assert_eq!(good_events, 2 * single);
}

/// An M4A cut short is `truncated`, whether its `moov` comes first (`+faststart`: symphonia
/// reads the index, then fails on the first packet with "no atom pending read") or last (the cut
/// takes the index with it: "not a supported audio file"). The uncut files, and valid ones whose
/// last box has size 0 ("to the end of the file"), still tag.
#[test]
fn cut_m4a_files_are_truncated_and_whole_ones_tag() {
    let d = tmpdir("cut-m4a");
    let aac = ["-c:a", "aac", "-b:a", "128k"];
    let plain = ffmpeg("whole-aac.m4a", &sine_wav(), &aac);
    let fast = ffmpeg(
        "whole-aac-faststart.m4a",
        &sine_wav(),
        &[&aac[..], &["-movflags", "+faststart"]].concat(),
    );
    let cut = |src: &Path, name: &str| {
        let bytes = std::fs::read(src).unwrap();
        let p = d.join(name);
        std::fs::write(&p, &bytes[..bytes.len() * 6 / 10]).unwrap();
        p
    };
    let cut_plain = cut(&plain, "cut.m4a");
    let cut_fast = cut(&fast, "cut-faststart.m4a");
    // The top-level boxes: (offset, type); ffmpeg puts `moov` second with +faststart, last without.
    let boxes = |bytes: &[u8]| {
        let mut v = Vec::new();
        let mut pos = 0;
        while pos + 8 <= bytes.len() {
            let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            v.push((pos, bytes[pos + 4..pos + 8].to_vec()));
            pos += if size == 0 { bytes.len() - pos } else { size };
        }
        v
    };
    let kinds = |p: &Path| -> Vec<Vec<u8>> {
        boxes(&std::fs::read(p).unwrap())
            .into_iter()
            .map(|b| b.1)
            .collect()
    };
    assert_eq!(kinds(&fast)[1], b"moov", "{:?}", kinds(&fast));
    assert_eq!(
        kinds(&plain).last().unwrap(),
        b"moov",
        "{:?}",
        kinds(&plain)
    );
    // Valid files with a size-0 last box: the faststart file's `mdat`, and a `free` box appended.
    let mut bytes = std::fs::read(&fast).unwrap();
    let (mdat, _) = boxes(&bytes).into_iter().find(|b| b.1 == b"mdat").unwrap();
    bytes[mdat..mdat + 4].copy_from_slice(&[0; 4]);
    let mdat0 = d.join("mdat-size0.m4a");
    std::fs::write(&mdat0, &bytes).unwrap();
    let mut bytes = std::fs::read(&plain).unwrap();
    bytes.extend_from_slice(b"\0\0\0\0free");
    bytes.extend_from_slice(&[0; 100]);
    let free0 = d.join("free-size0.m4a");
    std::fs::write(&free0, &bytes).unwrap();

    let whole = [&plain, &fast, &mdat0, &free0];
    let mut single = Vec::new();
    for p in whole {
        let o = mambatag(&["tag", "--model", &tiny(), p.to_str().unwrap()]);
        assert_no_panic(&o);
        assert!(o.status.success(), "{}: {}", p.display(), stderr(&o));
        assert!(!stdout(&o).is_empty(), "{}: no events", p.display());
        single.push(stdout(&o).lines().count());
    }
    for p in [&cut_fast, &cut_plain] {
        let o = mambatag(&["tag", "--model", &tiny(), p.to_str().unwrap()]);
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("mambatag: {}: ", p.display())))
            .unwrap_or_else(|| panic!("no error line for {}:\n{err}", p.display()));
        assert!(line.contains("truncated"), "{line}");
        assert!(line.contains("'mdat'"), "{line}");
    }
    // On one command line the cut files fail and the whole ones around them are tagged.
    let mut args = vec!["tag".to_string(), "--model".into(), tiny()];
    for p in [&plain, &cut_fast, &fast, &cut_plain, &mdat0, &free0] {
        args.push(p.display().to_string());
    }
    let o = Command::new(bin()).args(&args).output().unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("2 of 6 inputs failed"), "{err}");
    for p in [&cut_fast, &cut_plain] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("mambatag: {}: truncated", p.display()))),
            "{}: {err}",
            p.display()
        );
    }
    let out = stdout(&o);
    for (p, n) in whole.iter().zip(&single) {
        let got = out
            .lines()
            .filter(|l| l.contains(&format!("\"file\":\"{}\"", p.display())))
            .count();
        assert_eq!(got, *n, "{}: events", p.display());
    }
}

#[test]
fn wrong_contract_model_and_missing_runtime_are_clear_errors() {
    let f = tiny_model().join("fixture.wav");
    let bad = repo().join("tests/data/no-contract.onnx");
    let o = mambatag(&["tag", "--model", bad.to_str().unwrap(), f.to_str().unwrap()]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("breaks the mambatag model contract"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("mambatag.contract"), "{}", stderr(&o));

    let o = mambatag(&["inspect", "/nonexistent/model"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/model: not a model"),
        "{}",
        stderr(&o)
    );

    let o = Command::new(bin())
        .args(["tag", "--model", &tiny(), f.to_str().unwrap()])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("ONNX Runtime not found") && e.contains("scripts/fetch-onnxruntime.sh"),
        "{e}"
    );

    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--threshold",
        "nosuchlabel=0.5",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no label `nosuchlabel`"),
        "{}",
        stderr(&o)
    );
}

/// A package put together with a symbolic link to weights elsewhere: ONNX Runtime refuses
/// external data outside the graph's folder. The error names the link and says what to do; a
/// link to the whole folder works.
#[test]
fn weights_linked_from_outside_the_package_are_a_clear_error() {
    let f = tiny_model().join("fixture.wav");
    let d = tmpdir("linked-weights");
    let pkg = d.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let default = repo().join("models/default");
    for e in std::fs::read_dir(&default).unwrap().flatten() {
        let name = e.file_name();
        if name == "weights.bin" {
            std::os::unix::fs::symlink(e.path(), pkg.join(&name)).unwrap();
        } else {
            std::fs::copy(e.path(), pkg.join(&name)).unwrap();
        }
    }
    let o = mambatag(&["tag", "--model", pkg.to_str().unwrap(), f.to_str().unwrap()]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("weights.bin is a symbolic link to")
            && e.contains("outside the model's folder")
            && e.contains("copy the file into the folder"),
        "{e}"
    );

    let linked = d.join("linked-folder");
    std::os::unix::fs::symlink(&default, &linked).unwrap();
    let o = mambatag(&[
        "tag",
        "--model",
        linked.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn thresholds_change_events() {
    let f = tiny_model().join("fixture.wav");
    let base = stdout(&mambatag(&["tag", "--model", &tiny(), f.to_str().unwrap()]));
    let strict = stdout(&mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--threshold",
        "speech=0.95",
        f.to_str().unwrap(),
    ]));
    let count = |s: &str, l: &str| {
        s.lines()
            .filter(|x| x.contains(&format!("\"label\":\"{l}\"")))
            .count()
    };
    assert!(count(&base, "speech") > 0);
    assert!(count(&strict, "speech") < count(&base, "speech"));
    assert_eq!(count(&strict, "music"), count(&base, "music"));
}

#[test]
fn inspect_prints_the_contract() {
    let o = mambatag(&["inspect", "--json", &tiny()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["sample_rate"], 16000);
    assert_eq!(j["hop"], 160);
    assert_eq!(j["labels"].as_array().unwrap().len(), 8);
    assert_eq!(j["thresholds"]["speech"], 0.5);
    let bytes: u64 = j["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes_per_stream"].as_u64().unwrap())
        .sum();
    assert_eq!(bytes, j["state_bytes_per_stream"].as_u64().unwrap());
    assert!(bytes > 0);
    let o = mambatag(&["inspect", &tiny()]);
    assert!(stdout(&o).contains("state.audio"));
}

#[test]
fn device_flags_without_cuda_support() {
    let f = tiny_model().join("fixture.wav");
    if cfg!(feature = "cuda") {
        return; // covered by tests/gpu.rs on a GPU machine
    }
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--device",
        "cuda",
        f.to_str().unwrap(),
    ]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--device cuda: this mambatag was built without CUDA support"),
        "{}",
        stderr(&o)
    );
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--device",
        "auto",
        "--log",
        "info",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("running on CPU"), "{}", stderr(&o));
    let cpu = mambatag(&["tag", "--model", &tiny(), f.to_str().unwrap()]);
    assert_eq!(stdout(&o), stdout(&cpu));
}

/// `mambatag inspect | head -1` and `mambatag tag … | head -1`: a reader that has gone away ends
/// a one-shot command the Unix way (SIGPIPE), with no panic message. The pipe's read end is
/// closed before the command starts, so its first write always fails.
#[cfg(unix)]
#[test]
fn closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let wav = fixtures().join("closed-stdout.wav");
    let o = Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args(["synth", "2", "sine", "440"])
        .output()
        .unwrap();
    assert!(o.status.success(), "sox: {}", stderr(&o));
    let model = tiny();
    let cases: [Vec<&str>; 2] = [
        vec!["inspect", &model],
        vec!["tag", "--model", &model, "--frames", wav.to_str().unwrap()],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(bin())
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

/// Runs `mambatag ARGS` and checks that it is refused as a usage error: exit 2, `why` on
/// stderr, nothing on stdout, no panic.
fn assert_refused(args: &[&str], why: &str) {
    let o = mambatag(args);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
}

/// `mambatag bench --model <test model> --steps 20 ARGS`
fn bench_tiny(args: &[&str]) -> std::process::Output {
    let model = tiny();
    let mut all = vec!["bench", "--model", &model, "--steps", "20"];
    all.extend_from_slice(args);
    mambatag(&all)
}

/// `bench` refuses counts of zero by name (`--steps 0` used to panic on an empty list of
/// timings; `--streams 0` and `--chunk-streams 0` were silently dropped or measured as 1).
#[test]
fn bench_refuses_zero_counts() {
    for (flag, value, why) in [
        ("--steps", "0", "--steps 0: at least one timed step"),
        ("--min-steps", "0", "--min-steps 0: at least one timed step"),
        (
            "--streams",
            "4,0",
            "--streams 0: a batch needs at least one stream",
        ),
        (
            "--chunk-streams",
            "0",
            "--chunk-streams 0: a batch needs at least one stream",
        ),
    ] {
        let model = tiny();
        let mut args = vec!["bench", "--model", &model, flag, value];
        if flag != "--steps" {
            args.extend(["--steps", "20"]);
        }
        assert_refused(&args, why);
    }
    // The same command with sound counts measures what was asked.
    let o = bench_tiny(&["--streams", "4", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let streams: Vec<u64> = j["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["streams"].as_u64().unwrap())
        .collect();
    assert_eq!(streams, vec![1, 4, 16], "{j}");
}

/// A batch too large for the memory is reported by size, and the other sizes are still measured
/// and printed; the exit status is 1. (It used to end the whole run with ONNX Runtime's bare
/// "std::bad_alloc" and no table; on a GPU, 8,192 x 1,000 chunk lanes past an H100's memory lost
/// the 1,024- and 4,096-lane rows the same way.) 10^11 streams need more bytes than a 64-bit
/// process can address, so the allocation fails on any machine.
#[test]
fn bench_reports_a_batch_it_cannot_allocate_and_measures_the_others() {
    let huge = "100000000000";
    let o = bench_tiny(&[
        "--streams",
        &format!("4,{huge}"),
        "--chunk-streams",
        &format!("2,{huge}"),
    ]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    for n in ["1", "4", "16"] {
        assert!(
            out.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "no row for {n} streams: {out}"
        );
    }
    assert!(out.contains("chunk graph: 2 streams"), "{out}");
    for what in [
        format!("mambatag: bench: {huge} streams: a batch of {huge} streams: could not allocate"),
        format!("mambatag: bench: chunk graph, {huge} streams: a batch of {huge} streams"),
    ] {
        assert!(err.contains(&what), "{what}: {err}");
    }
    assert!(err.contains("TB: 6176 bytes per stream"), "{err}");
    // --json lists them
    let o = bench_tiny(&["--streams", huge, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        j["failed"][0]["streams"].as_u64(),
        Some(100_000_000_000),
        "{j}"
    );
    assert_eq!(j["failed"][0]["graph"], "step", "{j}");
    assert_eq!(j["batches"].as_array().map(|b| b.len()), Some(2), "{j}");
}

/// A batch the machine could address but not hold (its buffers ≈ all of the RAM) is refused up
/// front with both sizes. Before, each tensor was granted by the kernel's overcommit and the OOM
/// killer ended the process once the states were written.
#[test]
fn bench_refuses_a_batch_larger_than_free_memory() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    // the tiny model's 6176 bytes per stream (two state sets, audio, scores)
    let streams = (total_kb * 1024 / 6176 * 999 / 1000).to_string();
    let o = bench_tiny(&["--streams", &streams]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let what = format!("mambatag: bench: {streams} streams: a batch of {streams} streams: could not allocate its buffers");
    assert!(err.contains(&what), "{what}: {err}");
    assert!(
        err.contains("of host memory and ") && err.contains(" is available (MemAvailable"),
        "{err}"
    );
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.split_whitespace().next() == Some("16")),
        "{}",
        stdout(&o)
    );
}

/// `tag` refuses zero engines, lanes or threads and a negative CUDA index by name (they used to
/// be read as 1, or as ONNX Runtime's "every core" for `--threads 0`).
#[test]
fn tag_refuses_zero_counts() {
    let f = tiny_model().join("fixture.wav");
    for (args, why) in [
        (&["--jobs", "0"][..], "--jobs 0: at least one engine"),
        (&["--lanes", "0"][..], "--lanes 0: at least one lane"),
        (&["--threads", "0"][..], "--threads 0: at least one thread"),
        (
            &["--cuda-device=-1"][..],
            "--cuda-device -1: a CUDA device index is 0 or more",
        ),
    ] {
        let model = tiny();
        let mut all = vec!["tag", "--model", &model];
        all.extend_from_slice(args);
        all.push(f.to_str().unwrap());
        assert_refused(&all, why);
    }
    // `listen` checks the same options, and the event logic's, before it opens any input, with
    // `tag`'s wording (it used to say "key `source.thresholds`" for --smooth).
    for (flag, value, why) in [
        ("--threads", "0", "error: --threads 0: at least one thread"),
        ("--smooth", "0", "error: --smooth must be at least 1 frame"),
        (
            "--min-duration",
            "nan",
            "error: --min-duration must be a non-negative",
        ),
    ] {
        assert_refused(&["listen", "--model", &tiny(), flag, value], why);
    }
}
