//! `bazaar access`: every Kafka principal and what the brokers let it do, derived from what is
//! declared once: the topic catalog (`infra/kafka/topics.toml`: the topics and their dead-letter
//! topics), the service that publishes each topic (`bazaar_saga::producer_of`) and the topics
//! each service consumes (`bazaar_saga::CONSUMERS`, from the rules crates).
//!
//! - a service may write (and describe) only the topics it publishes and the dead-letter topics
//!   of the topics it consumes (a parked message is copied there), read only the topics it
//!   consumes, and use only its own consumer group;
//! - `ops` (the operations tool) may do anything to the deployment's topics (its prefix, or
//!   every topic) and to every consumer group;
//! - `analyst` may read and describe those topics and describe groups: it can tap, never
//!   produce, and cannot move a group's offsets;
//! - with `--local`, `tests` (the integration tests' principal) may do anything to the topics
//!   and groups of a test (`test-` and `chaos-` prefixes), and nothing else.
//!
//! `infra/kafka/kafkactl.sh` applies the output as the brokers' super user (`access FILE`):
//! `infra/kafka/access.txt` is `bazaar access --local` (what every local broker start applies),
//! `infra/kafka/access.deploy.txt` is `bazaar access` (what docker-compose.yml applies, every
//! password from the environment); a test keeps both in step with the declarations.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use clap::Args;

use crate::context::Context;

/// The principal of the operations tool.
pub const OPS: &str = "ops";
/// The read-only principal of people who look at topics.
pub const ANALYST: &str = "analyst";
/// The integration tests' principal (local brokers only).
pub const TESTS: &str = "tests";
/// The name prefixes of the resources a test creates (`tests/integration`, `tests/chaos`).
pub const TEST_PREFIXES: [&str; 2] = ["test-", "chaos-"];

#[derive(Debug, Args)]
pub struct AccessArgs {
    /// Also the tests' principal, and every principal with its local password (what
    /// `make run` and `make test` use); without it, passwords are `-`: the brokers' operator
    /// sets each one (`BAZAAR_KAFKA_PASSWORD_<PRINCIPAL>` for `kafkactl.sh access`).
    #[arg(long)]
    local: bool,
}

/// What an ACL is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Topic,
    Group,
    Cluster,
}

/// How an ACL's name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    Literal,
    Prefixed,
}

/// One allowing ACL (Bazaar never needs a deny).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub principal: String,
    pub resource: Resource,
    pub pattern: Pattern,
    pub name: String,
    pub operation: &'static str,
}

/// Every principal: the services that publish or consume, then ops and analyst (and tests).
pub fn principals(local: bool) -> anyhow::Result<Vec<String>> {
    let mut services = BTreeSet::new();
    for topic in catalog_topics()? {
        services.insert(owner(&topic)?.to_owned());
    }
    services.extend(bazaar_saga::CONSUMERS.iter().map(|c| c.name.to_owned()));
    let mut all: Vec<String> = services.into_iter().collect();
    all.extend([OPS.to_owned(), ANALYST.to_owned()]);
    if local {
        all.push(TESTS.to_owned());
    }
    Ok(all)
}

/// The catalog's topics that are not dead-letter topics, by logical name.
fn catalog_topics() -> anyhow::Result<Vec<String>> {
    let catalog = messaging::TopicCatalog::bundled()?;
    let all = catalog.all_topics();
    let dead_letters: BTreeSet<String> = all
        .iter()
        .filter(|topic| topic.dead_letter)
        .map(messaging::TopicSpec::dead_letter_name)
        .collect();
    Ok(all
        .into_iter()
        .map(|topic| topic.name)
        .filter(|name| !dead_letters.contains(name))
        .collect())
}

fn owner(topic: &str) -> anyhow::Result<&'static str> {
    bazaar_saga::producer_of(topic)
        .ok_or_else(|| anyhow::anyhow!("no service publishes topic {topic:?}: who owns it?"))
}

/// Every grant, for the topics and groups of `context`'s deployment.
pub fn grants(context: &Context, local: bool) -> anyhow::Result<Vec<Grant>> {
    let prefix = &context.kafka.topic_prefix;
    let mut grants = BTreeSet::new();
    let mut allow =
        |principal: &str, resource, pattern, name: String, operations: &[&'static str]| {
            for operation in operations {
                grants.insert(Grant {
                    principal: principal.to_owned(),
                    resource,
                    pattern,
                    name: name.clone(),
                    operation,
                });
            }
        };
    for topic in catalog_topics()? {
        allow(
            owner(&topic)?,
            Resource::Topic,
            Pattern::Literal,
            context.topic(&topic),
            &["WRITE", "DESCRIBE"],
        );
    }
    for consumer in &bazaar_saga::CONSUMERS {
        for topic in consumer.consumes {
            allow(
                consumer.name,
                Resource::Topic,
                Pattern::Literal,
                context.topic(topic),
                &["READ", "DESCRIBE"],
            );
            allow(
                consumer.name,
                Resource::Topic,
                Pattern::Literal,
                context.topic(&format!("{topic}.dlq")),
                &["WRITE", "DESCRIBE"],
            );
        }
        allow(
            consumer.name,
            Resource::Group,
            Pattern::Literal,
            context.group_of(consumer.name),
            &["READ", "DESCRIBE"],
        );
    }
    // Everything of this deployment: its topic prefix, or every topic when it has none.
    let everything = |name: &str| {
        if name.is_empty() {
            (Pattern::Literal, "*".to_owned())
        } else {
            (Pattern::Prefixed, name.to_owned())
        }
    };
    let (topic_pattern, topics) = everything(prefix);
    // Groups are named by convention only (`--group-prefix`, `--service-group`): every group.
    let (group_pattern, groups) = (Pattern::Literal, "*".to_owned());
    allow(
        OPS,
        Resource::Topic,
        topic_pattern,
        topics.clone(),
        &["ALL"],
    );
    allow(
        OPS,
        Resource::Group,
        group_pattern,
        groups.clone(),
        &["ALL"],
    );
    allow(
        OPS,
        Resource::Cluster,
        Pattern::Literal,
        "kafka-cluster".to_owned(),
        &["DESCRIBE", "DESCRIBE_CONFIGS"],
    );
    allow(
        ANALYST,
        Resource::Topic,
        topic_pattern,
        topics,
        &["READ", "DESCRIBE"],
    );
    allow(
        ANALYST,
        Resource::Group,
        group_pattern,
        groups,
        &["DESCRIBE"],
    );
    if local {
        for test_prefix in TEST_PREFIXES {
            for resource in [Resource::Topic, Resource::Group] {
                allow(
                    TESTS,
                    resource,
                    Pattern::Prefixed,
                    test_prefix.to_owned(),
                    &["ALL"],
                );
            }
        }
    }
    Ok(grants.into_iter().collect())
}

