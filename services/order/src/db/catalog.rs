//! The catalog replica: the order service's own copy of what is for sale, kept from the
//! product service's snapshots; checkout prices from it.

use events::ProductSnapshot;
use order_rules::PricedLine;
use sqlx::PgConnection;

use super::OrderDbError;

/// Keeps the catalog replica equal to the latest snapshot of each product. The rule is the
/// database function `apply_product_snapshot` (migration 0005), which `bazaar rebuild order
/// catalog-replica` calls too: it writes to the `catalog_replica` the connection's search path
/// finds first, so the rebuild fills a fresh table with the same rule.
pub async fn apply_snapshot(
    tx: &mut PgConnection,
    snapshot: &ProductSnapshot,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT apply_product_snapshot($1)")
        .bind(sqlx::types::Json(snapshot))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Prices the requested lines from the replica, in request order.
pub async fn price_lines(
    tx: &mut PgConnection,
    wanted: &[(String, i32)],
) -> Result<Vec<PricedLine>, OrderDbError> {
    let skus: Vec<&str> = wanted.iter().map(|(sku, _)| sku.as_str()).collect();
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT sku, product_name || ' – ' || variant_name, price_minor, currency
           FROM catalog_replica WHERE sku = ANY($1) AND available",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;
    wanted
        .iter()
        .map(|(sku, quantity)| {
            let (_, name, price, currency) = rows
                .iter()
                .find(|(known, ..)| known == sku)
                .ok_or_else(|| OrderDbError::UnknownSku { sku: sku.clone() })?;
            Ok(PricedLine {
                sku: sku.clone(),
                name: name.clone(),
                quantity: *quantity,
                unit_price_minor: *price,
                currency: currency.trim().to_owned(),
            })
        })
        .collect()
}
