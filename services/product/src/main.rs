use std::path::PathBuf;

use clap::{Parser, Subcommand};
use product_service::config::{Config, SERVICE};

/// Bazaar product service: the catalog, with variants and prices.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: platform::cli::ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply migrations and load the demo catalog, then exit. Safe to run again.
    SeedDemo {
        #[arg(long, default_value = "infra/demo/catalog.json")]
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.config.as_deref())?;
    platform::telemetry::init(SERVICE, &config.service.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            product_service::startup::build(config)
                .await?
                .run_until_stopped()
                .await
        }
        Command::SeedDemo { file } => {
            let pool = messaging::service::connect_and_migrate(
                &config.service.database,
                &product_service::db::MIGRATOR,
            )
            .await?;
            let count = product_service::seed::seed_demo_catalog(&pool, &file).await?;
            println!(
                "product: {count} demo products loaded from {}",
                file.display()
            );
            Ok(())
        }
    }
}