/// The lines `kafkactl.sh access` reads: `user NAME PASSWORD` (`-`: set by the operator), then
/// `allow PRINCIPAL RESOURCE PATTERN NAME OPERATION`.
pub fn render(context: &Context, local: bool) -> anyhow::Result<String> {
    let mut out = String::from(
        "# Kafka principals and their ACLs, written by `bazaar access` from the topic catalog and\n\
         # the services' rules crates; do not edit (see crates/cli/src/cmd/access.rs).\n",
    );
    for principal in principals(local)? {
        let password = if local {
            secrecy::ExposeSecret::expose_secret(&platform::config::local_kafka_password(
                &principal,
            ))
            .to_owned()
        } else {
            "-".to_owned()
        };
        writeln!(out, "user {principal} {password}")?;
    }
    for grant in grants(context, local)? {
        writeln!(
            out,
            "allow {} {} {} {} {}",
            grant.principal,
            format!("{:?}", grant.resource).to_uppercase(),
            format!("{:?}", grant.pattern).to_uppercase(),
            grant.name,
            grant.operation
        )?;
    }
    Ok(out)
}

pub fn run(context: &Context, args: &AccessArgs) -> anyhow::Result<()> {
    print!("{}", render(context, args.local)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::config::KafkaSettings;

    fn context() -> Context {
        Context::new(
            KafkaSettings::local_defaults("cli"),
            false,
            "bazaar-".to_owned(),
            &[],
            &[],
        )
        .expect("context")
    }

    fn allowed(
        grants: &[Grant],
        principal: &str,
        resource: Resource,
        name: &str,
        op: &str,
    ) -> bool {
        grants.iter().any(|grant| {
            grant.principal == principal
                && grant.resource == resource
                && grant.name == name
                && (grant.operation == op || grant.operation == "ALL")
        })
    }

    #[test]
    fn the_checked_in_access_files_are_what_the_declarations_say() {
        let local = render(&context(), true).expect("render");
        assert!(
            include_str!("../../../../infra/kafka/access.txt") == local,
            "infra/kafka/access.txt is stale: run `cargo run -q -p bazaar-cli -- access --local > \
             infra/kafka/access.txt`"
        );
        let deployed = render(&context(), false).expect("render");
        assert!(
            include_str!("../../../../infra/kafka/access.deploy.txt") == deployed,
            "infra/kafka/access.deploy.txt is stale: run `cargo run -q -p bazaar-cli -- access > \
             infra/kafka/access.deploy.txt`"
        );
    }

    #[test]
    fn a_service_writes_only_its_own_topics_and_the_dead_letters_of_what_it_reads() {
        let grants = grants(&context(), false).expect("grants");
        assert!(allowed(
            &grants,
            "order",
            Resource::Topic,
            "order-events",
            "WRITE"
        ));
        assert!(!allowed(
            &grants,
            "inventory",
            Resource::Topic,
            "order-events",
            "WRITE"
        ));
        assert!(allowed(
            &grants,
            "inventory",
            Resource::Topic,
            "order-events",
            "READ"
        ));
        assert!(allowed(
            &grants,
            "inventory",
            Resource::Topic,
            "order-events.dlq",
            "WRITE"
        ));
        assert!(!allowed(
            &grants,
            "auth",
            Resource::Topic,
            "order-events",
            "READ"
        ));
        assert!(allowed(
            &grants,
            "payment",
            Resource::Group,
            "bazaar-payment",
            "READ"
        ));
        assert!(!allowed(
            &grants,
            "payment",
            Resource::Group,
            "bazaar-order",
            "READ"
        ));
        for grant in &grants {
            if grant.principal != OPS {
                assert_ne!(grant.operation, "ALL", "{grant:?}");
            }
            if grant.principal == ANALYST {
                assert!(matches!(grant.operation, "READ" | "DESCRIBE"), "{grant:?}");
            }
        }
        assert!(!grants.iter().any(|grant| grant.principal == TESTS));
    }

    #[test]
    fn every_consumer_and_publisher_is_a_principal_with_a_group_if_it_consumes() {
        let principals = principals(false).expect("principals");
        for consumer in &bazaar_saga::CONSUMERS {
            assert!(
                principals.iter().any(|p| p == consumer.name),
                "{}",
                consumer.name
            );
        }
        assert!(
            principals
                .iter()
                .any(|p| p == bazaar_saga::choreography::AUTH)
        );
    }
}
