//! The value log: cache records appended to segment files (`values-00000001.log`, ...), read
//! back with positioned reads. The index keeps only a small entry pointing into it, so lookups
//! over millions of entries never need large values in process memory: the OS page cache holds
//! the records. Space held by removed or replaced records is reclaimed by the store's
//! compaction, which copies live records into a fresh segment and deletes the old ones.
//!
//! Every segment starts with a header naming the log's generation (a random id made when the
//! log is created), so an index written for another log, or for this directory before its log
//! was deleted, is recognised. Every frame carries the key it belongs to, its creation time and
//! a CRC-32 of all of it, so a read returns a record only for its own key (ARCHITECTURE.md,
//! invariant 6), and the index can be rebuilt from the log alone. A process appends only to a
//! segment it started itself: offsets that an index (possibly older or newer than the log) may
//! point at are never written twice.
//!
//! Layout (little-endian): a segment header of [`SEGMENT_HEADER`] bytes — magic `SPWVLOG2`,
//! the generation (16 bytes), the segment number (4), zeros (4) — then frames of
//! `[record length u32][crc u32][key 32][created u64][record]`. The CRC covers the length, key,
//! created and record. A frame with `created == u64::MAX` and no record is a removal.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::Key;

/// Segments are closed at this size and a new one started.
pub const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

/// Magic at the start of every segment of this format.
const MAGIC: &[u8; 8] = b"SPWVLOG2";
/// Bytes before a segment's first frame.
pub const SEGMENT_HEADER: u64 = 32;
/// Bytes of a frame before its record.
pub const FRAME_HEADER: usize = 4 + 4 + 32 + 8;
/// The file in the log's directory that names its generation.
const GENERATION_FILE: &str = "generation";
/// `created` of a frame that records a removal.
const REMOVAL: u64 = u64::MAX;

/// The identity of one value log: the index records it, and an index holding another is not
/// used with this log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Generation(pub [u8; 16]);

impl Generation {
    /// A random generation (from the standard library's randomly keyed hasher).
    pub fn random() -> Self {
        let mut out = [0u8; 16];
        for (i, half) in out.chunks_exact_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u32(std::process::id());
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
        Generation(out)
    }

    /// Hex, for messages and the `generation` file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads 32 hex digits written by [`Generation::to_hex`].
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Generation(out))
    }
}

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

/// Why a frame could not be read as the record an index entry expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is cut short (the log lost its tail) or could not be read.
    #[error("the record is cut short or unreadable ({0})")]
    Unreadable(String),
    /// The frame's checksum does not match (a torn or overwritten write).
    #[error("the record's checksum does not match")]
    Checksum,
    /// The frame belongs to another key, or has another length: the index points at data that
    /// is not the record it was written for.
    #[error("the record at this place belongs to another entry")]
    Mismatch,
}

/// One record to append: its key, creation time and bytes (`None`: a removal).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The key it belongs to.
    pub key: &'a Key,
    /// Unix seconds when stored.
    pub created: u64,
    /// The record, or `None` for a removal.
    pub record: Option<&'a [u8]>,
}

/// What a scan of the log finds, in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// A record for `key`, created at `created`, at `loc`.
    Record {
        /// Its key.
        key: Key,
        /// Unix seconds when stored.
        created: u64,
        /// Where it is.
        loc: Location,
    },
    /// `key` was removed.
    Removal(Key),
}

struct Active {
    id: u32,
    file: File,
    len: u64,
}

/// Append-only record storage in segment files.
pub struct ValueLog {
    dir: PathBuf,
    generation: Generation,
    segments: RwLock<BTreeMap<u32, Arc<File>>>,
    active: Mutex<Option<Active>>,
}

impl std::fmt::Debug for ValueLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueLog")
            .field("dir", &self.dir)
            .field("generation", &self.generation.to_hex())
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

fn frame_crc(len: u32, key: &Key, created: u64, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&key.0);
    h.update(&created.to_le_bytes());
    h.update(record);
    h.finalize()
}

/// A segment's header, if it has this format's.
fn read_header(file: &File) -> Option<(Generation, u32)> {
    let mut header = [0u8; SEGMENT_HEADER as usize];
    file.read_exact_at(&mut header, 0).ok()?;
    if &header[..8] != MAGIC {
        return None;
    }
    let generation = Generation(header[8..24].try_into().expect("16 bytes"));
    let id = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    Some((generation, id))
}

/// Makes a directory entry (a new or renamed file) durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What opening a log found that did not belong to it, moved aside (never deleted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Segment files of an older format or another log, renamed to `*.log.set-aside`.
    pub files: Vec<PathBuf>,
}

