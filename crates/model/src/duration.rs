//! Istio/Go duration strings (`10s`, `1.5s`, `500ms`, `1h30m`, `250us`, `0`).

use std::time::Duration;

/// Parses an Istio duration the way Istio accepts it in YAML: Go-style decimal numbers with a
/// unit, possibly several (`10s`, `1.5s`, `500ms`, `1m`, `1h30m`, `250us`), or a bare `0`.
/// Negative, empty, unit-less or overflowing values give `None`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let is_num = |c: char| c.is_ascii_digit() || c == '.';
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !is_num(c)).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail.find(is_num).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        rest = tail;
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        total = total.checked_add(int.checked_mul(nanos_per_unit)?)?;
        // Fractions beyond nanosecond precision are cut off (at most 18 digits are read).
        let frac = &frac[..frac.len().min(18)];
        if !frac.is_empty() {
            let digits: u128 = frac.parse().ok()?;
            let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
            total = total.checked_add(digits * nanos_per_unit / scale)?;
        }
    }
    Some(Duration::from_nanos(u64::try_from(total).ok()?))
}
