//! The series notation of promtool test files and PromQL test scripts:
//! `metric{label="value"} 1+2x3 _ stale 5x2`.
//!
//! - `a+bxN` / `a-bxN`: N+1 values starting at `a`, stepping by `b`;
//! - `axN`: `a` repeated N+1 times; `_`: no sample; `_xN`: N steps without samples;
//! - `stale`: a staleness marker; `Inf`, `-Inf`, `NaN` and any float literal.

use promql_parser::parser::{self, Expr};

use crate::labels::{Labels, METRIC_NAME};
use crate::value::STALE_NAN_BITS;
use promql_parser::label::MatchOp;

/// Splits `line` into its series descriptor and the rest (the values).
pub fn split_series(line: &str) -> (&str, &str) {
    let line = line.trim();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut depth = 0;
    for (i, c) in line.char_indices() {
        if in_quotes {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => in_quotes = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (&line[..=i], line[i + 1..].trim());
                }
            }
            c if c.is_whitespace() && depth == 0 => return (&line[..i], line[i..].trim()),
            _ => {}
        }
    }
    (line, "")
}

/// Parses a series descriptor such as `up{job="api"}` or `{__name__="up"}` into labels.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let text = text.trim();
    if text == "{}" {
        return Ok(Labels::default());
    }
    let expr = parser::parse(text).map_err(|e| format!("series {text:?}: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{text:?} is not a series"));
    };
    let mut labels = Labels::default();
    if let Some(name) = &vs.name {
        labels.set(METRIC_NAME, name.clone());
    }
    for m in &vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(format!("series {text:?}: only = may be used in a series"));
        }
        labels.set(&m.name, m.value.clone());
    }
    Ok(labels)
}

/// Most values one series may expand to (`1+1x10000000000` would otherwise ask for
/// 160 GB).
pub const MAX_SERIES_VALUES: usize = 10_000_000;

/// Parses a value list into one entry per step (`None` where there is no sample).
pub fn parse_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        parse_token(token, &mut out)?;
    }
    Ok(out)
}

fn number(text: &str) -> Result<f64, String> {
    match text {
        "stale" => Ok(f64::from_bits(STALE_NAN_BITS)),
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => {
            if let Some(hex) = text.strip_prefix("0x") {
                return i64::from_str_radix(hex, 16)
                    .map(|v| v as f64)
                    .map_err(|_| format!("bad number {text:?}"));
            }
            text.parse::<f64>()
                .map_err(|_| format!("bad number {text:?}"))
        }
    }
}

fn parse_token(token: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    if token.starts_with("{{") {
        return Err("native histogram samples are not supported".into());
    }
    if token == "_" {
        out.push(None);
        return Ok(());
    }
    let Some((head, times)) = token.rsplit_once('x') else {
        out.push(Some(number(token)?));
        return Ok(());
    };
    let Ok(times) = times.parse::<usize>() else {
        out.push(Some(number(token)?));
        return Ok(());
    };
    if times >= MAX_SERIES_VALUES.saturating_sub(out.len()) {
        return Err(format!(
            "{token:?} expands the series past {MAX_SERIES_VALUES} values"
        ));
    }
    if head == "_" {
        out.extend(std::iter::repeat_n(None, times));
        return Ok(());
    }
    // Find the step's sign: a + or - after the first character, not part of an exponent.
    let bytes = head.as_bytes();
    let split = (1..bytes.len())
        .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (start, step) = match split {
        Some(i) => (number(&head[..i])?, number(&head[i..])?),
        None => (number(head)?, 0.0),
    };
    let mut v = start;
    for _ in 0..=times {
        out.push(Some(v));
        v += step;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_the_notation() {
        let v = parse_values("1+2x2 _ 5x1 _x2 -1-1x1 stale 1e3").expect("parses");
        let plain: Vec<String> = v
            .iter()
            .map(|x| {
                x.map_or("_".into(), |f| {
                    if f.is_nan() {
                        "nan".into()
                    } else {
                        f.to_string()
                    }
                })
            })
            .collect();
        assert_eq!(
            plain,
            [
                "1", "3", "5", "_", "5", "5", "_", "_", "-1", "-2", "nan", "1000"
            ]
        );
    }

    #[test]
    fn huge_expansions_are_refused() {
        for token in ["1+1x10000000000", "_x99999999999", "0x10000000"] {
            let err = parse_values(token).expect_err(token);
            assert!(err.contains("past 10000000 values"), "{err}");
        }
        assert_eq!(parse_values("1x3").expect("repeat").len(), 4);
    }

    #[test]
    fn splits_series_with_spaces_in_values() {
        let (s, rest) = split_series(r#"m{a="x y", b="}"} 1 2"#);
        assert_eq!((s, rest), (r#"m{a="x y", b="}"}"#, "1 2"));
        let labels = parse_labels(s).expect("labels");
        assert_eq!(labels.get("a"), "x y");
        assert_eq!(split_series("up 1 2"), ("up", "1 2"));
    }
}
