//! Stock and reservations: what can be sold, and what is promised to an order.

use serde::Serialize;

/// Stock of one SKU. `available` is what a new order may still reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StockLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_is_on_hand_minus_reserved() {
        let level = StockLevel {
            sku: "TEE-M".into(),
            on_hand: 10,
            reserved: 3,
        };
        assert_eq!(level.available(), 7);
    }
}
