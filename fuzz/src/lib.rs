//! What the fuzz targets share: an independent reading of the value log's frame layout, to
//! check a scan against.

use spillway_store::Key;
use spillway_store::vlog::{FRAME_HEADER, Location, SEGMENT_HEADER, Scanned};

/// A frame as the value log writes it (the layout in `vlog.rs`'s documentation):
/// `[len u32][crc u32][key 32][created u64][record]`, the CRC over all but itself.
pub fn frame_bytes(key: &Key, created: u64, record: &[u8]) -> Vec<u8> {
    let len = record.len() as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&key.0);
    crc.update(&created.to_le_bytes());
    crc.update(record);
    [
        len.to_le_bytes().as_slice(),
        &crc.finalize().to_le_bytes(),
        &key.0,
        &created.to_le_bytes(),
        record,
    ]
    .concat()
}

/// What a scan of segment `segment` holding `file` must return: every whole frame whose CRC
/// holds, up to the first that is cut short or does not.
pub fn expected_scan(segment: u32, file: &[u8]) -> Vec<Scanned> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER as usize;
    while file.len() - at >= FRAME_HEADER {
        let head = &file[at..at + FRAME_HEADER];
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if file.len() - at - FRAME_HEADER < len as usize {
            break;
        }
        let key = Key(head[8..40].try_into().expect("32 bytes"));
        let created = u64::from_le_bytes(head[40..48].try_into().expect("8 bytes"));
        let record = &file[at + FRAME_HEADER..at + FRAME_HEADER + len as usize];
        if frame_bytes(&key, created, record)[4..8] != head[4..8] {
            break;
        }
        out.push(if created == u64::MAX {
            Scanned::Removal(key)
        } else {
            Scanned::Record {
                key,
                created,
                loc: Location {
                    segment,
                    offset: at as u64,
                    len,
                },
            }
        });
        at += FRAME_HEADER + len as usize;
    }
    out
}