impl ValueLog {
    /// Opens the log in `dir` (creating it). Its generation is read from `dir/generation`
    /// (made with the log). Segments of an older format, or of another log, are renamed aside
    /// and not read. No segment is appended to until [`ValueLog::begin`].
    pub fn open(dir: &Path) -> std::io::Result<(Self, SetAside)> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
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
            let path = segment_path(dir, id);
            let file = open_append(&path)?;
            found.push((id, read_header(&file), file, path));
        }
        found.sort_by_key(|(id, ..)| *id);
        let generation_file = dir.join(GENERATION_FILE);
        let generation = match std::fs::read_to_string(&generation_file)
            .ok()
            .and_then(|t| Generation::from_hex(t.trim()))
        {
            Some(g) => g,
            None => {
                // A log made before the file existed names its generation in its segments.
                let g = found
                    .iter()
                    .rev()
                    .find_map(|(_, header, ..)| header.map(|(g, _)| g))
                    .unwrap_or_else(Generation::random);
                let tmp = generation_file.with_extension("tmp");
                let mut f = File::create(&tmp)?;
                f.write_all(g.to_hex().as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &generation_file)?;
                sync_dir(dir);
                g
            }
        };
        let mut segments = BTreeMap::new();
        let mut set_aside = SetAside::default();
        for (id, header, file, path) in found {
            if header == Some((generation, id)) {
                segments.insert(id, Arc::new(file));
            } else {
                let aside = path.with_extension("log.set-aside");
                std::fs::rename(&path, &aside)?;
                set_aside.files.push(aside);
            }
        }
        if !set_aside.files.is_empty() {
            sync_dir(dir);
        }
        Ok((
            ValueLog {
                dir: dir.to_path_buf(),
                generation,
                segments: RwLock::new(segments),
                active: Mutex::new(None),
            },
            set_aside,
        ))
    }

    /// The log's generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Starts the segment this process appends to: the first number above every segment on
    /// disk and above `referenced` (the highest one an index points into), so no offset any
    /// index may hold is written again. An empty newest segment (header only) is reused.
    pub fn begin(&self, referenced: u32) -> std::io::Result<()> {
        let mut active = self.lock_active();
        let newest = self.segment_ids().last().copied();
        if let Some(id) = newest
            && id > referenced
            && let Some(file) = self.segment_file(id)
            && file.metadata()?.len() == SEGMENT_HEADER
        {
            *active = Some(Active {
                id,
                file: file.try_clone()?,
                len: SEGMENT_HEADER,
            });
            return Ok(());
        }
        let id = newest.unwrap_or(0).max(referenced) + 1;
        *active = Some(self.create_segment(id)?);
        Ok(())
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segment_file(&self, id: u32) -> Option<Arc<File>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn segment_ids(&self) -> Vec<u32> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Creates segment `id` with its header, durable, and makes it readable.
    fn create_segment(&self, id: u32) -> std::io::Result<Active> {
        let path = segment_path(&self.dir, id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..24].copy_from_slice(&self.generation.0);
        header[24..28].copy_from_slice(&id.to_le_bytes());
        file.write_all(&header)?;
        file.sync_data()?;
        sync_dir(&self.dir);
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(file.try_clone()?));
        Ok(Active {
            id,
            file,
            len: SEGMENT_HEADER,
        })
    }

    /// Appends a record for `key`; returns where it is.
    pub fn append(&self, key: &Key, created: u64, record: &[u8]) -> std::io::Result<Location> {
        Ok(self.append_all(&[Frame {
            key,
            created,
            record: Some(record),
        }])?[0])
    }

    /// Appends frames with one write; returns where each is, in order. When the write fails,
    /// none of them is stored, and appends go on after whatever part of it reached the file.
    pub fn append_all(&self, frames: &[Frame<'_>]) -> std::io::Result<Vec<Location>> {
        let mut guard = self.lock_active();
        let needs_segment = guard.as_ref().is_none_or(|a| a.len >= SEGMENT_BYTES);
        if needs_segment {
            let next = guard
                .as_ref()
                .map_or_else(|| self.segment_ids().last().copied().unwrap_or(0), |a| a.id)
                + 1;
            if let Some(previous) = guard.as_ref() {
                previous.file.sync_data()?;
            }
            *guard = Some(self.create_segment(next)?);
        }
        let active = guard.as_mut().expect("an active segment was just made");
        let size = frames
            .iter()
            .map(|f| FRAME_HEADER + f.record.map_or(0, <[u8]>::len))
            .sum();
        let mut bytes = Vec::with_capacity(size);
        let mut locations = Vec::with_capacity(frames.len());
        for frame in frames {
            let record = frame.record.unwrap_or_default();
            let created = if frame.record.is_some() {
                frame.created.min(REMOVAL - 1)
            } else {
                REMOVAL
            };
            let len = u32::try_from(record.len())
                .map_err(|_| std::io::Error::other("record too large"))?;
            locations.push(Location {
                segment: active.id,
                offset: active.len + bytes.len() as u64,
                len,
            });
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&frame_crc(len, frame.key, created, record).to_le_bytes());
            bytes.extend_from_slice(&frame.key.0);
            bytes.extend_from_slice(&created.to_le_bytes());
            bytes.extend_from_slice(record);
        }
        if let Err(e) = active.file.write_all(&bytes) {
            // Part of the frames may be in the file: the next append starts after them.
            if let Ok(meta) = active.file.metadata() {
                active.len = meta.len();
            }
            return Err(e);
        }
        active.len += bytes.len() as u64;
        Ok(locations)
    }

    /// Reads the record of `key` at `loc`: `Ok(None)` when its segment no longer exists, an
    /// error when what is there is not that record, whole and unchanged.
    pub fn read(&self, loc: Location, key: &Key) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(file) = self.segment_file(loc.segment) else {
            return Ok(None);
        };
        if loc.offset < SEGMENT_HEADER {
            return Err(FrameError::Mismatch);
        }
        let mut frame = vec![0u8; FRAME_HEADER + loc.len as usize];
        file.read_exact_at(&mut frame, loc.offset)
            .map_err(|e| FrameError::Unreadable(e.to_string()))?;
        let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
        if len != loc.len || frame[8..40] != key.0 {
            return Err(FrameError::Mismatch);
        }
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        let created = u64::from_le_bytes(frame[40..48].try_into().expect("8 bytes"));
        if created == REMOVAL || crc != frame_crc(len, key, created, &frame[FRAME_HEADER..]) {
            return Err(FrameError::Checksum);
        }
        frame.drain(..FRAME_HEADER);
        Ok(Some(frame))
    }

    /// Every whole frame of every segment, oldest first. A segment's scan stops at its first
    /// frame that is cut short or fails its checksum (what a crash leaves at the end of the
    /// segment being written).
    pub fn scan(&self, visit: &mut dyn FnMut(Scanned)) -> std::io::Result<()> {
        use std::io::{BufReader, Read, Seek, SeekFrom};
        for id in self.segment_ids() {
            let Some(file) = self.segment_file(id) else {
                continue;
            };
            let file_len = file.metadata()?.len();
            let mut reader = BufReader::with_capacity(1 << 20, file.try_clone()?);
            reader.seek(SeekFrom::Start(SEGMENT_HEADER))?;
            let mut at = SEGMENT_HEADER;
            let mut head = [0u8; FRAME_HEADER];
            let mut record = Vec::new();
            loop {
                if reader.read_exact(&mut head).is_err() {
                    break;
                }
                let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
                // A torn frame's length is garbage: one past the file's end is never read.
                if at + (FRAME_HEADER as u64) + u64::from(len) > file_len {
                    break;
                }
                record.resize(len as usize, 0);
                if reader.read_exact(&mut record).is_err() {
                    break;
                }
                let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
                let key = Key(head[8..40].try_into().expect("32 bytes"));
                let created = u64::from_le_bytes(head[40..48].try_into().expect("8 bytes"));
                if crc != frame_crc(len, &key, created, &record) {
                    break;
                }
                visit(if created == REMOVAL {
                    Scanned::Removal(key)
                } else {
                    Scanned::Record {
                        key,
                        created,
                        loc: Location {
                            segment: id,
                            offset: at,
                            len,
                        },
                    }
                });
                at += (FRAME_HEADER + record.len()) as u64;
            }
        }
        Ok(())
    }

    /// Makes every append so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        match self.lock_active().as_ref() {
            Some(active) => active.file.sync_data(),
            None => Ok(()),
        }
    }

    /// Segment numbers, oldest first, and the one appended to (0 before [`ValueLog::begin`]).
    pub fn segments(&self) -> (Vec<u32>, u32) {
        (
            self.segment_ids(),
            self.lock_active().as_ref().map_or(0, |a| a.id),
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

    /// Starts a new segment to append to, so every older one can be rewritten and deleted;
    /// returns its number.
    pub fn rotate(&self) -> std::io::Result<u32> {
        let mut guard = self.lock_active();
        let next = guard
            .as_ref()
            .map_or_else(|| self.segment_ids().last().copied().unwrap_or(0), |a| a.id)
            + 1;
        if let Some(previous) = guard.as_ref() {
            previous.file.sync_data()?;
        }
        let active = self.create_segment(next)?;
        *guard = Some(active);
        Ok(next)
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

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    fn open(dir: &Path) -> ValueLog {
        let (log, set_aside) = ValueLog::open(dir).expect("opens");
        assert!(set_aside.files.is_empty());
        log.begin(0).expect("begins");
        log
    }

    #[test]
    fn records_read_back_across_reopening_and_appends_never_reuse_an_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b, generation) = {
            let log = open(dir.path());
            (
                log.append(&key(1), 10, b"first").unwrap(),
                log.append(&key(2), 20, b"second record").unwrap(),
                log.generation(),
            )
        };
        let log = open(dir.path());
        assert_eq!(log.generation(), generation);
        assert_eq!(log.read(a, &key(1)).unwrap().unwrap(), b"first");
        assert_eq!(log.read(b, &key(2)).unwrap().unwrap(), b"second record");
        let c = log.append(&key(3), 30, b"third").unwrap();
        assert!(
            c.segment > a.segment,
            "a reopened log appends to a new segment"
        );
        assert_eq!(c.offset, SEGMENT_HEADER);
        assert_eq!(Location::decode(&c.encode()), Some(c));
    }

    #[test]
    fn a_record_is_returned_only_for_its_own_key_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open(dir.path());
        let a = log.append(&key(1), 1, b"answer one").unwrap();
        assert_eq!(log.read(a, &key(2)), Err(FrameError::Mismatch));
        assert_eq!(
            log.read(Location { len: 3, ..a }, &key(1)),
            Err(FrameError::Mismatch)
        );
        assert!(matches!(
            log.read(
                Location {
                    offset: a.offset + 999,
                    ..a
                },
                &key(1)
            ),
            Err(FrameError::Unreadable(_))
        ));
        // One byte of the record changed on disk.
        let path = segment_path(dir.path(), a.segment);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(log.read(a, &key(1)), Err(FrameError::Checksum));
    }

    #[test]
    fn records_appended_together_read_back_one_by_one_and_scan_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open(dir.path());
        let first = log.append(&key(9), 9, b"before").unwrap();
        let frames = [
            Frame {
                key: &key(1),
                created: 1,
                record: Some(b"one"),
            },
            Frame {
                key: &key(9),
                created: 0,
                record: None,
            },
            Frame {
                key: &key(3),
                created: 3,
                record: Some(b"three!"),
            },
        ];
        let locations = log.append_all(&frames).unwrap();
        assert_eq!(log.read(locations[0], &key(1)).unwrap().unwrap(), b"one");
        assert_eq!(log.read(locations[2], &key(3)).unwrap().unwrap(), b"three!");
        assert_eq!(log.read(first, &key(9)).unwrap().unwrap(), b"before");
        let mut seen = Vec::new();
        log.scan(&mut |s| seen.push(s)).unwrap();
        assert_eq!(
            seen,
            vec![
                Scanned::Record {
                    key: key(9),
                    created: 9,
                    loc: first
                },
                Scanned::Record {
                    key: key(1),
                    created: 1,
                    loc: locations[0]
                },
                Scanned::Removal(key(9)),
                Scanned::Record {
                    key: key(3),
                    created: 3,
                    loc: locations[2]
                },
            ]
        );
        assert!(log.append_all(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_scan_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open(dir.path());
        let a = log.append(&key(1), 1, b"whole").unwrap();
        let b = log.append(&key(2), 2, b"cut short").unwrap();
        let path = segment_path(dir.path(), a.segment);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        let mut seen = Vec::new();
        log.scan(&mut |s| seen.push(s)).unwrap();
        assert_eq!(seen.len(), 1);
        assert!(matches!(
            log.read(b, &key(2)),
            Err(FrameError::Unreadable(_))
        ));
    }

    #[test]
    fn a_deleted_segment_reads_as_absent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open(dir.path());
        let a = log.append(&key(1), 1, b"old").unwrap();
        log.rotate().unwrap();
        let b = log.append(&key(2), 2, b"new").unwrap();
        log.delete(a.segment).unwrap();
        assert_eq!(log.read(a, &key(1)).unwrap(), None);
        assert_eq!(log.read(b, &key(2)).unwrap().unwrap(), b"new");
    }

    #[test]
    fn segments_of_an_older_format_or_another_log_are_set_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(segment_path(dir.path(), 1), b"\x05\0\0\0hello").unwrap();
        let (log, set_aside) = ValueLog::open(dir.path()).expect("opens");
        assert_eq!(set_aside.files.len(), 1);
        assert!(set_aside.files[0].exists());
        log.begin(0).unwrap();
        let a = log.append(&key(1), 1, b"new").unwrap();
        drop(log);
        // A segment copied in from another cache directory.
        let other = tempfile::tempdir().expect("temp dir");
        let foreign = open(other.path());
        foreign.append(&key(2), 2, b"other").unwrap();
        drop(foreign);
        std::fs::copy(segment_path(other.path(), 1), segment_path(dir.path(), 7)).unwrap();
        let (log, set_aside) = ValueLog::open(dir.path()).expect("opens");
        assert_eq!(set_aside.files.len(), 1, "{set_aside:?}");
        assert_eq!(log.read(a, &key(1)).unwrap().unwrap(), b"new");
    }
}
