//! Scalar functions: their type rules ([`check`]) and their evaluation ([`call`]), plus CAST and the date/time
//! formatting they share (Java's `SimpleDateFormat` letters, as ksqlDB takes them; UTC only).

use crate::types::{round_to, SqlType, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Ucase,
    Lcase,
    Len,
    Substring,
    Concat,
    Trim,
    Ltrim,
    Rtrim,
    Replace,
    Split,
    Abs,
    Round,
    Floor,
    Ceil,
    Coalesce,
    Ifnull,
    TimestampToString,
    StringToTimestamp,
    UnixTimestamp,
    ExtractJsonField,
    ArrayLength,
    ArrayOf,
}

/// The function named `name` applied to arguments of `types` (`None`: a NULL literal): which one and its result
/// type, or what is wrong.
pub fn check(name: &str, types: &[Option<SqlType>]) -> Result<(Func, SqlType), String> {
    use SqlType as T;
    let n = types.len();
    let arity = |lo: usize, hi: usize| -> Result<(), String> {
        if n < lo || n > hi {
            Err(if lo == hi {
                format!("expected {lo} argument(s), found {n}")
            } else {
                format!("expected {lo} to {hi} arguments, found {n}")
            })
        } else {
            Ok(())
        }
    };
    let arg = |i: usize, ok: &dyn Fn(&SqlType) -> bool, want: &str| -> Result<(), String> {
        match types.get(i) {
            Some(Some(t)) if !ok(t) => Err(format!(
                "type mismatch: argument {} is {t}, expected {want}",
                i + 1
            )),
            _ => Ok(()),
        }
    };
    let is_str = |t: &SqlType| *t == T::String;
    let is_int = |t: &SqlType| matches!(t, T::Int | T::Bigint);
    let is_num = |t: &SqlType| t.is_numeric();
    let first = || types.first().cloned().flatten().unwrap_or(T::String);
    Ok(match name {
        "UCASE" | "UPPER" | "LCASE" | "LOWER" | "TRIM" | "LTRIM" | "RTRIM" => {
            arity(1, 1)?;
            arg(0, &is_str, "STRING")?;
            let f = match name {
                "UCASE" | "UPPER" => Func::Ucase,
                "LCASE" | "LOWER" => Func::Lcase,
                "TRIM" => Func::Trim,
                "LTRIM" => Func::Ltrim,
                _ => Func::Rtrim,
            };
            (f, T::String)
        }
        "LEN" | "LENGTH" => {
            arity(1, 1)?;
            arg(0, &is_str, "STRING")?;
            (Func::Len, T::Int)
        }
        "SUBSTRING" | "SUBSTR" => {
            arity(2, 3)?;
            arg(0, &is_str, "STRING")?;
            arg(1, &is_int, "INT (positions start at 1)")?;
            arg(2, &is_int, "INT (a length)")?;
            (Func::Substring, T::String)
        }
        "CONCAT" => {
            if n == 0 {
                return Err("expected at least one argument".into());
            }
            for i in 0..n {
                arg(i, &is_str, "STRING")?;
            }
            (Func::Concat, T::String)
        }
        "REPLACE" => {
            arity(3, 3)?;
            for i in 0..3 {
                arg(i, &is_str, "STRING")?;
            }
            (Func::Replace, T::String)
        }
        "SPLIT" => {
            arity(2, 2)?;
            arg(0, &is_str, "STRING")?;
            arg(1, &is_str, "STRING")?;
            (Func::Split, T::Array(Box::new(T::String)))
        }
        "ABS" | "FLOOR" | "CEIL" | "CEILING" => {
            arity(1, 1)?;
            arg(0, &is_num, "a number")?;
            let f = match name {
                "ABS" => Func::Abs,
                "FLOOR" => Func::Floor,
                _ => Func::Ceil,
            };
            (f, first())
        }
        "ROUND" => {
            arity(1, 2)?;
            arg(0, &is_num, "a number")?;
            arg(1, &is_int, "INT (decimal places)")?;
            // ksqlDB: ROUND(DOUBLE) is BIGINT; ROUND(x, places) keeps x's type.
            let t = match (first(), n) {
                (T::Double, 1) => T::Bigint,
                (t, _) => t,
            };
            (Func::Round, t)
        }
        "COALESCE" | "IFNULL" => {
            if name == "IFNULL" {
                arity(2, 2)?;
            } else if n == 0 {
                return Err("expected at least one argument".into());
            }
            let mut t: Option<T> = None;
            for (i, a) in types.iter().enumerate() {
                if let (Some(x), Some(y)) = (&t, a) {
                    if x != y && SqlType::widen(x, y).is_none() {
                        return Err(format!("type mismatch: argument {} is {y}, the ones before are {x}", i + 1));
                    }
                    t = SqlType::widen(x, y).or(Some(x.clone()));
                } else if t.is_none() {
                    t = a.clone();
                }
            }
            (if name == "IFNULL" { Func::Ifnull } else { Func::Coalesce }, t.unwrap_or(T::String))
        }
        "TIMESTAMPTOSTRING" => {
            arity(2, 3)?;
            arg(0, &|t| matches!(t, T::Bigint | T::Int | T::Timestamp), "BIGINT (milliseconds since the epoch)")?;
            arg(1, &is_str, "STRING (a format, e.g. 'yyyy-MM-dd HH:mm:ss')")?;
            arg(2, &is_str, "STRING (a time zone)")?;
            (Func::TimestampToString, T::String)
        }
        "STRINGTOTIMESTAMP" => {
            arity(2, 3)?;
            for i in 0..n {
                arg(i, &is_str, "STRING")?;
            }
            (Func::StringToTimestamp, T::Bigint)
        }
        "UNIX_TIMESTAMP" => {
            arity(0, 1)?;
            arg(0, &|t| matches!(t, T::Timestamp | T::Bigint), "TIMESTAMP")?;
            (Func::UnixTimestamp, T::Bigint)
        }
        "EXTRACTJSONFIELD" => {
            arity(2, 2)?;
            arg(0, &is_str, "STRING (JSON text)")?;
            arg(1, &is_str, "STRING (a path, e.g. '$.a.b')")?;
            (Func::ExtractJsonField, T::String)
        }
        "ARRAY_LENGTH" => {
            arity(1, 1)?;
            arg(0, &|t| matches!(t, T::Array(_)), "ARRAY")?;
            (Func::ArrayLength, T::Int)
        }
        _ => {
            return Err(format!(
                "unknown function {name}: the scalar functions are UCASE, LCASE, LEN, SUBSTRING, CONCAT, TRIM, LTRIM, RTRIM, \
                 REPLACE, SPLIT, ABS, ROUND, FLOOR, CEIL, COALESCE, IFNULL, TIMESTAMPTOSTRING, STRINGTOTIMESTAMP, \
                 UNIX_TIMESTAMP, EXTRACTJSONFIELD, ARRAY_LENGTH; the aggregates COUNT, SUM, AVG, MIN, MAX, COUNT_DISTINCT, \
                 LATEST_BY_OFFSET, EARLIEST_BY_OFFSET, COLLECT_LIST, COLLECT_SET"
            ))
        }
    })
}

