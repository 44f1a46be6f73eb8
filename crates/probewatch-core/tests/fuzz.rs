//! The result parsers (XML, JSON, Prometheus text, and `auto` choosing among them) against arbitrary and
//! mutated input: it must never panic, and
//! every failure must be a `Reject` that names a kind and says what is wrong. Runs briefly
//! in every `cargo test` (set PROPTEST_CASES for a longer run).

use probewatch_core::format::FileContext;
use probewatch_core::{Format, ParseLimits, parse};
use proptest::prelude::*;

fn fixtures() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for format in ["xml", "json", "prom", "nagios"] {
        let dir = format!("{}/test_data/{format}", env!("CARGO_MANIFEST_DIR"));
        out.extend(
            std::fs::read_dir(dir)
                .expect("fixtures")
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == format))
                .filter_map(|e| std::fs::read(e.path()).ok()),
        );
    }
    out.sort();
    out
}

/// A mapping that reads the XML fixtures' own schema, so mutated fixtures exercise the
/// mapping format's selectors too.
fn mapping() -> probewatch_core::format::mapping::Mapping {
    use probewatch_core::format::mapping::{Mapping, Selector};
    let sel = |t: &str| Selector::parse(t).expect("selector");
    Mapping {
        probe: sel("//probe[1]/@name"),
        host: Some(sel("//probe[1]/@host")),
        time: Some(sel("//probe[1]/@time")),
        interval: Some(sel("//probe[1]/@interval")),
        checks: Some(sel("//check")),
        check_name: Some(sel("@name")),
        check_status: Some(sel("@status")),
        check_message: Some(sel(".")),
        check_duration: Some(sel("@duration")),
        status_map: Default::default(),
        metrics: Some(sel("//metric")),
        metric_name: Some(sel("@name")),
        metric_value: Some(sel("@value")),
        metric_labels: [("kind".to_string(), sel("label[@name='kind']/@value"))].into(),
    }
}

fn parses_or_rejects_clearly(bytes: &[u8]) {
    let limits = ParseLimits::default();
    let mapping = mapping();
    for format in [
        Format::Xml,
        Format::Json,
        Format::Prometheus,
        Format::Nagios,
        Format::Mapping,
        Format::Auto,
    ] {
        if let Err(reject) = parse(
            format,
            bytes,
            FileContext {
                mtime_ms: 0,
                name: "",
                mapping: Some(&mapping),
            },
            &limits,
        ) {
            assert!(!reject.to_string().is_empty(), "a rejection says why");
        }
    }
}

/// One edit of a byte string: insert, delete or replace at a position.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Replace(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..8),
        prop::sample::select(vec![
            b"<".to_vec(),
            b">".to_vec(),
            b"&".to_vec(),
            b"&amp;".to_vec(),
            b"&#x202E;".to_vec(),
            b"&#0;".to_vec(),
            b"\"".to_vec(),
            b"<![CDATA[".to_vec(),
            b"<!DOCTYPE x [<!ENTITY a \"b\">]>".to_vec(),
            b"<check name=\"c\" status=\"ok\"/>".to_vec(),
            b"<metric name=\"m\" value=\"1e400\"/>".to_vec(),
            b"<label name=\"l\" value=\"v\"/>".to_vec(),
            b" time=\"-99999999999999\"".to_vec(),
            b" interval=\"0s\"".to_vec(),
            "\u{feff}".as_bytes().to_vec(),
            b"{".to_vec(),
            b"[".to_vec(),
            b"\"status\": 9".to_vec(),
            b"\"value\": 1e999".to_vec(),
            b"\"time\": -1".to_vec(),
            b"\\ud800".to_vec(),
            b"{a=\"\\".to_vec(),
            b"\n# TYPE m gauge\n".to_vec(),
            b"\n# EOF\n".to_vec(),
            b" 99999999999999999999".to_vec(),
            vec![0xff, 0xfe],
        ]),
    ];
    prop_oneof![
        (any::<usize>(), fragment).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        match e {
            Edit::Insert(at, fragment) => {
                let at = at % (len + 1);
                bytes.splice(at..at, fragment.iter().copied());
            }
            Edit::Delete(at, n) if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Replace(at, b) if len > 0 => bytes[at % len] = *b,
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        parses_or_rejects_clearly(&bytes);
    }

    #[test]
    fn mutated_result_files_never_panic(
        which in any::<usize>(),
        edits in proptest::collection::vec(edit(), 1..12),
    ) {
        let fixtures = fixtures();
        let base = fixtures[which % fixtures.len()].clone();
        parses_or_rejects_clearly(&apply(base, &edits));
    }
}
