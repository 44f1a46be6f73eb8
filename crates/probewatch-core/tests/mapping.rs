//! The mapping format: foreign XML schemas read through XPath selectors, and the errors
//! that name the selector and what it found.

use std::collections::BTreeMap;

use probewatch_core::format::FileContext;
use probewatch_core::format::mapping::{Mapping, Selector};
use probewatch_core::{Format, ParseLimits, ProbeResult, Reject, Status, parse};

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn opt(text: &str) -> Option<Selector> {
    Some(sel(text))
}

/// The issue's example mapping.
fn report_mapping() -> Mapping {
    Mapping {
        probe: sel("/report/@service"),
        host: opt("/report/@machine"),
        time: opt("/report/@at"),
        interval: None,
        checks: opt("/report/item"),
        check_name: opt("@id"),
        check_status: opt("@result"),
        check_message: opt("."),
        check_duration: opt("@took"),
        status_map: BTreeMap::from([
            ("PASS".to_string(), Status::Ok),
            ("WARN".to_string(), Status::Warning),
            ("FAIL".to_string(), Status::Critical),
        ]),
        metrics: opt("//gauge"),
        metric_name: opt("@name"),
        metric_value: opt("text()"),
        metric_labels: BTreeMap::from([("unit".to_string(), sel("@unit"))]),
    }
}

fn read(mapping: &Mapping, xml: &str) -> Result<Vec<ProbeResult>, Reject> {
    parse(
        Format::Mapping,
        xml.as_bytes(),
        FileContext {
            mtime_ms: 1_700_000_000_000,
            name: "r.xml",
            mapping: Some(mapping),
        },
        &ParseLimits::default(),
    )
}

#[test]
fn the_issues_example_schema() {
    let mapping = report_mapping();
    mapping.validate().expect("valid");
    let results = read(
        &mapping,
        r#"<?xml version="1.0"?>
<report service="shop" machine="web-3" at="2026-11-23T18:00:00Z">
  <item id="login" result="PASS" took="0.25">logged in</item>
  <item id="checkout" result="FAIL">payment <b>timeout</b></item>
  <item id="search" result="warning">slow</item>
  <extra><gauge name="carts_open" unit="count">17</gauge></extra>
</report>"#,
    )
    .expect("parses");
    let r = &results[0];
    assert_eq!((r.probe.as_str(), r.host.as_str()), ("shop", "web-3"));
    assert_eq!(r.time_ms, 1_795_456_800_000);
    let checks: Vec<(&str, Status, &str)> = r
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.status, c.message.as_str()))
        .collect();
    assert_eq!(
        checks,
        [
            ("login", Status::Ok, "logged in"),
            ("checkout", Status::Critical, "payment timeout"),
            // Not in the map, but a status word probewatch knows.
            ("search", Status::Warning, "slow"),
        ]
    );
    assert_eq!(r.checks[0].duration_seconds, Some(0.25));
    assert_eq!(r.metrics[0].name, "carts_open");
    assert_eq!(r.metrics[0].value, 17.0);
    assert_eq!(r.metrics[0].labels.get("unit"), Some("count"));
}

