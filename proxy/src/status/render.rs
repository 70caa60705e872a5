//! The status document drawn for a terminal (`spillway status`): a header, the named clients,
//! then a table per route with a row per key and window and a bar of the headroom left. A pure
//! function of the document: colours only when asked for, and every line within the width.

use std::fmt::Write;

use crate::status::{
    ClientView, KeyView, LastMinute, RouteView, StatusDocument, TargetView, WindowView,
};

/// The width every line fits in.
pub const WIDTH: usize = 80;

/// Cells of a headroom bar.
const BAR: usize = 10;

/// ANSI colours, or nothing.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }
    fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }
    fn yellow(self, text: &str) -> String {
        self.wrap("33", text)
    }
    fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }
    fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
}

/// The document as text for a terminal; `color`: with ANSI colours (only for a terminal).
pub fn render(doc: &StatusDocument, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    let head = format!("spillway {} status at {}", doc.version, doc.generated_at);
    let _ = writeln!(out, "{}", paint.bold(&fit(&head, WIDTH)));
    let mut cache = format!("cache {}", doc.cache.mode);
    match doc.cache.hit_ratio {
        Some(r) => {
            let _ = write!(
                cache,
                ": {} hits ({} of {} lookups)",
                percent(r),
                doc.cache.hits,
                doc.cache.lookups
            );
        }
        None => cache.push_str(": no lookups yet"),
    }
    if let Some(n) = doc.fleet_members {
        let _ = write!(cache, " · fleet of {n}");
    }
    if doc.time_scale != 1.0 {
        let _ = write!(cache, " · clock x{}", doc.time_scale);
    }
    let _ = writeln!(out, "{}", fit(&cache, WIDTH));
    for route in &doc.routes {
        out.push('\n');
        render_route(&mut out, paint, route);
    }
    if !doc.clients.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "{}", paint.bold("CLIENTS"));
        for client in &doc.clients {
            render_client(&mut out, paint, client);
        }
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{}",
        paint.dim("bars: # used  + reserved in flight  - left · * learned from the provider")
    );
    out
}

fn render_route(out: &mut String, paint: Paint, route: &RouteView) {
    let title = format!("ROUTE {}", route.route);
    let _ = writeln!(out, "{}", paint.bold(&fit(&title, WIDTH)));
    let queue = match route.queue.oldest_wait_s {
        Some(oldest) if route.queue.length > 0 => format!(
            "queue {} (oldest waits {})",
            route.queue.length,
            duration(oldest)
        ),
        _ => "queue empty".to_string(),
    };
    let queue = format!("  {queue} · max wait {}", duration(route.max_wait_s));
    let _ = writeln!(out, "{}", fit(&queue, WIDTH));
    let _ = writeln!(
        out,
        "{}",
        fit(
            &format!("  last min: {}", minute(&route.last_minute)),
            WIDTH
        )
    );
    let header = format!(
        "    {:<14} {:<5} {:<12} {:>13} {:>6}  STATE",
        "KEY", "LIMIT", "HEADROOM", "LEFT / LIMIT", "RESET"
    );
    let _ = writeln!(out, "{}", paint.dim(&header));
    for target in &route.targets {
        render_target(out, paint, target);
    }
}

fn render_target(out: &mut String, paint: Paint, target: &TargetView) {
    let c = &target.circuit;
    let circuit = match (c.state.as_str(), &c.cooldown_until) {
        ("open", Some(until)) => paint.red(&format!(
            "circuit open {} ({} failures)",
            duration(until.in_s),
            c.failures
        )),
        ("closed", _) if c.failures > 0 => {
            paint.yellow(&format!("circuit closed ({} failures)", c.failures))
        }
        ("closed", _) => "circuit closed".to_string(),
        (state, _) => paint.yellow(&format!("circuit {state}")),
    };
    let circuit_width = visible_len(&circuit);
    let name = fit(
        &format!("  {} {}", target.provider, target.model),
        WIDTH.saturating_sub(circuit_width + 1),
    );
    let pad = WIDTH.saturating_sub(name.chars().count() + circuit_width);
    let _ = writeln!(out, "{name}{}{circuit}", " ".repeat(pad));
    for key in &target.keys {
        render_key(out, paint, key);
    }
}

fn render_key(out: &mut String, paint: Paint, key: &KeyView) {
    let state = key_state(paint, key);
    rows(out, paint, &key.key, &key.windows, &state);
}

