use std::path::PathBuf;

use clap::{Parser, Subcommand};
use inventory_service::config::{Config, SERVICE};

/// Bazaar inventory service: stock per SKU and reservations.
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
    /// Apply migrations and load the stock of the demo catalog, then exit. Safe to run again.
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
            inventory_service::startup::build(config)
                .await?
                .run_until_stopped()
                .await
        }
        Command::SeedDemo { file } => {
            let pool = messaging::service::connect_and_migrate(
                &config.service.database,
                &inventory_service::db::MIGRATOR,
            )
            .await?;
            let count = inventory_service::seed::seed_demo_stock(&pool, &file).await?;
            println!(
                "inventory: {count} demo SKUs stocked from {}",
                file.display()
            );
            Ok(())
        }
    }
}