fn s(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

pub fn call(f: Func, args: Vec<Value>) -> Result<Value, String> {
    use Value as V;
    // Most functions are NULL on a NULL argument.
    let null_in = args.iter().any(Value::is_null);
    if null_in
        && !matches!(
            f,
            Func::Coalesce | Func::Ifnull | Func::Concat | Func::ArrayOf
        )
    {
        return Ok(V::Null);
    }
    Ok(match f {
        Func::Ucase => V::String(s(&args[0]).unwrap_or_default().to_uppercase()),
        Func::Lcase => V::String(s(&args[0]).unwrap_or_default().to_lowercase()),
        Func::Trim => V::String(s(&args[0]).unwrap_or_default().trim().to_string()),
        Func::Ltrim => V::String(s(&args[0]).unwrap_or_default().trim_start().to_string()),
        Func::Rtrim => V::String(s(&args[0]).unwrap_or_default().trim_end().to_string()),
        Func::Len => V::Int(
            i32::try_from(s(&args[0]).unwrap_or_default().chars().count()).unwrap_or(i32::MAX),
        ),
        Func::Substring => {
            let text: Vec<char> = s(&args[0]).unwrap_or_default().chars().collect();
            let n = text.len() as i64;
            let pos = args[1].as_i64().unwrap_or(1);
            // 1-based; a negative position counts from the end (ksqlDB).
            let start = if pos > 0 {
                pos - 1
            } else if pos < 0 {
                (n + pos).max(0)
            } else {
                0
            };
            let len = args.get(2).and_then(Value::as_i64).unwrap_or(n).max(0);
            let start = start.min(n);
            let end = start.saturating_add(len).min(n);
            V::String(text[start as usize..end as usize].iter().collect())
        }
        Func::Concat => V::String(
            args.iter()
                .filter_map(|a| s(a).map(str::to_string))
                .collect(),
        ),
        Func::Replace => {
            let (a, from, to) = (
                s(&args[0]).unwrap_or_default(),
                s(&args[1]).unwrap_or_default(),
                s(&args[2]).unwrap_or_default(),
            );
            V::String(if from.is_empty() {
                a.to_string()
            } else {
                a.replace(from, to)
            })
        }
        Func::Split => {
            let (a, d) = (
                s(&args[0]).unwrap_or_default(),
                s(&args[1]).unwrap_or_default(),
            );
            V::Array(if d.is_empty() {
                a.chars().map(|c| V::String(c.to_string())).collect()
            } else {
                a.split(d).map(|p| V::String(p.to_string())).collect()
            })
        }
        Func::Abs => match &args[0] {
            V::Int(i) => V::Int(i.checked_abs().ok_or("integer overflow")?),
            V::Bigint(i) => V::Bigint(i.checked_abs().ok_or("integer overflow")?),
            V::Double(d) => V::Double(d.abs()),
            other => other.clone(),
        },
        Func::Floor | Func::Ceil => match &args[0] {
            V::Double(d) => V::Double(if f == Func::Floor {
                d.floor()
            } else {
                d.ceil()
            }),
            other => other.clone(),
        },
        Func::Round => match (&args[0], args.get(1).and_then(Value::as_i64)) {
            (V::Double(d), None) => V::Bigint(d.round() as i64),
            (V::Double(d), Some(p)) => V::Double(round_to(*d, p.clamp(-300, 300) as i32)),
            (other, _) => other.clone(),
        },
        Func::Coalesce | Func::Ifnull => args.into_iter().find(|a| !a.is_null()).unwrap_or(V::Null),
        Func::TimestampToString => {
            let ms = args[0].as_i64().unwrap_or(0);
            check_zone(args.get(2))?;
            V::String(format_ts(ms, s(&args[1]).unwrap_or_default())?)
        }
        Func::StringToTimestamp => {
            check_zone(args.get(2))?;
            V::Bigint(parse_ts(
                s(&args[0]).unwrap_or_default(),
                s(&args[1]).unwrap_or_default(),
            )?)
        }
        Func::UnixTimestamp => match args.first() {
            Some(v) => V::Bigint(v.as_i64().unwrap_or(0)),
            None => V::Bigint(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            ),
        },
        Func::ExtractJsonField => {
            let Ok(j) = serde_json::from_str::<serde_json::Value>(s(&args[0]).unwrap_or_default())
            else {
                return Ok(V::Null);
            };
            match json_path(&j, s(&args[1]).unwrap_or_default()) {
                None | Some(serde_json::Value::Null) => V::Null,
                Some(serde_json::Value::String(x)) => V::String(x.clone()),
                Some(other) => V::String(other.to_string()),
            }
        }
        Func::ArrayLength => match &args[0] {
            V::Array(a) => V::Int(i32::try_from(a.len()).unwrap_or(i32::MAX)),
            _ => V::Null,
        },
        Func::ArrayOf => V::Array(args),
    })
}

fn check_zone(z: Option<&Value>) -> Result<(), String> {
    match z.and_then(s) {
        None => Ok(()),
        Some(z) if ["UTC", "Z", "GMT", "Etc/UTC"].contains(&z) => Ok(()),
        Some(z) => Err(format!("time zone {z}: only UTC is supported")),
    }
}

/// `$.a.b[0].c` over JSON.
fn json_path<'a>(j: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let rest = path.trim().strip_prefix('$')?;
    let mut cur = j;
    let mut chars = rest;
    while !chars.is_empty() {
        if let Some(r) = chars.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            chars = &r[end..];
        } else if let Some(r) = chars.strip_prefix('[') {
            let end = r.find(']')?;
            let key = r[..end].trim();
            cur = match key.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(key.trim_matches(|c| c == '\'' || c == '"'))?,
            };
            chars = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(cur)
}

