//! Human durations (`500ms`, `5s`, `2m`, `1h`, `7d`, `1h30m`) for `--timeout`,
//! `--grace` and `--older-than`. A bare number means seconds.

use std::time::Duration;

/// Parses a duration; the error text is shown to the user as-is.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration '{text}' (use e.g. 500ms, 5s, 2m, 1h, 7d)");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let value: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let millis_per_unit: u128 = match &rest[..unit_len] {
            "" if total == 0 && rest.is_empty() => 1_000, // a bare number: seconds
            "ms" => 1,
            "s" | "sec" | "secs" => 1_000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(value.checked_mul(millis_per_unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    let millis = u64::try_from(total).map_err(|_| format!("duration '{text}' is too long"))?;
    if Duration::from_millis(millis) > MAX {
        return Err(format!("duration '{text}' is too long (at most 100 years)"));
    }
    Ok(Duration::from_millis(millis))
}

/// The longest duration accepted anywhere: more is a typo, and would
/// overflow clock arithmetic.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A `--timeout` as a limit: 0 means no timeout, the same everywhere (`run`,
/// `wait`, and the MCP tools' `timeout`/`timeout_s`), so no spelling of
/// "none" kills a task at once.
pub fn limit(timeout: Option<Duration>) -> Option<Duration> {
    timeout.filter(|t| !t.is_zero())
}

/// Clamps a duration that came from elsewhere (MCP parameters) to [`MAX`].
pub fn clamp(d: Duration) -> Duration {
    d.min(MAX)
}

/// The moment `age` ago: tasks that started (or ended) before it are "older
/// than" `age` (`stop --older-than`, `cleanup --older-than`).
pub fn cutoff(age: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::from_std(clamp(age)).unwrap_or(chrono::Duration::MAX)
}

/// The shortest clear form, for tables and messages: `850ms`, `42s`,
/// `2m04s`, `2h05m`, `3d04h`; a zero last part is left out (`2m`, `3h`, `2d`).
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    let (big, small, units) = match secs {
        0 => return format!("{}ms", d.as_millis()),
        1..=59 => return format!("{secs}s"),
        60..=3599 => (secs / 60, secs % 60, ("m", "s")),
        3600..=86_399 => (secs / 3600, secs % 3600 / 60, ("h", "m")),
        _ => (secs / 86_400, secs % 86_400 / 3600, ("d", "h")),
    };
    match small {
        0 => format!("{big}{}", units.0),
        _ => format!("{big}{}{small:02}{}", units.0, units.1),
    }
}

/// How long something took, to a tenth of a second under a minute
/// (`14.2s`), else as [`short`]: the final line of a wait.
pub fn took(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        short(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "5x",
            "s",
            "-5s",
            "1.5s",
            "99999999999999999999d",
            "18446744073709551615",
            "5 s",
            "5s3",
        ] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn short_is_compact() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_secs(192)), "3m12s");
        assert_eq!(short(Duration::from_secs(7500)), "2h05m");
        assert_eq!(short(Duration::from_secs(124)), "2m04s");
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_secs(120)), "2m");
        assert_eq!(short(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(short(Duration::from_secs(3 * 3600 + 59)), "3h");
        assert_eq!(short(Duration::from_secs(2 * 86_400)), "2d");
        assert_eq!(short(Duration::from_secs(2 * 86_400 + 4 * 3600)), "2d04h");
    }

    #[test]
    fn took_shows_tenths_under_a_minute() {
        assert_eq!(took(Duration::from_millis(14_230)), "14.2s");
        assert_eq!(took(Duration::from_millis(40)), "0.0s");
        assert_eq!(took(Duration::from_secs(125)), "2m05s");
    }
}
