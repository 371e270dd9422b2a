//! Loads the stock of the demo catalog (`infra/demo/catalog.json`).

use std::path::Path;

use anyhow::Context;
use sqlx::PgPool;

use crate::config::Config;

/// `inventory-service seed-demo`: migrates the database and stocks the SKUs of `file`.
pub async fn run(config: &Config, file: &Path) -> anyhow::Result<()> {
    let pool =
        messaging::service::connect_and_migrate(&config.service.database, &crate::db::MIGRATOR);
    platform::cli::seed_demo(
        crate::config::SERVICE,
        "demo SKUs stocked from",
        file,
        pool,
        seed_demo_stock,
    )
    .await
}

/// Sets the on-hand stock of every demo SKU (the inventory rules' reading of a catalog).
/// Returns how many SKUs.
pub async fn seed_demo_stock(pool: &PgPool, file: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let stock = inventory_rules::catalog_stock(&text)
        .with_context(|| format!("parsing {}", file.display()))?;
    let mut tx = pool.begin().await?;
    for (sku, units) in &stock {
        crate::consumers::set_on_hand(&mut tx, sku, *units)
            .await
            .with_context(|| format!("{sku} in {}", file.display()))?;
    }
    tx.commit().await?;
    Ok(stock.len())
}