#[test]
fn a_nested_schema_with_predicates_and_child_elements() {
    // A monitoring agent's own schema: values in child elements, a header element.
    let mapping = Mapping {
        probe: sel("/status/header/source"),
        host: opt("/status/header/node"),
        time: opt("/status/header/epoch"),
        interval: opt("/status/header/every"),
        checks: opt("/status/tests/test[@enabled='yes']"),
        check_name: opt("name"),
        check_status: opt("outcome"),
        check_message: opt("details"),
        check_duration: None,
        status_map: BTreeMap::from([
            ("GREEN".to_string(), Status::Ok),
            ("RED".to_string(), Status::Critical),
        ]),
        metrics: opt("/status/tests/test/measure"),
        metric_name: opt("@metric"),
        metric_value: opt("."),
        metric_labels: BTreeMap::from([("test".to_string(), sel("../name"))]),
    };
    let results = read(
        &mapping,
        r#"<status>
  <header><source>db-watch</source><node>db-1</node><epoch>1700000000</epoch><every>1m</every></header>
  <tests>
    <test enabled="yes"><name>replication</name><outcome>GREEN</outcome><details>lag 0s</details>
      <measure metric="replication_lag_seconds">0</measure></test>
    <test enabled="no"><name>backup</name><outcome>RED</outcome></test>
    <test enabled="yes"><name>disk</name><outcome>RED</outcome><details>97% full</details>
      <measure metric="disk_used_ratio">0.97</measure></test>
  </tests>
</status>"#,
    )
    .expect("parses");
    let r = &results[0];
    assert_eq!(r.interval_ms, Some(60_000));
    assert_eq!(r.checks.len(), 2, "the disabled test is left out");
    assert_eq!(r.checks[1].status, Status::Critical);
    assert_eq!(r.metrics.len(), 2);
    assert_eq!(r.metrics[1].labels.get("test"), Some("disk"));
}

#[test]
fn errors_name_the_selector_and_what_it_found() {
    let mapping = report_mapping();
    let err = |xml: &str| read(&mapping, xml).expect_err(xml).to_string();
    assert!(
        err("<report machine='a'><item id='x' result='PASS'/></report>")
            .contains("selector \"/report/@service\" found nothing")
    );
    assert!(
        err("<report service='s'><item result='PASS'/></report>")
            .contains("selector \"@id\" found no name")
    );
    let e = err("<report service='s'><item id='x' result='MAYBE'/></report>");
    assert!(e.contains("\"MAYBE\"") && e.contains("@result"), "{e}");
    let e = err(
        "<report service='s'><item id='a' result='PASS'><b/></item><gauge name='g'>1</gauge><gauge name='g'>2</gauge></report>",
    );
    assert!(e.contains("appears twice"), "{e}");
    let e = err("<!DOCTYPE r [<!ENTITY a 'b'>]><report service='&a;'/>");
    assert!(e.contains("DTD") || e.contains("dtd"), "{e}");
    let e = err("<report service='s'><item id='x' result='PASS'>");
    assert!(e.contains("line 1"), "{e}");
    // Several nodes where one is expected.
    let several = Mapping {
        probe: sel("//@service"),
        ..report_mapping()
    };
    let e = read(
        &several,
        "<r><report service='a'/><report service='b'/></r>",
    )
    .expect_err("several")
    .to_string();
    assert!(e.contains("found 2 nodes") && e.contains("\"a\""), "{e}");
}

#[test]
fn selectors_outside_the_supported_subset_are_refused_when_read() {
    for bad in [
        "",
        "/a/b[position()>1]",
        "count(/a)",
        "/a | /b",
        "/a/[1]",
        "/a[@b=c]",
        "/a/b[",
    ] {
        assert!(Selector::parse(bad).is_err(), "{bad:?} should be refused");
    }
    for good in [
        "/a/b",
        "//c",
        "@id",
        ".",
        "..",
        "text()",
        "*",
        "/a/b[2]",
        "a[@x]",
        "a[@x='1']/b",
        "a[name=\"v\"]",
    ] {
        assert!(Selector::parse(good).is_ok(), "{good:?} should compile");
    }
}

