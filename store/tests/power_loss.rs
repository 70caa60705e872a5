//! A power loss (or a restore from an older copy) takes from each of the store's files what was
//! not yet on disk, independently: the value log may lose its tail, at a record's boundary or
//! inside a record, or be deleted; the index may lose recent writes, lose its tail, or survive
//! while the log does not. After every such loss, the reopened store — written to again, so
//! that new records could land where old ones were — serves each key only its own answer, or a
//! miss (ARCHITECTURE.md, invariant 6).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use spillway_store::DiskStore;
use spillway_store::IndexKind;
use spillway_store::Key;
use spillway_store::{NewRecord, Store};

/// A file tree, as bytes by relative path.
type Snapshot = BTreeMap<PathBuf, Vec<u8>>;

fn key(i: u32) -> Key {
    Key(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

/// The only records ever written for key `i`: its number, a version, and padding. Most are of
/// one length, as answers to similar prompts are, so a record written after a loss can fill
/// exactly the place another key's record had; every fourth key's length varies.
fn value(i: u32, version: u32) -> Vec<u8> {
    let mut v = format!("key {i} version {version} ").into_bytes();
    let len = if i.is_multiple_of(4) {
        40 + ((i * 37 + version * 11) % 300) as usize
    } else {
        64
    };
    v.resize(len, b'.');
    v
}

fn is_written_value(i: u32, bytes: &[u8]) -> bool {
    (0..4).any(|version| value(i, version) == bytes)
}

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("inside").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("readable file"));
            }
        }
    }
    out
}

fn restore(dir: &Path, files: &Snapshot) {
    let _ = std::fs::remove_dir_all(dir);
    for (rel, bytes) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
}

fn is_log(rel: &Path) -> bool {
    rel.starts_with("values") && rel.extension().is_some_and(|e| e == "log")
}

const KEYS: u32 = 48;

/// Writes the store's history: every key, then a second version of a third of them, removals,
/// and a third round; a snapshot after each batch (the store flushed, as a sync would).
fn write_history(dir: &Path, kind: IndexKind) -> Vec<Snapshot> {
    let store = DiskStore::open(dir, kind, 1 << 20).expect("opens");
    let mut snapshots = Vec::new();
    let mut batch = |items: Vec<(u32, u32)>, removals: Vec<u32>| {
        let records: Vec<(Key, Vec<u8>)> =
            items.iter().map(|&(i, v)| (key(i), value(i, v))).collect();
        let new: Vec<NewRecord<'_>> = records
            .iter()
            .map(|(k, r)| NewRecord {
                key: k,
                created: 1,
                record: r,
            })
            .collect();
        store.put_all(&new).expect("put");
        let doomed: Vec<Key> = removals.into_iter().map(key).collect();
        store.remove_all(&doomed).expect("remove");
        store.flush().expect("flush");
        snapshots.push(snapshot(dir));
    };
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(8) {
        batch(chunk.iter().map(|&i| (i, 0)).collect(), vec![]);
    }
    batch(
        (0..KEYS).step_by(3).map(|i| (i, 1)).collect(),
        vec![1, 4, 7],
    );
    batch((0..KEYS).step_by(5).map(|i| (i, 2)).collect(), vec![10, 20]);
    drop(store);
    snapshots
}

/// Every place a loss may cut the log file `bytes`: each frame boundary, the first byte of each
/// frame, and the middle of each record, found from the frames' own length fields.
fn cut_points(bytes: &[u8]) -> Vec<usize> {
    let header = 32;
    let frame_header = 48;
    let mut cuts = vec![0, header / 2, header];
    let mut at = header;
    while at + frame_header <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let end = at + frame_header + len;
        cuts.extend([
            at + 1,
            at + frame_header / 2,
            at + frame_header + len / 2,
            end,
        ]);
        at = end;
    }
    cuts.retain(|c| *c <= bytes.len());
    cuts
}

