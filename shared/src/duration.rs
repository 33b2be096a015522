//! Durations as workflow authors write them ("250ms", "30s", "5m", "2h", "1d"), shared by
//! graph validation and the blocks that wait.

use serde_json::Value;
use std::time::Duration;

/// Longest delay block (chained through the queue's maximum delay), and longest duration
/// accepted anywhere.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// How long a delay block waits: `duration` ("90s", "5m", "2h", "1d", "250ms"),
/// `duration_ms`, or `seconds`.
pub fn delay_of(c: &Value) -> Result<Duration, String> {
    let d = if let Some(v) = c.get("duration") {
        parse_duration(v)?
    } else if let Some(v) = c.get("duration_ms") {
        Duration::from_millis(v.as_u64().ok_or("`duration_ms` must be a non-negative integer")?)
    } else if let Some(v) = c.get("seconds") {
        let s = v.as_f64().filter(|s| *s >= 0.0 && s.is_finite()).ok_or("`seconds` must be a non-negative number")?;
        Duration::from_secs_f64(s.min(MAX_DURATION.as_secs_f64() + 1.0))
    } else {
        return Err("delay needs `duration`, `duration_ms` or `seconds`".into());
    };
    if d > MAX_DURATION {
        return Err("a delay can be at most 366 days".into());
    }
    Ok(d)
}

/// Parses "250ms", "30s", "5m", "2h", "1d" or a number of seconds.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    let bad = || format!("invalid duration {v}: use e.g. \"30s\", \"5m\", \"2h\", \"1d\" or a number of seconds");
    let secs = match v {
        Value::Number(n) => n.as_f64().filter(|s| *s >= 0.0).ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: f64 = num.parse().map_err(|_| bad())?;
            let mul = match unit.trim() {
                "ms" => 0.001,
                "" | "s" | "sec" | "secs" | "seconds" => 1.0,
                "m" | "min" | "mins" | "minutes" => 60.0,
                "h" | "hour" | "hours" => 3600.0,
                "d" | "day" | "days" => 86400.0,
                _ => return Err(bad()),
            };
            n * mul
        }
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs > MAX_DURATION.as_secs_f64() {
        return Err("a duration can be at most 366 days".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration(&json!("250ms")).unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(&json!("5m")).unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration(&json!(2)).unwrap(), Duration::from_secs(2));
        assert!(parse_duration(&json!("5 parsecs")).is_err());
        assert!(parse_duration(&json!("400d")).is_err());
    }

    #[test]
    fn delays_take_any_of_their_three_spellings() {
        assert_eq!(delay_of(&json!({"duration": "2s"})).unwrap(), Duration::from_secs(2));
        assert_eq!(delay_of(&json!({"duration_ms": 5})).unwrap(), Duration::from_millis(5));
        assert_eq!(delay_of(&json!({"seconds": 1.5})).unwrap(), Duration::from_millis(1500));
        assert!(delay_of(&json!({})).is_err());
    }
}
