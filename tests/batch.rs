//! The batch runner through the real binary: folders, globs, manifests, shards, resume, and
//! lanes that give exactly what one stream at a time gives.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;

fn tiny() -> String {
    tiny_model().display().to_string()
}

/// A small archive: nested folders with files of different lengths, rates and formats.
fn archive(name: &str) -> PathBuf {
    let root = fixtures().join(format!("archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir_all(root.join("c")).unwrap();
    let copy = |src: &Path, dst: &str| {
        std::fs::copy(src, root.join(dst)).unwrap();
    };
    copy(&tiny_model().join("fixture.wav"), "one.wav");
    copy(&sine_wav(), "a/two.wav");
    copy(
        &sox_synth("batch-3.flac", 22050, 1, &["-b", "16"], 3.7),
        "a/b/three.flac",
    );
    copy(
        &sox_synth("batch-4.flac", 48000, 2, &["-b", "16"], 1.3),
        "c/four.flac",
    );
    std::fs::write(root.join("c/notes.txt"), "not audio").unwrap();
    root
}

fn read_tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn recursive_out_mirrors_the_tree_and_lanes_do_not_change_results() {
    let root = archive("mirror");
    let out1 = root.with_extension("out1");
    let out8 = root.with_extension("out8");
    for (out, lanes) in [(&out1, "1"), (&out8, "8")] {
        let _ = std::fs::remove_dir_all(out);
        let o = mambatag(&[
            "tag",
            "--model",
            &tiny(),
            "--frames",
            "-r",
            root.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--lanes",
            lanes,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("4 ok, 0 failed"), "{}", stderr(&o));
    }
    let t1 = read_tree(&out1);
    let names: Vec<&str> = t1.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "a/b/three.flac.jsonl",
            "a/two.wav.jsonl",
            "c/four.flac.jsonl",
            "one.wav.jsonl"
        ]
    );
    assert_eq!(
        t1,
        read_tree(&out8),
        "8 lanes must give exactly what 1 lane gives"
    );
    // And exactly what tagging the file alone gives.
    let alone = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--frames",
        root.join("a/b/three.flac").to_str().unwrap(),
    ]);
    assert_eq!(stdout(&alone), t1[0].1);
    // Frame count of the 3.7 s file: 370 frames.
    assert_eq!(
        t1[0].1.lines().filter(|l| l.contains("\"time\"")).count(),
        370
    );
}

#[test]
fn resume_skips_complete_outputs_only() {
    let root = archive("resume");
    let out = root.with_extension("out");
    let _ = std::fs::remove_dir_all(&out);
    let args = [
        "tag",
        "--model",
        &tiny(),
        "-r",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resume",
    ];
    assert!(mambatag(&args).status.success());
    std::fs::write(out.join("one.wav.jsonl"), "kept\n").unwrap();
    std::fs::remove_file(out.join("a/two.wav.jsonl")).unwrap();
    std::fs::write(out.join("a/two.wav.jsonl.part"), "half").unwrap();
    let o = mambatag(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 ok, 0 failed, 3 skipped (--resume)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("one.wav.jsonl")).unwrap(),
        "kept\n"
    );
    assert!(std::fs::read_to_string(out.join("a/two.wav.jsonl"))
        .unwrap()
        .contains("\"label\""));
    assert!(!out.join("a/two.wav.jsonl.part").exists());
}

#[test]
fn shards_partition_the_inputs() {
    let root = archive("shard");
    let mut seen = Vec::new();
    for i in 0..3 {
        let out = root.with_extension(format!("s{i}"));
        let _ = std::fs::remove_dir_all(&out);
        let shard = format!("{i}/3");
        let o = mambatag(&[
            "tag",
            "--model",
            &tiny(),
            "-r",
            root.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--shard",
            &shard,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        seen.extend(read_tree(&out).into_iter().map(|(n, _)| n));
    }
    let set: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 4, "each input in exactly one shard: {seen:?}");
    assert_eq!(set.len(), 4);
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "-r",
        root.to_str().unwrap(),
        "--shard",
        "3/3",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--shard 3/3"), "{}", stderr(&o));
}

#[test]
fn manifest_globs_and_folders_without_r() {
    let root = archive("list");
    let list = root.with_extension("list");
    std::fs::write(
        &list,
        format!(
            "# a comment\n{}\n\n{}\n{}\n",
            root.join("one.wav").display(),
            root.join("c/four.flac").display(),
            root.join("missing.wav").display()
        ),
    )
    .unwrap();
    let o = mambatag(&["tag", "--model", &tiny(), "--list", list.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("missing.wav: no such file"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("2 ok, 1 failed"), "{}", stderr(&o));
    let files: BTreeSet<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["file"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(files.len(), 2);

    let pattern = format!("{}/a/**/*.flac", root.display());
    let o = mambatag(&["tag", "--model", &tiny(), &pattern]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("three.flac"));
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        &format!("{}/*.nothing", root.display()),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no file matches this pattern"),
        "{}",
        stderr(&o)
    );

    let o = mambatag(&["tag", "--model", &tiny(), root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is a directory (use -r"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plot_writes_one_png_per_input() {
    let root = archive("plot");
    let out = root.with_extension("plots");
    let _ = std::fs::remove_dir_all(&out);
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "-r",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--plot",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["one.wav", "a/two.wav", "a/b/three.flac", "c/four.flac"] {
        let png =
            std::fs::read(out.join(format!("{f}.png"))).unwrap_or_else(|e| panic!("{f}.png: {e}"));
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{f}.png is not a PNG");
        let (w, h) = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        assert_eq!(w, 1400);
        assert!(h > 8 * 80, "one row per label: height {h}");
        assert!(
            png.len() > 10_000,
            "{f}.png looks empty ({} bytes)",
            png.len()
        );
    }
    let o = mambatag(&[
        "tag",
        "--model",
        &tiny(),
        "--plot",
        root.join("one.wav").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "--plot needs --out");
}

#[test]
fn default_model_chunk_engine_matches_step_engine() {
    let model = repo().join("models/default");
    let demo = repo().join("demo/demo.flac");
    let run = |engine: &str| {
        let o = mambatag(&[
            "tag",
            "--model",
            model.to_str().unwrap(),
            "--frames",
            "--engine",
            engine,
            demo.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let (step, chunk) = (run("step"), run("chunk"));
    let (a, b) = (frame_lines(&step), frame_lines(&chunk));
    assert_eq!(a.len(), 900, "9 s of audio");
    assert_eq!(a.len(), b.len());
    let mut max = 0.0f32;
    for ((ta, sa), (tb, sb)) in a.iter().zip(&b) {
        assert_eq!(ta, tb, "frame times");
        max = max.max(max_abs_diff(sa, sb));
    }
    println!("default model, chunk vs step over 900 frames: max abs difference {max:e}");
    assert!(max <= 1e-4, "{max}");
    // the same events; their peak scores agree to float rounding (the step path may run the
    // layer graph, the chunk path the fused graph: different kernels, different rounding)
    let events = |s: &str| {
        s.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("label").is_some())
            .collect::<Vec<_>>()
    };
    let (ea, eb) = (events(&step), events(&chunk));
    assert_eq!(ea.len(), eb.len(), "{ea:?} vs {eb:?}");
    for (x, y) in ea.iter().zip(&eb) {
        for k in ["file", "label", "onset", "offset"] {
            assert_eq!(x[k], y[k], "{x} vs {y}");
        }
        let d = (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs();
        assert!(d <= 1e-4, "{x} vs {y}");
    }
}
