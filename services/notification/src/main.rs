use clap::Parser;
use notification_service::config::{Config, SERVICE};

/// Bazaar notification service: E-mail and a per-user feed, driven by order lifecycle events.
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
    notification_service::startup::build(config)
        .await?
        .run_until_stopped()
        .await
}
