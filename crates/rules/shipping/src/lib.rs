//! The shipping service's rules: carrier choice, pick-up dates, tracking, and the one shipment
//! of each paid order.
//!
//! Plain functions, no Kafka or database (Cargo keeps this crate free of them), so the rules can
//! be tested as the business rules they are, and the service, the invariant checker and the saga
//! simulator share them:
//! - The service learns each order (address, items) from OrderCreated, and schedules the
//!   shipment of an order when OrderPaid arrives ([`input_of`], [`schedule`]).
//! - A paid order gets exactly one shipment.
//! - Within the shop's home country (`shipping.home_country`, default [`DEFAULT_HOME_COUNTRY`])
//!   the carrier follows the parcel's size: up to 2 items fit a letterbox parcel
//!   (`Bazaar Post`), up to 10 a standard parcel (`Bazaar Parcel`), more go by freight
//!   (`Bazaar Freight`). A parcel to any other country goes with `Bazaar International`,
//!   whatever its size.
//! - The carrier picks a domestic parcel up on the next business day after payment: a payment
//!   on Friday, Saturday or Sunday is picked up on Monday. An international parcel needs its
//!   customs papers first and is picked up a business day later. Dates are UTC days.
//! - An order whose OrderCreated carries only a free-text address (written before addresses
//!   were structured, OrderCreated v1 and v2) has no country: it ships as domestic, as it did
//!   when it was placed, so a replay plans the same shipment.
//! - A tracking number is the carrier's prefix, 11 digits from the shipment id and a Luhn check
//!   digit, so a mistyped number is caught before anyone looks it up.
//! - A shipment only moves forward: scheduled → dispatched → delivered. Asking for the step it
//!   already took changes nothing (a retried request); skipping a step or going back is refused.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use events::{
    Event, EventType, OrderCreated, ShipmentDelivered, ShipmentDispatched, ShipmentScheduled,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The service these rules belong to (its consumer group, database and CLI name).
pub const SERVICE: &str = "shipping";

/// The event types the shipping service does something with ([`input_of`]); its consumer passes
/// over the rest of what its topics carry.
pub const HANDLES: &[EventType] = &[EventType::OrderCreated, EventType::OrderPaid];

/// The topics the shipping service consumes: every event [`input_of`] reacts to is on one.
pub const SUBSCRIPTIONS: &[&str] = &["order-events"];

/// What the shipping service does with an event of the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShippingInput {
    /// Remember where the order goes and what is in it.
    OrderCreated(OrderFacts),
    /// Schedule the order's shipment.
    OrderPaid,
}

/// Where the shop ships from unless `shipping.home_country` says otherwise.
pub const DEFAULT_HOME_COUNTRY: &str = "DE";

/// What the shipping service keeps of an order from its OrderCreated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub shipping_address: String,
    /// ISO 3166-1 alpha-2 code of the destination; `None` for a free-text address.
    pub country: Option<String>,
    /// Units over every line: the parcel's size.
    pub item_count: i64,
    /// (SKU, quantity) of each line.
    pub lines: Vec<(String, i32)>,
}

impl OrderFacts {
    pub fn of(order: &OrderCreated) -> Self {
        Self {
            shipping_address: order.shipping_address.clone(),
            country: order
                .address
                .as_ref()
                .map(|address| address.country.clone()),
            item_count: order
                .lines
                .iter()
                .map(|line| i64::from(line.quantity))
                .sum(),
            lines: order
                .lines
                .iter()
                .map(|line| (line.sku.clone(), line.quantity))
                .collect(),
        }
    }
}

/// The order an event is about and what the shipping service does with it, if anything.
pub fn input_of(event: &Event) -> Option<(&str, ShippingInput)> {
    Some(match event {
        Event::OrderCreated(order) => (
            &order.order_id,
            ShippingInput::OrderCreated(OrderFacts::of(order)),
        ),
        Event::OrderPaid(paid) => (&paid.order_id, ShippingInput::OrderPaid),
        _ => return None,
    })
}

/// What an OrderPaid leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduling {
    /// Book this shipment and publish its ShipmentScheduled.
    Schedule { plan: Plan, emit: Event },
    /// The order has its shipment already (a redelivered or replayed OrderPaid): nothing more.
    AlreadyScheduled,
    /// No OrderCreated was seen for the order, so there is no address to ship to. OrderPaid
    /// always follows its OrderCreated on the same partition: this cannot resolve itself.
    UnknownOrder,
}

