use clap::Parser;
use shipping_service::config::{Config, SERVICE};

/// Bazaar shipping service: Schedules shipments for paid orders.
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
    shipping_service::startup::build(config)
        .await?
        .run_until_stopped()
        .await
}
