//! A JSON-lines file sink with size-based rotation.
//!
//! Each event is one line, flushed as it is written (events are rare; losing none on a crash
//! matters more than batching). When the file would grow past `max_bytes` it is renamed to
//! `NAME.1` (older ones shift to `.2` … `.keep`, the oldest is deleted) and a new file starts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct RotatingJsonl {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingJsonl {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file
            .write_all(&buf)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.size += n;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file.flush()?;
        self.file.sync_data()?;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(numbered(&self.path, self.keep));
        for i in (1..self.keep).rev() {
            let from = numbered(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ev.jsonl");
        let mut s = RotatingJsonl::open(&p, 100, 2).unwrap();
        for i in 0..20 {
            s.write_line(&format!("{{\"i\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}"))
                .unwrap();
        }
        s.flush().unwrap();
        assert!(p.exists() && numbered(&p, 1).exists() && numbered(&p, 2).exists());
        assert!(!numbered(&p, 3).exists());
        for f in [p.clone(), numbered(&p, 1)] {
            let t = std::fs::read_to_string(&f).unwrap();
            assert!(t.len() <= 100, "{}", t.len());
            assert!(t.lines().all(|l| l.starts_with('{') && l.ends_with('}')));
        }
        let last = std::fs::read_to_string(&p).unwrap();
        assert!(last.contains("\"i\":19"));
    }
}
