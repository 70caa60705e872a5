//! Opening the index a cache directory is configured with: where each kind lives, a damaged
//! index set aside (renamed) rather than used, and a directory written with one kind adopted by
//! the other, entry by entry.

use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::index::{IndexKind, KeyIndex};
use crate::sled_index::SledIndex;
use crate::slot_index::SlotIndex;

/// Where the sled index lives in a cache directory.
const SLED_DIR: &str = "index";
/// Where the file index lives in a cache directory.
const SLOTS_FILE: &str = "index.slots";

/// An index file (or folder) that could not be read, renamed aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Where it is now.
    pub path: PathBuf,
    /// Why it could not be used.
    pub why: String,
}

/// Where an index of `kind` lives in cache directory `dir`.
fn index_path(dir: &Path, kind: IndexKind) -> PathBuf {
    match kind {
        IndexKind::File => dir.join(SLOTS_FILE),
        IndexKind::Sled => dir.join(SLED_DIR),
    }
}

/// Opens an index of `kind` in `dir`. A panic inside the index library on damaged files is
/// caught and reported as an error, so a bad file never takes the process down.
fn open_kind(
    dir: &Path,
    kind: IndexKind,
    index_memory: u64,
) -> Result<Box<dyn KeyIndex>, StoreError> {
    let path = index_path(dir, kind);
    let opened = std::panic::catch_unwind(|| -> Result<Box<dyn KeyIndex>, StoreError> {
        Ok(match kind {
            IndexKind::File => Box::new(SlotIndex::open(&path)?),
            IndexKind::Sled => Box::new(SledIndex::open(&path, index_memory)?),
        })
    });
    opened.unwrap_or_else(|_| {
        Err(StoreError(format!(
            "{}: the index library failed while reading it",
            path.display()
        )))
    })
}

/// Renames the index at `path` to `path.damaged` (replacing an earlier one), for a look later.
fn set_aside(path: &Path, why: String) -> Result<SetAside, StoreError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".damaged");
    let aside = PathBuf::from(aside);
    if aside.is_dir() {
        let _ = std::fs::remove_dir_all(&aside);
    } else if aside.exists() {
        let _ = std::fs::remove_file(&aside);
    }
    std::fs::rename(path, &aside)
        .map_err(|e| StoreError(format!("cannot move {} aside: {e}", path.display())))?;
    Ok(SetAside { path: aside, why })
}

/// Opens the index of kind `kind` in cache directory `dir`. An index of the other kind found
/// there (a cache written by an earlier configuration) is copied in and then deleted, so its
/// entries stay reachable. An index that cannot be read is renamed aside (`*.damaged`) and an
/// empty one opened in its place; the caller rebuilds it from the value log.
pub fn open_index(
    dir: &Path,
    kind: IndexKind,
    index_memory: u64,
) -> Result<(Box<dyn KeyIndex>, Vec<SetAside>), StoreError> {
    let mut damaged = Vec::new();
    let path = index_path(dir, kind);
    let opened = match open_kind(dir, kind, index_memory) {
        Ok(index) => index,
        Err(e) if path.exists() => {
            damaged.push(set_aside(&path, e.to_string())?);
            open_kind(dir, kind, index_memory)?
        }
        Err(e) => return Err(e),
    };
    let other = match kind {
        IndexKind::File => IndexKind::Sled,
        IndexKind::Sled => IndexKind::File,
    };
    let other_path = index_path(dir, other);
    if other_path.exists() {
        let adopted = open_kind(dir, other, index_memory)
            .and_then(|from| adopt(from.as_ref(), opened.as_ref()));
        match adopted {
            Ok(()) => {
                let removed = if other_path.is_dir() {
                    std::fs::remove_dir_all(&other_path)
                } else {
                    std::fs::remove_file(&other_path)
                };
                remove(&other_path, removed)?;
            }
            Err(e) => damaged.push(set_aside(&other_path, e.to_string())?),
        }
    }
    Ok((opened, damaged))
}

/// Deletes the index of kind `kind` in `dir` and opens an empty one.
pub fn reset_index(
    dir: &Path,
    kind: IndexKind,
    index_memory: u64,
) -> Result<Box<dyn KeyIndex>, StoreError> {
    let path = index_path(dir, kind);
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(&path)
    } else if path.exists() {
        std::fs::remove_file(&path)
    } else {
        Ok(())
    };
    remove(&path, removed)?;
    open_kind(dir, kind, index_memory)
}

/// Copies every entry of `from` into `into` and makes it durable.
fn adopt(from: &dyn KeyIndex, into: &dyn KeyIndex) -> Result<(), StoreError> {
    let mut failed = None;
    from.for_each(&mut |key, entry| {
        if failed.is_none()
            && let Err(e) = into.insert(&key, entry)
        {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(g) = from.generation()? {
        into.set_generation(g)?;
    }
    into.flush()?;
    tracing::info!(entries = into.len(), "cache index converted");
    Ok(())
}

fn remove(path: &Path, result: std::io::Result<()>) -> Result<(), StoreError> {
    result.map_err(|e| StoreError(format!("cannot remove {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;
    use crate::index::tests::entry;

    #[test]
    fn a_cache_changes_index_kind_without_losing_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = |i: u8| Key([i; 32]);
        {
            let (sled, _) = open_index(dir.path(), IndexKind::Sled, 1 << 20).expect("opens");
            for i in 0..50 {
                sled.insert(&key(i), entry(u64::from(i))).unwrap();
            }
            sled.flush().unwrap();
        }
        let (file, damaged) = open_index(dir.path(), IndexKind::File, 1 << 20).expect("converts");
        assert!(damaged.is_empty());
        assert_eq!(file.len(), 50);
        assert_eq!(file.get(&key(7)).unwrap(), Some(entry(7)));
        assert!(
            !dir.path().join(SLED_DIR).exists(),
            "the sled index is gone"
        );
        drop(file);
        let (back, _) = open_index(dir.path(), IndexKind::Sled, 1 << 20).expect("converts back");
        assert_eq!(back.len(), 50);
        assert_eq!(back.get(&key(49)).unwrap(), Some(entry(49)));
        assert!(!dir.path().join(SLOTS_FILE).exists());
    }
}
