//! The product service's rules for what it learns from other services: whether a shopper
//! browsing the catalog can still buy a variant.
//!
//! - The product service keeps a replica of inventory's compacted `stock-levels` topic: the
//!   latest on-hand and reserved quantity of each SKU ([`SUBSCRIPTIONS`], [`HANDLES`]).
//! - A variant's [`Availability`] follows from what is still available (on hand minus
//!   reserved) and the configured low-stock threshold ([`availability`]).
//! - The replica lags behind inventory, so availability is advice for browsing: the reservation
//!   at checkout stays the authority on whether an order gets its stock.
//!
//! Plain functions, no Kafka or database (Cargo keeps this crate free of them), so the service,
//! the CLI and the saga's catalog of consumers share them.

use events::EventType;
use serde::Serialize;

/// The service these rules belong to (its consumer group, database and CLI name).
pub const SERVICE: &str = "product";

/// The event types the product service does something with; its consumer passes over the rest
/// of what its topics carry.
pub const HANDLES: &[EventType] = &[EventType::StockLevelChanged];

/// The topics the product service consumes: the stock levels its catalog shows.
pub const SUBSCRIPTIONS: &[&str] = &["stock-levels"];

/// The fewest units available (on hand minus reserved) with which a variant is in stock. The
/// catalog's in-stock filter selects on it in SQL, so it is the one place the line is drawn.
pub const IN_STOCK_FROM: i64 = 1;

/// Whether a variant can be bought, as far as the catalog knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// More than the low-stock threshold available.
    InStock,
    /// Some available, no more than the low-stock threshold.
    Low,
    /// Nothing available: everything on hand is reserved or sold.
    SoldOut,
    /// No stock level heard for the SKU yet: inventory has never stocked it, or the replica has
    /// not caught up. Checkout decides; a SKU inventory never stocked cannot be reserved.
    Unknown,
}

impl Availability {
    pub const ALL: [Self; 4] = [Self::InStock, Self::Low, Self::SoldOut, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InStock => "in_stock",
            Self::Low => "low",
            Self::SoldOut => "sold_out",
            Self::Unknown => "unknown",
        }
    }
}

/// A variant's availability from the units available of its SKU (`None`: no level heard yet);
/// `low_threshold` units or fewer (but some) are low, and 0 never shows low.
pub fn availability(available: Option<i64>, low_threshold: u32) -> Availability {
    match available {
        None => Availability::Unknown,
        Some(units) if units < IN_STOCK_FROM => Availability::SoldOut,
        Some(units) if units <= i64::from(low_threshold) => Availability::Low,
        Some(_) => Availability::InStock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// given a SKU's stock (on hand, reserved) and a low-stock threshold, when a shopper browses,
    /// then the availability shown.
    fn given(level: Option<(i64, i64)>, low_threshold: u32) -> Availability {
        availability(
            level.map(|(on_hand, reserved)| on_hand - reserved),
            low_threshold,
        )
    }

    #[test]
    fn plenty_on_hand_is_in_stock() {
        assert_eq!(given(Some((25, 0)), 5), Availability::InStock);
        assert_eq!(given(Some((25, 19)), 5), Availability::InStock);
    }

    #[test]
    fn the_threshold_and_fewer_are_low() {
        assert_eq!(given(Some((5, 0)), 5), Availability::Low);
        assert_eq!(given(Some((10, 9)), 5), Availability::Low);
        assert_eq!(given(Some((6, 0)), 5), Availability::InStock);
    }

    #[test]
    fn everything_reserved_or_sold_is_sold_out() {
        assert_eq!(given(Some((1, 1)), 5), Availability::SoldOut);
        assert_eq!(given(Some((0, 0)), 5), Availability::SoldOut);
    }

    #[test]
    fn a_threshold_of_zero_never_shows_low() {
        assert_eq!(given(Some((1, 0)), 0), Availability::InStock);
        assert_eq!(given(Some((0, 0)), 0), Availability::SoldOut);
    }

    #[test]
    fn no_level_heard_is_unknown_not_sold_out() {
        assert_eq!(given(None, 5), Availability::Unknown);
    }

    #[test]
    fn the_in_stock_line_is_where_sold_out_ends() {
        assert_eq!(availability(Some(IN_STOCK_FROM), 0), Availability::InStock);
        assert_eq!(
            availability(Some(IN_STOCK_FROM - 1), 0),
            Availability::SoldOut
        );
    }

    #[test]
    fn names_are_the_wire_names() {
        for availability in Availability::ALL {
            assert_eq!(
                serde_json::to_value(availability).expect("json"),
                availability.as_str()
            );
        }
    }
}
