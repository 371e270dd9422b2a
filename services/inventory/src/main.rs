use clap::Parser;
use inventory_service::config::{Config, SERVICE};
use platform::cli::ServeOrSeed;

/// Bazaar inventory service: stock per SKU and reservations.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: platform::cli::ConfigArgs,
    #[command(subcommand)]
    command: Option<ServeOrSeed>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.config.as_deref())?;
    platform::telemetry::init(SERVICE, &config.service.log);
    match cli.command.unwrap_or(ServeOrSeed::Serve) {
        ServeOrSeed::Serve => {
            inventory_service::startup::build(config)
                .await?
                .run_until_stopped()
                .await
        }
        ServeOrSeed::SeedDemo { file } => inventory_service::seed::run(&config, &file).await,
    }
}
