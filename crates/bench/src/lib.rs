//! The headline benchmark of the real deployment (`stack-bench`, run by `make bench`) and the
//! helpers it shares with the in-process micro-benchmarks (`tests/integration/examples`).
//!
//! This crate reaches a running Bazaar only from outside: HTTP through the gateway, the
//! consumer groups' offsets on the broker, read-only SQL and PostgreSQL's statistics views, and
//! `/proc`. It depends on no service crate, nor on `crates/messaging` or `tests/integration`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod cpu;
pub mod lag;
pub mod load;
pub mod pg;
pub mod report;
pub mod stalls;

/// Latency percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[index].as_secs_f64() * 1000.0
        };
        Some(Self {
            count: samples.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// Runs `command` to its end; its output when it succeeded, else an error naming `what` with
/// what it printed.
pub fn run(
    command: &mut std::process::Command,
    what: &str,
) -> anyhow::Result<std::process::Output> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// Runs Kafka's own EndToEndLatency tool and returns (average, p50, p99) in milliseconds.
pub fn kafka_end_to_end_latency(
    repo_root: &std::path::Path,
    bootstrap: &str,
    topic: &str,
    messages: u32,
    size: u32,
) -> anyhow::Result<(f64, f64, f64)> {
    let kafkactl = repo_root.join("infra/kafka/kafkactl.sh");
    // The broker authenticates its clients: the tool connects as the super user.
    let properties = std::env::temp_dir().join(format!(
        "bazaar-bench-{}-client.properties",
        std::process::id()
    ));
    run(
        std::process::Command::new(&kafkactl)
            .arg("client-properties")
            .arg(&properties),
        "kafkactl client-properties",
    )?;
    let output = run(
        std::process::Command::new(&kafkactl)
            .args([
                "java-tool",
                "org.apache.kafka.tools.EndToEndLatency",
                bootstrap,
                topic,
            ])
            .args([messages.to_string(), "all".into(), size.to_string()])
            .arg(&properties),
        "EndToEndLatency",
    );
    let _ = std::fs::remove_file(&properties);
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number_after = |label: &str| -> Option<f64> {
        let start = text.find(label)? + label.len();
        let rest = text[start..].trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    match (
        number_after("Avg latency:"),
        number_after("50th ="),
        number_after("99th ="),
    ) {
        (Some(avg), Some(p50), Some(p99)) => Ok((avg, p50, p99)),
        _ => anyhow::bail!("cannot read EndToEndLatency output: {text}"),
    }
}