/// Schedules the one shipment `shipment_id` of the paid order `order_id`, paid on `paid_on`
/// (the day of the payment, not of handling: a replay plans the same pick-up). `order` is what
/// its OrderCreated said; `scheduled` whether it has a shipment already; `home_country` where
/// the shop ships from.
pub fn schedule(
    order_id: &str,
    order: Option<&OrderFacts>,
    scheduled: bool,
    paid_on: NaiveDate,
    shipment_id: Uuid,
    home_country: &str,
) -> Scheduling {
    if scheduled {
        return Scheduling::AlreadyScheduled;
    }
    let Some(order) = order else {
        return Scheduling::UnknownOrder;
    };
    let destination = Destination::of(order.country.as_deref(), home_country);
    let plan = plan_shipment(order.item_count, destination, paid_on, shipment_id);
    let emit = ShipmentScheduled {
        order_id: order_id.to_owned(),
        shipment_id: shipment_id.to_string(),
        carrier: plan.carrier.name().to_owned(),
        tracking_number: plan.tracking_number.clone(),
        pickup_date: plan.pickup_date.to_string(),
    }
    .into();
    Scheduling::Schedule { plan, emit }
}

/// Whether a parcel crosses a border.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Domestic,
    International,
}

impl Destination {
    /// A parcel to `country` from `home_country`; no country (a free-text address) is domestic.
    pub fn of(country: Option<&str>, home_country: &str) -> Self {
        match country {
            Some(country) if !country.eq_ignore_ascii_case(home_country) => Self::International,
            _ => Self::Domestic,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Post,
    Parcel,
    Freight,
    International,
}

impl Carrier {
    pub const ALL: [Carrier; 4] = [Self::Post, Self::Parcel, Self::Freight, Self::International];

    pub fn name(self) -> &'static str {
        match self {
            Self::Post => "Bazaar Post",
            Self::Parcel => "Bazaar Parcel",
            Self::Freight => "Bazaar Freight",
            Self::International => "Bazaar International",
        }
    }

    fn tracking_prefix(self) -> &'static str {
        match self {
            Self::Post => "BP",
            Self::Parcel => "BC",
            Self::Freight => "BF",
            Self::International => "BI",
        }
    }
}

/// The carrier for a parcel of `item_count` items going to `destination`.
pub fn choose_carrier(item_count: i64, destination: Destination) -> Carrier {
    match (destination, item_count) {
        (Destination::International, _) => Carrier::International,
        (Destination::Domestic, ..=2) => Carrier::Post,
        (Destination::Domestic, 3..=10) => Carrier::Parcel,
        (Destination::Domestic, _) => Carrier::Freight,
    }
}

/// The day the carrier picks up a parcel to `destination` paid on `paid_on`: the next business
/// day, or the one after for customs papers.
pub fn pickup_date(paid_on: NaiveDate, destination: Destination) -> NaiveDate {
    let next = next_business_day(paid_on);
    match destination {
        Destination::Domestic => next,
        Destination::International => next_business_day(next),
    }
}

/// The first Monday-to-Friday day after `day`.
pub fn next_business_day(day: NaiveDate) -> NaiveDate {
    let mut next = day;
    loop {
        next = next.checked_add_days(Days::new(1)).unwrap_or(next);
        if !matches!(next.weekday(), Weekday::Sat | Weekday::Sun) || next == NaiveDate::MAX {
            return next;
        }
    }
}

