//! A scenario's timeline as one standalone SVG picture, readable at a glance.
//!
//! The top panel plots, per mock key, the requests it admitted in the trailing 60 simulated
//! seconds against that key's RPM limit (dashed), with every 429 it answered marked by a red "×".
//! The bottom panel stacks what clients saw per time bucket (upstream, cache hit, coalesced,
//! refused, failed), with an orange triangle over buckets where a fallback happened. Both panels
//! share an x axis in simulated time; the legend sits in a column on the right.

/// One mock key's traffic for one model.
#[derive(Debug, Clone, Default)]
pub struct KeySeries {
    /// e.g. "groq/gk1 · llama-3.1-8b-instant"
    pub label: String,
    /// The provider (mock) name, e.g. "groq": colours are given in provider order.
    pub provider: String,
    /// Simulated times (seconds from the start) at which this key admitted a request.
    pub admitted: Vec<f64>,
    /// Simulated times at which this key answered 429.
    pub rejected: Vec<f64>,
    /// Simulated times at which this key failed (5xx, reset, hang): drawn as dark "!".
    pub failed: Vec<f64>,
    /// Requests-per-minute limit of this key, if any (drawn as a dashed line).
    pub rpm_limit: Option<u64>,
}

/// What a client saw for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by a provider (not from cache); `fallback` when it took more than one attempt.
    Upstream {
        /// The request took more than one attempt.
        fallback: bool,
    },
    /// Answered from the cache.
    Hit,
    /// Joined an identical in-flight request.
    Coalesced,
    /// The proxy answered 429.
    Refused,
    /// Any other error status or a transport error.
    Failed,
}

/// One client request.
#[derive(Debug, Clone, Copy)]
pub struct ClientEvent {
    /// Simulated time the request was sent (seconds from the start).
    pub t: f64,
    /// What the client got back.
    pub outcome: Outcome,
}

/// Everything the picture shows.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Shown at the top of the picture.
    pub title: String,
    /// Simulated seconds the run covered (x axis from 0 to this; if 0, derive from the data).
    pub duration: f64,
    /// One line per mock key and model.
    pub series: Vec<KeySeries>,
    /// Every client request, in any order.
    pub clients: Vec<ClientEvent>,
}

use std::fmt::Write;

use crate::svg::{
    self, AXES, GRID, LABEL, PALETTE, TITLE, X_TICK, Y_TICK, line, n, nice_step, rect, text,
};

const PLOT_LEFT: f64 = 56.0;
const PLOT_RIGHT: f64 = 700.0;
const LEGEND_X: f64 = 724.0;
const RATE_TOP: f64 = 66.0;
const RATE_BOTTOM: f64 = 286.0;
const CLIENT_TOP: f64 = 334.0;
const CLIENT_BOTTOM: f64 = 496.0;
const SAMPLES: usize = 300;
const BUCKETS: usize = 60;
const WINDOW: f64 = 60.0;
const LEGEND_MAX_SERIES: usize = 10;
const HEADING: &str = r##"font-size="13" font-weight="bold" fill="#333""##;
const NOTE: &str = r##"font-size="13" text-anchor="middle" fill="#888""##;
const CROSS: &str = r##"font-size="13" text-anchor="middle" dominant-baseline="central""##;
const REJECT: &str = r##"class="reject" fill="#d62728""##;
const FAILURE: &str = r##"class="failure" fill="#333333" font-weight="bold""##;
const HALO: &str = r#"stroke="white" stroke-width="3" paint-order="stroke""#;
const ORANGE: &str = "#ff8c00";
/// Outcome legend names and colors, in stacking order (bottom first).
const OUTCOMES: [(&str, &str); 5] = [
    ("upstream", "#4682b4"),
    ("cache hit", "#2ca02c"),
    ("coalesced", "#98df8a"),
    ("refused (429)", "#d62728"),
    ("failed", "#555555"),
];

/// The timeline as a standalone SVG document.
pub fn render_svg(timeline: &Timeline) -> String {
    let duration = x_extent(timeline);
    let colors = series_colors(&timeline.series);
    let mut out = svg::head(960, 560);
    text(&mut out, (480.0, 30.0), TITLE, &timeline.title);
    draw_rate_panel(&mut out, timeline, &colors, duration);
    draw_client_panel(&mut out, &timeline.clients, duration);
    draw_time_labels(&mut out, duration);
    draw_legend(&mut out, &timeline.series, &colors);
    out.push_str("</svg>\n");
    out
}

