use clap::Parser;
use schema_registry::config::{Config, SERVICE};

/// Bazaar schema registry: the Confluent Schema Registry REST API subset that Avro serializers
/// use, stored in PostgreSQL.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: platform::cli::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.config.as_deref())?;
    platform::telemetry::init(SERVICE, &config.service.log);
    schema_registry::startup::build(config)
        .await?
        .run_until_stopped()
        .await
}
