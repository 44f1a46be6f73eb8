//! docs/result.schema.json and the JSON parser agree: every example on docs/format-json.md
//! and every `ok_*` fixture is valid against the schema and parses; every `bad_*` fixture
//! that is well-formed JSON is refused by both (except duplicates, which a schema cannot
//! express).

use std::path::Path;

use probewatch_core::format::FileContext;
use probewatch_core::{Format, ParseLimits, parse};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("docs/result.schema.json")).expect("schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

fn ours(text: &str) -> bool {
    parse(
        Format::Json,
        text.as_bytes(),
        FileContext {
            mtime_ms: 0,
            name: "",
            mapping: None,
        },
        &ParseLimits::default(),
    )
    .is_ok()
}

#[test]
fn the_documented_examples_are_valid_and_parse() {
    let validator = validator();
    let page = std::fs::read_to_string(root().join("docs/format-json.md")).expect("page");
    let examples: Vec<&str> = page
        .split("```json\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(examples.len() >= 2, "the page has its examples");
    for example in examples {
        let value: serde_json::Value = serde_json::from_str(example).expect("example is JSON");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{example}: {errors:?}");
        assert!(ours(example), "{example}");
    }
}

#[test]
fn the_fixtures_get_the_same_verdict_from_the_schema_and_the_parser() {
    let validator = validator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/json");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if !name.ends_with(".json") || name.contains("duplicate") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not UTF-8: not JSON for the schema either
        };
        let text = text.trim_start_matches('\u{feff}');
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            continue; // not well-formed: the schema has nothing to say
        };
        let valid = validator.is_valid(&value);
        assert_eq!(
            valid,
            name.starts_with("ok_"),
            "{name}: schema says {valid}"
        );
        assert_eq!(ours(text), valid, "{name}");
        checked += 1;
    }
    assert!(checked >= 12, "{checked} fixtures checked");
}
