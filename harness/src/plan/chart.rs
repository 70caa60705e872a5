//! The plan as a picture (SVG): the goal's first metric against the primary provider's key
//! count, one line per tier (dashed with fallbacks kept), the goal's bound as a dashed grey
//! line. A filled dot met the whole goal; a hollow one is a run stopped at the goal's first
//! break, so its value is what had been seen by then (at least that much).

use std::fmt::Write;

use super::report::PlanReport;
use crate::expect::{Check, Op};
use crate::svg::{self, AXES, GRID, PALETTE, TITLE, X_TICK, Y_TICK, escape, line, nice_step, text};

const LEFT: f64 = 70.0;
const RIGHT: f64 = 700.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 460.0;
/// An axis's caption.
const CAPTION: &str = r##"font-size="11" text-anchor="middle" fill="#222""##;

/// One line of the chart: a search's runs as (keys, value, met the goal, stopped early).
struct Line {
    label: String,
    dashed: bool,
    points: Vec<(usize, f64, bool, bool)>,
}

/// The chart as a standalone SVG document.
pub fn render_svg(report: &PlanReport, title: &str) -> String {
    let Some(term) = report.goal_terms.first() else {
        return svg::head(960, 520) + "</svg>\n";
    };
    let lines = lines(report, term.metric);
    let bound = upper_bound(&term.check);
    let top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(bound)
        .fold(1.0, f64::max)
        * 1.1;
    let step = nice_step(top);
    let y_max = (top / step).ceil() * step;
    let max_keys = report.max_keys.max(2);
    let x = |k: usize| LEFT + (k - 1) as f64 / (max_keys - 1) as f64 * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - v / y_max * (BOTTOM - TOP);
    let mut out = svg::head(960, 520);
    text(&mut out, (480.0, 30.0), TITLE, title);
    axes(&mut out, max_keys, y_max, step, &x, &y, term.metric.name());
    if let Some(b) = bound {
        let dashed = r##"stroke="#888" stroke-dasharray="6 4""##;
        line(&mut out, (LEFT, y(b)), (RIGHT, y(b)), dashed);
        let note = r##"font-size="11" fill="#555""##;
        let goal = format!("goal: {}", term.text());
        text(&mut out, (RIGHT - 150.0, y(b) - 5.0), note, &goal);
    }
    for (i, line) in lines.iter().enumerate() {
        draw_line(&mut out, line, PALETTE[i % PALETTE.len()], &x, &y);
        legend(&mut out, i, line, PALETTE[i % PALETTE.len()]);
    }
    out.push_str("</svg>\n");
    out
}

/// One line per search, its runs sorted by key count.
fn lines(report: &PlanReport, metric: super::goal::Metric) -> Vec<Line> {
    report
        .searches
        .iter()
        .map(|s| {
            let mut points: Vec<(usize, f64, bool, bool)> = report
                .candidates
                .iter()
                .filter(|r| r.candidate.tier == s.tier && r.candidate.fallbacks == s.fallbacks)
                .map(|r| {
                    let v = r
                        .goal
                        .iter()
                        .find(|t| t.term.starts_with(metric.name()))
                        .map_or(0.0, |t| t.value);
                    (r.candidate.keys, v, r.pass, r.stopped)
                })
                .collect();
            points.sort_by_key(|p| p.0);
            let mut label = s.tier.clone();
            for f in &s.fallbacks {
                label.push_str(" + ");
                label.push_str(f);
            }
            Line {
                label,
                dashed: !s.fallbacks.is_empty(),
                points,
            }
        })
        .collect()
}

/// The value a check allows at most, if it says.
fn upper_bound(check: &Check) -> Option<f64> {
    match check {
        Check::None => Some(0.0),
        Check::All => None,
        Check::Compare(conds) => conds
            .iter()
            .filter(|(op, _)| matches!(op, Op::Lt | Op::Le | Op::Eq))
            .map(|(_, v)| *v)
            .reduce(f64::min),
    }
}

fn axes(
    out: &mut String,
    max_keys: usize,
    y_max: f64,
    step: f64,
    x: &dyn Fn(usize) -> f64,
    y: &dyn Fn(f64) -> f64,
    metric: &str,
) {
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        line(out, (LEFT, y(v)), (RIGHT, y(v)), GRID);
        let label = crate::expect::trim_number(v);
        text(out, (LEFT - 6.0, y(v) + 3.0), Y_TICK, &label);
        v += step;
    }
    for k in 1..=max_keys {
        text(out, (x(k), BOTTOM + 16.0), X_TICK, &k.to_string());
    }
    let (w, h) = (RIGHT - LEFT, BOTTOM - TOP);
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" {AXES}/>"#
    );
    let mid = (LEFT + RIGHT) / 2.0;
    let caption = "keys on the first provider of the route";
    text(out, (mid, BOTTOM + 36.0), CAPTION, caption);
    let _ = writeln!(
        out,
        r##"<text x="18" y="{0}" font-size="11" text-anchor="middle" fill="#222" transform="rotate(-90 18 {0})">{1}</text>"##,
        (TOP + BOTTOM) / 2.0,
        escape(metric)
    );
}

fn draw_line(
    out: &mut String,
    line: &Line,
    color: &str,
    x: &dyn Fn(usize) -> f64,
    y: &dyn Fn(f64) -> f64,
) {
    let path: Vec<String> = line
        .points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
        .collect();
    let dash = if line.dashed {
        r#" stroke-dasharray="5 3""#
    } else {
        ""
    };
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
        path.join(" ")
    );
    for &(k, v, pass, stopped) in &line.points {
        let fill = if stopped { "white" } else { color };
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{fill}" stroke="{color}" stroke-width="2"/>"#,
            x(k),
            y(v),
            if pass { 5 } else { 4 }
        );
    }
}

fn legend(out: &mut String, i: usize, line: &Line, color: &str) {
    let ly = TOP + 10.0 + i as f64 * 22.0;
    let dash = if line.dashed {
        r#" stroke-dasharray="5 3""#
    } else {
        ""
    };
    let _ = writeln!(
        out,
        r##"<line x1="724" y1="{ly}" x2="752" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="760" y="{:.1}" font-size="11" fill="#222">{}</text>"##,
        ly + 4.0,
        escape(&line.label)
    );
    if i == 0 {
        let _ = writeln!(
            out,
            r##"<text x="724" y="{}" font-size="10" fill="#555">filled: met the goal; hollow: stopped early</text>"##,
            BOTTOM + 36.0
        );
    }
}
