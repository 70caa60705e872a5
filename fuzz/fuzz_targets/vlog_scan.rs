//! Value-log segments with any tail. A segment is made by the public API (`ValueLog::open`,
//! `begin`, `append_all`: the real header and two real frames); each input is appended to a
//! copy of it, the log is reopened and scanned. That never panics; the segment is not set
//! aside; the scan returns exactly the whole frames whose CRC holds, up to the first that is
//! cut short or does not (an independent reading of the layout says which), so never a record
//! whose CRC fails; and every record it returns reads back (`ValueLog::read`) byte for byte.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spillway_fuzz::expected_scan;
use spillway_store::Key;
use spillway_store::vlog::{FRAME_HEADER, Frame, Scanned, ValueLog};

/// A directory holding a log's `generation` file, the number of its segment, and that
/// segment's bytes as the log wrote them.
struct Template {
    dir: tempfile::TempDir,
    segment: u32,
    bytes: Vec<u8>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (log, _) = ValueLog::open(dir.path()).expect("opens");
        log.begin(0).expect("begins");
        log.append_all(&[
            Frame {
                key: &Key([1; 32]),
                created: 1_750_000_000,
                record: Some(b"a record"),
            },
            Frame {
                key: &Key([2; 32]),
                created: 0,
                record: None,
            },
        ])
        .expect("appends");
        log.sync().expect("syncs");
        let segment = log.segments().1;
        drop(log);
        let bytes = std::fs::read(segment_path(&dir, segment)).expect("reads");
        Template {
            dir,
            segment,
            bytes,
        }
    })
}

fn segment_path(dir: &tempfile::TempDir, segment: u32) -> PathBuf {
    dir.path().join(format!("values-{segment:08}.log"))
}

fuzz_target!(|data: &[u8]| {
    let t = template();
    let file = [t.bytes.as_slice(), data].concat();
    let expected = expected_scan(t.segment, &file);
    std::fs::write(segment_path(&t.dir, t.segment), &file).expect("writes the segment");
    let (log, set_aside) = ValueLog::open(t.dir.path()).expect("reopens");
    assert!(set_aside.files.is_empty(), "its own segment was set aside");
    let mut seen = Vec::new();
    log.scan(&mut |s| seen.push(s)).expect("scans");
    assert!(expected.len() >= 2, "the frames the log wrote are whole");
    assert_eq!(seen, expected);
    for s in &seen {
        if let Scanned::Record { key, loc, .. } = s {
            let record = log
                .read(*loc, key)
                .expect("a scanned record reads")
                .expect("present");
            let at = loc.offset as usize + FRAME_HEADER;
            assert_eq!(&record[..], &file[at..at + loc.len as usize]);
        }
    }
});
