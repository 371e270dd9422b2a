//! The compatibility gate: every schema change must be BACKWARD compatible (a consumer with the
//! new schema reads everything written with any earlier one), checked transitively over the
//! history kept in `schemas/avro/<topic>/<Event>/v<N>.avsc`. CI fails on a breaking change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

fn schemas_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/avro")
}

/// Every event's versions, oldest first: (topic/Event) -> [(N, path)].
fn history() -> BTreeMap<String, Vec<(u32, PathBuf)>> {
    let mut found: BTreeMap<String, Vec<(u32, PathBuf)>> = BTreeMap::new();
    for topic in std::fs::read_dir(schemas_root()).expect("schemas/avro") {
        let topic = topic.expect("entry").path();
        if !topic.is_dir() {
            continue;
        }
        for event in std::fs::read_dir(&topic).expect("topic folder") {
            let event = event.expect("entry").path();
            let name = format!(
                "{}/{}",
                topic.file_name().unwrap_or_default().to_string_lossy(),
                event.file_name().unwrap_or_default().to_string_lossy()
            );
            for file in std::fs::read_dir(&event).expect("event folder") {
                let file = file.expect("entry").path();
                let stem = file
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let version = stem
                    .strip_prefix('v')
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or_else(|| {
                        panic!("{}: schema files are named v<N>.avsc", file.display())
                    });
                assert_eq!(
                    file.extension().and_then(|e| e.to_str()),
                    Some("avsc"),
                    "{}",
                    file.display()
                );
                found.entry(name.clone()).or_default().push((version, file));
            }
        }
    }
    for versions in found.values_mut() {
        versions.sort();
    }
    found
}

fn parse(path: &Path) -> Schema {
    let text = std::fs::read_to_string(path).expect("read schema");
    Schema::parse_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Why `newer` cannot read data written with `older`, if it cannot.
fn backward_incompatibility(older: &Schema, newer: &Schema) -> Option<String> {
    SchemaCompatibility::can_read(older, newer)
        .err()
        .map(|error| error.to_string())
}

#[test]
fn every_schema_version_reads_data_written_with_every_earlier_version() {
    let history = history();
    assert!(
        history.len() >= 18,
        "expected every event's schema, found {}",
        history.len()
    );
    let mut problems = Vec::new();
    for (event, versions) in &history {
        let numbers: Vec<u32> = versions.iter().map(|(n, _)| *n).collect();
        let expected: Vec<u32> = (1..=u32::try_from(versions.len()).unwrap_or(0)).collect();
        if numbers != expected {
            problems.push(format!(
                "{event}: versions must be v1..vN without gaps, found {numbers:?}"
            ));
            continue;
        }
        for (index, (newer_version, newer_path)) in versions.iter().enumerate() {
            let newer = parse(newer_path);
            for (older_version, older_path) in &versions[..index] {
                if let Some(reason) = backward_incompatibility(&parse(older_path), &newer) {
                    problems.push(format!(
                        "{event}: v{newer_version} cannot read v{older_version}: {reason}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "breaking schema changes:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_build_encodes_with_the_latest_version_of_each_schema() {
    let history = history();
    for (event, file) in events::SCHEMA_FILES {
        let (topic, _) = file.split_once('/').unwrap_or_default();
        let key = format!("{topic}/{event}");
        let latest = history
            .get(&key)
            .and_then(|versions| versions.last())
            .unwrap_or_else(|| panic!("{key} has no schema history"));
        assert!(
            latest.1.ends_with(file),
            "{event} is encoded with {file}, but the latest version is {}",
            latest.1.display()
        );
    }
    assert_eq!(
        events::SCHEMA_FILES.len(),
        history.len(),
        "an event folder has no Rust type, or the reverse"
    );
}

#[test]
fn the_gate_rejects_the_changes_that_break_consumers() {
    let v1 = Schema::parse_str(
        r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"}]}"#,
    )
    .expect("v1");
    let breaking = [
        // A new field without a default: old data has no value for it.
        r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"sku","type":"string"}]}"#,
        // A field's type changed: old strings are not ints.
        r#"{"type":"record","name":"E","fields":[{"name":"id","type":"int"},{"name":"qty","type":"int"}]}"#,
        // The record renamed.
        r#"{"type":"record","name":"F","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"}]}"#,
    ];
    for text in breaking {
        let v2 = Schema::parse_str(text).expect("v2");
        assert!(
            backward_incompatibility(&v1, &v2).is_some(),
            "must be rejected: {text}"
        );
    }
    let compatible = [
        // A new field with a default, a removed field, a widened type.
        r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"sku","type":"string","default":""}]}"#,
        r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"}]}"#,
        r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},{"name":"qty","type":"long"}]}"#,
    ];
    for text in compatible {
        let v2 = Schema::parse_str(text).expect("v2");
        assert_eq!(
            backward_incompatibility(&v1, &v2),
            None,
            "must be accepted: {text}"
        );
    }
}
