//! The one part of an MP4/M4A edit list that matters for timing: which decoded frames are the
//! track's audio. AAC encoders put priming frames (ffmpeg and Apple: 1,024 or 2,112) before
//! the first sample and pad the last packet; the track's edit list (`moov/trak/edts/elst`) says
//! where the audio starts (`media_time`) and how long it lasts (`segment_duration`).
//! symphonia 0.6 parses edit lists but does not apply them, so without this every time in an
//! `.m4a` runs late by the priming (≈ 23 ms at 44.1 kHz) and the file ends with padding.
//!
//! Only the common form is applied: one edit at normal rate, starting at or after the first
//! frame. Empty edits (leading silence), several edits or other rates are left alone (the audio
//! is decoded as stored) with a warning.
//!
//! The same walk over the top-level boxes finds a file cut short ([`check_complete`]): a box that
//! declares more bytes than the file has left.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{anyhow, bail, Result};

/// Frames to drop at the start and how many to keep after that, at the track's sample rate
/// (`keep` = `u64::MAX`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    pub skip: u64,
    pub keep: u64,
}

impl Trim {
    /// The frame count a container states (`stated`, before the trim) after the trim.
    pub fn declared_frames(&self, stated: Option<u64>) -> Option<u64> {
        match stated {
            Some(n) => Some(n.saturating_sub(self.skip).min(self.keep)),
            None => (self.keep != u64::MAX).then_some(self.keep),
        }
    }
}

/// A `moov` larger than this is not read (it would be a strange audio file).
const MAX_MOOV: u64 = 64 << 20;

/// The trim that track `track_id`'s edit list asks for, at `rate` frames per second; `None`
/// where the file has no usable edit list (or it is the identity).
pub fn trim(path: &Path, track_id: u32, rate: u32) -> Option<Trim> {
    let moov = read_moov(path)?;
    let movie_scale = timescale(child(&moov, b"mvhd")?)?;
    for trak in children(&moov, b"trak") {
        let Some(id) = child(trak, b"tkhd").and_then(tkhd_id) else {
            continue;
        };
        if id != track_id {
            continue;
        }
        let edits = elst(child(child(trak, b"edts")?, b"elst")?)?;
        let media_scale = timescale(child(child(trak, b"mdia")?, b"mdhd")?)?;
        return apply(&edits, movie_scale, media_scale, rate, path);
    }
    None
}

/// One `elst` entry: duration in movie timescale, start in media timescale (-1: empty edit),
/// rate as 16.16 fixed point.
#[derive(Debug, Clone, Copy)]
struct Edit {
    duration: u64,
    media_time: i64,
    rate: i32,
}

fn apply(
    edits: &[Edit],
    movie_scale: u32,
    media_scale: u32,
    rate: u32,
    path: &Path,
) -> Option<Trim> {
    let [e] = edits else {
        tracing::warn!(file = %path.display(), edits = edits.len(), "MP4 edit list not applied (only a single edit is supported): times may be off by the encoder's priming");
        return None;
    };
    if e.media_time < 0 || e.rate != 1 << 16 || movie_scale == 0 || media_scale == 0 {
        tracing::warn!(file = %path.display(), "MP4 edit list not applied (empty edit or rate ≠ 1): times may be off by the encoder's priming");
        return None;
    }
    let scale = |v: u64, from: u32| (v as u128 * rate as u128 + from as u128 / 2) / from as u128;
    let skip = scale(e.media_time as u64, media_scale) as u64;
    let keep = scale(e.duration, movie_scale) as u64;
    // A zero duration means "to the end of the media" in some writers; keep everything then.
    let keep = if keep == 0 { u64::MAX } else { keep };
    (skip > 0 || keep != u64::MAX).then_some(Trim { skip, keep })
}

/// One top-level box header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TopBox {
    kind: [u8; 4],
    /// header bytes: 8, or 16 with a 64-bit size
    header: u64,
    /// the whole box as declared (size 0, "to the end of the file", is the rest of the file)
    size: u64,
}

/// What is at `pos` among the top-level boxes of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Box(TopBox),
    /// A box with a 64-bit size whose header the end of the file cuts.
    CutHeader([u8; 4]),
    /// Fewer than 8 bytes left (symphonia ignores those too), or a size smaller than its
    /// header: nothing more to walk.
    End,
}

fn top_box(f: &mut File, pos: u64, len: u64) -> io::Result<Top> {
    if len.saturating_sub(pos) < 8 {
        return Ok(Top::End);
    }
    f.seek(SeekFrom::Start(pos))?;
    let mut h = [0u8; 8];
    f.read_exact(&mut h)?;
    let kind: [u8; 4] = h[4..].try_into().expect("4 bytes");
    let (size, header) = match u32::from_be_bytes(h[..4].try_into().expect("4 bytes")) {
        0 => (len - pos, 8),
        1 => {
            if len - pos < 16 {
                return Ok(Top::CutHeader(kind));
            }
            f.read_exact(&mut h)?;
            (u64::from_be_bytes(h), 16)
        }
        s => (s as u64, 8),
    };
    Ok(if size < header {
        Top::End
    } else {
        Top::Box(TopBox { kind, header, size })
    })
}