/// Opens the store in `dir` after a loss, writes new records over where old ones may have been,
/// and checks every key: its own answer or a miss. Returns how many keys were served.
fn check_after_loss(dir: &Path, kind: IndexKind, case: &str) -> usize {
    let store = DiskStore::open(dir, kind, 1 << 20)
        .unwrap_or_else(|e| panic!("{case}: the store must open after a loss: {e}"));
    // New answers, for new keys and for old ones, so freed offsets would be written again.
    for i in (KEYS..KEYS + 24).chain([2, 5, 8]) {
        store
            .put(&key(i), 2, &value(i, 3))
            .expect("put after the loss");
    }
    let mut served = 0;
    for i in 0..KEYS + 24 {
        if let Some(bytes) = store.get(&key(i)).expect("get") {
            assert!(
                is_written_value(i, &bytes),
                "{case}: key {i} was served another entry's bytes: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            );
            served += 1;
        }
    }
    // Freshly written answers survive the loss's aftermath whole.
    for i in KEYS..KEYS + 24 {
        assert_eq!(
            store.get(&key(i)).expect("get").as_deref(),
            Some(&value(i, 3)[..]),
            "{case}: key {i} written after the loss"
        );
    }
    served
}

fn losses(kind: IndexKind) {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("cache");
    let history = write_history(&dir, kind);
    let last = history.last().expect("a history").clone();
    let mut cases = 0;
    let mut served = 0;

    // The log loses its tail anywhere, the index as it was last written.
    let logs: Vec<&PathBuf> = last.keys().filter(|p| is_log(p)).collect();
    for log in &logs {
        for cut in cut_points(&last[*log]) {
            let mut files = last.clone();
            files.get_mut(*log).expect("the log").truncate(cut);
            restore(&dir, &files);
            served += check_after_loss(&dir, kind, &format!("{kind:?}: log cut at {cut}"));
            cases += 1;
        }
    }
    // The index as of every earlier batch, the log whole (the index lost recent writes), and
    // the log as of every earlier batch, the index whole (the log lost recent writes).
    for (n, earlier) in history.iter().enumerate() {
        let mut older_index = last.clone();
        let mut older_log = earlier.clone();
        for (rel, bytes) in earlier {
            if !is_log(rel) {
                older_index.insert(rel.clone(), bytes.clone());
            }
        }
        for (rel, bytes) in &last {
            if !is_log(rel) {
                older_log.insert(rel.clone(), bytes.clone());
            }
        }
        restore(&dir, &older_index);
        served += check_after_loss(&dir, kind, &format!("{kind:?}: index of batch {n}"));
        restore(&dir, &older_log);
        served += check_after_loss(&dir, kind, &format!("{kind:?}: log of batch {n}"));
        cases += 2;
    }
    // The log deleted (and a fresh one made), the index left.
    let mut no_log = last.clone();
    no_log.retain(|rel, _| !rel.starts_with("values"));
    restore(&dir, &no_log);
    check_after_loss(&dir, kind, &format!("{kind:?}: log deleted"));
    // The index's files cut short or with their tails zeroed.
    for (rel, bytes) in last.iter().filter(|(rel, _)| !rel.starts_with("values")) {
        for keep in [0, bytes.len() / 3, bytes.len().saturating_sub(100)] {
            let mut cut = last.clone();
            cut.get_mut(rel).expect("the file").truncate(keep);
            restore(&dir, &cut);
            check_after_loss(
                &dir,
                kind,
                &format!("{kind:?}: {} cut at {keep}", rel.display()),
            );
            let mut zeroed = last.clone();
            let file = zeroed.get_mut(rel).expect("the file");
            for b in file.iter_mut().skip(keep) {
                *b = 0;
            }
            restore(&dir, &zeroed);
            check_after_loss(
                &dir,
                kind,
                &format!("{kind:?}: {} zeroed from {keep}", rel.display()),
            );
            cases += 2;
        }
    }
    assert!(cases > 100, "{cases} cases");
    assert!(
        served > 0,
        "no case served anything: the test proves nothing"
    );
}

#[test]
fn the_file_index_serves_no_wrong_answer_after_any_loss_of_unsynced_writes() {
    losses(IndexKind::File);
}

#[test]
fn the_sled_index_serves_no_wrong_answer_after_any_loss_of_unsynced_writes() {
    losses(IndexKind::Sled);
}
