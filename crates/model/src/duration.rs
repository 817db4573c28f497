//! Durations as Istio accepts them: protobuf JSON (`1.5s`) and Go syntax (`1h2m`, `100ms`, `250us`).

use std::time::Duration;

/// Parse `"1.5s"`, `"100ms"`, `"1h30m"`, `"2us"`, `"5ns"`. No sign, no bare numbers.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.starts_with('-') {
        return Err(format!("negative duration `{s}`"));
    }
    let mut rest = t;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration `{s}`: expected a number"));
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let per_unit: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            "" => return Err(format!("invalid duration `{s}`: missing unit (use s, ms, m, h)")),
            other => return Err(format!("invalid duration `{s}`: unknown unit `{other}`")),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
            return Err(format!("invalid duration `{s}`"));
        }
        let int: u128 =
            if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| format!("invalid duration `{s}`"))? };
        let mut nanos = int.checked_mul(per_unit).ok_or_else(|| format!("duration `{s}` is too large"))?;
        let mut scale = per_unit;
        for d in frac_part.bytes().take(18) {
            scale /= 10;
            nanos += u128::from(d - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(|| format!("duration `{s}` is too large"))?;
        rest = tail;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| format!("duration `{s}` is too large"))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("0.001s").unwrap(), Duration::from_millis(1));
        assert!(parse("10").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("1x").is_err());
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }
}
