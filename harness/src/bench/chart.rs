//! The bench as a picture: one panel per concurrency, a horizontal bar per subject (requests per
//! second, p50 and p99 written beside it), so the floor, spillway and the peers read at a glance.

use std::fmt::Write;

use super::report::Row;
use super::table::micros;
use crate::svg::escape;

const WIDTH: f64 = 900.0;
const LABEL: f64 = 190.0;
const BAR_MAX: f64 = 470.0;
const BAR_H: f64 = 18.0;
const GAP: f64 = 6.0;
const PANEL_HEAD: f64 = 34.0;

fn color(row: &Row) -> &'static str {
    match row.subject.as_str() {
        "direct" => "#7f7f7f",
        "forwarder" => "#9ecae1",
        "spillway miss" => "#1f77b4",
        "spillway hit" => "#2ca02c",
        _ => "#ff7f0e",
    }
}

/// The chart, as a standalone SVG document.
pub fn render_svg(rows: &[Row], title: &str) -> String {
    let mut levels: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
    levels.dedup();
    let panel_rows = |c: usize| rows.iter().filter(|r| r.concurrency == c).count() as f64;
    let height = 50.0
        + levels
            .iter()
            .map(|&c| PANEL_HEAD + panel_rows(c) * (BAR_H + GAP) + 16.0)
            .sum::<f64>();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = write!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{}" y="28" font-size="17" text-anchor="middle" fill="#222">{}</text>"##,
        WIDTH / 2.0,
        escape(title)
    );
    let mut y = 50.0;
    for c in levels {
        let panel: Vec<&Row> = rows.iter().filter(|r| r.concurrency == c).collect();
        let max = panel.iter().map(|r| r.rps).fold(0.0, f64::max).max(1.0);
        let _ = write!(
            out,
            r##"<text x="12" y="{:.1}" font-size="14" font-weight="bold" fill="#333">concurrency {c}: requests per second</text>"##,
            y + 18.0
        );
        y += PANEL_HEAD;
        for r in panel {
            let name = if r.kind == "stream" {
                format!("{} (stream)", r.subject)
            } else {
                r.subject.clone()
            };
            let w = (r.rps / max * BAR_MAX).clamp(0.0, BAR_MAX).max(1.0);
            let opacity = if r.kind == "stream" { "0.6" } else { "1" };
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{}</text><rect x="{LABEL}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}" fill-opacity="{opacity}"><title>{} at concurrency {c}: {:.0} req/s</title></rect><text x="{:.1}" y="{:.1}" fill="#222">{:.0}  ·  p50 {}  ·  p99 {}</text>"##,
                LABEL - 8.0,
                y + BAR_H - 5.0,
                escape(&name),
                color(r),
                escape(&name),
                r.rps,
                LABEL + w + 6.0,
                y + BAR_H - 5.0,
                r.rps,
                micros(r.p50_us),
                micros(r.p99_us),
            );
            y += BAR_H + GAP;
        }
        y += 16.0;
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(subject: &str, kind: &str, concurrency: usize, rps: f64) -> Row {
        Row {
            subject: subject.into(),
            kind: kind.into(),
            concurrency,
            rps,
            p50_us: 120,
            p99_us: 15_000,
            p999_us: 20_000,
            requests: 10,
            failures: 0,
            invalid: 0,
            rss_kib: Some(1024),
            unstored: None,
            runs: Vec::new(),
        }
    }

    #[test]
    fn one_bar_per_row_scaled_to_the_fastest_of_its_panel() {
        let rows = vec![
            row("direct", "chat", 1, 1000.0),
            row("spillway miss", "chat", 1, 500.0),
            row("direct", "chat", 64, 8000.0),
            row("litellm", "chat", 64, 0.0),
        ];
        let svg = render_svg(&rows, "bench <test>");
        assert_eq!(svg.matches("<rect x=").count(), 4);
        assert!(svg.contains(&format!("width=\"{BAR_MAX:.1}\"")));
        assert!(svg.contains(&format!("width=\"{:.1}\"", BAR_MAX / 2.0)));
        assert!(svg.contains("bench &lt;test&gt;"));
        assert!(svg.contains("concurrency 64"));
        assert!(svg.contains("p99 15.0 ms"));
        assert!(!svg.contains("NaN"));
    }
}
