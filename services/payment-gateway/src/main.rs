use clap::Parser;
use payment_gateway::config::{Config, SERVICE};

/// Bazaar payment gateway simulator: a card processor with a Stripe-like API (payment intents,
/// refunds, Idempotency-Key), test card tokens and fault injection. State is kept in memory.
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
    platform::telemetry::init(SERVICE, &config.log);
    let gateway = payment_gateway::startup::build(config)?;
    gateway.server.await?;
    Ok(())
}
