//! The topic catalog (`infra/kafka/topics.toml`) and its idempotent application to a cluster.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use platform::config::KafkaSettings;
use rdkafka::admin::AdminClient;
use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::Deserialize;

use crate::client::{KafkaError, admin_client};

/// The catalog shipped with this build, so services and tools need no path to find it.
pub const BUNDLED_CATALOG: &str = include_str!("../../../infra/kafka/topics.toml");

/// Dead-letter topics keep parked messages long enough for a fix and a redrive.
const DEAD_LETTER_RETENTION_MS: i64 = 30 * 24 * 60 * 60 * 1000;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub cleanup_policy: CleanupPolicy,
    pub retention_ms: i64,
    #[serde(default)]
    pub dead_letter: bool,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    fn as_kafka(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
        }
    }
}

impl TopicSpec {
    fn configs(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("cleanup.policy", self.cleanup_policy.as_kafka().to_owned()),
            ("retention.ms", self.retention_ms.to_string()),
        ])
    }

    pub fn dead_letter_name(&self) -> String {
        format!("{}.dlq", self.name)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicCatalog {
    #[serde(rename = "topic")]
    topics: Vec<TopicSpec>,
}

impl TopicCatalog {
    pub fn parse(text: &str) -> Result<Self, KafkaError> {
        let catalog: Self =
            toml::from_str(text).map_err(|error| KafkaError::Catalog(error.to_string()))?;
        catalog.validate()?;
        Ok(catalog)
    }

    pub fn bundled() -> Result<Self, KafkaError> {
        Self::parse(BUNDLED_CATALOG)
    }

    fn validate(&self) -> Result<(), KafkaError> {
        let mut seen = std::collections::HashSet::new();
        for topic in self.all_topics() {
            let problem = if topic.name.is_empty()
                || !topic
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                Some("names use only [a-zA-Z0-9._-]")
            } else if topic.partitions < 1 {
                Some("partitions must be at least 1")
            } else if topic.retention_ms < -1 || topic.retention_ms == 0 {
                Some("retention_ms must be positive, or -1 for forever")
            } else if !seen.insert(topic.name.clone()) {
                Some("declared twice")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(KafkaError::Catalog(format!(
                    "topic {:?}: {problem}",
                    topic.name
                )));
            }
        }
        Ok(())
    }

    /// The declared topics plus the dead-letter topic of each that asks for one.
    pub fn all_topics(&self) -> Vec<TopicSpec> {
        let mut all = Vec::with_capacity(self.topics.len() * 2);
        for topic in &self.topics {
            all.push(topic.clone());
            if topic.dead_letter {
                all.push(TopicSpec {
                    name: topic.dead_letter_name(),
                    partitions: topic.partitions,
                    cleanup_policy: CleanupPolicy::Delete,
                    retention_ms: DEAD_LETTER_RETENTION_MS,
                    dead_letter: false,
                    description: format!("messages parked by consumers of {}", topic.name),
                });
            }
        }
        all
    }
}

/// What one apply changed, by full topic name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub partitions_added: Vec<String>,
    pub configs_updated: Vec<String>,
    pub unchanged: Vec<String>,
}

impl ApplyReport {
    pub fn changed_anything(&self) -> bool {
        !(self.created.is_empty()
            && self.partitions_added.is_empty()
            && self.configs_updated.is_empty())
    }
}

