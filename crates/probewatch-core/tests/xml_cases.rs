//! Data-driven parser tests: every `test_data/<format>/<case>.<format>` is parsed and its
//! rendering is compared with `<case>.expected`. Files named `ok_*` must parse, `bad_*` must
//! be rejected. Run with `UPDATE_EXPECT=1` to (re)write the expectations, then review the
//! diff.

use std::fmt::Write as _;
use std::path::Path;

use probewatch_core::format::FileContext;
use probewatch_core::{Format, ParseLimits, ProbeResult, Reject, parse};

const MTIME_MS: i64 = 1_700_000_000_000;

fn render(result: &Result<Vec<ProbeResult>, Reject>) -> String {
    let mut out = String::new();
    match result {
        Err(reject) => {
            let _ = writeln!(out, "rejected ({}): {reject}", reject.kind.as_str());
        }
        Ok(probes) => {
            for p in probes {
                let time = jiff::Timestamp::from_millisecond(p.time_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| p.time_ms.to_string());
                let _ = writeln!(
                    out,
                    "probe {:?} host {:?} time {time} ({:?}) interval_ms {:?}",
                    p.probe, p.host, p.time_source, p.interval_ms
                );
                for c in &p.checks {
                    let _ = writeln!(
                        out,
                        "  check {:?} {} duration {:?} message {:?}",
                        c.name, c.status, c.duration_seconds, c.message
                    );
                }
                for m in &p.metrics {
                    let _ = writeln!(
                        out,
                        "  metric {}{} {}",
                        m.name,
                        m.labels.canonical(),
                        m.value
                    );
                }
            }
        }
    }
    out
}

#[test]
fn xml_cases() {
    cases(Format::Xml, 30);
}

#[test]
fn json_cases() {
    cases(Format::Json, 15);
}

#[test]
fn prometheus_cases() {
    cases(Format::Prometheus, 12);
}

#[test]
fn nagios_cases() {
    cases(Format::Nagios, 8);
}

/// Every fixture of `format` (at least `at_least` of them) against its expectation.
fn cases(format: Format, at_least: usize) {
    let ext = match format {
        Format::Prometheus => "prom",
        other => other.as_str(),
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(ext);
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("the fixtures' directory exists")
        .map(|e| e.expect("readable dir").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    entries.sort();
    assert!(entries.len() >= at_least, "fixtures missing");
    let mut failures = Vec::new();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        let input = std::fs::read(&path).expect("readable fixture");
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let result = parse(
            format,
            &input,
            FileContext {
                mtime_ms: MTIME_MS,
                name: &file_name,
                mapping: None,
            },
            &ParseLimits::default(),
        );
        // Whatever the format, `auto` reads the file the same way.
        let auto = parse(
            Format::Auto,
            &input,
            FileContext {
                mtime_ms: MTIME_MS,
                name: &file_name,
                mapping: None,
            },
            &ParseLimits::default(),
        );
        if result.is_ok() && render(&auto) != render(&result) {
            failures.push(format!("{name}: format auto reads it differently"));
        }
        if name.starts_with("ok_") != result.is_ok() {
            failures.push(format!(
                "{name}: expected {}, got {}",
                &name[..3],
                render(&result)
            ));
            continue;
        }
        let actual = render(&result);
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &actual).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn limits_are_enforced() {
    let mut xml = String::from("<probe name=\"p\">");
    for i in 0..20 {
        let _ = write!(xml, "<metric name=\"m{i}\" value=\"1\"/>");
    }
    xml.push_str("</probe>");
    let limits = ParseLimits {
        max_items: 10,
        ..ParseLimits::default()
    };
    let err = parse(
        Format::Xml,
        xml.as_bytes(),
        FileContext {
            mtime_ms: 0,
            name: "",
            mapping: None,
        },
        &limits,
    )
    .expect_err("over the item limit");
    assert!(
        err.detail.contains("more than 10 checks and metrics"),
        "{err}"
    );
}

#[test]
fn deep_amplification_is_not_expanded() {
    // 1000 references to an undefined entity: refused at the first one, in bounded time.
    let mut xml = String::from("<probe name=\"p\"><check name=\"c\" status=\"ok\">");
    for _ in 0..1000 {
        xml.push_str("&big;");
    }
    xml.push_str("</check></probe>");
    let err = parse(
        Format::Xml,
        xml.as_bytes(),
        FileContext {
            mtime_ms: 0,
            name: "",
            mapping: None,
        },
        &ParseLimits::default(),
    )
    .expect_err("undefined entity");
    assert_eq!(err.kind.as_str(), "dtd");
}

/// Whatever Prometheus's own text parser refuses, ours refuses too: every Prometheus
/// fixture goes through Debian's `promtool check metrics` (exit 1: a parse error; 3: lint
/// only). OpenMetrics files are left out: promtool reads text format 0.0.4 only.
#[test]
fn prometheus_fixtures_that_promtool_cannot_parse_are_refused_by_ours_too() {
    let promtool = Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        eprintln!("SKIPPED: no /usr/bin/promtool (Debian package prometheus)");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/prom");
    let mut compared = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "prom") {
            continue;
        }
        let input = std::fs::read(&path).expect("fixture");
        if String::from_utf8_lossy(&input)
            .trim_end()
            .ends_with("# EOF")
        {
            continue;
        }
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("promtool");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &input).expect("write");
        let theirs = child.wait().expect("wait").code();
        let ours = parse(
            Format::Prometheus,
            &input,
            FileContext {
                mtime_ms: 0,
                name: "x.prom",
                mapping: None,
            },
            &ParseLimits::default(),
        );
        if theirs == Some(1) {
            assert!(
                ours.is_err(),
                "{}: promtool refuses it, ours accepts",
                path.display()
            );
        }
        compared += 1;
    }
    assert!(compared >= 20, "{compared} fixtures compared");
}