/// The Luhn check digit that makes `digits` followed by it pass the Luhn check.
pub fn luhn_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(position, digit)| {
            if position % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Whether a tracking number is well formed: a known prefix and digits passing the Luhn check.
pub fn is_valid_tracking_number(number: &str) -> bool {
    let Some(digits) = Carrier::ALL
        .iter()
        .find_map(|carrier| number.strip_prefix(carrier.tracking_prefix()))
    else {
        return false;
    };
    let Some((body, check)) = digits.split_at_checked(digits.len().saturating_sub(1)) else {
        return false;
    };
    digits.len() == 12
        && digits.chars().all(|c| c.is_ascii_digit())
        && check.parse::<u32>().ok() == Some(luhn_check_digit(body))
}

/// The tracking number of a shipment: from its id's random bits, so it needs no counter.
pub fn tracking_number(carrier: Carrier, shipment_id: Uuid) -> String {
    // The low 64 bits of a UUID v7 are random (but for its variant bits).
    let random = shipment_id.as_u128() as u64;
    let body = format!("{:011}", random % 100_000_000_000);
    format!(
        "{}{body}{}",
        carrier.tracking_prefix(),
        luhn_check_digit(&body)
    )
}

/// A shipment as it is scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub carrier: Carrier,
    pub pickup_date: NaiveDate,
    pub tracking_number: String,
}

/// Schedules the shipment `shipment_id` of an order of `item_count` items to `destination`,
/// paid on `paid_on`.
pub fn plan_shipment(
    item_count: i64,
    destination: Destination,
    paid_on: NaiveDate,
    shipment_id: Uuid,
) -> Plan {
    let carrier = choose_carrier(item_count, destination);
    Plan {
        carrier,
        pickup_date: pickup_date(paid_on, destination),
        tracking_number: tracking_number(carrier, shipment_id),
    }
}

/// Where a shipment is. The order service shows the same statuses, from the shipping events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    Scheduled,
    Dispatched,
    Delivered,
}

impl ShipmentStatus {
    /// In the order a shipment takes them.
    pub const ALL: [ShipmentStatus; 3] = [Self::Scheduled, Self::Dispatched, Self::Delivered];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Dispatched => "dispatched",
            Self::Delivered => "delivered",
        }
    }
}

impl fmt::Display for ShipmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ShipmentStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "scheduled" => Self::Scheduled,
            "dispatched" => Self::Dispatched,
            "delivered" => Self::Delivered,
            other => return Err(format!("unknown shipment status {other:?}")),
        })
    }
}

/// What an admin asks of a shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Dispatch,
    Deliver,
}

impl Step {
    fn target(self) -> ShipmentStatus {
        match self {
            Self::Dispatch => ShipmentStatus::Dispatched,
            Self::Deliver => ShipmentStatus::Delivered,
        }
    }
}

/// The outcome of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// The shipment moved; publish the event.
    Moved { status: ShipmentStatus, emit: Event },
    /// The shipment already took this step: nothing changes and nothing is published again.
    AlreadyDone,
    /// Not possible from where the shipment is.
    Refused(String),
}

