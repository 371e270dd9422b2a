//! Loads the demo catalog (`infra/demo/catalog.json`) so `make run` has something to sell.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use sqlx::PgPool;

use crate::domain::ProductDraft;

#[derive(Debug, Deserialize)]
struct DemoCatalog {
    products: Vec<ProductDraft>,
}

/// Creates or updates every product of the file by slug and publishes their snapshots.
/// Running it again changes nothing but republishing. Returns how many products.
pub async fn seed_demo_catalog(pool: &PgPool, file: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let catalog: DemoCatalog =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
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
