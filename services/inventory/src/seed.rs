//! Loads the stock of the demo catalog (`infra/demo/catalog.json`).

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use sqlx::PgPool;

#[derive(Debug, Deserialize)]
struct DemoCatalog {
    products: Vec<DemoProduct>,
}

#[derive(Debug, Deserialize)]
struct DemoProduct {
    variants: Vec<DemoVariant>,
}

#[derive(Debug, Deserialize)]
struct DemoVariant {
    sku: String,
    stock: i64,
}

/// Sets the on-hand stock of every demo SKU. Returns how many SKUs.
pub async fn seed_demo_stock(pool: &PgPool, file: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let catalog: DemoCatalog =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let mut tx = pool.begin().await?;
    let mut count = 0;
    for variant in catalog
        .products
        .iter()
        .flat_map(|product| &product.variants)
    {
        anyhow::ensure!(
            variant.stock >= 0,
            "{}: stock must not be negative",
            variant.sku
        );
        crate::consumers::set_on_hand(&mut tx, &variant.sku, variant.stock).await?;
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}