/// For an MP4/M4A/MOV (a file of `len` bytes whose first box is `ftyp`; any other file passes):
/// an error if the file is cut short, i.e. a top-level box declares more bytes than the file
/// has left, or the audio (`mdat`) is there without the index (`moov`, which most writers add
/// last). symphonia reports either as an unrelated error ("no atom pending read" on the first
/// packet, "missing moov atom"), or not at all where the cut leaves whole packets.
pub fn check_complete(path: &Path, len: u64) -> Result<()> {
    let mut f = File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
    let io_err = |e: io::Error| anyhow!("cannot read: {e}");
    let (mut pos, mut mdat, mut moov) = (0u64, false, false);
    loop {
        let b = match top_box(&mut f, pos, len).map_err(io_err)? {
            Top::Box(b) => b,
            Top::CutHeader(_) | Top::End if pos == 0 => return Ok(()),
            Top::CutHeader(kind) => bail!(
                "truncated: the file is {len} bytes and ends inside the header of its '{}' box \
                 (at byte {pos})",
                kind.escape_ascii()
            ),
            Top::End => break,
        };
        if pos == 0 && &b.kind != b"ftyp" {
            return Ok(());
        }
        if b.size > len - pos {
            bail!(
                "truncated: the file is {len} bytes but its '{}' box at byte {pos} declares {} \
                 bytes, up to byte {}",
                b.kind.escape_ascii(),
                b.size,
                pos as u128 + b.size as u128
            );
        }
        mdat |= &b.kind == b"mdat";
        moov |= &b.kind == b"moov";
        pos += b.size;
    }
    if mdat && !moov {
        bail!(
            "truncated: the file has its audio ('mdat' box) but no index ('moov' box, which the \
             writer adds last)"
        );
    }
    Ok(())
}

/// The top-level `moov` box's payload.
fn read_moov(path: &Path) -> Option<Vec<u8>> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut pos = 0u64;
    while let Top::Box(b) = top_box(&mut f, pos, len).ok()? {
        if &b.kind == b"moov" {
            let body = b.size - b.header;
            if body > MAX_MOOV || b.size > len - pos {
                return None;
            }
            f.seek(SeekFrom::Start(pos + b.header)).ok()?;
            let mut v = vec![0u8; body as usize];
            f.read_exact(&mut v).ok()?;
            return Some(v);
        }
        pos = pos.checked_add(b.size)?;
    }
    None
}

/// The payloads of the boxes named `name` directly inside `data`.
fn children<'a>(data: &'a [u8], name: &'a [u8; 4]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        while pos + 8 <= data.len() {
            let size = u32::from_be_bytes(data[pos..pos + 4].try_into().ok()?) as usize;
            let (size, header) = match size {
                0 => (data.len() - pos, 8),
                1 => {
                    let s = u64::from_be_bytes(data.get(pos + 8..pos + 16)?.try_into().ok()?);
                    (usize::try_from(s).ok()?, 16)
                }
                s => (s, 8),
            };
            if size < header || pos + size > data.len() {
                return None;
            }
            let kind = &data[pos + 4..pos + 8];
            let body = &data[pos + header..pos + size];
            pos += size;
            if kind == name {
                return Some(body);
            }
        }
        None
    })
}

