//! Bazaar's global invariants, checked from the outside.
//!
//! Bazaar promises that no accepted order is lost, no card is charged twice and stock is never
//! oversold, whatever dies on the way. This crate checks those promises after the fact, the way
//! Kafka's system tests do: read every service's database (read-only) and the card processor's
//! ledger, and report each broken promise with its details.
//!
//! - Every accepted order exists and reaches a state the saga no longer moves on from
//!   (`shipping_scheduled` or later, or `paid` without a shipping service; `rejected`;
//!   `cancelled`).
//! - Per order: at most one successful charge, in the payment database and at the processor; a
//!   paid order has exactly one charge of its total and no refund; a rejected or cancelled one
//!   keeps no money.
//! - Per SKU: initial = available + reserved + sold; reserved = the live reservations; nothing
//!   negative. A paid order's stock is sold, an unpaid one's is not, and a final order holds no
//!   reservation.
//! - A paid order has exactly one shipment; every final order has exactly the notices its
//!   outcome calls for, each once, each e-mail sent (and in the mail folder when given).
//!
//! [`rules`] holds the pure logic; [`Checker`] reads the sources and polls until things settle.
//! `bazaar check` is the command-line face of it.

#[cfg(feature = "sources")]
pub mod check;
#[cfg(feature = "sources")]
pub mod collect;
pub mod model;
pub mod rules;

#[cfg(feature = "sources")]
pub use check::{Checker, Outcome, Report};
#[cfg(feature = "sources")]
pub use collect::Sources;
pub use rules::{Expectations, Invariant, Violation};

/// Initial stock per SKU from a catalog file in the format of `infra/demo/catalog.json`
/// (`products[].variants[].{sku, stock}`), or a plain JSON object `{"SKU": units}`.
pub fn initial_stock_from_json(
    text: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    if let Ok(stock) = inventory_rules::catalog_stock(text) {
        return Ok(stock);
    }
    serde_json::from_str(text).map_err(|error| {
        anyhow::anyhow!(
            "neither a catalog (products[].variants[].sku/stock) nor an object of SKU to units: {error}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_stock_reads_a_catalog_or_a_plain_map() {
        let catalog = r#"{"products": [{"slug": "x", "variants": [
            {"sku": "A", "stock": 3, "price_minor": 1}, {"sku": "B", "stock": 0}]}]}"#;
        let stock = initial_stock_from_json(catalog).expect("catalog");
        assert_eq!(stock.get("A"), Some(&3));
        assert_eq!(stock.get("B"), Some(&0));
        let plain = initial_stock_from_json(r#"{"C": 7}"#).expect("map");
        assert_eq!(plain.get("C"), Some(&7));
        assert!(initial_stock_from_json("[1]").is_err());
    }
}