/// CAST: numbers between each other, anything to STRING, STRING to numbers, booleans and times.
pub fn cast(v: Value, t: &SqlType) -> Result<Value, String> {
    use Value as V;
    if v.is_null() {
        return Ok(V::Null);
    }
    let bad = |v: &Value| format!("cannot cast {} to {t}", v.to_text());
    Ok(match t {
        SqlType::String => V::String(v.to_text()),
        SqlType::Int => match &v {
            V::String(x) => V::Int(x.trim().parse().map_err(|_| bad(&v))?),
            V::Double(d) => V::Int(*d as i32),
            V::Bool(b) => V::Int(i32::from(*b)),
            _ => V::Int(i32::try_from(v.as_i64().ok_or_else(|| bad(&v))?).map_err(|_| bad(&v))?),
        },
        SqlType::Bigint => match &v {
            V::String(x) => V::Bigint(x.trim().parse().map_err(|_| bad(&v))?),
            V::Double(d) => V::Bigint(*d as i64),
            _ => V::Bigint(v.as_i64().ok_or_else(|| bad(&v))?),
        },
        SqlType::Double => match &v {
            V::String(x) => V::Double(x.trim().parse().map_err(|_| bad(&v))?),
            _ => V::Double(v.as_f64().ok_or_else(|| bad(&v))?),
        },
        SqlType::Decimal(_, scale) => {
            let d = match &v {
                V::String(x) => x.trim().parse().map_err(|_| bad(&v))?,
                _ => v.as_f64().ok_or_else(|| bad(&v))?,
            };
            V::Double(round_to(d, i32::from(*scale)))
        }
        SqlType::Boolean => match &v {
            V::Bool(b) => V::Bool(*b),
            V::String(x) if x.eq_ignore_ascii_case("true") => V::Bool(true),
            V::String(x) if x.eq_ignore_ascii_case("false") => V::Bool(false),
            _ => return Err(bad(&v)),
        },
        SqlType::Timestamp => match &v {
            V::String(x) => V::Timestamp(parse_iso(x).ok_or_else(|| bad(&v))?),
            _ => V::Timestamp(v.as_i64().ok_or_else(|| bad(&v))?),
        },
        SqlType::Date => match &v {
            V::String(x) => V::Date((parse_ts(x, "yyyy-MM-dd")? / 86_400_000) as i32),
            V::Timestamp(ms) => V::Date(ms.div_euclid(86_400_000) as i32),
            _ => return Err(bad(&v)),
        },
        SqlType::Time => match &v {
            V::String(x) => V::Time(parse_ts(&format!("1970-01-01 {x}"), "yyyy-MM-dd HH:mm:ss")?),
            V::Timestamp(ms) => V::Time(ms.rem_euclid(86_400_000)),
            _ => return Err(bad(&v)),
        },
        _ => {
            if let V::String(x) = &v {
                let j: serde_json::Value = serde_json::from_str(x).map_err(|_| bad(&v))?;
                Value::from_json(&j, t)?
            } else {
                return Err(bad(&v));
            }
        }
    })
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's civil-from-days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The format's pieces: a run of one pattern letter, or literal text (`'T'` quoted, or punctuation).
fn pattern(fmt: &str) -> Result<Vec<(char, usize)>, String> {
    let mut out = Vec::new();
    let cs: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c == '\'' {
            let mut j = i + 1;
            while j < cs.len() && cs[j] != '\'' {
                out.push(('\0', cs[j] as usize));
                j += 1;
            }
            if j == i + 1 && j < cs.len() {
                out.push(('\0', '\'' as usize));
            }
            i = j + 1;
        } else if c.is_ascii_alphabetic() {
            if !"yMdHhmsSaXZ".contains(c) {
                return Err(format!(
                    "format letter `{c}` is not supported (use y, M, d, H, h, m, s, S, a, X, Z)"
                ));
            }
            let mut j = i;
            while j < cs.len() && cs[j] == c {
                j += 1;
            }
            out.push((c, j - i));
            i = j;
        } else {
            out.push(('\0', c as usize));
            i += 1;
        }
    }
    Ok(out)
}

