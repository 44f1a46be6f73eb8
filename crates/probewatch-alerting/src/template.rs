//! Rule label and annotation templates in the subset of Go's template syntax that
//! Prometheus rule files use: `{{ $labels.name }}`, `{{ $value }}` (also `.Labels.name`,
//! `.Value`), piped through `humanize`, `humanizePercentage`, `humanizeDuration` or
//! `printf "%.2f"`. Anything else is refused when the rule file is loaded, with the action
//! named, rather than rendered wrongly.

use std::collections::BTreeMap;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action { source: Source, funcs: Vec<Func> },
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Value,
    Label(String),
    Literal(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Func {
    Humanize,
    HumanizePercentage,
    HumanizeDuration,
    Printf(String),
    ToUpper,
    ToLower,
}

impl Template {
    /// Parses `text`; the error names the action that is not supported.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed action in template {text:?}"))?;
            let action = after[..end]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            parts.push(parse_action(action)?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            source: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with an alert's labels and value.
    pub fn render(&self, labels: &BTreeMap<String, String>, value: f64) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action { source, funcs } => {
                    let mut current = match source {
                        Source::Value => Arg::Num(value),
                        Source::Label(name) => {
                            Arg::Str(labels.get(name).cloned().unwrap_or_default())
                        }
                        Source::Literal(s) => Arg::Str(s.clone()),
                    };
                    for f in funcs {
                        current = Arg::Str(apply(f, &current));
                    }
                    out.push_str(&current.text());
                }
            }
        }
        out
    }
}

enum Arg {
    Num(f64),
    Str(String),
}

impl Arg {
    fn number(&self) -> f64 {
        match self {
            Arg::Num(v) => *v,
            Arg::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
        }
    }

    fn text(&self) -> String {
        match self {
            Arg::Num(v) => go_float(*v),
            Arg::Str(s) => s.clone(),
        }
    }
}

/// Go's default float formatting (`%v`): shortest repr, exponent for large/small values.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        format!("{v:e}").replace('e', "e+").replace("e+-", "e-")
    } else {
        format!("{v}")
    }
}

fn parse_source(token: &str) -> Result<Source, String> {
    if token == "$value" || token == ".Value" {
        return Ok(Source::Value);
    }
    for prefix in ["$labels.", ".Labels."] {
        if let Some(name) = token.strip_prefix(prefix) {
            return Ok(Source::Label(name.to_string()));
        }
    }
    if token.len() >= 2 && token.starts_with('"') && token.ends_with('"') {
        return Ok(Source::Literal(token[1..token.len() - 1].to_string()));
    }
    Err(format!("unsupported template value {token:?}"))
}

fn parse_func(words: &[&str]) -> Result<Func, String> {
    match words {
        ["humanize"] => Ok(Func::Humanize),
        ["humanizePercentage"] => Ok(Func::HumanizePercentage),
        ["humanizeDuration"] => Ok(Func::HumanizeDuration),
        ["toUpper"] => Ok(Func::ToUpper),
        ["toLower"] => Ok(Func::ToLower),
        ["printf", format]
            if format.starts_with('"') && format.ends_with('"') && format.len() >= 2 =>
        {
            Ok(Func::Printf(format[1..format.len() - 1].to_string()))
        }
        _ => Err(format!(
            "unsupported template function {:?}",
            words.join(" ")
        )),
    }
}

/// Splits on `sep` (or on whitespace when `sep` is `None`) outside double quotes.
fn split_unquoted(text: &str, sep: Option<char>) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if quoted {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => quoted = false,
                _ => escaped = false,
            }
            continue;
        }
        let boundary = match sep {
            Some(s) => c == s,
            None => c.is_whitespace(),
        };
        if c == '"' {
            quoted = true;
        } else if boundary {
            out.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| sep.is_some() || !t.is_empty())
        .collect()
}

fn parse_action(action: &str) -> Result<Part, String> {
    let stages = split_unquoted(action, Some('|'));
    let first = split_unquoted(stages[0], None);
    let (source, mut funcs) = match first.as_slice() {
        [single] => (parse_source(single)?, Vec::new()),
        // `humanize $value` or `printf "%.2f" $value`: the value is the last word.
        [func @ .., last] => (parse_source(last)?, vec![parse_func(func)?]),
        [] => return Err("empty template action {{ }}".into()),
    };
    for stage in &stages[1..] {
        funcs.push(parse_func(&split_unquoted(stage, None))?);
    }
    Ok(Part::Action { source, funcs })
}

