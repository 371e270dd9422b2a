//! Command-line arguments every service binary accepts, and the `seed-demo` subcommand of the
//! services the demo catalog seeds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML file layered over the built-in defaults; environment variables
    /// (BAZAAR__SECTION__KEY) override both.
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_FILE_ENV)]
    pub config: Option<PathBuf>,
}

/// The demo catalog `make run` loads (products, variants, prices and stock).
pub const DEMO_CATALOG: &str = "infra/demo/catalog.json";

/// The subcommands of a service whose data the demo catalog seeds.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServeOrSeed {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply migrations and load the service's part of the demo catalog, then exit. Safe to run
    /// again.
    SeedDemo {
        #[arg(long, default_value = DEMO_CATALOG)]
        file: PathBuf,
    },
}

/// Reads a JSON file such as the demo catalog as `T` (each service reads its own part of it).
pub fn read_json<T: DeserializeOwned>(file: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))
}

/// Runs `seed-demo`: connects to the service's database (`pool`, which also migrates it), then
/// `load` seeds it from `file` and counts what it loaded, reported as `<service>: <count> <what>
/// <file>` (e.g. `demo products loaded from`).
pub async fn seed_demo(
    service: &str,
    what: &str,
    file: &Path,
    pool: impl Future<Output = anyhow::Result<sqlx::PgPool>>,
    load: impl AsyncFnOnce(&sqlx::PgPool, &Path) -> anyhow::Result<usize>,
) -> anyhow::Result<()> {
    let count = load(&pool.await?, file).await?;
    println!("{service}: {count} {what} {}", file.display());
    Ok(())
}
