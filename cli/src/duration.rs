//! Durations as kubectl users write them (`500ms`, `10s`, `2m`, `1h`, `7d`, or a bare number of
//! seconds), one grammar for every flag; and durations as the CLI prints them.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// The one grammar of every duration flag: a number (decimals allowed) and a unit among `ms`,
/// `s` (or none), `m`, `h`, `d`. Each flag then bounds it and words its own errors.
fn seconds_of(s: &str) -> Result<f64, Unreadable<'_>> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| Unreadable::Number)?;
    Ok(match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(Unreadable::Unit(unit)),
    })
}

enum Unreadable<'a> {
    Number,
    Unit(&'a str),
}

/// A sampling window (`-d`) or a timeout: `500ms`, `10s`, `2m`, at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let seconds = seconds_of(s).map_err(|e| match e {
        Unreadable::Number => format!("`{s}` is not a duration: write it like 500ms, 10s or 2m"),
        Unreadable::Unit(unit) => format!("`{s}` has an unknown unit `{unit}`: use ms, s, m or h"),
    })?;
    if seconds <= 0.0 {
        return Err(format!("the duration must be longer than 0 (got `{s}`)"));
    }
    if seconds > 24.0 * 3600.0 {
        return Err(format!("`{s}` is longer than a day: profile in shorter windows"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `--min-block`: the shortest off-CPU block counted, `0` (every block) to a second;
/// `500us`, `1ms`, `20ms`. In whole microseconds, as the agent takes it.
pub fn parse_min_block(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let seconds = seconds_of(s).map_err(|e| match e {
        Unreadable::Number => format!("`{s}` is not a duration: write it like 500us, 1ms or 10ms"),
        Unreadable::Unit(unit) => format!("`{s}` has an unknown unit `{unit}`: use us, ms or s"),
    })?;
    if !(0.0..=1.0).contains(&seconds) {
        return Err(format!("--min-block `{s}` is out of range: use 0 (every block) to 1s"));
    }
    Ok((seconds * 1e6).round() as u64)
}

/// `1.5s`, `2m`, `250ms`: short and exact enough for titles and summaries.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 120.0 {
        let r = (s * 10.0).round() / 10.0;
        if r.fract() == 0.0 {
            format!("{r:.0}s")
        } else {
            format!("{r:.1}s")
        }
    } else {
        format!("{:.1}m", s / 60.0)
    }
}

/// `90s`, `30m`, `24h`, `7d`: how long finished Jobs keep their results, in whole seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let seconds = seconds_of(t).map_err(|e| match e {
        Unreadable::Number => format!("`{s}` is not a TTL: write it like 30m, 24h or 7d"),
        Unreadable::Unit(unit) => format!("`{s}` has an unknown unit `{unit}`: use s, m, h or d"),
    })?;
    if seconds < 1.0 {
        return Err("the TTL must be at least 1s".into());
    }
    if seconds > 365.0 * 86_400.0 {
        return Err(format!("`{s}` is longer than a year: clean runs with `kubectl eagle clean` instead"));
    }
    Ok(Duration::from_secs(seconds as u64))
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn ago(now: Timestamp, then: Timestamp) -> String {
    format!("{} ago", span((now.as_second() - then.as_second()).max(0)))
}

pub fn span(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_block_in_microseconds() {
        assert_eq!(parse_min_block("0"), Ok(0));
        assert_eq!(parse_min_block("500us"), Ok(500));
        assert_eq!(parse_min_block("1ms"), Ok(1000));
        assert_eq!(parse_min_block("0.25s"), Ok(250_000));
        assert!(parse_min_block("2s").unwrap_err().contains("out of range"));
        assert!(parse_min_block("1ns").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn parses_what_users_type() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "0s", "-1s", "ten", "10x", "", "25h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_millis(2340)), "2.3s");
        assert_eq!(human(Duration::from_secs(300)), "5.0m");
    }

    #[test]
    fn ttls_as_users_write_them() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        for bad in ["0", "1w", "h", "-1h", "400d", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
