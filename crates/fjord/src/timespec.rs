//! Points in time as users type them on the command line: milliseconds since the epoch, or an RFC 3339 /
//! ISO 8601 date-time (`2026-11-25T10:00:00Z`, `2026-11-25T10:00:00.250+01:00`, `2026-11-25 10:00`; no zone
//! means UTC). Kafka stores timestamps as milliseconds since 1970, so earlier dates are refused.

/// Milliseconds since the epoch, or why `s` is not a point in time Kafka can look up.
pub fn parse_time_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("`{s}` is too large for milliseconds since 1970"));
    }
    if let Some(rest) = s.strip_prefix('-') {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`{s}` is before 1970; Kafka timestamps start at 0 (1970-01-01T00:00:00Z)"
            ));
        }
    }
    let ms = parse_datetime(s).ok_or_else(|| {
        format!(
            "`{s}` is neither milliseconds since 1970 nor a date-time like 2026-11-25T10:00:00Z"
        )
    })?;
    if ms < 0 {
        return Err(format!(
            "`{s}` is before 1970; Kafka timestamps start at 0 (1970-01-01T00:00:00Z)"
        ));
    }
    Ok(ms)
}

fn parse_datetime(s: &str) -> Option<i64> {
    // Byte slicing below relies on ASCII; nothing else is a date-time anyway.
    if !s.is_ascii() {
        return None;
    }
    let num = |t: &str| -> Option<i64> {
        if t.is_empty() || t.len() > 9 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (date, rest) = s.split_once(['T', 't', ' ']).unwrap_or((s, "00:00"));
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some()
        || y > 9999
        || !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&da)
    {
        return None;
    }
    // The zone: Z, +HH:MM, -HH:MM, +HHMM or none (UTC).
    let (time, zone_ms) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = &z[1..];
        let (zh, zm) = z
            .split_once(':')
            .unwrap_or_else(|| z.split_at(z.len().min(2)));
        let zm = if zm.is_empty() { "0" } else { zm };
        let (zh, zm) = (num(zh)?, num(zm)?);
        if zh > 23 || zm > 59 {
            return None;
        }
        (t, sign * (zh * 3600 + zm * 60) * 1000)
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once(['.', ',']).unwrap_or((time, ""));
    let mut t = hms.split(':');
    let h = num(t.next()?)?;
    let mi = num(t.next()?)?;
    let sec = t.next().map(num).unwrap_or(Some(0))?;
    if t.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        let f = &frac[..frac.len().min(3)];
        num(f)? * 10i64.pow(3 - f.len() as u32)
    };
    let days = days_from_civil(y, mo, da);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + ms - zone_ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_and_milliseconds_parse_to_epoch_milliseconds() {
        assert_eq!(parse_time_ms("0"), Ok(0));
        assert_eq!(parse_time_ms("1764064800000"), Ok(1_764_064_800_000));
        assert_eq!(parse_time_ms("2025-11-25T10:00:00Z"), Ok(1_764_064_800_000));
        assert_eq!(
            parse_time_ms("2025-11-25T11:00:00.250+01:00"),
            Ok(1_764_064_800_250)
        );
        assert_eq!(parse_time_ms("2025-11-25 10:00"), Ok(1_764_064_800_000));
        assert_eq!(parse_time_ms("2025-11-25"), Ok(1_764_028_800_000));
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Ok(0));
    }

    #[test]
    fn dates_before_1970_and_nonsense_are_refused() {
        assert!(parse_time_ms("1969-12-31T23:59:59Z")
            .unwrap_err()
            .contains("before 1970"));
        assert!(parse_time_ms("-5").unwrap_err().contains("before 1970"));
        assert!(parse_time_ms("2025-02-30").is_err());
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("2025-11-25T25:00Z").is_err());
        // Review findings: a 9-digit year overflowed, non-ASCII input panicked in byte slicing.
        assert!(parse_time_ms("999999999-01-01").is_err());
        assert!(parse_time_ms("2026-11-25T10:00+1é").is_err());
        assert!(parse_time_ms("2026-11-25T10:00:00.12é").is_err());
    }

    #[test]
    fn zones_fractions_and_leap_days_parse_as_reset_offsets_to_datetime_needs() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time_ms("2026-11-25T10:00:00Z").unwrap(),
            1_795_600_800_000
        );
        assert_eq!(
            parse_time_ms("2026-11-25T11:00:00.250+01:00").unwrap(),
            1_795_600_800_250
        );
        assert_eq!(
            parse_time_ms("2026-11-25T10:00:00").unwrap(),
            1_795_600_800_000
        );
        assert_eq!(
            parse_time_ms("2000-02-29T23:59:59.5-00:30").unwrap(),
            951_868_799_500 + 1_800_000
        );
        for bad in [
            "1969-12-31T23:59:59.999Z",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-25T10:00:00+x",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad}");
        }
    }
}
