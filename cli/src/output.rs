//! Human-readable output: aligned tables, durations, compact values.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Longest a table cell gets before it is cut (prompts, event data).
const MAX_CELL: usize = 60;

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cut(c, MAX_CELL)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            s.push_str(c);
            if i + 1 < n {
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.truncate(s.trim_end().len());
        s
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// One line, at most `max` characters (an ellipsis marks the cut).
pub fn cut(s: &str, max: usize) -> String {
    let one_line = s.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A string value as is, anything else as compact JSON, null as "-".
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc))
}

/// From `start` to `end`, or to now while `end` is null; "-" without a start.
pub fn elapsed(start: &Value, end: &Value, now: DateTime<Utc>) -> String {
    match (parse_time(start), parse_time(end)) {
        (Some(s), Some(e)) => duration_ms((e - s).num_milliseconds()),
        (Some(s), None) if end.is_null() => format!("{} so far", duration_ms((now - s).num_milliseconds())),
        _ => "-".into(),
    }
}

/// `850ms`, `1.25s`, `2m05s`, `3h07m`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.2}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// A step's or run's error `{code, message, step_key?}` in one line.
pub fn error_line(e: &Value) -> Option<String> {
    if e.is_null() {
        return None;
    }
    let code = e["code"].as_str();
    let msg = e["message"].as_str();
    let mut s = match (code, msg) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => e.to_string(),
    };
    if let Some(step) = e["step_key"].as_str() {
        s = format!("step {step}: {s}");
    }
    Some(s)
}

/// A page's `next_cursor`, as a hint for the next command.
pub fn more_hint(page: &Value) -> Option<String> {
    page["next_cursor"].as_str().map(|c| format!("(more: add --cursor {c})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_trims_line_ends() {
        let t = table(&["ID", "STATUS"], &[vec!["a".into(), "completed".into()], vec!["long-id".into(), "-".into()]]);
        assert_eq!(t, "ID       STATUS\na        completed\nlong-id  -");
    }

    #[test]
    fn long_or_multiline_cells_are_cut_to_one_line() {
        assert_eq!(cut("a\nb", 10), "a b");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration_ms(0), "0ms");
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(1250), "1.25s");
        assert_eq!(duration_ms(125_000), "2m05s");
        assert_eq!(duration_ms(3 * 3_600_000 + 7 * 60_000), "3h07m");
        assert_eq!(duration_ms(-5), "0ms", "clock skew between steps never prints a negative time");
    }

    #[test]
    fn elapsed_runs_to_now_while_unfinished() {
        let now = parse_time(&json!("2026-01-01T00:00:10Z")).unwrap();
        assert_eq!(elapsed(&json!("2026-01-01T00:00:00Z"), &json!("2026-01-01T00:00:00.120Z"), now), "120ms");
        assert_eq!(elapsed(&json!("2026-01-01T00:00:00Z"), &Value::Null, now), "10.00s so far");
        assert_eq!(elapsed(&Value::Null, &Value::Null, now), "-");
    }

    #[test]
    fn error_line_names_the_step_code_and_message() {
        let e = json!({"step_key": "charge", "code": "HTTP_500", "message": "upstream"});
        assert_eq!(error_line(&e).unwrap(), "step charge: HTTP_500: upstream");
        assert_eq!(error_line(&Value::Null), None);
        assert_eq!(error_line(&json!({"message": "m"})).unwrap(), "m");
    }

    #[test]
    fn text_shows_strings_bare_and_the_rest_as_json() {
        assert_eq!(text(&json!("x")), "x");
        assert_eq!(text(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(text(&Value::Null), "-");
    }
}
