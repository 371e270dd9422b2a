//! One struct per event type, field for field as in its Avro schema. Money is integer minor
//! units plus an ISO 4217 currency code.

use serde::{Deserialize, Serialize};

/// Declares the event catalog: for each topic, its event types, the schema file of each (the
/// latest version), and which field is the Kafka key.
macro_rules! domain_events {
    ($( $topic:literal { $( $name:ident = $file:literal, key = $key:ident; )+ } )+) => {
        /// Every domain event Bazaar publishes.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Event {
            $($( $name($name), )+)+
        }

        /// The type of an event, without its data: what the `event-type` header names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventType {
            $($( $name, )+)+
        }

        impl EventType {
            /// Every event type, topic by topic in the order of the catalog.
            pub const ALL: &[EventType] = &[$($( EventType::$name, )+)+];

            /// The Avro record name, also sent in the `event-type` header.
            pub const fn name(self) -> &'static str {
                match self { $($( EventType::$name => stringify!($name), )+)+ }
            }

            /// The logical topic (before any deployment prefix) that carries this type.
            pub const fn topic(self) -> &'static str {
                match self { $($( EventType::$name => $topic, )+)+ }
            }

            /// The field whose value is the Kafka key (the aggregate id), e.g. `order_id`.
            pub const fn key_field(self) -> &'static str {
                match self { $($( EventType::$name => stringify!($key), )+)+ }
            }
        }

        impl Event {
            /// The type of this event.
            pub fn event_type(&self) -> EventType {
                match self { $($( Event::$name(_) => EventType::$name, )+)+ }
            }

            /// The Avro record name, also sent in the `event-type` header.
            pub fn type_name(&self) -> &'static str {
                self.event_type().name()
            }

            /// The logical topic (before any deployment prefix).
            pub fn topic(&self) -> &'static str {
                self.event_type().topic()
            }

            /// The aggregate id: the Kafka key, so one aggregate's events stay in order.
            pub fn key(&self) -> String {
                match self { $($( Event::$name(event) => event.$key.to_string(), )+)+ }
            }

            pub(crate) fn to_record(&self) -> Result<apache_avro::types::Value, apache_avro::Error> {
                match self { $($( Event::$name(event) => apache_avro::to_value(event), )+)+ }
            }

            pub(crate) fn from_record(
                type_name: &str,
                record: &apache_avro::types::Value,
            ) -> Option<Result<Self, apache_avro::Error>> {
                match type_name {
                    $($( stringify!($name) => Some(apache_avro::from_value::<$name>(record).map(Event::$name)), )+)+
                    _ => None,
                }
            }
        }

        $($(
            impl From<$name> for Event {
                fn from(event: $name) -> Self {
                    Event::$name(event)
                }
            }
        )+)+

        /// (topic, event type, schema text of the version in use), for every event type.
        pub const SCHEMAS: &[(&str, &str, &str)] = &[
            $($( ($topic, stringify!($name), include_str!(concat!("../../../schemas/avro/", $file))), )+)+
        ];

        /// The schema file (relative to `schemas/avro/`) each event type is encoded with.
        pub const SCHEMA_FILES: &[(&str, &str)] = &[
            $($( (stringify!($name), $file), )+)+
        ];
    };
}

domain_events! {
    "user-events" {
        UserRegistered = "user-events/UserRegistered/v2.avsc", key = user_id;
    }
    "product-snapshots" {
        ProductSnapshot = "product-snapshots/ProductSnapshot/v2.avsc", key = product_id;
    }
    "order-events" {
        OrderCreated = "order-events/OrderCreated/v3.avsc", key = order_id;
        OrderPaid = "order-events/OrderPaid/v1.avsc", key = order_id;
        OrderRejected = "order-events/OrderRejected/v1.avsc", key = order_id;
        OrderCancelled = "order-events/OrderCancelled/v1.avsc", key = order_id;
    }
    "inventory-events" {
        StockReserved = "inventory-events/StockReserved/v1.avsc", key = order_id;
        StockReservationFailed = "inventory-events/StockReservationFailed/v1.avsc", key = order_id;
        StockCommitted = "inventory-events/StockCommitted/v1.avsc", key = order_id;
        StockReleased = "inventory-events/StockReleased/v1.avsc", key = order_id;
        ReservationExpired = "inventory-events/ReservationExpired/v1.avsc", key = order_id;
    }
    "stock-levels" {
        StockLevelChanged = "stock-levels/StockLevelChanged/v1.avsc", key = sku;
    }
    "payment-events" {
        PaymentSucceeded = "payment-events/PaymentSucceeded/v1.avsc", key = order_id;
        PaymentFailed = "payment-events/PaymentFailed/v1.avsc", key = order_id;
        PaymentRefunded = "payment-events/PaymentRefunded/v1.avsc", key = order_id;
    }
    "shipment-events" {
        ShipmentScheduled = "shipment-events/ShipmentScheduled/v2.avsc", key = order_id;
        ShipmentDispatched = "shipment-events/ShipmentDispatched/v1.avsc", key = order_id;
        ShipmentDelivered = "shipment-events/ShipmentDelivered/v1.avsc", key = order_id;
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EventType {
    type Err = String;

    /// Reads an `event-type` header.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| format!("unknown event type {name:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    /// Milliseconds since the Unix epoch.
    pub registered_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSnapshot {
    pub product_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub variants: Vec<VariantSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantSnapshot {
    pub sku: String,
    pub name: String,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub price_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub user_id: String,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub payment_token: String,
    /// The address on one line: as typed (v1, v2), or [`OrderCreated::address`] formatted.
    pub shipping_address: String,
    /// The structured address (v3); `None` in events written before it. Boxed: most events
    /// are a few ids, and an [`Event`] is as large as its largest variant.
    #[serde(default)]
    pub address: Option<Box<PostalAddress>>,
}

/// A postal address.
// The order service's API takes and shows it as it is (its OpenAPI schema: the `openapi`
// feature), and an order keeps it as JSONB; the schema's limits are the ones that service checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostalAddress {
    /// The recipient.
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 200, example = "Ada Lovelace")
    )]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(max_length = 200, example = "1 Main St"))]
    pub line1: String,
    /// Optional; blank is absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub line2: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 200, example = "Berlin"))]
    pub city: String,
    /// Letters, digits, spaces and hyphens.
    #[cfg_attr(feature = "openapi", schema(max_length = 16, example = "10115"))]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (any case when sent; upper case when shown).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 2, max_length = 2, example = "DE")
    )]
    pub country: String,
}

impl PostalAddress {
    /// The address on one line, for readers that know only a free-text address.
    pub fn one_line(&self) -> String {
        let mut parts = vec![self.name.as_str(), self.line1.as_str()];
        parts.extend(self.line2.as_deref());
        let town = format!("{} {}", self.postal_code, self.city);
        parts.push(&town);
        parts.push(&self.country);
        parts.join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub order_id: String,
    pub reason: String,
    pub sku: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub lines: Vec<ReservedLine>,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedLine {
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReservationFailed {
    pub order_id: String,
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationExpired {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevelChanged {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentScheduled {
    pub order_id: String,
    pub shipment_id: String,
    pub carrier: String,
    pub tracking_number: String,
    /// ISO 8601 date, e.g. `2026-11-30`.
    pub pickup_date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentDispatched {
    pub order_id: String,
    pub shipment_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentDelivered {
    pub order_id: String,
    pub shipment_id: String,
}
