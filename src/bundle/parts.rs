//! A bundle as files: `FILE`, then `FILE.2`, `FILE.3`, … when it is larger
//! than the part size, each part but the last exactly that size. The
//! bundle is the parts' bytes in order; a part boundary may fall anywhere,
//! so parts are only ever read together. The only module of `bundle` that
//! touches the file system.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// FAT32's largest file is 4 GiB less one byte.
pub const PART_BYTES_DEFAULT: u64 = (4 << 30) - 1;
/// Parts smaller than this are refused: a split is for USB sticks, and
/// tests split at this size.
pub const PART_BYTES_MIN: u64 = 1024;

/// Part `n` (from 1) of the bundle at `base`.
pub fn part_path(base: &Path, n: u32) -> PathBuf {
    if n == 1 {
        return base.to_owned();
    }
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The parts present, in order, with their sizes: `base`, `base.2`, … up
/// to the first missing.
pub fn existing_parts(base: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for n in 1.. {
        let p = part_path(base, n);
        match std::fs::metadata(&p) {
            Ok(m) => out.push((p, m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Any file that would be taken for a part of a bundle at `base`
/// (`base` itself, or `base.<digits>`): a left-over part of an earlier,
/// larger bundle would otherwise be read on after this one's.
pub fn any_part_exists(base: &Path) -> io::Result<Option<PathBuf>> {
    let name = base.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name else {
        return Ok(None);
    };
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for e in entries {
        let found = e?.file_name().to_string_lossy().into_owned();
        let is_part = found == name
            || found
                .strip_prefix(&name)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_part {
            return Ok(Some(dir.join(found)));
        }
    }
    Ok(None)
}

/// Writes a bundle across parts of `part_bytes` each.
pub struct PartWriter {
    base: PathBuf,
    part_bytes: u64,
    file: Option<BufWriter<File>>,
    in_part: u64,
    parts: Vec<(PathBuf, u64)>,
}

impl PartWriter {
    /// Creates the first part. The caller has checked that no part
    /// exists; each part is still created only if absent.
    pub fn create(base: &Path, part_bytes: u64) -> io::Result<PartWriter> {
        let mut w = PartWriter {
            base: base.to_owned(),
            part_bytes: part_bytes.max(PART_BYTES_MIN),
            file: None,
            in_part: 0,
            parts: Vec::new(),
        };
        w.next_part()?;
        Ok(w)
    }

    fn next_part(&mut self) -> io::Result<()> {
        self.close_part()?;
        let path = part_path(&self.base, self.parts.len() as u32 + 1);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        self.file = Some(BufWriter::with_capacity(1 << 20, file));
        self.parts.push((path, 0));
        self.in_part = 0;
        Ok(())
    }

    /// Flushes the current part to the disk: a stick pulled out after the
    /// export said it was done holds the whole bundle.
    fn close_part(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            let file = f.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            if let Some(last) = self.parts.last_mut() {
                last.1 = self.in_part;
            }
        }
        Ok(())
    }

    /// Closes the last part; returns every part with its size.
    pub fn finish(mut self) -> io::Result<Vec<(PathBuf, u64)>> {
        self.close_part()?;
        Ok(std::mem::take(&mut self.parts))
    }

    /// Removes every part written: an export that failed leaves nothing
    /// that could be taken for a bundle.
    pub fn abort(mut self) {
        self.file = None;
        for (p, _) in std::mem::take(&mut self.parts) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.in_part == self.part_bytes {
            self.next_part()?;
        }
        let room = (self.part_bytes - self.in_part).min(buf.len() as u64) as usize;
        let file = self.file.as_mut().expect("a part is open");
        let n = file.write(&buf[..room])?;
        self.in_part += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Reads the parts present one after the other, as one stream.
pub struct PartReader {
    parts: Vec<(PathBuf, u64)>,
    next: usize,
    file: Option<BufReader<File>>,
}

impl PartReader {
    /// Opens the parts of `base` present now (see [`existing_parts`]).
    pub fn open(base: &Path) -> io::Result<PartReader> {
        let parts = existing_parts(base)?;
        if parts.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such file", base.display()),
            ));
        }
        Ok(PartReader {
            parts,
            next: 0,
            file: None,
        })
    }

    pub fn parts(&self) -> &[(PathBuf, u64)] {
        &self.parts
    }
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.file.is_none() {
                let Some((path, _)) = self.parts.get(self.next) else {
                    return Ok(0);
                };
                self.file = Some(BufReader::with_capacity(1 << 20, File::open(path)?));
                self.next += 1;
            }
            let n = self.file.as_mut().expect("open").read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.file = None;
        }
    }
}

/// What is wrong with the parts, given the part size the header names:
/// a part but the last not of that size (copied incompletely), or the
/// last one full (the next may be missing). `None` when they look whole.
pub fn parts_problem(parts: &[(PathBuf, u64)], part_bytes: u64) -> Option<String> {
    let (last, init) = parts.split_last()?;
    if let Some((p, len)) = init.iter().find(|(_, len)| *len != part_bytes) {
        return Some(format!(
            "{} holds {len} bytes, not the part size {part_bytes}: copied incompletely?",
            p.display()
        ));
    }
    if last.1 > part_bytes {
        return Some(format!(
            "{} holds {} bytes, more than the part size {part_bytes}",
            last.0.display(),
            last.1
        ));
    }
    (last.1 == part_bytes).then(|| {
        format!(
            "{} is a full part: is {} missing?",
            last.0.display(),
            part_path(&parts[0].0, parts.len() as u32 + 1).display()
        )
    })
}
