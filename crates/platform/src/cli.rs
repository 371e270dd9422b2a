//! Command-line arguments every service binary accepts.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML file layered over the built-in defaults; environment variables
    /// (BAZAAR__SECTION__KEY) override both.
    #[arg(long, value_name = "FILE", env = crate::config::CONFIG_FILE_ENV)]
    pub config: Option<PathBuf>,
}
