//! The inventory service's rules: what can be sold, and what is promised to an order.
//!
//! The inventory service's part of the checkout saga:
//! - OrderCreated: reserve every line, all or nothing, or report the first SKU short of stock;
//!   an order is decided once ([`on_order_created`]).
//! - PaymentSucceeded: the reservation becomes a sale (on hand decreases).
//! - PaymentFailed or OrderCancelled: release it; a cancelled sale is restocked.
//! - A reservation not paid in time expires and is released.
//! - Stock is set by hand only to what keeps every reservation ([`set_on_hand`]).
//!
//! Each rule is a plain function, tested without Kafka or a database (Cargo keeps this crate
//! free of them); the service, the invariant checker and the saga simulator share them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use events::{
    Event, EventType, ReservationExpired, ReservedLine, StockCommitted, StockLevelChanged,
    StockReleased, StockReservationFailed, StockReserved,
};
use serde::Serialize;

/// The service these rules belong to (its consumer group, database and CLI name).
pub const SERVICE: &str = "inventory";

/// The event types the inventory service does something with ([`input_of`]); its consumer
/// passes over the rest of what its topics carry.
pub const HANDLES: &[EventType] = &[
    EventType::OrderCreated,
    EventType::OrderCancelled,
    EventType::PaymentSucceeded,
    EventType::PaymentFailed,
];

/// The topics the inventory service consumes: every event [`input_of`] reacts to is on one.
pub const SUBSCRIPTIONS: &[&str] = &["order-events", "payment-events"];

/// Why a reservation was released (StockReleased's `reason`).
pub mod reasons {
    pub const PAYMENT_FAILED: &str = "payment_failed";
    pub const ORDER_CANCELLED: &str = "order_cancelled";
}

/// Stock of one SKU. `available` is what a new order may still reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// The event that publishes this level on the compacted `stock-levels` topic.
    pub fn changed(&self) -> Event {
        StockLevelChanged {
            sku: self.sku.clone(),
            on_hand: self.on_hand,
            reserved: self.reserved,
        }
        .into()
    }
}

/// Why a new on-hand quantity is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockRuleError {
    #[error("on hand cannot go below the {reserved} units reserved")]
    BelowReserved { reserved: i64 },
    #[error("on hand must not be negative")]
    Negative,
}

/// Sets the on-hand quantity of a SKU (`current` is its level, `None` for a new SKU), keeping
/// its reservations: never negative, never below what is reserved.
pub fn set_on_hand(
    current: Option<&StockLevel>,
    sku: &str,
    on_hand: i64,
) -> Result<StockLevel, StockRuleError> {
    if on_hand < 0 {
        return Err(StockRuleError::Negative);
    }
    let reserved = current.map_or(0, |level| level.reserved);
    if on_hand < reserved {
        return Err(StockRuleError::BelowReserved { reserved });
    }
    Ok(StockLevel {
        sku: sku.to_owned(),
        on_hand,
        reserved,
    })
}

/// What the inventory service does with an event of the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryInput {
    /// Reserve these lines for the order.
    OrderCreated(Vec<Requested>),
    /// Move the order's reservation on.
    Reservation(ReservationInput),
}

/// The order an event is about and what the inventory service does with it, if anything.
pub fn input_of(event: &Event) -> Option<(&str, InventoryInput)> {
    use InventoryInput::Reservation as On;
    Some(match event {
        Event::OrderCreated(order) => (
            &order.order_id,
            InventoryInput::OrderCreated(
                order
                    .lines
                    .iter()
                    .map(|line| Requested {
                        sku: line.sku.clone(),
                        quantity: i64::from(line.quantity),
                    })
                    .collect(),
            ),
        ),
        Event::PaymentSucceeded(paid) => (&paid.order_id, On(ReservationInput::PaymentSucceeded)),
        Event::PaymentFailed(failed) => (&failed.order_id, On(ReservationInput::PaymentFailed)),
        Event::OrderCancelled(cancelled) => {
            (&cancelled.order_id, On(ReservationInput::OrderCancelled))
        }
        _ => return None,
    })
}