/// Applies a step to a shipment in `status`.
pub fn advance(order_id: &str, shipment_id: &str, status: ShipmentStatus, step: Step) -> Advance {
    let target = step.target();
    if status == target {
        return Advance::AlreadyDone;
    }
    if status > target {
        return Advance::Refused(format!("the shipment is already {status}"));
    }
    let emit: Event = match (status, step) {
        (ShipmentStatus::Scheduled, Step::Dispatch) => ShipmentDispatched {
            order_id: order_id.to_owned(),
            shipment_id: shipment_id.to_owned(),
        }
        .into(),
        (ShipmentStatus::Dispatched, Step::Deliver) => ShipmentDelivered {
            order_id: order_id.to_owned(),
            shipment_id: shipment_id.to_owned(),
        }
        .into(),
        _ => {
            return Advance::Refused(format!(
                "a {status} shipment cannot be {target} before it is dispatched"
            ));
        }
    };
    Advance::Moved {
        status: target,
        emit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("a date")
    }

    #[test]
    fn pickup_is_the_next_business_day_skipping_weekends() {
        // 2026-03-02 is a Monday.
        for (paid, pickup) in [
            ("2026-03-02", "2026-03-03"), // Monday → Tuesday
            ("2026-03-05", "2026-03-06"), // Thursday → Friday
            ("2026-03-06", "2026-03-09"), // Friday → Monday
            ("2026-03-07", "2026-03-09"), // Saturday → Monday
            ("2026-03-08", "2026-03-09"), // Sunday → Monday
            ("2026-12-31", "2027-01-01"), // across a year, a Friday
            ("2027-01-01", "2027-01-04"),
        ] {
            assert_eq!(next_business_day(day(paid)), day(pickup), "paid {paid}");
        }
    }

    #[test]
    fn no_pickup_date_ever_falls_on_a_weekend() {
        let mut paid = day("2026-01-01");
        for _ in 0..400 {
            let pickup = next_business_day(paid);
            assert!(pickup > paid);
            assert!(!matches!(pickup.weekday(), Weekday::Sat | Weekday::Sun));
            assert!(pickup - paid <= chrono::Duration::days(3));
            paid = paid.succ_opt().expect("next day");
        }
    }

    #[test]
    fn at_home_the_carrier_follows_the_parcel_size_abroad_it_is_international() {
        use Destination::{Domestic, International};
        assert_eq!(choose_carrier(1, Domestic), Carrier::Post);
        assert_eq!(choose_carrier(2, Domestic), Carrier::Post);
        assert_eq!(choose_carrier(3, Domestic), Carrier::Parcel);
        assert_eq!(choose_carrier(10, Domestic), Carrier::Parcel);
        assert_eq!(choose_carrier(11, Domestic), Carrier::Freight);
        for items in [1, 3, 11] {
            assert_eq!(choose_carrier(items, International), Carrier::International);
        }
        assert_eq!(Carrier::Parcel.name(), "Bazaar Parcel");
    }

    #[test]
    fn a_parcel_is_international_only_with_a_country_other_than_home() {
        assert_eq!(Destination::of(Some("DE"), "DE"), Destination::Domestic);
        assert_eq!(Destination::of(Some("de"), "DE"), Destination::Domestic);
        assert_eq!(
            Destination::of(Some("FR"), "DE"),
            Destination::International
        );
        // A free-text address (OrderCreated before v3) ships as it always did.
        assert_eq!(Destination::of(None, "DE"), Destination::Domestic);
    }

    #[test]
    fn an_international_parcel_is_picked_up_a_business_day_later() {
        // Paid on a Friday: Monday at home, Tuesday abroad.
        assert_eq!(
            pickup_date(day("2026-03-06"), Destination::Domestic),
            day("2026-03-09")
        );
        assert_eq!(
            pickup_date(day("2026-03-06"), Destination::International),
            day("2026-03-10")
        );
        // Paid on a Thursday: Friday at home, Monday abroad.
        assert_eq!(
            pickup_date(day("2026-03-05"), Destination::International),
            day("2026-03-09")
        );
    }

    #[test]
    fn luhn_check_digits_match_known_numbers() {
        // The classic example number 7992739871 has check digit 3.
        assert_eq!(luhn_check_digit("7992739871"), 3);
        assert_eq!(luhn_check_digit("0"), 0);
    }

    #[test]
    fn tracking_numbers_are_well_formed_and_differ_per_shipment() {
        let numbers: std::collections::HashSet<String> = (0..1000)
            .map(|_| tracking_number(Carrier::Post, Uuid::now_v7()))
            .collect();
        assert_eq!(numbers.len(), 1000);
        for number in &numbers {
            assert!(number.starts_with("BP") && number.len() == 14, "{number}");
            assert!(is_valid_tracking_number(number), "{number}");
        }
        let mut typo = numbers.iter().next().expect("one").clone().into_bytes();
        typo[5] = if typo[5] == b'9' { b'0' } else { typo[5] + 1 };
        assert!(!is_valid_tracking_number(
            &String::from_utf8(typo).expect("ascii")
        ));
        assert!(!is_valid_tracking_number("XX123"));
    }

    #[test]
    fn a_plan_combines_carrier_pickup_and_tracking() {
        let id = Uuid::now_v7();
        let plan = plan_shipment(4, Destination::Domestic, day("2026-03-06"), id);
        assert_eq!(plan.carrier, Carrier::Parcel);
        assert_eq!(plan.pickup_date, day("2026-03-09"));
        assert_eq!(plan.tracking_number, tracking_number(Carrier::Parcel, id));
        let abroad = plan_shipment(4, Destination::International, day("2026-03-06"), id);
        assert_eq!(abroad.carrier, Carrier::International);
        assert_eq!(abroad.pickup_date, day("2026-03-10"));
        assert!(abroad.tracking_number.starts_with("BI"));
        assert!(is_valid_tracking_number(&abroad.tracking_number));
    }

    /// given a shipment status, when admins take steps, then where it ends and what was published.
    struct Scenario {
        status: ShipmentStatus,
        emitted: Vec<Event>,
        refusals: usize,
    }

    fn given(status: ShipmentStatus) -> Scenario {
        Scenario {
            status,
            emitted: Vec::new(),
            refusals: 0,
        }
    }

    impl Scenario {
        fn when(mut self, step: Step) -> Self {
            match advance("o-1", "s-1", self.status, step) {
                Advance::Moved { status, emit } => {
                    self.status = status;
                    self.emitted.push(emit);
                }
                Advance::AlreadyDone => {}
                Advance::Refused(_) => self.refusals += 1,
            }
            self
        }

        fn then(self, status: ShipmentStatus, emitted: &[&str], refusals: usize) -> Self {
            assert_eq!(self.status, status);
            let types: Vec<&str> = self.emitted.iter().map(Event::type_name).collect();
            assert_eq!(types, emitted);
            assert_eq!(self.refusals, refusals);
            self
        }
    }

    #[test]
    fn a_shipment_is_dispatched_then_delivered_publishing_each_once() {
        given(ShipmentStatus::Scheduled)
            .when(Step::Dispatch)
            .when(Step::Dispatch)
            .then(ShipmentStatus::Dispatched, &["ShipmentDispatched"], 0)
            .when(Step::Deliver)
            .when(Step::Deliver)
            .then(
                ShipmentStatus::Delivered,
                &["ShipmentDispatched", "ShipmentDelivered"],
                0,
            );
    }

    #[test]
    fn a_shipment_never_skips_a_step_or_goes_back() {
        given(ShipmentStatus::Scheduled).when(Step::Deliver).then(
            ShipmentStatus::Scheduled,
            &[],
            1,
        );
        given(ShipmentStatus::Delivered).when(Step::Dispatch).then(
            ShipmentStatus::Delivered,
            &[],
            1,
        );
    }

    fn order(item_count: i64) -> OrderFacts {
        OrderFacts {
            shipping_address: "1 Main St".into(),
            country: None,
            item_count,
            lines: vec![("TEE".into(), 1)],
        }
    }

    #[test]
    fn a_paid_order_is_scheduled_once_and_only_when_known() {
        let id = Uuid::now_v7();
        match schedule("o-1", Some(&order(3)), false, day("2026-03-06"), id, "DE") {
            Scheduling::Schedule { plan, emit } => {
                assert_eq!(plan.carrier, Carrier::Parcel);
                let Event::ShipmentScheduled(event) = emit else {
                    panic!("{emit:?}")
                };
                assert_eq!(event.shipment_id, id.to_string());
                assert_eq!(event.pickup_date, "2026-03-09");
                assert_eq!(event.tracking_number, plan.tracking_number);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            schedule("o-1", Some(&order(3)), true, day("2026-03-06"), id, "DE"),
            Scheduling::AlreadyScheduled
        );
        assert_eq!(
            schedule("o-1", None, false, day("2026-03-06"), id, "DE"),
            Scheduling::UnknownOrder
        );
    }

    #[test]
    fn a_paid_order_abroad_goes_international_and_a_free_text_one_as_before() {
        let id = Uuid::now_v7();
        let to = |country: Option<&str>| OrderFacts {
            country: country.map(str::to_owned),
            ..order(3)
        };
        let plan_of = |facts: &OrderFacts| match schedule(
            "o-1",
            Some(facts),
            false,
            day("2026-03-06"),
            id,
            "DE",
        ) {
            Scheduling::Schedule { plan, .. } => plan,
            other => panic!("{other:?}"),
        };
        assert_eq!(plan_of(&to(Some("FR"))).carrier, Carrier::International);
        assert_eq!(plan_of(&to(Some("FR"))).pickup_date, day("2026-03-10"));
        assert_eq!(plan_of(&to(Some("DE"))).carrier, Carrier::Parcel);
        assert_eq!(plan_of(&to(None)), plan_of(&to(Some("DE"))));
    }

    #[test]
    fn statuses_read_back_as_written() {
        for status in ShipmentStatus::ALL {
            assert_eq!(status.as_str().parse::<ShipmentStatus>(), Ok(status));
        }
        assert!("lost".parse::<ShipmentStatus>().is_err());
    }
}