/// A plot area mapping (time, value) to pixels; `duration` and `y_max` are positive.
struct Frame {
    top: f64,
    bottom: f64,
    duration: f64,
    y_max: f64,
}

impl Frame {
    fn new(top: f64, bottom: f64, duration: f64, y_max: f64) -> Self {
        Frame {
            top,
            bottom,
            duration,
            y_max,
        }
    }
    fn x(&self, t: f64) -> f64 {
        PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * (t / self.duration).clamp(0.0, 1.0)
    }
    fn y(&self, v: f64) -> f64 {
        self.bottom - (self.bottom - self.top) * (v / self.y_max).clamp(0.0, 1.0)
    }
}

/// The x axis length: the given duration, else the latest time in the data, else one minute.
fn x_extent(tl: &Timeline) -> f64 {
    if tl.duration.is_finite() && tl.duration > 0.0 {
        return tl.duration;
    }
    let keys = tl.series.iter().flat_map(|s| [&s.admitted, &s.rejected]);
    let clients = tl.clients.iter().map(|c| c.t);
    let times = keys.flatten().copied().chain(clients);
    let latest = times.filter(|t| t.is_finite()).fold(0.0, f64::max);
    if latest > 0.0 { latest } else { WINDOW }
}

/// Finite times within [0, duration], sorted.
fn valid_times(times: &[f64], duration: f64) -> Vec<f64> {
    let in_range = |t: &f64| (0.0..=duration).contains(t);
    let mut v: Vec<f64> = times.iter().copied().filter(in_range).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// How many of the sorted `times` fall in the trailing window (t - 60 s, t].
fn trailing_count(sorted: &[f64], t: f64) -> usize {
    sorted.partition_point(|&x| x <= t) - sorted.partition_point(|&x| x <= t - WINDOW)
}

/// `trailing_count` of the sorted admitted times at each sample time.
fn rolling(sorted: &[f64], times: &[f64]) -> Vec<usize> {
    times.iter().map(|&t| trailing_count(sorted, t)).collect()
}

/// Palette colors by series, in provider order (a provider's keys take consecutive entries,
/// which differ in hue and lightness alike).
fn series_colors(series: &[KeySeries]) -> Vec<&'static str> {
    let first_seen = |p: &str| series.iter().position(|s| s.provider == p);
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_by_key(|&i| (first_seen(&series[i].provider), i));
    let mut colors = vec![PALETTE[0]; series.len()];
    for (next, i) in order.into_iter().enumerate() {
        colors[i] = PALETTE[next % PALETTE.len()];
    }
    colors
}

