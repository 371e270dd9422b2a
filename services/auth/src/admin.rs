//! Command-line administration: `create-admin` and `rotate-keys`.

use std::io::BufRead;

use anyhow::Context;
use sqlx::PgPool;

use crate::accounts::{self, RegisterFailure, Registered};
use crate::domain;
use crate::passwords::Passwords;

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
