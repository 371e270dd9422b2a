//! What the tool knows about each service: its subscriptions come from its rules crate (through
//! `bazaar_saga`); the projections it can rebuild are the tool's own.

use std::sync::LazyLock;

/// A service that consumes events, so it has a consumer group, an inbox and dead letters.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    pub name: &'static str,
    /// Logical topics its consumer subscribes to (the deployment prefix is added).
    pub consumes: &'static [&'static str],
    /// Read models that `bazaar rebuild <service> <projection>` can rebuild from the topics.
    pub projections: &'static [&'static str],
}

/// Every consuming service with the topics its rules crate subscribes to
/// (`bazaar_saga::CONSUMERS`), and what the tool can rebuild for it.
pub static SERVICES: LazyLock<Vec<ServiceSpec>> = LazyLock::new(|| {
    bazaar_saga::CONSUMERS
        .iter()
        .map(|consumer| ServiceSpec {
            name: consumer.name,
            consumes: consumer.consumes,
            projections: if consumer.name == order_rules::SERVICE {
                &["catalog-replica"]
            } else {
                &[]
            },
        })
        .collect()
});

/// Topics keyed by order id: the saga's history of one order lives in these.
pub static ORDER_TOPICS: LazyLock<Vec<&'static str>> = LazyLock::new(bazaar_saga::order_topics);

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
    bazaar_saga::producer_of(topic.trim_end_matches(".dlq")).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumed_topic_is_in_the_catalog_with_a_dead_letter_topic() {
        let catalog = messaging::TopicCatalog::bundled().expect("catalog");
        let names: Vec<String> = catalog.all_topics().into_iter().map(|t| t.name).collect();
        for service in SERVICES.iter() {
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