fn apply(func: &Func, arg: &Arg) -> String {
    match func {
        Func::Humanize => humanize(arg.number()),
        Func::HumanizePercentage => format!("{}%", sig4(arg.number() * 100.0)),
        Func::HumanizeDuration => humanize_duration(arg.number()),
        Func::ToUpper => arg.text().to_uppercase(),
        Func::ToLower => arg.text().to_lowercase(),
        Func::Printf(format) => printf(format, arg),
    }
}

/// `%.4g`-like: four significant digits, trailing zeros removed.
fn sig4(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = 4 - 1 - v.abs().log10().floor() as i32;
    let s = if digits > 0 {
        format!("{:.*}", digits as usize, v)
    } else {
        let scale = 10f64.powi(-digits);
        format!("{}", (v / scale).round() * scale)
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return sig4(v);
    }
    let abs = v.abs();
    if abs >= 1.0 {
        let prefixes = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
        let mut i = 0;
        let mut x = v;
        while x.abs() >= 1000.0 && i < prefixes.len() - 1 {
            x /= 1000.0;
            i += 1;
        }
        format!("{}{}", sig4(x), prefixes[i])
    } else {
        let prefixes = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
        let mut i = 0;
        let mut x = v;
        while x.abs() < 1.0 && i < prefixes.len() - 1 {
            x *= 1000.0;
            i += 1;
        }
        format!("{}{}", sig4(x), prefixes[i])
    }
}

fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    if v.abs() < 1.0 {
        if v == 0.0 {
            return "0s".into();
        }
        return format!("{}s", humanize(v));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let total = v.abs();
    let seconds = total % 60.0;
    let whole = total as i64;
    let (days, hours, minutes) = (whole / 86_400, whole / 3600 % 24, whole / 60 % 60);
    let mut out = String::from(sign);
    if days > 0 {
        out.push_str(&format!("{days}d "));
    }
    if days > 0 || hours > 0 {
        out.push_str(&format!("{hours}h "));
    }
    if days > 0 || hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m "));
    }
    out.push_str(&format!("{}s", sig4(seconds)));
    out
}

/// `printf` with one verb: `%.Nf`, `%f`, `%d`, `%s`, `%v`, `%g`, `%%`.
fn printf(format: &str, arg: &Arg) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            precision = digits.parse().ok();
        }
        match chars.next() {
            Some('f') => out.push_str(&format!("{:.*}", precision.unwrap_or(6), arg.number())),
            Some('d') => out.push_str(&format!("{}", arg.number().trunc() as i64)),
            Some('g') => out.push_str(&sig4(arg.number())),
            Some('s') | Some('v') => out.push_str(&arg.text()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, value: f64) -> String {
        let labels = BTreeMap::from([
            ("probe".to_string(), "chat".to_string()),
            ("check".to_string(), "login".to_string()),
        ]);
        Template::parse(t).expect("parses").render(&labels, value)
    }

    #[test]
    fn renders_labels_values_and_pipelines() {
        assert_eq!(
            render("{{ $labels.probe }}/{{$labels.check}} is {{ $value }}", 2.0),
            "chat/login is 2"
        );
        assert_eq!(render("{{ .Labels.probe }} {{ .Value }}", 0.5), "chat 0.5");
        assert_eq!(render("{{ $value | humanize }}", 1_234_567.0), "1.235M");
        assert_eq!(render("{{ humanize $value }}", 0.0123), "12.3m");
        assert_eq!(render("{{ $value | humanizePercentage }}", 0.256), "25.6%");
        assert_eq!(render("{{ printf \"%.2f\" $value }}", 1.23456), "1.23");
        assert_eq!(render("{{ $value | printf \"%.1f s\" }}", 2.26), "2.3 s");
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 3725.0),
            "1h 2m 5s"
        );
        assert_eq!(render("{{ $labels.missing }}", 1.0), "");
        assert_eq!(render("no actions", 1.0), "no actions");
    }

    #[test]
    fn refuses_what_it_cannot_render() {
        for bad in [
            "{{ if $value }}x{{ end }}",
            "{{ $labels.a | title }}",
            "{{ query \"up\" }}",
            "{{ $value",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
