use auth_service::admin::Command;
use auth_service::config::{Config, SERVICE};
use clap::Parser;

/// Bazaar auth service: accounts and passwords; issues JWTs and publishes UserRegistered.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: platform::cli::ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.config.as_deref())?;
    platform::telemetry::init(SERVICE, &config.service.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            auth_service::startup::build(config)
                .await?
                .run_until_stopped()
                .await
        }
        task => auth_service::admin::run(&config, task).await,
    }
}
