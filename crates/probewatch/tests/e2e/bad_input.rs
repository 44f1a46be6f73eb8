//! Bad input is rejected with a specific error naming the file, stays visible, and never
//! stops the next good file.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../probewatch-core/test_data/xml")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_kind_of_bad_file_is_rejected_and_the_next_good_one_ingested() {
    let env = Env::new();
    let daemon = env.start(&[]);
    let bad = [
        ("empty.xml", "bad_empty.xml", "file is empty"),
        (
            "truncated.xml",
            "bad_truncated_after_element.xml",
            "truncated",
        ),
        (
            "status.xml",
            "bad_unknown_status.xml",
            "unknown status \"fine\"",
        ),
        (
            "number.xml",
            "bad_number.xml",
            "value \"12,5\" is not a number",
        ),
        (
            "space name.xml",
            "bad_metric_name_space.xml",
            "invalid metric name \"online users\"",
        ),
        (
            "laughs.xml",
            "bad_billion_laughs.xml",
            "<!DOCTYPE> is not allowed",
        ),
        ("xxe.xml", "bad_xxe.xml", "<!DOCTYPE> is not allowed"),
        ("latin1.xml", "bad_invalid_utf8.xml", "invalid UTF-8"),
        ("garbage.xml", "bad_binary.xml", "invalid UTF-8"),
    ];
    for (name, fixture_name, _) in &bad {
        std::fs::write(env.spool().join(name), fixture(fixture_name)).expect("write");
    }
    // Odd names: a newline and bytes that are not UTF-8.
    let newline = env.spool().join("line\nbreak.xml");
    std::fs::write(&newline, b"").expect("write");
    let non_utf8 = env.spool().join(OsStr::from_bytes(b"caf\xe9.xml"));
    std::fs::write(&non_utf8, b"<probe").expect("write");
    std::fs::write(env.spool().join("good.xml"), result_xml(1)).expect("write");
    let n_bad = bad.len() as u64 + 2;
    daemon.wait_files(n_bad + 1, Duration::from_secs(20));

    let stats = daemon.stats();
    assert_eq!(stats["files_rejected"], n_bad);
    assert_eq!(stats["files_ingested"], 1);
    let rejected = daemon.get("/api/v1/files?status=rejected");
    let files = rejected["files"].as_array().expect("files");
    assert_eq!(files.len() as u64, n_bad);
    for (name, _, expected) in &bad {
        let path = env.spool().join(name).display().to_string();
        let row = files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{name} not listed: {rejected}"));
        let error = row["error"].as_str().expect("error");
        assert!(error.contains(expected), "{name}: {error}");
    }
    // The truncated file's error has a position; the log names the file.
    let truncated = files
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("truncated.xml"))
        })
        .expect("row");
    assert!(
        truncated["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("line 3, column 1:")),
        "{truncated}"
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "rejected {}",
            env.spool().join("status.xml").display()
        )),
        "{log}"
    );
    assert!(files.iter().any(|f| {
        f["path"]
            .as_str()
            .is_some_and(|p| p.contains("caf\u{fffd}.xml"))
    }));
    // Rejected files stay where the user can see them.
    for (name, _, _) in &bad {
        assert!(env.spool().join(name).exists());
    }
    let metrics = daemon.get_text("/metrics");
    assert!(
        metrics.contains("probewatch_files_rejected_total{spool=\"spool\",reason=\"dtd\"} 2"),
        "{metrics}"
    );

    // A rejected file rewritten correctly is ingested.
    std::fs::write(env.spool().join("status.xml"), result_xml(2)).expect("fix");
    daemon.wait_until("fixed file ingested", Duration::from_secs(10), |d| {
        d.stats()["files_ingested"] == 2
    });
}

#[test]
fn quarantine_size_limit_and_clock_skew() {
    let env = Env::new();
    let quarantine = env.dir.path().join("quarantine");
    let config = format!(
        "max_file_bytes = 2000\n[[spool]]\npath = {:?}\nquarantine = {:?}\n",
        env.spool().display().to_string(),
        quarantine.display().to_string()
    );
    let daemon = env.start_with_config(&config);
    std::fs::create_dir_all(env.spool().join("sub")).expect("mkdir");
    std::fs::write(env.spool().join("sub/big.xml"), "x".repeat(5000)).expect("write");
    std::fs::write(env.spool().join("bad.xml"), "<probe").expect("write");
    let future = jiff::Timestamp::now().as_second() + 3600;
    std::fs::write(
        env.spool().join("future.xml"),
        format!(r#"<probe name="p" time="{future}"><check name="c" status="ok"/></probe>"#),
    )
    .expect("write");
    daemon.wait_files(3, Duration::from_secs(10));
    daemon.wait_until("quarantined", Duration::from_secs(10), |_| {
        quarantine.join("sub/big.xml").exists() && quarantine.join("bad.xml").exists()
    });
    let files = daemon.get("/api/v1/files");
    let rows = files["files"].as_array().expect("files");
    let big = rows
        .iter()
        .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with("big.xml")))
        .expect("big");
    assert_eq!(big["reason"], "too_large");
    assert!(
        big["error"]
            .as_str()
            .is_some_and(|e| e.contains("over the limit of 2000 bytes"))
    );
    let skewed = rows
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("future.xml"))
        })
        .expect("future");
    assert_eq!(skewed["status"], "ingested");
    assert_eq!(skewed["clock_skew"], true);
    assert!(daemon.log().contains("clock skew"));
    assert!(
        env.spool().join("future.xml").exists(),
        "good files are kept"
    );
}
