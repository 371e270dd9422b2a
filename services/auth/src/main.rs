use auth_service::config::{Config, SERVICE};
use clap::{Parser, Subcommand};

/// Bazaar auth service: accounts and passwords; issues JWTs and publishes UserRegistered.
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
    /// Create an account with the admin role. The password comes from BAZAAR_ADMIN_PASSWORD or
    /// the first line of standard input; there is no default.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// Retire the active signing key and create a new one. The retired key stays in the JWKS
    /// until the tokens it signed have expired.
    RotateKeys,
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
        Command::CreateAdmin { email, name } => {
            let from_env = std::env::var(auth_service::admin::ADMIN_PASSWORD_ENV).ok();
            if from_env.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("password for {email} (the input is shown): ");
            }
            let password = auth_service::admin::read_password(from_env, std::io::stdin().lock())?;
            let pool = connect(&config).await?;
            let admin = auth_service::admin::create_admin(&pool, &email, &name, &password).await?;
            println!("auth: admin {} created with id {}", admin.email, admin.id);
            Ok(())
        }
        Command::RotateKeys => {
            let pool = connect(&config).await?;
            let ttl = std::time::Duration::from_secs(config.tokens.access_ttl_secs);
            let rotation = auth_service::keys::rotate(&pool, ttl).await?;
            match &rotation.retired {
                Some(retired) => println!(
                    "auth: signing with {}; {retired} stays published until {}",
                    rotation.active,
                    rotation.retired_published_until.to_rfc3339()
                ),
                None => println!("auth: signing with {} (there was no key)", rotation.active),
            }
            Ok(())
        }
    }
}

async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    messaging::service::connect_and_migrate(&config.service.database, &auth_service::db::MIGRATOR)
        .await
}
