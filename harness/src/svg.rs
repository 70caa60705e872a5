//! The pieces the harness's pictures (scenario timelines, plans, bench charts) are drawn with:
//! a standalone SVG document's head, text, lines and rectangles with numbers printed short, the
//! shared styles and palette, and text made safe for XML.

use std::fmt::Write;

/// A title: large, centred.
pub const TITLE: &str = r##"font-size="18" text-anchor="middle" fill="#222""##;
/// A legend or caption label.
pub const LABEL: &str = r##"font-size="11" fill="#222""##;
/// A value axis's tick label (right-aligned to the axis).
pub const Y_TICK: &str = r##"font-size="10" text-anchor="end" fill="#555""##;
/// A horizontal axis's tick label (centred under its tick).
pub const X_TICK: &str = r##"font-size="10" text-anchor="middle" fill="#555""##;
/// A gridline.
pub const GRID: &str = r##"stroke="#e4e4e4""##;
/// A plot's axes or frame.
pub const AXES: &str = r##"fill="none" stroke="#888""##;

/// Key series colours, in the order series get them. Each has its own hue and its own
/// lightness step (CIELAB L* 21, 75, 44, 54, 34, 65: at least 9 apart), so up to six keys
/// stay apart on screen, for the colour-blind and in grey; none is paler than L* 75, so a
/// line reads on white. A seventh series repeats the first colour.
pub const PALETTE: [&str; 6] = [
    "#08306b", // navy
    "#e8b010", // gold
    "#c51b7d", // magenta
    "#009082", // teal
    "#5e3c99", // purple
    "#4cb23e", // green
];
/// The start of a standalone SVG document `width` × `height` on white (end it with `</svg>`).
pub fn head(width: u32, height: u32) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\">\n\
         <rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n"
    )
}

/// A line from one point to another, in `style`.
pub fn line(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
    let [x1, y1, x2, y2] = [x1, y1, x2, y2].map(n);
    let _ = writeln!(
        out,
        r#"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {style}/>"#
    );
}

/// A rectangle `[x, y, width, height]` filled with `fill`.
pub fn rect(out: &mut String, xywh: [f64; 4], fill: &str) {
    let [x, y, w, h] = xywh.map(n);
    let _ = writeln!(
        out,
        r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}"/>"#
    );
}

/// `s` at a point, in `style`.
pub fn text(out: &mut String, (x, y): (f64, f64), style: &str, s: &str) {
    let (x, y, s) = (n(x), n(y), escape(s));
    let _ = writeln!(out, r#"<text x="{x}" y="{y}" {style}>{s}</text>"#);
}

/// A step of 1, 2, 3, 4, 5, 6 or 8 times a power of ten giving at most 6 gridlines up to `top`;
/// at least 1, as the values are counts.
pub fn nice_step(top: f64) -> f64 {
    let mag = 10f64.powf((top / 6.0).log10().floor()).max(1.0);
    let steps = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0].map(|m| m * mag);
    let fits = |step: &f64| top / step <= 6.0;
    steps.into_iter().find(fits).unwrap_or(10.0 * mag)
}

/// A coordinate with at most one decimal; never "NaN" or "inf".
pub fn n(v: f64) -> String {
    let s = format!("{:.1}", if v.is_finite() { v } else { 0.0 });
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// Text made safe for XML content and attributes; control characters are dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}
