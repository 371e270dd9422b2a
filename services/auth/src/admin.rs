//! Command-line administration: `create-admin` and `rotate-keys`.

use std::io::BufRead;

use anyhow::Context;
use sqlx::PgPool;

use crate::accounts::{self, RegisterFailure, Registered};
use crate::config::Config;
use crate::domain;
use crate::passwords::Passwords;

/// The command-line tasks of the auth binary besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
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

/// Runs a command-line task (all but [`Command::Serve`]).
pub async fn run(config: &Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => anyhow::bail!("serving is not a command-line task"),
        Command::CreateAdmin { email, name } => {
            let from_env = std::env::var(ADMIN_PASSWORD_ENV).ok();
            if from_env.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("password for {email} (the input is shown): ");
            }
            let password = read_password(from_env, std::io::stdin().lock())?;
            let pool = connect(config).await?;
            let admin = create_admin(&pool, &email, &name, &password).await?;
            println!("auth: admin {} created with id {}", admin.email, admin.id);
        }
        Command::RotateKeys => {
            let pool = connect(config).await?;
            let ttl = std::time::Duration::from_secs(config.tokens.access_ttl_secs);
            let rotation = crate::keys::rotate(&pool, ttl).await?;
            match &rotation.retired {
                Some(retired) => println!(
                    "auth: signing with {}; {retired} stays published until {}",
                    rotation.active,
                    rotation.retired_published_until.to_rfc3339()
                ),
                None => println!("auth: signing with {} (there was no key)", rotation.active),
            }
        }
    }
    Ok(())
}

async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    messaging::service::connect_and_migrate(&config.service.database, &crate::db::MIGRATOR).await
}

/// The environment variable `create-admin` takes the password from; without it, the first line
/// of standard input.
pub const ADMIN_PASSWORD_ENV: &str = "BAZAAR_ADMIN_PASSWORD";

/// The password from `from_env` when set, else the first line of `input`. There is no default:
/// an empty password is an error.
pub fn read_password(from_env: Option<String>, input: impl BufRead) -> anyhow::Result<String> {
    let password = match from_env {
        Some(password) => password,
        None => {
            let mut line = String::new();
            input
                .take(4096)
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    anyhow::ensure!(
        !password.is_empty(),
        "no password: set {ADMIN_PASSWORD_ENV} or pipe it on standard input"
    );
    Ok(password)
}

/// Creates an account with the `admin` role, through the same path as a registration (so it
/// also publishes UserRegistered).
pub async fn create_admin(
    pool: &PgPool,
    email: &str,
    name: &str,
    password: &str,
) -> anyhow::Result<Registered> {
    let account = domain::validate_registration(email, password, name).map_err(|fields| {
        let problems: Vec<String> = fields
            .iter()
            .map(|(field, problem)| format!("{field} {problem}"))
            .collect();
        anyhow::anyhow!("invalid account: {}", problems.join("; "))
    })?;
    accounts::register(
        pool,
        &Passwords::new(1),
        &account,
        domain::admin_roles(),
        None,
    )
    .await
    .map_err(|failure| match failure {
        RegisterFailure::DuplicateEmail => {
            anyhow::anyhow!(
                "an account with the address {} already exists",
                account.email
            )
        }
        RegisterFailure::Internal(cause) => cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_stdin() {
        let password = read_password(Some("from env".into()), &b"from stdin\n"[..]);
        assert_eq!(password.expect("password"), "from env");
    }

    #[test]
    fn stdin_gives_its_first_line_without_the_newline() {
        let password = read_password(None, &b"s3cret pass\r\nsecond line\n"[..]);
        assert_eq!(password.expect("password"), "s3cret pass");
    }

    #[test]
    fn no_password_is_an_error_not_a_default() {
        assert!(read_password(None, &b""[..]).is_err());
        assert!(read_password(None, &b"\n"[..]).is_err());
        assert!(read_password(Some(String::new()), &b"x\n"[..]).is_err());
    }
}
