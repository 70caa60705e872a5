//! SSE streams split anywhere. The input is `[n][n piece lengths][stream...]`: the stream is
//! fed to `SseWatch::feed` whole, in pieces of the given lengths (cycled), and one byte at a
//! time; the events, usage, `[DONE]`, error and invalid chunk must be the same each way. A
//! configured key (and one it contains) never reaches an event, and every event is JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::upstream::scrub::Scrubber;
use spillway::upstream::sse::SseWatch;

const SECRET: &str = "gsk_fuzz_secret_0123456789";
const SECRET_PART: &str = "gsk_fuzz_secret";

type View = (
    Vec<String>,
    Option<(u64, u64)>,
    bool,
    Option<String>,
    Option<String>,
);

fn watch<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> View {
    let scrub = Scrubber::new([SECRET, SECRET_PART]);
    let mut w = SseWatch::default();
    let mut events = Vec::new();
    for piece in pieces {
        w.feed(piece, &scrub, &mut events);
    }
    (events, w.usage, w.done, w.error, w.invalid)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(n);
    let whole = watch(std::iter::once(stream));
    let mut pieces = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < stream.len() {
        let len = lengths
            .get(i % n.max(1))
            .map_or(stream.len(), |l| usize::from(*l).max(1));
        let end = (at + len).min(stream.len());
        pieces.push(&stream[at..end]);
        at = end;
        i += 1;
    }
    assert_eq!(watch(pieces.iter().copied()), whole, "split as {pieces:?}");
    assert_eq!(watch(stream.chunks(1)), whole, "fed one byte at a time");
    for event in &whole.0 {
        assert!(
            !event.contains(SECRET_PART),
            "a key reached an event: {event}"
        );
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(event).is_ok(),
            "{event}"
        );
    }
});