/// Makes the cluster match the catalog: creates missing topics, grows partition counts and sets
/// configs. Every topic name gets `settings.topic_prefix` in front.
pub async fn apply(
    catalog: &TopicCatalog,
    settings: &KafkaSettings,
) -> Result<ApplyReport, KafkaError> {
    let admin = admin_client(settings)?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let wanted: Vec<(String, TopicSpec)> = catalog
        .all_topics()
        .into_iter()
        .map(|spec| (settings.topic(&spec.name), spec))
        .collect();
    let existing = existing_partition_counts(settings).await?;
    let mut report = ApplyReport::default();

    let missing: Vec<&(String, TopicSpec)> = wanted
        .iter()
        .filter(|(name, _)| !existing.contains_key(name))
        .collect();
    if !missing.is_empty() {
        let configs: Vec<BTreeMap<&str, String>> =
            missing.iter().map(|(_, spec)| spec.configs()).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&configs)
            .map(|((name, spec), config)| {
                config.iter().fold(
                    NewTopic::new(
                        name,
                        spec.partitions,
                        TopicReplication::Fixed(settings.replication_factor),
                    ),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        for outcome in admin.create_topics(&new_topics, &options).await? {
            match outcome {
                Ok(name) => report.created.push(name),
                // Another process created it between our look and our create.
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => report.unchanged.push(name),
                Err((topic, code)) => {
                    return Err(KafkaError::Admin {
                        topic,
                        code: code.to_string(),
                    });
                }
            }
        }
    }

    let present: Vec<&(String, TopicSpec)> = wanted
        .iter()
        .filter(|(name, _)| existing.contains_key(name))
        .collect();
    for (name, spec) in &present {
        let current = existing[name];
        if current > spec.partitions {
            return Err(KafkaError::Catalog(format!(
                "topic {name} has {current} partitions but the catalog says {}; partitions cannot shrink",
                spec.partitions
            )));
        }
    }
    let to_grow: Vec<NewPartitions<'_>> = present
        .iter()
        .filter(|(name, spec)| existing[name] < spec.partitions)
        .map(|(name, spec)| NewPartitions::new(name, usize::try_from(spec.partitions).unwrap_or(1)))
        .collect();
    if !to_grow.is_empty() {
        for outcome in admin.create_partitions(&to_grow, &options).await? {
            match outcome {
                Ok(name) => report.partitions_added.push(name),
                Err((topic, code)) => {
                    return Err(KafkaError::Admin {
                        topic,
                        code: code.to_string(),
                    });
                }
            }
        }
    }

    let drifted = configs_that_differ(&admin, &present, &options).await?;
    if !drifted.is_empty() {
        let configs: Vec<BTreeMap<&str, String>> =
            drifted.iter().map(|(_, spec)| spec.configs()).collect();
        let alterations: Vec<AlterConfig<'_>> = drifted
            .iter()
            .zip(&configs)
            .map(|((name, _), config)| {
                config.iter().fold(
                    AlterConfig::new(ResourceSpecifier::Topic(name)),
                    |alter, (key, value)| alter.set(key, value),
                )
            })
            .collect();
        for outcome in admin.alter_configs(&alterations, &options).await? {
            match outcome {
                Ok(_) => {}
                Err((resource, code)) => {
                    return Err(KafkaError::Admin {
                        topic: format!("{resource:?}"),
                        code: code.to_string(),
                    });
                }
            }
        }
        report
            .configs_updated
            .extend(drifted.iter().map(|(name, _)| name.clone()));
    }

    for (name, _) in &present {
        if !report.partitions_added.contains(name) && !report.configs_updated.contains(name) {
            report.unchanged.push(name.clone());
        }
    }
    Ok(report)
}

async fn existing_partition_counts(
    settings: &KafkaSettings,
) -> Result<HashMap<String, i32>, KafkaError> {
    let config = crate::client::base_config(settings);
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = config.create()?;
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, ADMIN_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .map(|topic| {
                (
                    topic.name().to_owned(),
                    i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX),
                )
            })
            .collect())
    })
    .await?
}

async fn configs_that_differ<'a>(
    admin: &AdminClient<DefaultClientContext>,
    present: &[&'a (String, TopicSpec)],
    options: &AdminOptions,
) -> Result<Vec<&'a (String, TopicSpec)>, KafkaError> {
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let resources: Vec<ResourceSpecifier<'_>> = present
        .iter()
        .map(|(name, _)| ResourceSpecifier::Topic(name))
        .collect();
    let described = admin.describe_configs(&resources, options).await?;
    let mut drifted = Vec::new();
    for (entry, outcome) in present.iter().zip(described) {
        let (name, spec) = entry;
        let resource = outcome.map_err(|code| KafkaError::Admin {
            topic: name.clone(),
            code: code.to_string(),
        })?;
        let actual = resource.entry_map();
        let differs = spec.configs().iter().any(|(key, value)| {
            actual.get(key).and_then(|entry| entry.value.as_deref()) != Some(value.as_str())
        });
        if differs {
            drifted.push(*entry);
        }
    }
    Ok(drifted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalog_is_valid_and_declares_dead_letter_topics() {
        let catalog = TopicCatalog::bundled().expect("bundled catalog parses");
        let names: Vec<String> = catalog.all_topics().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&"order-events".to_owned()));
        assert!(names.contains(&"order-events.dlq".to_owned()));
    }

    #[test]
    fn a_duplicate_topic_is_rejected() {
        let text = r#"
            [[topic]]
            name = "a"
            partitions = 1
            cleanup_policy = "delete"
            retention_ms = 1000
            dead_letter = true
            [[topic]]
            name = "a.dlq"
            partitions = 1
            cleanup_policy = "delete"
            retention_ms = 1000
        "#;
        let error = TopicCatalog::parse(text).expect_err("duplicate must fail");
        assert!(error.to_string().contains("a.dlq"), "{error}");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        let typo = "[[topic]]\nname = \"a\"\npartitions = 1\ncleanup_policy = \"delete\"\nretention_ms = 5\nretension = 1\n";
        assert!(TopicCatalog::parse(typo).is_err());
        let zero = "[[topic]]\nname = \"a\"\npartitions = 0\ncleanup_policy = \"delete\"\nretention_ms = 5\n";
        assert!(TopicCatalog::parse(zero).is_err());
        let policy = "[[topic]]\nname = \"a\"\npartitions = 1\ncleanup_policy = \"keep\"\nretention_ms = 5\n";
        assert!(TopicCatalog::parse(policy).is_err());
    }
}
