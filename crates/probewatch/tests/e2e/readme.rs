//! The README's tour, run as it is written: its shell blocks are read from README.md, the
//! commands that write into the spool run through bash, and every `curl` whose line ends in
//! a JSON comment must answer with (at least) that JSON — so the tour shows what a newcomer
//! gets whenever they run it. Only the daemon's address and the spool path are substituted.
//! Commands without a JSON comment (the `probewatch` subcommands, which need files of their
//! own) are not run here; their behaviour has tests of its own.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::Env;

/// The tour's shell commands, one string per command (heredocs and `\` continuations
/// joined).
fn tour_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let start = readme.find("## A 5-minute tour").expect("the tour");
    let tour = &readme[start..];
    let tour = &tour[..tour[3..].find("\n## ").map_or(tour.len(), |e| e + 3)];
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut current = String::new();
    let mut heredoc: Option<String> = None;
    for line in tour.lines() {
        if !in_sh {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if heredoc.is_none() && line.trim() == "```" {
            in_sh = false;
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if let Some(end) = &heredoc {
            if line.trim() == end {
                heredoc = None;
                commands.push(std::mem::take(&mut current));
            }
            continue;
        }
        if let Some((_, rest)) = line.split_once("<<'") {
            heredoc = rest.split('\'').next().map(String::from);
            continue;
        }
        if !line.trim_end().ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

/// The JSON a command's comment shows, if its last line ends in one.
fn shown_json(command: &str) -> Option<Value> {
    let last = command.trim_end().lines().last()?;
    let (_, comment) = last.rsplit_once("   # ")?;
    serde_json::from_str(comment.trim()).ok()
}

/// Whether `actual` has everything `shown` shows: object fields, array elements from the
/// first, equal values; the string `"..."` stands for any value.
fn shows(actual: &Value, shown: &Value) -> bool {
    match (actual, shown) {
        (_, Value::String(s)) if s == "..." => true,
        (Value::Object(a), Value::Object(s)) => {
            s.iter().all(|(k, v)| a.get(k).is_some_and(|x| shows(x, v)))
        }
        (Value::Array(a), Value::Array(s)) => {
            s.len() <= a.len() && s.iter().zip(a).all(|(v, x)| shows(x, v))
        }
        _ => actual == shown,
    }
}

fn bash(command: &str) -> String {
    let out = std::process::Command::new("bash")
        .args(["-c", command])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_tour_gives_the_output_it_shows() {
    let env = Env::new();
    let daemon = env.start(&[]);
    let address = daemon.base.trim_start_matches("http://").to_string();
    let spool = format!("{}/", env.spool().display());
    let commands = tour_commands();
    let mut checked = 0;
    for command in &commands {
        let command = command
            .replace("localhost:9180", &address)
            .replace("spool/", &spool);
        let first = command.trim_start();
        if first.starts_with("cat >") || first.starts_with("printf ") {
            bash(&command);
            continue;
        }
        let Some(shown) = shown_json(&command) else {
            continue;
        };
        assert!(first.starts_with("curl "), "{command}");
        // Ingest is asynchronous: ask again until the answer shows it, for a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = bash(&command);
            let parsed: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
            if shows(&parsed, &shown) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the README shows\n{shown}\nbut\n{command}\nanswers\n{answer}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        checked += 1;
    }
    assert!(
        checked >= 6,
        "only {checked} commands with shown output: {commands:#?}"
    );
    daemon.stop();
}
