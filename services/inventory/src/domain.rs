//! Stock and reservations: what can be sold, and what is promised to an order.
//!
//! The inventory service's part of the checkout saga:
//! - OrderCreated: reserve every line, all or nothing, or report the first SKU short of stock.
//! - PaymentSucceeded: the reservation becomes a sale (on hand decreases).
//! - PaymentFailed or OrderCancelled: release it; a cancelled sale is restocked.
//! - A reservation not paid in time expires and is released.
//!
//! Each rule is a plain function, tested without Kafka or a database.

use std::collections::HashMap;

use events::{
    Event, ReservationExpired, ReservedLine, StockCommitted, StockReleased, StockReservationFailed,
    StockReserved,
};
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

/// One line an order asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub sku: String,
    pub quantity: i64,
}

/// Result of trying to reserve an order's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Every line fits; reserve exactly these quantities (merged per SKU, sorted by SKU).
    Granted(Vec<Requested>),
    /// This SKU does not have enough; nothing is reserved.
    Refused {
        sku: String,
        requested: i64,
        available: i64,
    },
}

/// All or nothing: either every line fits in the available stock, or the first SKU (in SKU
/// order) that does not is reported. An unknown SKU has nothing available.
pub fn reserve(levels: &HashMap<String, StockLevel>, lines: &[Requested]) -> Reservation {
    let mut wanted: Vec<Requested> = Vec::new();
    for line in lines {
        match wanted.iter_mut().find(|w| w.sku == line.sku) {
            Some(existing) => existing.quantity += line.quantity,
            None => wanted.push(line.clone()),
        }
    }
    wanted.sort_by(|a, b| a.sku.cmp(&b.sku));
    for line in &wanted {
        let available = levels.get(&line.sku).map_or(0, StockLevel::available);
        if line.quantity <= 0 || line.quantity > available {
            return Reservation::Refused {
                sku: line.sku.clone(),
                requested: line.quantity,
                available: available.max(0),
            };
        }
    }
    Reservation::Granted(wanted)
}

