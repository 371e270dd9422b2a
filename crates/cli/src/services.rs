//! What the tool knows about each service: the one table to extend when a service starts
//! consuming a topic, or gains a projection that can be rebuilt.

/// A service that consumes events, so it has a consumer group, an inbox and dead letters.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    pub name: &'static str,
    /// Logical topics its consumer subscribes to (the deployment prefix is added).
    pub consumes: &'static [&'static str],
    /// Read models that `bazaar rebuild <service> <projection>` can rebuild from the topics.
    pub projections: &'static [&'static str],
}

/// Every consuming service, with the topics of its `consumers::TOPICS` (an integration test
/// keeps the two equal).
pub const SERVICES: &[ServiceSpec] = &[
    ServiceSpec {
        name: "order",
        consumes: &[
            "product-snapshots",
            "inventory-events",
            "payment-events",
            "shipment-events",
        ],
        projections: &["catalog-replica"],
    },
    ServiceSpec {
        name: "inventory",
        consumes: &["order-events", "payment-events"],
        projections: &[],
    },
    ServiceSpec {
        name: "payment",
        consumes: &["order-events", "inventory-events"],
        projections: &[],
    },
    ServiceSpec {
        name: "notification",
        consumes: &[
            "user-events",
            "order-events",
            "payment-events",
            "shipment-events",
        ],
        projections: &[],
    },
    ServiceSpec {
        name: "shipping",
        consumes: &["order-events"],
        projections: &[],
    },
];

/// Topics keyed by order id: the saga's history of one order lives in these.
pub const ORDER_TOPICS: &[&str] = &[
    "order-events",
    "inventory-events",
    "payment-events",
    "shipment-events",
];

pub fn find(name: &str) -> anyhow::Result<&'static ServiceSpec> {
    SERVICES
        .iter()
        .find(|service| service.name == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown service {name:?}; known: {}",
                SERVICES
                    .iter()
                    .map(|service| service.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The service that publishes to a logical topic (dead-letter topics belong to the consumer
/// that parked the message, which the copy's headers name).
pub fn producer_of(topic: &str) -> &'static str {
    match topic.trim_end_matches(".dlq") {
        "user-events" => "auth",
        "product-snapshots" => "product",
        "order-events" => "order",
        "inventory-events" | "stock-levels" => "inventory",
        "payment-events" => "payment",
        "shipment-events" => "shipping",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumed_topic_is_in_the_catalog_with_a_dead_letter_topic() {
        let catalog = messaging::TopicCatalog::bundled().expect("catalog");
        let names: Vec<String> = catalog.all_topics().into_iter().map(|t| t.name).collect();
        for service in SERVICES {
            for topic in service.consumes {
                assert!(names.iter().any(|n| n == topic), "{topic}");
                assert!(names.contains(&format!("{topic}.dlq")), "{topic}.dlq");
            }
        }
    }

    #[test]
    fn every_event_topic_has_a_producer() {
        for topic in events::codec::event_topics() {
            assert_ne!(producer_of(topic), "?", "{topic}");
        }
    }
}