fn draw_rate_panel(out: &mut String, tl: &Timeline, colors: &[&str], duration: f64) {
    let dt = duration / (SAMPLES - 1) as f64;
    let times: Vec<f64> = (0..SAMPLES).map(|i| i as f64 * dt).collect();
    let admitted: Vec<Vec<f64>> = (tl.series.iter())
        .map(|s| valid_times(&s.admitted, duration))
        .collect();
    let rates: Vec<Vec<usize>> = admitted.iter().map(|a| rolling(a, &times)).collect();
    let peak = rates.iter().flatten().copied().max().unwrap_or(0);
    let limit = tl.series.iter().filter_map(|s| s.rpm_limit).max();
    let top = (peak as f64).max(limit.unwrap_or(0) as f64).max(5.0);
    let frame = Frame::new(RATE_TOP, RATE_BOTTOM, duration, top * 1.1);
    panel_frame(out, &frame, "Requests per minute, per key");
    if tl.series.is_empty() {
        text(out, (378.0, 180.0), NOTE, "no key data");
    }
    for (i, s) in tl.series.iter().enumerate() {
        let color = colors[i];
        let xy = |(t, c): (&f64, &usize)| format!("{},{}", n(frame.x(*t)), n(frame.y(*c as f64)));
        let points: Vec<String> = times.iter().zip(&rates[i]).map(xy).collect();
        let points = points.join(" ");
        let style = format!(r#"fill="none" stroke="{color}" stroke-width="1.6""#);
        let _ = writeln!(out, r#"<polyline points="{points}" {style}/>"#);
        if let Some(rpm) = s.rpm_limit {
            let y = frame.y(rpm as f64);
            let dashed = format!(r#"stroke="{color}" stroke-dasharray="6 4""#);
            line(out, (PLOT_LEFT, y), (PLOT_RIGHT, y), &dashed);
        }
        for t in valid_times(&s.rejected, duration) {
            let y = frame.y(trailing_count(&admitted[i], t) as f64);
            text(out, (frame.x(t), y), &format!("{REJECT} {CROSS}"), "×");
        }
        for t in valid_times(&s.failed, duration) {
            let y = frame.y(trailing_count(&admitted[i], t) as f64);
            text(out, (frame.x(t), y), &format!("{FAILURE} {CROSS}"), "!");
        }
    }
    draw_limit_labels(out, &tl.series, colors, &frame);
}

/// "limit N" at the right end of each dashed limit line, on top of the lines and markers.
fn draw_limit_labels(out: &mut String, series: &[KeySeries], colors: &[&str], frame: &Frame) {
    for (s, color) in series.iter().zip(colors) {
        if let Some(rpm) = s.rpm_limit {
            let at = (PLOT_RIGHT - 3.0, frame.y(rpm as f64) - 4.0);
            let style = format!(r#"font-size="10" text-anchor="end" fill="{color}" {HALO}"#);
            text(out, at, &style, &format!("limit {rpm}"));
        }
    }
}

/// Per-bucket counts in `OUTCOMES` order, and whether any request there used a fallback.
fn bucket_outcomes(clients: &[ClientEvent], duration: f64) -> Vec<([usize; 5], bool)> {
    let mut buckets = vec![([0usize; 5], false); BUCKETS];
    for c in clients.iter().filter(|c| (0.0..=duration).contains(&c.t)) {
        let b = ((c.t / duration * BUCKETS as f64) as usize).min(BUCKETS - 1);
        let slot = match c.outcome {
            Outcome::Upstream { fallback } => {
                buckets[b].1 |= fallback;
                0
            }
            Outcome::Hit => 1,
            Outcome::Coalesced => 2,
            Outcome::Refused => 3,
            Outcome::Failed => 4,
        };
        buckets[b].0[slot] += 1;
    }
    buckets
}

fn draw_client_panel(out: &mut String, clients: &[ClientEvent], duration: f64) {
    let buckets = bucket_outcomes(clients, duration);
    let totals = buckets.iter().map(|(c, _)| c.iter().sum::<usize>());
    let peak = totals.max().unwrap_or(0) as f64;
    let frame = Frame::new(CLIENT_TOP, CLIENT_BOTTOM, duration, peak.max(4.0) * 1.15);
    // The slices are a fixed share of the run, so their width is said, not assumed.
    let width_of_slice = fmt_span(duration / BUCKETS as f64);
    let heading = format!("What clients saw, per {width_of_slice} of simulated time");
    panel_frame(out, &frame, &heading);
    let width = (PLOT_RIGHT - PLOT_LEFT) / BUCKETS as f64;
    for (b, (counts, fallback)) in buckets.iter().enumerate() {
        let x = PLOT_LEFT + width * (b as f64 + 0.1);
        let mut base = 0;
        for (&count, (_, color)) in counts.iter().zip(OUTCOMES) {
            if count > 0 {
                let (y0, y1) = (frame.y((base + count) as f64), frame.y(base as f64));
                rect(out, [x, y0, width * 0.8, y1 - y0], color);
                base += count;
            }
        }
        if *fallback {
            triangle(out, x + width * 0.4, frame.y(base as f64) - 2.0);
        }
    }
}

/// Panel heading, value gridlines with labels, time gridlines, and the axes.
fn panel_frame(out: &mut String, frame: &Frame, title: &str) {
    text(out, (PLOT_LEFT, frame.top - 10.0), HEADING, title);
    let step = nice_step(frame.y_max);
    for k in 0..=(frame.y_max / step).floor() as usize {
        let (v, y) = (k as f64 * step, frame.y(k as f64 * step));
        line(out, (PLOT_LEFT, y), (PLOT_RIGHT, y), GRID);
        text(
            out,
            (PLOT_LEFT - 5.0, y + 3.5),
            Y_TICK,
            &format!("{}", v.round()),
        );
    }
    for t in time_ticks(frame.duration) {
        let x = frame.x(t);
        line(out, (x, frame.top), (x, frame.bottom), GRID);
    }
    let [l, r, t, b] = [PLOT_LEFT, PLOT_RIGHT, frame.top, frame.bottom].map(n);
    let _ = writeln!(out, r#"<path d="M{l} {t}V{b}H{r}" {AXES}/>"#);
}

/// Time tick labels under the bottom panel, plus the axis caption.
fn draw_time_labels(out: &mut String, duration: f64) {
    let frame = Frame::new(CLIENT_TOP, CLIENT_BOTTOM, duration, 1.0);
    for t in time_ticks(duration) {
        let at = (frame.x(t), CLIENT_BOTTOM + 16.0);
        text(out, at, X_TICK, &fmt_time(t));
    }
    let mid = (PLOT_LEFT + PLOT_RIGHT) / 2.0;
    text(out, (mid, CLIENT_BOTTOM + 36.0), X_TICK, "simulated time");
}

fn draw_legend(out: &mut String, series: &[KeySeries], colors: &[&str]) {
    let mut y = RATE_TOP - 10.0;
    let label_x = LEGEND_X + 26.0;
    text(out, (LEGEND_X, y), HEADING, "Keys");
    for (s, color) in series.iter().zip(colors).take(LEGEND_MAX_SERIES) {
        y += 16.0;
        swatch_line(out, y, &format!(r#"stroke="{color}" stroke-width="2""#));
        text(out, (label_x, y + 4.0), LABEL, &truncate(&s.label, 32));
    }
    let hidden = series.len().saturating_sub(LEGEND_MAX_SERIES);
    if hidden > 0 {
        y += 16.0;
        text(out, (label_x, y + 4.0), LABEL, &format!("+{hidden} more"));
    }
    let red_cross = format!(r##"fill="#d62728" {CROSS}"##);
    text(out, (LEGEND_X + 10.0, y + 22.0), &red_cross, "×");
    text(out, (label_x, y + 26.0), LABEL, "429 from this key");
    swatch_line(out, y + 38.0, r##"stroke="#555" stroke-dasharray="6 4""##);
    text(out, (label_x, y + 42.0), LABEL, "key's RPM limit");
    text(
        out,
        (LEGEND_X + 10.0, y + 58.0),
        &format!("{FAILURE} {CROSS}"),
        "!",
    );
    text(out, (label_x, y + 58.0), LABEL, "5xx / reset from this key");
    let mut y = CLIENT_TOP - 10.0;
    text(out, (LEGEND_X, y), HEADING, "Client requests");
    for (name, color) in OUTCOMES {
        y += 16.0;
        rect(out, [LEGEND_X + 3.0, y - 5.0, 14.0, 10.0], color);
        text(out, (label_x, y + 4.0), LABEL, name);
    }
    triangle(out, LEGEND_X + 10.0, y + 20.0);
    text(out, (label_x, y + 20.0), LABEL, "fallback in bucket");
}

fn swatch_line(out: &mut String, y: f64, style: &str) {
    line(out, (LEGEND_X, y), (LEGEND_X + 20.0, y), style);
}

/// A small downward-pointing orange triangle whose tip is at (x, y).
fn triangle(out: &mut String, x: f64, y: f64) {
    let [l, r, top, x, y] = [x - 4.0, x + 4.0, y - 6.0, x, y].map(n);
    let _ = writeln!(
        out,
        r#"<path d="M{l} {top}L{r} {top}L{x} {y}Z" fill="{ORANGE}"/>"#
    );
}

/// Round times (1 s … 1 day, then doublings) from 0 to `duration`, fewer than 11 of them.
fn time_ticks(duration: f64) -> Vec<f64> {
    const STEPS: [f64; 22] = [
        1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0,
        1200.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0,
    ];
    let fits = |step: &f64| duration / step < 10.0;
    let mut step = STEPS.into_iter().find(fits).unwrap_or(86400.0);
    while duration / step >= 10.0 {
        step *= 2.0;
    }
    let count = (duration / step + 1e-9).floor() as usize;
    (0..=count).map(|k| k as f64 * step).collect()
}

/// A slice's width to two significant digits: "0.1 s", "0.25 s", "2.1 s", "36 s", then as
/// [`fmt_time`] from two minutes.
fn fmt_span(s: f64) -> String {
    if s >= 120.0 {
        return fmt_time(s);
    }
    if s >= 10.0 {
        return format!("{s:.0} s");
    }
    let decimals = if s >= 1.0 || s <= 0.0 {
        1
    } else {
        (1.0 - s.log10().floor()) as usize
    };
    let t = format!("{s:.decimals$}");
    format!("{} s", t.trim_end_matches('0').trim_end_matches('.'))
}

/// "0s", "45s", "1m", "1m30s", "1h5m".
fn fmt_time(t: f64) -> String {
    let s = t.max(0.0).round() as u64;
    let parts = [(s / 3600, "h"), (s % 3600 / 60, "m"), (s % 60, "s")];
    let out: String = (parts.iter().filter(|(v, _)| *v > 0))
        .map(|(v, unit)| format!("{v}{unit}"))
        .collect();
    if out.is_empty() { "0s".to_owned() } else { out }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    s.chars().take(max - 1).chain(['…']).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics unless every tag is closed or self-closed, properly nested, and every `&` is an
    /// entity.
    fn assert_well_formed(svg: &str) {
        let body = svg.trim_start_matches(|c: char| c != '<');
        let body = match body.strip_prefix("<?xml") {
            Some(rest) => &rest[rest.find("?>").expect("unterminated declaration") + 2..],
            None => body,
        };
        assert!(body.trim_start().starts_with("<svg"), "no leading <svg");
        assert!(svg.trim_end().ends_with("</svg>"), "no trailing </svg>");
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            assert!(!text.contains('>'), "stray '>' in text {text:?}");
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
                let known = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];
                assert!(known.contains(&entity), "bad entity {entity:?}");
            }
            let close = open + rest[open..].find('>').expect("unterminated tag");
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
            assert!(tag.matches('"').count() % 2 == 0, "quotes in {tag:?}");
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(closing.trim()), "mismatched </{closing}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().expect("empty tag"));
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed tags {stack:?}");
        assert!(rest.trim().is_empty(), "content after the root element");
    }

    fn client(i: usize) -> ClientEvent {
        let outcome = match i % 6 {
            0 => Outcome::Upstream { fallback: false },
            1 => Outcome::Upstream { fallback: true },
            2 => Outcome::Hit,
            3 => Outcome::Coalesced,
            4 => Outcome::Refused,
            _ => Outcome::Failed,
        };
        ClientEvent {
            t: i as f64 * 1.4,
            outcome,
        }
    }

    fn sample() -> Timeline {
        let admitted: Vec<f64> = (0..90).map(|i| i as f64 * 1.5).collect();
        Timeline {
            title: "fallback under load".into(),
            duration: 180.0,
            series: vec![
                KeySeries {
                    label: "groq/gk1 · llama-3.1-8b-instant".into(),
                    provider: "groq".into(),
                    admitted: admitted.clone(),
                    rejected: vec![40.0, 41.5, 90.0],
                    failed: vec![120.0, 121.0],
                    rpm_limit: Some(30),
                },
                KeySeries {
                    label: "cerebras/ck1 · llama3.1-8b".into(),
                    provider: "cerebras".into(),
                    admitted: admitted.iter().map(|t| t + 20.0).collect(),
                    ..KeySeries::default()
                },
            ],
            clients: (0..120).map(client).collect(),
        }
    }

    #[test]
    fn full_timeline_shows_labels_limits_and_rejections() {
        let tl = sample();
        let svg = render_svg(&tl);
        assert_well_formed(&svg);
        assert!(svg.contains("groq/gk1 · llama-3.1-8b-instant"));
        assert!(svg.contains("cerebras/ck1 · llama3.1-8b"));
        assert!(svg.contains("limit 30"));
        assert_eq!(svg.matches(REJECT).count(), tl.series[0].rejected.len());
        // One marker per failure plus the legend's sample.
        assert_eq!(svg.matches(FAILURE).count(), tl.series[0].failed.len() + 1);
        assert!(svg.matches("×</text>").count() > tl.series[0].rejected.len());
        assert!(svg.contains(&format!("fill=\"{ORANGE}\"")));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_timeline_is_valid() {
        let svg = render_svg(&Timeline::default());
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn the_client_panel_says_how_wide_its_slices_are() {
        for (duration, width) in [
            (2.0, "0.033 s"),
            (6.0, "0.1 s"),
            (15.0, "0.25 s"),
            (127.9, "2.1 s"),
            (180.0, "3 s"),
            (7200.0, "2m"),
        ] {
            let tl = Timeline {
                duration,
                clients: vec![client(0)],
                ..Timeline::default()
            };
            let svg = render_svg(&tl);
            let heading = format!("What clients saw, per {width} of simulated time");
            assert!(svg.contains(&heading), "{duration}: no {heading:?}");
        }
    }

    #[test]
    fn degenerate_inputs_never_produce_nan() {
        let bad = vec![f64::NAN, -3.0, f64::INFINITY, 0.0];
        let tl = Timeline {
            duration: f64::NAN,
            series: vec![KeySeries {
                admitted: bad.clone(),
                rejected: bad,
                ..Default::default()
            }],
            clients: vec![ClientEvent {
                t: f64::NAN,
                outcome: Outcome::Hit,
            }],
            ..Default::default()
        };
        let svg = render_svg(&tl);
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let single = Timeline {
            series: vec![KeySeries {
                admitted: vec![5.0],
                rpm_limit: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_well_formed(&render_svg(&single));
    }

    #[test]
    fn text_is_escaped() {
        let tl = Timeline {
            title: "a <b> & \"c\" 'd'".into(),
            series: vec![KeySeries {
                label: "<&>\"".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let svg = render_svg(&tl);
        assert_well_formed(&svg);
        assert!(svg.contains("a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;"));
        assert!(svg.contains("&lt;&amp;&gt;&quot;"));
        assert!(!svg.contains("<&>"));
    }

    #[test]
    fn helpers() {
        assert_eq!(fmt_time(0.0), "0s");
        assert_eq!(fmt_time(90.0), "1m30s");
        assert_eq!(fmt_time(3900.0), "1h5m");
        assert_eq!(time_ticks(600.0).len(), 6);
        assert_eq!(trailing_count(&[0.0, 10.0, 59.0, 70.0], 60.0), 2);
        for d in [1.0, 45.0, 90.0, 3600.0, 1e5, 1e9] {
            assert!((2..=10).contains(&time_ticks(d).len()), "{d}");
        }
    }

    /// CIELAB lightness (0 black to 100 white) of `#rrggbb`, from its WCAG relative luminance:
    /// what is left of a colour when printed in grey.
    fn lightness(hex: &str) -> f64 {
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).expect("#rrggbb")) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let y = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
        if y > 216.0 / 24389.0 {
            116.0 * y.cbrt() - 16.0
        } else {
            y * 24389.0 / 27.0
        }
    }

    /// The hue of `#rrggbb`, in degrees.
    fn hue(hex: &str) -> f64 {
        let c = |i: usize| f64::from(u8::from_str_radix(&hex[i..i + 2], 16).expect("#rrggbb"));
        let (r, g, b) = (c(1), c(3), c(5));
        let (max, min) = (r.max(g).max(b), r.min(g).min(b));
        if max == min {
            return 0.0;
        }
        let d = max - min;
        let h = if max == r {
            (g - b) / d
        } else if max == g {
            (b - r) / d + 2.0
        } else {
            (r - g) / d + 4.0
        };
        (h * 60.0).rem_euclid(360.0)
    }

    #[test]
    fn up_to_six_series_differ_pairwise_in_lightness_and_hue() {
        // One provider with six keys, and the same six split between providers.
        for providers in [
            ["groq"; 6],
            ["groq", "groq", "groq", "cerebras", "cerebras", "openai"],
        ] {
            for count in 1..=6 {
                let series: Vec<KeySeries> = providers[..count]
                    .iter()
                    .map(|p| KeySeries {
                        provider: p.to_string(),
                        ..KeySeries::default()
                    })
                    .collect();
                let colors = series_colors(&series);
                for (i, a) in colors.iter().enumerate() {
                    for b in &colors[i + 1..] {
                        let turn = (hue(a) - hue(b)).abs();
                        let turn = turn.min(360.0 - turn);
                        assert!(turn >= 30.0, "{a} and {b}: hues {turn:.0}° apart");
                        let gap = (lightness(a) - lightness(b)).abs();
                        assert!(
                            gap >= 9.0,
                            "{a} and {b}: lightness {gap:.1} apart ({providers:?}, {count} series)"
                        );
                    }
                }
                // Readable on the white background: none is paler than a light grey.
                for c in &colors {
                    assert!(lightness(c) <= 76.0, "{c} is too pale");
                }
            }
        }
    }
}
