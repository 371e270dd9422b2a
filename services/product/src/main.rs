use clap::Parser;
use platform::cli::ServeOrSeed;
use product_service::config::{Config, SERVICE};

/// Bazaar product service: the catalog, with variants and prices.
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
            product_service::startup::build(config)
                .await?
                .run_until_stopped()
                .await
        }
        ServeOrSeed::SeedDemo { file } => product_service::seed::run(&config, &file).await,
    }
}
