//! Loads the demo catalog (`infra/demo/catalog.json`) so `make run` has something to sell.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use sqlx::PgPool;

use crate::config::Config;
use crate::domain::ProductDraft;

#[derive(Debug, Deserialize)]
struct DemoCatalog {
    products: Vec<ProductDraft>,
}

/// `product-service seed-demo`: migrates the database and loads the products of `file`.
pub async fn run(config: &Config, file: &Path) -> anyhow::Result<()> {
    let pool =
        messaging::service::connect_and_migrate(&config.service.database, &crate::db::MIGRATOR);
    platform::cli::seed_demo(
        crate::config::SERVICE,
        "demo products loaded from",
        file,
        pool,
        seed_demo_catalog,
    )
    .await
}

/// Creates or updates every product of the file by slug and publishes their snapshots.
/// Running it again changes nothing but republishing. Returns how many products.
pub async fn seed_demo_catalog(pool: &PgPool, file: &Path) -> anyhow::Result<usize> {
    let catalog: DemoCatalog = platform::cli::read_json(file)?;
    let mut tx = pool.begin().await?;
    for product in &catalog.products {
        product
            .validate()
            .with_context(|| format!("in {}", file.display()))?;
        crate::db::save_product(&mut tx, None, product, false).await?;
    }
    tx.commit().await?;
    Ok(catalog.products.len())
}