#[test]
fn the_cookbooks_sensor_list_is_a_check_and_a_metric_per_element() {
    let mapping = Mapping {
        probe: sel("/sensors/@unit"),
        host: None,
        time: opt("/sensors/@read"),
        interval: None,
        checks: opt("/sensors/sensor"),
        check_name: opt("@id"),
        check_status: opt("@state"),
        check_message: opt("."),
        check_duration: None,
        status_map: BTreeMap::from([
            ("NOMINAL".to_string(), Status::Ok),
            ("DEGRADED".to_string(), Status::Warning),
            ("CRITICAL".to_string(), Status::Critical),
        ]),
        metrics: opt("/sensors/sensor"),
        metric_name: opt("@id"),
        metric_value: opt("."),
        metric_labels: BTreeMap::new(),
    };
    mapping.validate().expect("valid");
    let results = read(
        &mapping,
        r#"<sensors unit="rack-4" read="2026-11-23T18:00:00+01:00">
  <sensor id="inlet_temp_celsius" state="NOMINAL">22.5</sensor>
  <sensor id="fan2_rpm" state="CRITICAL">0</sensor>
</sensors>"#,
    )
    .expect("parses");
    let r = &results[0];
    assert_eq!(r.probe, "rack-4");
    assert_eq!(r.time_ms, 1_795_453_200_000);
    assert_eq!(r.checks[1].status, Status::Critical);
    assert_eq!(
        (r.metrics[0].name.as_str(), r.metrics[0].value),
        ("inlet_temp_celsius", 22.5)
    );
}

#[test]
fn a_json_document_is_read_through_the_same_selectors_as_paths_of_keys() {
    // A CI system's own JSON report.
    let mapping = Mapping {
        probe: sel("/pipeline/name"),
        host: opt("/pipeline/runner"),
        time: opt("/pipeline/finished"),
        interval: None,
        checks: opt("/pipeline/jobs[@allow_failure='false']"),
        check_name: opt("name"),
        check_status: opt("state"),
        check_message: opt("log_tail"),
        check_duration: opt("seconds"),
        status_map: BTreeMap::from([
            ("success".to_string(), Status::Ok),
            ("failed".to_string(), Status::Critical),
        ]),
        metrics: opt("//coverage"),
        metric_name: opt("metric"),
        metric_value: opt("percent"),
        metric_labels: BTreeMap::from([("package".to_string(), sel("@package"))]),
    };
    let json = r#"{"pipeline": {"name": "deploy", "runner": "ci-2", "finished": 1700000000,
      "jobs": [
        {"name": "build", "state": "success", "seconds": 61.5, "allow_failure": false},
        {"name": "lint", "state": "failed", "allow_failure": true},
        {"name": "test", "state": "failed", "log_tail": "2 failed", "allow_failure": false,
         "coverage": [{"metric": "coverage_ratio", "percent": 81.5, "package": "core"},
                      {"metric": "coverage_ratio", "percent": 64, "package": "web"}]}
      ]}}"#;
    let results = read(&mapping, json).expect("parses");
    let r = &results[0];
    assert_eq!((r.probe.as_str(), r.host.as_str()), ("deploy", "ci-2"));
    assert_eq!(r.time_ms, 1_700_000_000_000);
    let checks: Vec<(&str, Status)> = r
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.status))
        .collect();
    assert_eq!(
        checks,
        [("build", Status::Ok), ("test", Status::Critical)],
        "the job allowed to fail is left out"
    );
    assert_eq!(r.checks[0].duration_seconds, Some(61.5));
    assert_eq!(r.checks[1].message, "2 failed");
    assert_eq!(r.metrics.len(), 2);
    assert_eq!(r.metrics[1].labels.get("package"), Some("web"));
    assert_eq!(r.metrics[1].value, 64.0);
    // Errors name the selector and what it found, as for XML.
    let e = read(&mapping, r#"{"pipeline": {"runner": "x"}}"#)
        .expect_err("no name")
        .to_string();
    assert!(
        e.contains("/pipeline/name") && e.contains("found nothing"),
        "{e}"
    );
    let e = read(&mapping, r#"{"pipeline": {"name": ["a", "b"]}}"#)
        .expect_err("two names")
        .to_string();
    assert!(e.contains("found 2 nodes"), "{e}");
    let e = read(&mapping, r#"{"pipeline": {"name": "d", "jobs": [}"#)
        .expect_err("truncated")
        .to_string();
    assert!(e.contains("line 1"), "{e}");
}
