use clap::Parser;
use order_service::config::{Config, SERVICE};

/// Bazaar order service: Cart, checkout and order status; starts the checkout saga with OrderCreated.
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
    order_service::startup::build(config)
        .await?
        .run_until_stopped()
        .await
}
