//! Keys as the HTTP control plane shows them by default: a stable mask (a few leading
//! characters, `…`, and a short blake3 hex of the whole key), never the key itself. Two keys
//! with the same prefix still get different masks, and a key always gets the same one, so
//! masked stats and journals can still be followed key by key.

use crate::journal::JournalEntry;
use crate::stats::Stats;

/// Leading characters a mask shows, at most (and never more than half the key).
const SHOWN: usize = 4;

/// Hex digits of the key's blake3 hash in a mask.
const HASH_DIGITS: usize = 6;

/// The mask of a key, e.g. `mock…a1b2c3` for `mock-key`.
pub fn mask_key(key: &str) -> String {
    let shown = (key.chars().count() / 2).min(SHOWN);
    let prefix: String = key.chars().take(shown).collect();
    let hash = blake3::hash(key.as_bytes()).to_hex();
    format!("{prefix}…{}", &hash[..HASH_DIGITS])
}

/// Stats with every key masked.
pub fn mask_stats(mut stats: Stats) -> Stats {
    stats.keys = std::mem::take(&mut stats.keys)
        .into_iter()
        .map(|(key, models)| (mask_key(&key), models))
        .collect();
    stats
}

/// Journal entries with every key masked.
pub fn mask_journal(mut entries: Vec<JournalEntry>) -> Vec<JournalEntry> {
    for entry in &mut entries {
        if let Some(key) = entry.key.take() {
            entry.key = Some(mask_key(&key));
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_shows_a_short_prefix_and_a_stable_hash_never_the_key() {
        let mask = mask_key("mock-key");
        assert!(mask.starts_with("mock…"), "{mask}");
        assert_eq!(mask.chars().count(), 4 + 1 + HASH_DIGITS, "{mask}");
        assert_eq!(mask, mask_key("mock-key"), "stable");
        for len in 1..=40 {
            let key: String = "gsk_abcdefghijklmnopqrstuvwxyz0123456789_"
                .chars()
                .take(len)
                .collect();
            assert!(!mask_key(&key).contains(&key), "{key} shows whole");
        }
        assert!(mask_key("").starts_with('…'));
        assert!(mask_key("ключ-ключ").starts_with("ключ…"), "by characters");
    }

    #[test]
    fn keys_sharing_a_prefix_get_different_masks() {
        assert_ne!(mask_key("mock-key-1"), mask_key("mock-key-2"));
    }

    #[test]
    fn stats_and_journal_keep_their_figures_under_masked_keys() {
        let mut stats = Stats::default();
        stats.keys.insert("mock-key".into(), Default::default());
        let masked = mask_stats(stats);
        assert_eq!(
            masked.keys.keys().cloned().collect::<Vec<_>>(),
            vec![mask_key("mock-key")]
        );
        let entries = mask_journal(vec![
            JournalEntry {
                seq: 1,
                key: Some("mock-key".into()),
                ..JournalEntry::default()
            },
            JournalEntry {
                seq: 2,
                ..JournalEntry::default()
            },
        ]);
        assert_eq!(entries[0].key, Some(mask_key("mock-key")));
        assert_eq!((entries[0].seq, entries[1].key.as_deref()), (1, None));
    }
}