/// What an OrderCreated turns into.
pub fn reservation_event(order_id: &str, reservation: &Reservation, expires_at_ms: i64) -> Event {
    match reservation {
        Reservation::Granted(lines) => StockReserved {
            order_id: order_id.to_owned(),
            lines: lines
                .iter()
                .map(|line| ReservedLine {
                    sku: line.sku.clone(),
                    quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
                })
                .collect(),
            expires_at: expires_at_ms,
        }
        .into(),
        Reservation::Refused {
            sku,
            requested,
            available,
        } => StockReservationFailed {
            order_id: order_id.to_owned(),
            sku: sku.clone(),
            requested: *requested,
            available: *available,
        }
        .into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Reserved,
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "reserved" => Self::Reserved,
            "committed" => Self::Committed,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// What happened to an order that holds a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationInput {
    PaymentSucceeded,
    PaymentFailed,
    OrderCancelled,
    TimeRanOut,
}

/// How stock quantities change for each reserved line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockMovement {
    /// reserved -= q, on_hand -= q: the goods are sold.
    Commit,
    /// reserved -= q: the promise is withdrawn.
    Release,
    /// on_hand += q: a sale is undone.
    Restock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationDecision {
    pub status: ReservationStatus,
    pub movement: Option<StockMovement>,
    pub emit: Option<Event>,
}

/// Applies one input to an order's reservation. Inputs that come late or twice change nothing.
pub fn decide(
    order_id: &str,
    status: ReservationStatus,
    input: ReservationInput,
) -> ReservationDecision {
    use ReservationInput as In;
    use ReservationStatus as St;
    let released = |reason: &str| -> Option<Event> {
        Some(
            StockReleased {
                order_id: order_id.to_owned(),
                reason: reason.to_owned(),
            }
            .into(),
        )
    };
    let (next, movement, emit) = match (status, input) {
        (St::Reserved, In::PaymentSucceeded) => (
            St::Committed,
            Some(StockMovement::Commit),
            Some(
                StockCommitted {
                    order_id: order_id.to_owned(),
                }
                .into(),
            ),
        ),
        (St::Reserved, In::PaymentFailed) => (
            St::Released,
            Some(StockMovement::Release),
            released("payment_failed"),
        ),
        (St::Reserved, In::OrderCancelled) => (
            St::Released,
            Some(StockMovement::Release),
            released("order_cancelled"),
        ),
        (St::Reserved, In::TimeRanOut) => (
            St::Expired,
            Some(StockMovement::Release),
            Some(
                ReservationExpired {
                    order_id: order_id.to_owned(),
                }
                .into(),
            ),
        ),
        (St::Committed, In::OrderCancelled) => (
            St::Released,
            Some(StockMovement::Restock),
            released("order_cancelled"),
        ),
        (unchanged, _) => (unchanged, None, None),
    };
    ReservationDecision {
        status: next,
        movement,
        emit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(entries: &[(&str, i64, i64)]) -> HashMap<String, StockLevel> {
        entries
            .iter()
            .map(|(sku, on_hand, reserved)| {
                (
                    (*sku).to_owned(),
                    StockLevel {
                        sku: (*sku).to_owned(),
                        on_hand: *on_hand,
                        reserved: *reserved,
                    },
                )
            })
            .collect()
    }

    fn want(sku: &str, quantity: i64) -> Requested {
        Requested {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn available_is_on_hand_minus_reserved() {
        assert_eq!(
            StockLevel {
                sku: "A".into(),
                on_hand: 10,
                reserved: 3
            }
            .available(),
            7
        );
    }

    #[test]
    fn every_line_fits_so_all_are_granted_in_sku_order() {
        let stock = levels(&[("A", 5, 0), ("B", 2, 1)]);
        assert_eq!(
            reserve(&stock, &[want("B", 1), want("A", 5)]),
            Reservation::Granted(vec![want("A", 5), want("B", 1)])
        );
    }

    #[test]
    fn one_short_line_refuses_the_whole_order_naming_the_sku() {
        let stock = levels(&[("A", 5, 0), ("B", 2, 1)]);
        assert_eq!(
            reserve(&stock, &[want("A", 1), want("B", 2)]),
            Reservation::Refused {
                sku: "B".into(),
                requested: 2,
                available: 1
            }
        );
    }

    #[test]
    fn repeated_lines_of_one_sku_are_counted_together() {
        let stock = levels(&[("A", 3, 0)]);
        assert_eq!(
            reserve(&stock, &[want("A", 2), want("A", 2)]),
            Reservation::Refused {
                sku: "A".into(),
                requested: 4,
                available: 3
            }
        );
    }

    #[test]
    fn an_unknown_sku_has_nothing_available() {
        assert_eq!(
            reserve(&levels(&[]), &[want("GHOST", 1)]),
            Reservation::Refused {
                sku: "GHOST".into(),
                requested: 1,
                available: 0
            }
        );
    }

    #[test]
    fn a_paid_reservation_is_committed_once() {
        let first = decide(
            "o",
            ReservationStatus::Reserved,
            ReservationInput::PaymentSucceeded,
        );
        assert_eq!(first.status, ReservationStatus::Committed);
        assert_eq!(first.movement, Some(StockMovement::Commit));
        assert_eq!(
            first.emit,
            Some(
                StockCommitted {
                    order_id: "o".into()
                }
                .into()
            )
        );
        let again = decide("o", first.status, ReservationInput::PaymentSucceeded);
        assert_eq!((again.movement, again.emit), (None, None));
    }

    #[test]
    fn failure_cancellation_and_expiry_release_the_reservation() {
        for (input, emitted) in [
            (
                ReservationInput::PaymentFailed,
                Event::from(StockReleased {
                    order_id: "o".into(),
                    reason: "payment_failed".into(),
                }),
            ),
            (
                ReservationInput::OrderCancelled,
                StockReleased {
                    order_id: "o".into(),
                    reason: "order_cancelled".into(),
                }
                .into(),
            ),
            (
                ReservationInput::TimeRanOut,
                ReservationExpired {
                    order_id: "o".into(),
                }
                .into(),
            ),
        ] {
            let decision = decide("o", ReservationStatus::Reserved, input);
            assert_eq!(decision.movement, Some(StockMovement::Release), "{input:?}");
            assert_eq!(decision.emit, Some(emitted));
        }
    }

    #[test]
    fn a_payment_after_expiry_commits_nothing() {
        let decision = decide(
            "o",
            ReservationStatus::Expired,
            ReservationInput::PaymentSucceeded,
        );
        assert_eq!(
            (decision.status, decision.movement, decision.emit),
            (ReservationStatus::Expired, None, None)
        );
    }

    #[test]
    fn cancelling_a_sale_restocks_it_once() {
        let decision = decide(
            "o",
            ReservationStatus::Committed,
            ReservationInput::OrderCancelled,
        );
        assert_eq!(decision.movement, Some(StockMovement::Restock));
        let again = decide("o", decision.status, ReservationInput::OrderCancelled);
        assert_eq!(again.movement, None);
    }

    #[test]
    fn a_committed_sale_does_not_expire() {
        let decision = decide(
            "o",
            ReservationStatus::Committed,
            ReservationInput::TimeRanOut,
        );
        assert_eq!(
            (decision.status, decision.movement),
            (ReservationStatus::Committed, None)
        );
    }
}
