use clap::Parser;
use payment_service::config::{Config, SERVICE};

/// Bazaar payment service: Charges and refunds through a payment gateway; keeps transaction records.
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
    payment_service::startup::build(config)
        .await?
        .run_until_stopped()
        .await
}