pub fn format_ts(ms: i64, fmt: &str) -> Result<String, String> {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil(days);
    let (h, mi, sec, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut out = String::new();
    for (c, n) in pattern(fmt)? {
        match c {
            '\0' => out.push(char::from_u32(n as u32).unwrap_or('?')),
            'y' if n == 2 => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            'y' => out.push_str(&format!("{y:0n$}")),
            'M' => out.push_str(&format!("{mo:0n$}")),
            'd' => out.push_str(&format!("{d:0n$}")),
            'H' => out.push_str(&format!("{h:0n$}")),
            'h' => out.push_str(&format!("{:0n$}", if h % 12 == 0 { 12 } else { h % 12 })),
            'm' => out.push_str(&format!("{mi:0n$}")),
            's' => out.push_str(&format!("{sec:0n$}")),
            'S' => out.push_str(&format!("{milli:03}")[..n.min(3)]),
            'a' => out.push_str(if h < 12 { "AM" } else { "PM" }),
            'X' => out.push('Z'),
            _ => out.push_str("+0000"),
        }
    }
    Ok(out)
}

pub fn parse_ts(text: &str, fmt: &str) -> Result<i64, String> {
    let bad = || format!("`{text}` does not match the format `{fmt}`");
    let (mut y, mut mo, mut d, mut h, mut mi, mut sec, mut milli, mut pm) =
        (1970i64, 1u32, 1u32, 0i64, 0i64, 0i64, 0i64, None);
    let t: Vec<char> = text.chars().collect();
    let mut i = 0;
    for (c, n) in pattern(fmt)? {
        if c == '\0' {
            if t.get(i).map(|x| *x as usize) != Some(n) {
                return Err(bad());
            }
            i += 1;
            continue;
        }
        if c == 'a' {
            let w: String = t.get(i..i + 2).ok_or_else(bad)?.iter().collect();
            pm = Some(w.eq_ignore_ascii_case("PM"));
            i += 2;
            continue;
        }
        if c == 'X' || c == 'Z' {
            if t.get(i) == Some(&'Z') {
                i += 1;
            } else {
                let w: String = t.get(i..i + 5).ok_or_else(bad)?.iter().collect();
                if w != "+0000" && w != "-0000" {
                    return Err(format!("`{text}`: only UTC offsets are supported"));
                }
                i += 5;
            }
            continue;
        }
        // Digits: exactly n for fixed-width fields, else as many as there are (a single-letter field).
        let start = i;
        let max = if c == 'y' && n != 2 {
            9
        } else if n == 1 {
            3
        } else {
            n
        };
        while i < t.len() && i - start < max && t[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let v: i64 = t[start..i]
            .iter()
            .collect::<String>()
            .parse()
            .map_err(|_| bad())?;
        match c {
            'y' => y = if n == 2 { 2000 + v } else { v },
            'M' => mo = u32::try_from(v).map_err(|_| bad())?,
            'd' => d = u32::try_from(v).map_err(|_| bad())?,
            'H' | 'h' => h = v,
            'm' => mi = v,
            's' => sec = v,
            _ => milli = v,
        }
    }
    if i != t.len()
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return Err(bad());
    }
    if let Some(pm) = pm {
        h = h % 12 + if pm { 12 } else { 0 };
    }
    Ok(days_from_civil(y, mo, d) * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + milli)
}

/// An ISO-8601 timestamp (`2026-11-30T10:00:00[.SSS][Z]`, or with a space) in UTC.
pub fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z').replace(' ', "T");
    let fmts = [
        "yyyy-MM-dd'T'HH:mm:ss.SSS",
        "yyyy-MM-dd'T'HH:mm:ss",
        "yyyy-MM-dd'T'HH:mm",
        "yyyy-MM-dd",
    ];
    fmts.iter().find_map(|f| parse_ts(&s, f).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_and_parse_back() {
        let ms = 1_764_498_896_123; // 2025-11-30T10:34:56.123Z
        assert_eq!(
            format_ts(ms, "yyyy-MM-dd'T'HH:mm:ss.SSS").unwrap(),
            "2025-11-30T10:34:56.123"
        );
        assert_eq!(
            format_ts(ms, "dd/MM/yy hh:mm a").unwrap(),
            "30/11/25 10:34 AM"
        );
        assert_eq!(
            parse_ts("2025-11-30 10:34:56.123", "yyyy-MM-dd HH:mm:ss.SSS").unwrap(),
            ms
        );
        assert_eq!(
            format_ts(0, "yyyy-MM-dd HH:mm:ss").unwrap(),
            "1970-01-01 00:00:00"
        );
        assert_eq!(
            format_ts(-1, "yyyy-MM-dd HH:mm:ss.SSS").unwrap(),
            "1969-12-31 23:59:59.999"
        );
        assert!(parse_ts("2025-13-01", "yyyy-MM-dd").is_err());
        assert!(parse_ts("x", "yyyy").is_err());
        assert_eq!(parse_iso("2025-11-30T10:34:56.123Z"), Some(ms));
        assert!(format_ts(0, "Q").is_err());
    }

    #[test]
    fn json_paths() {
        let j: serde_json::Value = serde_json::from_str(r#"{"a":{"b":[1,{"c":"x"}]}}"#).unwrap();
        assert_eq!(
            json_path(&j, "$.a.b[1].c"),
            Some(&serde_json::Value::String("x".into()))
        );
        assert_eq!(json_path(&j, "$.a.zz"), None);
        assert_eq!(json_path(&j, "a"), None);
    }
}
