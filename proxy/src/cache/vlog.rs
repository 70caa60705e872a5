//! The value log: cache records appended to segment files (`values-00000001.log`, ...), read
//! back with positioned reads. The index keeps only a small entry pointing into it, so lookups
//! over millions of entries never need large values in process memory: the OS page cache holds
//! the records. Segments are immutable once full; space held by removed or
//! replaced records is reclaimed by [`ValueLog::compact`]-style rewrites driven by the store.
//!
//! Each record is framed as `[u32 length][bytes]`; the record itself carries its checksum
//! ([`super::entry`]), so a torn append after a crash is detected on read.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Segments are closed at this size and a new one started.
pub const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

/// Where a record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Segment number.
    pub segment: u32,
    /// Offset of the record's frame in the segment.
    pub offset: u64,
    /// The record's length (without its frame).
    pub len: u32,
}

impl Location {
    /// 16 bytes: segment, offset, length.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.segment.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Reads 16 bytes written by [`Location::encode`].
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Location {
            segment: u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?),
            offset: u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?),
            len: u32::from_le_bytes(bytes.get(12..16)?.try_into().ok()?),
        })
    }
}

struct Active {
    id: u32,
    file: File,
    len: u64,
}

/// Append-only record storage in segment files.
pub struct ValueLog {
    dir: PathBuf,
    segments: RwLock<BTreeMap<u32, Arc<File>>>,
    active: Mutex<Active>,
}

impl std::fmt::Debug for ValueLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("values-{id:08}.log"))
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

impl ValueLog {
    /// Opens the segments in `dir` (creating it), appending to the newest.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("values-"))
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            segments.insert(id, Arc::new(open_append(&segment_path(dir, id))?));
        }
        let id = segments.keys().next_back().copied().unwrap_or(1);
        let file = open_append(&segment_path(dir, id))?;
        let len = file.metadata()?.len();
        segments
            .entry(id)
            .or_insert_with(|| Arc::new(file.try_clone().expect("a file handle clones")));
        Ok(ValueLog {
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            active: Mutex::new(Active { id, file, len }),
        })
    }

    /// Appends a record; returns where it is.
    pub fn append(&self, record: &[u8]) -> std::io::Result<Location> {
        Ok(self.append_all(&[record])?[0])
    }

    /// Appends records with one write; returns where each is, in order. When the write fails,
    /// none of them is stored, and appends go on after whatever part of it reached the file.
    pub fn append_all(&self, records: &[&[u8]]) -> std::io::Result<Vec<Location>> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.len >= SEGMENT_BYTES {
            self.start_segment(&mut active)?;
        }
        let size = records.iter().map(|r| 4 + r.len()).sum();
        let mut frames = Vec::with_capacity(size);
        let mut locations = Vec::with_capacity(records.len());
        for record in records {
            let len = u32::try_from(record.len())
                .map_err(|_| std::io::Error::other("record too large"))?;
            locations.push(Location {
                segment: active.id,
                offset: active.len + frames.len() as u64,
                len,
            });
            frames.extend_from_slice(&len.to_le_bytes());
            frames.extend_from_slice(record);
        }
        if let Err(e) = active.file.write_all(&frames) {
            // Part of the frames may be in the file: the next append starts after them.
            if let Ok(meta) = active.file.metadata() {
                active.len = meta.len();
            }
            return Err(e);
        }
        active.len += frames.len() as u64;
        Ok(locations)
    }

    /// Reads the record at `loc`; `Ok(None)` when its segment no longer exists.
    pub fn read(&self, loc: Location) -> std::io::Result<Option<Vec<u8>>> {
        let file = {
            let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
            match segments.get(&loc.segment) {
                Some(f) => f.clone(),
                None => return Ok(None),
            }
        };
        let mut frame = vec![0u8; 4 + loc.len as usize];
        file.read_exact_at(&mut frame, loc.offset)?;
        if frame[..4] != loc.len.to_le_bytes() {
            return Err(std::io::Error::other(
                "record frame does not match its index entry",
            ));
        }
        frame.drain(..4);
        Ok(Some(frame))
    }

    /// Makes every append so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file
            .sync_data()
    }

    /// Segment numbers, oldest first, and the active one.
    pub fn segments(&self) -> (Vec<u32>, u32) {
        let ids = self
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        (
            ids,
            self.active.lock().unwrap_or_else(|p| p.into_inner()).id,
        )
    }

    /// Total bytes in all segments.
    pub fn total_bytes(&self) -> u64 {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Starts a new active segment, so every older one can be rewritten and deleted.
    pub fn rotate(&self) -> std::io::Result<u32> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        self.start_segment(&mut active)
    }

    /// Opens the segment after `active`'s, makes it readable and the one appended to.
    fn start_segment(&self, active: &mut Active) -> std::io::Result<u32> {
        let id = active.id + 1;
        let file = open_append(&segment_path(&self.dir, id))?;
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(file.try_clone()?));
        *active = Active { id, file, len: 0 };
        Ok(id)
    }

    /// Deletes a segment that no index entry points into any more.
    pub fn delete(&self, id: u32) -> std::io::Result<()> {
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match std::fs::remove_file(segment_path(&self.dir, id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_across_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = {
            let log = ValueLog::open(dir.path()).expect("opens");
            (
                log.append(b"first").unwrap(),
                log.append(b"second record").unwrap(),
            )
        };
        let log = ValueLog::open(dir.path()).expect("reopens");
        assert_eq!(log.read(a).unwrap().unwrap(), b"first");
        assert_eq!(log.read(b).unwrap().unwrap(), b"second record");
        let c = log.append(b"third").unwrap();
        assert_eq!(
            c.offset,
            4 + 5 + 4 + 13,
            "appends continue where the segment ended"
        );
        assert_eq!(Location::decode(&c.encode()), Some(c));
    }

    #[test]
    fn records_appended_together_read_back_one_by_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = ValueLog::open(dir.path()).expect("opens");
        let first = log.append(b"before").unwrap();
        let records: [&[u8]; 3] = [b"one", b"", b"three!"];
        let locations = log.append_all(&records).unwrap();
        assert_eq!(locations.len(), 3);
        assert_eq!(locations[0].offset, 4 + 6);
        for (loc, record) in locations.iter().zip(records) {
            assert_eq!(log.read(*loc).unwrap().unwrap(), record);
        }
        let after = log.append(b"after").unwrap();
        assert_eq!(after.offset, 4 + 6 + 4 + 3 + 4 + 4 + 6);
        assert_eq!(log.read(first).unwrap().unwrap(), b"before");
        assert!(log.append_all(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_deleted_segment_reads_as_absent_and_a_bad_frame_as_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = ValueLog::open(dir.path()).expect("opens");
        let a = log.append(b"old").unwrap();
        log.rotate().unwrap();
        let b = log.append(b"new").unwrap();
        log.delete(a.segment).unwrap();
        assert_eq!(log.read(a).unwrap(), None);
        assert_eq!(log.read(b).unwrap().unwrap(), b"new");
        let wrong = Location { len: 2, ..b };
        assert!(log.read(wrong).is_err());
    }
}