/// The stock demo data sets: `products[].variants[].{sku, stock}` of a catalog file such as
/// `infra/demo/catalog.json`, as units per SKU.
pub fn catalog_stock(catalog_json: &str) -> Result<BTreeMap<String, i64>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Catalog {
        products: Vec<Product>,
    }
    #[derive(serde::Deserialize)]
    struct Product {
        variants: Vec<Variant>,
    }
    #[derive(serde::Deserialize)]
    struct Variant {
        sku: String,
        stock: i64,
    }
    let catalog: Catalog = serde_json::from_str(catalog_json)?;
    Ok(catalog
        .products
        .into_iter()
        .flat_map(|product| product.variants)
        .map(|variant| (variant.sku, variant.stock))
        .collect())
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

/// What an OrderCreated does: reserve the lines all or nothing ([`reserve`]) and announce the
/// outcome, the reservation expiring at `expires_at_ms`. `None` when the order was decided
/// already (`decided`: it has a reservation, e.g. an OrderCreated replayed under a new event id):
/// nothing is decided twice. A refused order keeps no reservation.
pub fn on_order_created(
    order_id: &str,
    decided: bool,
    levels: &HashMap<String, StockLevel>,
    lines: &[Requested],
    expires_at_ms: i64,
) -> Option<(Reservation, Event)> {
    if decided {
        return None;
    }
    let reservation = reserve(levels, lines);
    let event = reservation_event(order_id, &reservation, expires_at_ms);
    Some((reservation, event))
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationStatus {
    /// Stock is held for the order.
    Reserved,
    /// The order is paid: its stock is sold.
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub const ALL: [ReservationStatus; 4] = [
        Self::Reserved,
        Self::Committed,
        Self::Released,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReservationStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or_else(|| format!("unknown reservation status {text:?}"))
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
    /// reserved += q: the goods are promised to an order.
    Reserve,
    /// reserved -= q, on_hand -= q: the goods are sold.
    Commit,
    /// reserved -= q: the promise is withdrawn.
    Release,
    /// on_hand += q: a sale is undone.
    Restock,
}

impl StockMovement {
    /// What the movement adds to (on hand, reserved) for `quantity` units.
    pub fn deltas(self, quantity: i64) -> (i64, i64) {
        match self {
            Self::Reserve => (0, quantity),
            Self::Commit => (-quantity, -quantity),
            Self::Release => (0, -quantity),
            Self::Restock => (quantity, 0),
        }
    }

    /// `level` after the movement of `quantity` units.
    pub fn apply(self, level: &StockLevel, quantity: i64) -> StockLevel {
        let (on_hand, reserved) = self.deltas(quantity);
        StockLevel {
            sku: level.sku.clone(),
            on_hand: level.on_hand + on_hand,
            reserved: level.reserved + reserved,
        }
    }
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
            released(reasons::PAYMENT_FAILED),
        ),
        (St::Reserved, In::OrderCancelled) => (
            St::Released,
            Some(StockMovement::Release),
            released(reasons::ORDER_CANCELLED),
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
            released(reasons::ORDER_CANCELLED),
        ),
        (unchanged, _) => (unchanged, None, None),
    };
    ReservationDecision {
        status: next,
        movement,
        emit,
    }
}

/// Applies one input to an order whose reservation is in `status`, `None` when it has none:
/// the order was refused for lack of stock, and there is nothing to undo.
pub fn react(
    order_id: &str,
    status: Option<ReservationStatus>,
    input: ReservationInput,
) -> Option<ReservationDecision> {
    status.map(|status| decide(order_id, status, input))
}

/// A reservation as a transaction holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub status: ReservationStatus,
    /// Merged per SKU, in SKU order.
    pub lines: Vec<Requested>,
}

/// A reservation made by the events a transaction applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReservation {
    pub order_id: String,
    /// The status the transaction leaves it in (a reservation made and paid in one batch is
    /// stored committed).
    pub status: ReservationStatus,
    pub lines: Vec<Requested>,
    pub expires_at_ms: i64,
}

