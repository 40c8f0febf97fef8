//! Durations on the command line: `500ms`, `30s`, `5m`, `1h`, `7d`, or several (`1h30m`).

use std::time::Duration;

/// Parses a duration such as `30s`, `1h30m` or `250ms`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{input:?}: expected a number at {rest:?}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{input:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86400),
            other => {
                return Err(format!(
                    "{input:?}: unknown unit {other:?} (ms, s, m, h, d)"
                ))
            }
        };
        rest = &rest[unit_len..];
        total += unit
            .checked_mul(u32::try_from(n).map_err(|_| format!("{input:?}: number too large"))?)
            .ok_or_else(|| format!("{input:?}: too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        for bad in ["", "s", "10", "10x", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }
}