fn child<'a>(data: &'a [u8], name: &'a [u8; 4]) -> Option<&'a [u8]> {
    children(data, name).next()
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn be64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// `mvhd` / `mdhd`: the timescale after version/flags and the two creation/modification times.
fn timescale(b: &[u8]) -> Option<u32> {
    match b.first()? {
        0 => be32(b, 12),
        1 => be32(b, 20),
        _ => None,
    }
}

/// `tkhd`: the track id (same layout as the timescale above).
fn tkhd_id(b: &[u8]) -> Option<u32> {
    timescale(b)
}

fn elst(b: &[u8]) -> Option<Vec<Edit>> {
    let version = *b.first()?;
    let n = be32(b, 4)? as usize;
    let entry = if version == 1 { 20 } else { 12 };
    if n > (b.len().saturating_sub(8)) / entry {
        return None;
    }
    (0..n)
        .map(|i| {
            let at = 8 + i * entry;
            Some(if version == 1 {
                Edit {
                    duration: be64(b, at)?,
                    media_time: be64(b, at + 8)? as i64,
                    rate: be32(b, at + 16)? as i32,
                }
            } else {
                Edit {
                    duration: be32(b, at)? as u64,
                    media_time: be32(b, at + 4)? as i32 as i64,
                    rate: be32(b, at + 8)? as i32,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(duration: u64, media_time: i64) -> Edit {
        Edit {
            duration,
            media_time,
            rate: 1 << 16,
        }
    }

    #[test]
    fn one_edit_trims_priming_and_padding() {
        // ffmpeg's AAC: 2 s in a 1,000 Hz movie timescale, audio from media frame 1,024.
        let p = Path::new("x.m4a");
        assert_eq!(
            apply(&[edit(2000, 1024)], 1000, 44100, 44100, p),
            Some(Trim {
                skip: 1024,
                keep: 88200
            })
        );
        // Media timescale other than the rate: scaled.
        assert_eq!(
            apply(&[edit(2000, 2048)], 1000, 88200, 44100, p),
            Some(Trim {
                skip: 1024,
                keep: 88200
            })
        );
    }

    #[test]
    fn unsupported_edit_lists_are_left_alone() {
        let p = Path::new("x.m4a");
        assert_eq!(
            apply(&[edit(500, -1), edit(2000, 0)], 1000, 44100, 44100, p),
            None
        );
        assert_eq!(apply(&[edit(2000, -1)], 1000, 44100, 44100, p), None);
        let mut slow = edit(2000, 0);
        slow.rate = 1 << 15;
        assert_eq!(apply(&[slow], 1000, 44100, 44100, p), None);
        assert_eq!(apply(&[], 1000, 44100, 44100, p), None);
        assert_eq!(apply(&[edit(2000, 0)], 0, 44100, 44100, p), None);
    }

    /// A box of `size` declared bytes holding `body` (which may be shorter: a cut file).
    fn mp4_box(size: u32, kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = size.to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn check(name: &str, bytes: &[u8]) -> Result<()> {
        let p = std::env::temp_dir().join(format!("mambatag-mp4-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let r = check_complete(&p, bytes.len() as u64);
        std::fs::remove_file(&p).unwrap();
        r
    }

    #[test]
    fn cut_files_are_found_by_their_top_level_boxes() {
        let ftyp = mp4_box(16, b"ftyp", b"M4A \0\0\0\0");
        let moov = mp4_box(12, b"moov", b"abcd");
        let whole = [ftyp.clone(), moov.clone(), mp4_box(20, b"mdat", &[7; 12])].concat();
        assert!(check("whole", &whole).is_ok());
        // Size 0: to the end of the file, whatever its length; trailing bytes too few for a
        // header are ignored (as symphonia does).
        let to_end = [ftyp.clone(), moov.clone(), mp4_box(0, b"mdat", &[7; 5])].concat();
        assert!(check("to-end", &to_end).is_ok());
        assert!(check("tail", &[&whole[..], &[0; 7]].concat()).is_ok());
        // A 64-bit size.
        let mut large = mp4_box(1, b"mdat", &28u64.to_be_bytes());
        large.extend_from_slice(&[7; 12]);
        assert!(check("large", &[&ftyp[..], &moov, &large].concat()).is_ok());

        let e = check("cut", &whole[..whole.len() - 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "truncated: the file is 47 bytes but its 'mdat' box at byte 28 declares 20 bytes, \
             up to byte 48"
        );
        let e = check("cut-large", &[&ftyp[..], &moov, &large[..12]].concat()).unwrap_err();
        assert!(e
            .to_string()
            .contains("ends inside the header of its 'mdat' box"));
        let e = check(
            "no-moov",
            &[&ftyp[..], &mp4_box(20, b"mdat", &[7; 12])].concat(),
        );
        assert!(e.unwrap_err().to_string().contains("no index ('moov' box"));
        // Anything that does not start with `ftyp` is not checked here.
        assert!(check("flac", &mp4_box(99, b"fLaC", b"")).is_ok());
        assert!(check("short", b"RIFF").is_ok());
    }

    #[test]
    fn elst_versions_parse() {
        let mut v0 = vec![0, 0, 0, 0, 0, 0, 0, 1];
        v0.extend(2000u32.to_be_bytes());
        v0.extend(1024i32.to_be_bytes());
        v0.extend((1i32 << 16).to_be_bytes());
        let e = elst(&v0).unwrap();
        assert_eq!(
            (e[0].duration, e[0].media_time, e[0].rate),
            (2000, 1024, 1 << 16)
        );
        let mut v1 = vec![1, 0, 0, 0, 0, 0, 0, 1];
        v1.extend(2000u64.to_be_bytes());
        v1.extend((-1i64).to_be_bytes());
        v1.extend((1i32 << 16).to_be_bytes());
        let e = elst(&v1).unwrap();
        assert_eq!((e[0].duration, e[0].media_time), (2000, -1));
        // A count larger than the box holds is refused, not read past the end.
        let mut bad = v0.clone();
        bad[7] = 9;
        assert!(elst(&bad).is_none());
    }
}
