use clap::Parser;
use gateway::config::{Config, SERVICE};

/// Bazaar API gateway: serves the storefront and forwards /api/* to the services.
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
    let gateway = gateway::startup::build(config)?;
    gateway.server.await?;
    Ok(())
}
