//! `bazaar`: one tool for the people who run Bazaar.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use messaging::TopicCatalog;
use platform::config::KafkaSettings;

/// Operate a Bazaar deployment: Kafka topics and broker checks.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        global = true,
        env = "BAZAAR__KAFKA__BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    /// Prefix put in front of every topic name.
    #[arg(
        long,
        global = true,
        env = "BAZAAR__KAFKA__TOPIC_PREFIX",
        default_value = ""
    )]
    topic_prefix: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Kafka topics declared in infra/kafka/topics.toml.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Wait until a Kafka broker answers a metadata request.
    WaitKafka {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create missing topics and bring partitions and configs up to date. Safe to re-run.
    Apply {
        /// Topic catalog; defaults to the one this binary was built with.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Replication factor for newly created topics (production: 3).
        #[arg(long, env = "BAZAAR__KAFKA__REPLICATION_FACTOR", default_value_t = 1)]
        replication_factor: i32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = KafkaSettings::local_defaults("cli");
    settings.bootstrap_servers = cli.kafka.bootstrap_servers;
    settings.topic_prefix = cli.kafka.topic_prefix;
    match cli.command {
        Command::Topics(TopicsCommand::Apply {
            file,
            replication_factor,
        }) => {
            settings.replication_factor = replication_factor;
            let catalog = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    TopicCatalog::parse(&text).with_context(|| format!("in {}", path.display()))?
                }
                None => TopicCatalog::bundled()?,
            };
            let report = messaging::topics::apply(&catalog, &settings)
                .await
                .with_context(|| format!("applying topics to {}", settings.bootstrap_servers))?;
            for (label, names) in [
                ("created", &report.created),
                ("partitions added", &report.partitions_added),
                ("config updated", &report.configs_updated),
            ] {
                for name in names {
                    println!("{label:>16}  {name}");
                }
            }
            println!(
                "topics: {} created, {} grown, {} reconfigured, {} unchanged",
                report.created.len(),
                report.partitions_added.len(),
                report.configs_updated.len(),
                report.unchanged.len()
            );
            Ok(())
        }
        Command::WaitKafka { timeout_secs } => {
            let deadline = Instant::now() + Duration::from_secs(timeout_secs);
            loop {
                match messaging::client::ping(&settings, Duration::from_secs(2)).await {
                    Ok(brokers) if brokers > 0 => {
                        println!(
                            "kafka: {brokers} broker(s) at {}",
                            settings.bootstrap_servers
                        );
                        return Ok(());
                    }
                    outcome if Instant::now() >= deadline => {
                        anyhow::bail!(
                            "kafka at {} did not answer within {timeout_secs}s: {outcome:?}",
                            settings.bootstrap_servers
                        )
                    }
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
    }
}