/// What a transaction's events changed, to be stored in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<NewReservation>,
    /// Reservations that existed before the transaction, with their new status, by order id.
    pub statuses: Vec<(String, ReservationStatus)>,
    /// The final level of every SKU that moved, in SKU order.
    pub levels: Vec<StockLevel>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.statuses.is_empty() && self.levels.is_empty()
    }
}

/// A reserved SKU with no stock row: the rules never grant one, so the data is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order {order_id} holds {sku}, which has no stock")]
pub struct NeverStocked {
    pub order_id: String,
    pub sku: String,
}

/// The stock and reservations a transaction locked, and what the events it applies do to
/// them: [`on_order_created`] and [`react`] folded over several orders, so that a consumer's
/// batch is loaded once and saved once whatever its size. Each event sees what the ones
/// before it did (two orders for the last unit: the first gets it).
#[derive(Debug, Clone, Default)]
pub struct Books {
    levels: HashMap<String, StockLevel>,
    reservations: HashMap<String, Held>,
    /// Order ids of the reservations made here, with their expiry, in the order they were made.
    created: Vec<(String, i64)>,
    restatused: BTreeSet<String>,
    moved: BTreeSet<String>,
}

impl Books {
    /// `levels`: the locked stock rows (a SKU absent was never stocked); `reservations`: the
    /// locked reservations, by order id (an order absent has none).
    pub fn new(
        levels: impl IntoIterator<Item = StockLevel>,
        reservations: impl IntoIterator<Item = (String, Held)>,
    ) -> Self {
        Self {
            levels: levels
                .into_iter()
                .map(|level| (level.sku.clone(), level))
                .collect(),
            reservations: reservations.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Applies `input` for `order_id`, a new reservation expiring at `expires_at_ms`, and
    /// returns the events it publishes, in order: each moved SKU's new level, then the
    /// outcome.
    pub fn apply(
        &mut self,
        order_id: &str,
        input: &InventoryInput,
        expires_at_ms: i64,
    ) -> Result<Vec<Event>, NeverStocked> {
        match input {
            InventoryInput::OrderCreated(lines) => {
                let decided = self.reservations.contains_key(order_id);
                let Some((reservation, outcome)) =
                    on_order_created(order_id, decided, &self.levels, lines, expires_at_ms)
                else {
                    return Ok(Vec::new());
                };
                let mut emit = Vec::new();
                if let Reservation::Granted(granted) = reservation {
                    emit = self.move_lines(order_id, &granted, StockMovement::Reserve)?;
                    self.reservations.insert(
                        order_id.to_owned(),
                        Held {
                            status: ReservationStatus::Reserved,
                            lines: granted,
                        },
                    );
                    self.created.push((order_id.to_owned(), expires_at_ms));
                }
                emit.push(outcome);
                Ok(emit)
            }
            InventoryInput::Reservation(input) => {
                let Some(held) = self.reservations.get(order_id) else {
                    return Ok(Vec::new());
                };
                let (status, lines) = (held.status, held.lines.clone());
                let decision = decide(order_id, status, *input);
                let mut emit = match decision.movement {
                    Some(movement) => self.move_lines(order_id, &lines, movement)?,
                    None => Vec::new(),
                };
                if decision.status != status {
                    if let Some(held) = self.reservations.get_mut(order_id) {
                        held.status = decision.status;
                    }
                    self.restatused.insert(order_id.to_owned());
                }
                emit.extend(decision.emit);
                Ok(emit)
            }
        }
    }

    fn move_lines(
        &mut self,
        order_id: &str,
        lines: &[Requested],
        movement: StockMovement,
    ) -> Result<Vec<Event>, NeverStocked> {
        let mut emit = Vec::with_capacity(lines.len());
        for line in lines {
            let level = self.levels.get_mut(&line.sku).ok_or_else(|| NeverStocked {
                order_id: order_id.to_owned(),
                sku: line.sku.clone(),
            })?;
            *level = movement.apply(level, line.quantity);
            emit.push(level.changed());
            self.moved.insert(line.sku.clone());
        }
        Ok(emit)
    }

    /// Everything the applied events changed.
    pub fn changes(&self) -> Changes {
        let created: Vec<NewReservation> = self
            .created
            .iter()
            .filter_map(|(order_id, expires_at_ms)| {
                let held = self.reservations.get(order_id)?;
                Some(NewReservation {
                    order_id: order_id.clone(),
                    status: held.status,
                    lines: held.lines.clone(),
                    expires_at_ms: *expires_at_ms,
                })
            })
            .collect();
        let statuses = self
            .restatused
            .iter()
            .filter(|order_id| !created.iter().any(|new| &new.order_id == *order_id))
            .filter_map(|order_id| {
                Some((order_id.clone(), self.reservations.get(order_id)?.status))
            })
            .collect();
        let levels = self
            .moved
            .iter()
            .filter_map(|sku| self.levels.get(sku).cloned())
            .collect();
        Changes {
            created,
            statuses,
            levels,
        }
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
    fn an_order_is_decided_once_and_a_refused_one_has_nothing_to_undo() {
        let stock = levels(&[("A", 5, 0)]);
        let (granted, event) =
            on_order_created("o", false, &stock, &[want("A", 2)], 1000).expect("decided");
        assert_eq!(granted, Reservation::Granted(vec![want("A", 2)]));
        assert_eq!(event.type_name(), "StockReserved");
        assert_eq!(
            on_order_created("o", true, &stock, &[want("A", 2)], 1000),
            None
        );
        assert_eq!(react("o", None, ReservationInput::OrderCancelled), None);
    }

    #[test]
    fn movements_keep_every_unit_accounted_for() {
        let level = StockLevel {
            sku: "A".into(),
            on_hand: 10,
            reserved: 0,
        };
        let reserved = StockMovement::Reserve.apply(&level, 3);
        assert_eq!((reserved.on_hand, reserved.reserved), (10, 3));
        let sold = StockMovement::Commit.apply(&reserved, 3);
        assert_eq!((sold.on_hand, sold.reserved), (7, 0));
        assert_eq!(StockMovement::Restock.apply(&sold, 3).on_hand, 10);
        assert_eq!(StockMovement::Release.apply(&reserved, 3), level);
    }

    #[test]
    fn stock_is_set_only_to_what_keeps_the_reservations() {
        let level = StockLevel {
            sku: "A".into(),
            on_hand: 10,
            reserved: 4,
        };
        assert_eq!(
            set_on_hand(Some(&level), "A", 3),
            Err(StockRuleError::BelowReserved { reserved: 4 })
        );
        assert_eq!(set_on_hand(None, "B", -1), Err(StockRuleError::Negative));
        assert_eq!(
            set_on_hand(Some(&level), "A", 4).map(|l| (l.on_hand, l.reserved)),
            Ok((4, 4))
        );
        assert_eq!(set_on_hand(None, "B", 0).map(|l| l.reserved), Ok(0));
        for status in ReservationStatus::ALL {
            assert_eq!(status.as_str().parse::<ReservationStatus>(), Ok(status));
        }
    }

    #[test]
    fn a_catalog_says_the_stock_of_each_variant() {
        let catalog = r#"{"products": [
            {"variants": [{"sku": "TEE-S", "stock": 4}, {"sku": "TEE-M", "stock": 0}]},
            {"name": "Mug", "variants": [{"sku": "MUG", "stock": 12, "price_minor": 890}]}]}"#;
        assert_eq!(
            catalog_stock(catalog).expect("a catalog"),
            BTreeMap::from([
                ("MUG".to_owned(), 12),
                ("TEE-M".to_owned(), 0),
                ("TEE-S".to_owned(), 4)
            ])
        );
        assert!(catalog_stock("[]").is_err());
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

    fn level(sku: &str, on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel {
            sku: sku.into(),
            on_hand,
            reserved,
        }
    }

    fn created(lines: &[Requested]) -> InventoryInput {
        InventoryInput::OrderCreated(lines.to_vec())
    }

    const PAID: InventoryInput = InventoryInput::Reservation(ReservationInput::PaymentSucceeded);

    #[test]
    fn two_orders_for_the_last_unit_in_one_batch_the_first_gets_it() {
        // Given one unit of A
        let mut books = Books::new([level("A", 1, 0)], []);
        // When two orders ask for it in one batch
        let first = books
            .apply("o1", &created(&[want("A", 1)]), 7)
            .expect("applied");
        let second = books
            .apply("o2", &created(&[want("A", 1)]), 7)
            .expect("applied");
        // Then the first reserves it and the second is refused with nothing left
        assert_eq!(
            first,
            vec![
                level("A", 1, 1).changed(),
                reservation_event("o1", &Reservation::Granted(vec![want("A", 1)]), 7)
            ]
        );
        assert_eq!(
            second,
            vec![
                StockReservationFailed {
                    order_id: "o2".into(),
                    sku: "A".into(),
                    requested: 1,
                    available: 0
                }
                .into()
            ]
        );
        assert_eq!(
            books.changes(),
            Changes {
                created: vec![NewReservation {
                    order_id: "o1".into(),
                    status: ReservationStatus::Reserved,
                    lines: vec![want("A", 1)],
                    expires_at_ms: 7
                }],
                statuses: vec![],
                levels: vec![level("A", 1, 1)],
            }
        );
    }

    #[test]
    fn an_order_reserved_and_paid_in_one_batch_is_stored_committed_and_its_stock_sold() {
        let mut books = Books::new([level("A", 5, 0), level("B", 9, 0)], []);
        books
            .apply("o", &created(&[want("A", 2)]), 7)
            .expect("reserved");
        let paid = books.apply("o", &PAID, 7).expect("paid");
        assert_eq!(
            paid,
            vec![
                level("A", 3, 0).changed(),
                StockCommitted {
                    order_id: "o".into()
                }
                .into()
            ]
        );
        let changes = books.changes();
        assert_eq!(changes.created.len(), 1);
        assert_eq!(changes.created[0].status, ReservationStatus::Committed);
        // A reservation made here is stored once, with its last status.
        assert_eq!(changes.statuses, vec![]);
        // B never moved, so it is not written.
        assert_eq!(changes.levels, vec![level("A", 3, 0)]);
    }

    #[test]
    fn an_existing_reservation_moves_once_and_replays_change_nothing() {
        let held = Held {
            status: ReservationStatus::Reserved,
            lines: vec![want("A", 2)],
        };
        let mut books = Books::new([level("A", 5, 2)], [("o".to_owned(), held)]);
        assert_eq!(books.apply("o", &PAID, 7).expect("paid").len(), 2);
        assert_eq!(books.apply("o", &PAID, 7).expect("again"), vec![]);
        assert_eq!(
            books
                .apply("o", &created(&[want("A", 1)]), 7)
                .expect("replayed"),
            vec![]
        );
        assert_eq!(
            books.changes(),
            Changes {
                created: vec![],
                statuses: vec![("o".to_owned(), ReservationStatus::Committed)],
                levels: vec![level("A", 3, 0)],
            }
        );
    }

    #[test]
    fn an_order_without_a_reservation_has_nothing_to_undo() {
        let mut books = Books::new([level("A", 5, 0)], []);
        let cancel = InventoryInput::Reservation(ReservationInput::OrderCancelled);
        assert_eq!(books.apply("o", &cancel, 7).expect("nothing"), vec![]);
        assert!(books.changes().is_empty());
    }

    #[test]
    fn a_reserved_sku_without_stock_is_an_error_not_a_silent_loss() {
        let held = Held {
            status: ReservationStatus::Reserved,
            lines: vec![want("GONE", 1)],
        };
        let mut books = Books::new([], [("o".to_owned(), held)]);
        let failed = InventoryInput::Reservation(ReservationInput::PaymentFailed);
        assert_eq!(
            books.apply("o", &failed, 7),
            Err(NeverStocked {
                order_id: "o".into(),
                sku: "GONE".into()
            })
        );
    }
}