/// The rows of one key or client: one per window, the state on the first.
fn rows(out: &mut String, paint: Paint, name: &str, windows: &[WindowView], state: &str) {
    let name = fit(name, 14);
    if windows.is_empty() {
        let line = format!(
            "    {name:<14} {:<5} {:<12} {:>13} {:>6}  {state}",
            "-", "none known", "", ""
        );
        let _ = writeln!(out, "{}", line.trim_end());
        return;
    }
    for (i, w) in windows.iter().enumerate() {
        let kind = if w.source == "learned" {
            format!("{}*", w.window)
        } else {
            w.window.clone()
        };
        let left = format!("{} / {}", count(w.remaining), count(w.limit));
        let line = format!(
            "    {:<14} {:<5} {} {:>13} {:>6}  {}",
            if i == 0 { name.as_str() } else { "" },
            kind,
            bar(paint, w),
            left,
            duration(w.reset.in_s),
            if i == 0 { state } else { "" }
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// What a key's state column says: set aside, cooling, busy or ok (within the room left).
fn key_state(paint: Paint, key: &KeyView) -> String {
    const ROOM: usize = WIDTH - 60;
    if let Some(d) = &key.disabled {
        let text = format!("refused, retry {}", duration(d.retry.in_s));
        return paint.red(&fit(&text, ROOM));
    }
    if let Some(c) = &key.cooling {
        let text = match &c.limit {
            Some(limit) => format!("cooling {} {limit}", duration(c.until.in_s)),
            None => format!("cooling {}", duration(c.until.in_s)),
        };
        return paint.yellow(&fit(&text, ROOM));
    }
    if key.in_flight > 0 {
        return fit(&format!("{} in flight", key.in_flight), ROOM);
    }
    paint.green("ok")
}

fn render_client(out: &mut String, paint: Paint, client: &ClientView) {
    let routes = client
        .routes
        .as_ref()
        .map_or("every route".to_string(), |r| r.join(", "));
    let line = format!("  {} · routes: {routes}", client.name);
    let _ = writeln!(out, "{}", fit(&line, WIDTH));
    let _ = writeln!(
        out,
        "{}",
        fit(
            &format!("    last min: {}", client_minute(&client.last_minute)),
            WIDTH
        )
    );
    if !client.windows.is_empty() {
        let state = if client.in_flight > 0 {
            format!("{} in flight", client.in_flight)
        } else {
            String::new()
        };
        rows(out, paint, "own limits", &client.windows, &state);
    }
}

/// `[###++-----]`: used, reserved in flight, left; coloured by the share left.
fn bar(paint: Paint, w: &WindowView) -> String {
    let cells = |n: u64| {
        if w.limit == 0 {
            BAR
        } else {
            ((n.min(w.limit) as f64 / w.limit as f64) * BAR as f64).round() as usize
        }
    };
    let used = cells(w.used);
    let taken = cells(w.used.saturating_add(w.reserved)).max(used);
    let inner = format!(
        "{}{}{}",
        "#".repeat(used),
        "+".repeat(taken - used),
        "-".repeat(BAR - taken)
    );
    let share = if w.limit == 0 {
        0.0
    } else {
        w.remaining as f64 / w.limit as f64
    };
    let inner = if share >= 0.5 {
        paint.green(&inner)
    } else if share >= 0.2 {
        paint.yellow(&inner)
    } else {
        paint.red(&inner)
    };
    format!("[{inner}]")
}

fn minute(m: &LastMinute) -> String {
    let mut text = format!(
        "{} req · {} fallbacks · 429: {} upstream, {} answered",
        m.requests, m.fallbacks, m.upstream_429s, m.answered_429s
    );
    if let Some(r) = m.cache_hit_ratio {
        let _ = write!(text, " · cache hits {}", percent(r));
    }
    text
}

/// A client's last minute: fallbacks and providers' 429s are counted per route only.
fn client_minute(m: &LastMinute) -> String {
    let mut text = format!("{} req · {} answered 429", m.requests, m.answered_429s);
    if let Some(r) = m.cache_hit_ratio {
        let _ = write!(text, " · cache hits {}", percent(r));
    }
    text
}

fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

/// A count in at most 7 characters: `5400`, `14400`, `500k`, `5.0M`.
fn count(n: u64) -> String {
    match n {
        0..=99_999 => n.to_string(),
        100_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// Seconds as a short span: `0.4s`, `41s`, `3m05s`, `2h10m`.
fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else if secs < 60.0 {
        format!("{}s", secs.round() as u64)
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// `text` cut to `width` characters (the last one `~` when cut).
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('~');
    cut
}

/// Characters a terminal shows of `text` (ANSI sequences take none).
fn visible_len(text: &str) -> usize {
    let mut n = 0;
    let mut escape = false;
    for ch in text.chars() {
        match (escape, ch) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        CacheView, CircuitView, Cooling, Disabled, Moment, QueueView, RouteView, TargetView,
    };

    fn at(in_s: f64) -> Moment {
        Moment {
            in_s,
            at: format!("T+{in_s}"),
        }
    }

    fn window(kind: &str, limit: u64, used: u64, reserved: u64, reset: f64) -> WindowView {
        WindowView {
            window: kind.into(),
            limit,
            source: "configured".into(),
            used,
            reserved,
            remaining: limit.saturating_sub(used + reserved),
            reset: at(reset),
        }
    }

    /// A known state: a key cooling after a 429, a key set aside, an open circuit, a request
    /// queued, a client near its own limit.
    fn known() -> StatusDocument {
        let minute = |requests, fallbacks, upstream, answered, ratio| LastMinute {
            requests,
            fallbacks,
            upstream_429s: upstream,
            answered_429s: answered,
            cache_hit_ratio: ratio,
        };
        let mut learned = window("tpm", 6000, 600, 1224, 41.2);
        learned.source = "learned".into();
        StatusDocument {
            version: "0.1.0".into(),
            generated_at: "2026-12-05T15:30:00.000Z".into(),
            time_scale: 1.0,
            fleet_members: None,
            cache: CacheView {
                mode: "read-write".into(),
                hits: 21,
                lookups: 50,
                hit_ratio: Some(0.42),
            },
            routes: vec![RouteView {
                route: "llama-3.1-8b".into(),
                max_wait_s: 30.0,
                queue: QueueView {
                    length: 1,
                    oldest_wait_s: Some(2.345),
                },
                last_minute: minute(40, 3, 2, 1, Some(0.5)),
                targets: vec![
                    TargetView {
                        provider: "groq".into(),
                        model: "llama-3.1-8b-instant".into(),
                        circuit: CircuitView {
                            state: "closed".into(),
                            failures: 0,
                            cooldown_until: None,
                        },
                        keys: vec![
                            KeyView {
                                key: "groq#1".into(),
                                in_flight: 0,
                                cooling: Some(Cooling {
                                    until: at(12.3),
                                    limit: Some("rpm".into()),
                                }),
                                disabled: None,
                                windows: vec![window("rpm", 30, 30, 0, 12.3), learned],
                            },
                            KeyView {
                                key: "groq#2".into(),
                                in_flight: 2,
                                cooling: None,
                                disabled: None,
                                windows: vec![window("rpd", 14_400, 900, 2, 86_000.0)],
                            },
                            KeyView {
                                key: "groq#3".into(),
                                in_flight: 0,
                                cooling: None,
                                disabled: Some(Disabled {
                                    reason: "401 invalid_api_key".into(),
                                    retry: at(299.0),
                                    probing: false,
                                }),
                                windows: vec![],
                            },
                        ],
                    },
                    TargetView {
                        provider: "cerebras".into(),
                        model: "llama3.1-8b".into(),
                        circuit: CircuitView {
                            state: "open".into(),
                            failures: 3,
                            cooldown_until: Some(at(18.0)),
                        },
                        keys: vec![KeyView {
                            key: "cerebras#1".into(),
                            in_flight: 0,
                            cooling: None,
                            disabled: None,
                            windows: vec![window("tpd", 5_000_000, 1_250_000, 0, 3600.0 * 20.5)],
                        }],
                    },
                ],
            }],
            clients: vec![ClientView {
                name: "eval-team".into(),
                routes: Some(vec!["llama-3.1-8b".into()]),
                in_flight: 1,
                windows: vec![window("rpm", 600, 580, 1, 41.0)],
                last_minute: minute(12, 0, 0, 2, None),
            }],
        }
    }

    const GOLDEN: &str = "\
spillway 0.1.0 status at 2026-12-05T15:30:00.000Z
cache read-write: 42% hits (21 of 50 lookups)

ROUTE llama-3.1-8b
  queue 1 (oldest waits 2.3s) · max wait 30s
  last min: 40 req · 3 fallbacks · 429: 2 upstream, 1 answered · cache hits 50%
    KEY            LIMIT HEADROOM      LEFT / LIMIT  RESET  STATE
  groq llama-3.1-8b-instant                                       circuit closed
    groq#1         rpm   [##########]        0 / 30    12s  cooling 12s rpm
                   tpm*  [#++-------]   4176 / 6000    41s
    groq#2         rpd   [#---------] 13498 / 14400 23h53m  2 in flight
    groq#3         -     none known                         refused, retry 4m59s
  cerebras llama3.1-8b                             circuit open 18s (3 failures)
    cerebras#1     tpd   [###-------]   3.8M / 5.0M 20h30m  ok

CLIENTS
  eval-team · routes: llama-3.1-8b
    last min: 12 req · 2 answered 429
    own limits     rpm   [##########]      19 / 600    41s  1 in flight

bars: # used  + reserved in flight  - left · * learned from the provider
";

    #[test]
    fn a_known_state_renders_as_the_golden_text_within_80_columns() {
        let text = render(&known(), false);
        print!("{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "too wide: {line:?}");
        }
        assert!(!text.contains('\x1b'), "no colour unless asked");
        assert_eq!(text, GOLDEN);
    }

    #[test]
    fn colours_only_add_escapes_and_keep_every_line_within_80_columns() {
        let plain = render(&known(), false);
        let coloured = render(&known(), true);
        assert!(coloured.contains("\x1b[31m"), "red for the open circuit");
        let mut stripped = String::new();
        let mut escape = false;
        for ch in coloured.chars() {
            match (escape, ch) {
                (false, '\x1b') => escape = true,
                (true, 'm') => escape = false,
                (true, _) => {}
                (false, c) => stripped.push(c),
            }
        }
        assert_eq!(stripped, plain);
        for line in coloured.lines() {
            assert!(visible_len(line) <= WIDTH, "too wide: {line:?}");
        }
    }

    #[test]
    fn spans_and_counts_stay_short() {
        assert_eq!(duration(0.44), "0.4s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(7800.0), "2h10m");
        assert_eq!(count(14_400), "14400");
        assert_eq!(count(500_000), "500k");
        assert_eq!(fit("abcdef", 4), "abc~");
    }
}
