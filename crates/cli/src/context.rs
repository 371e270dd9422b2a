//! Where things are: Kafka, the registry, each service's consumer group and database.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use platform::config::KafkaSettings;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::decode::PersonalData;
use crate::exit::Exit;
use crate::services::{self, ServiceSpec};

#[derive(Debug, Clone)]
pub struct Context {
    pub kafka: KafkaSettings,
    pub json: bool,
    /// Whether events are shown with their personal fields (`--reveal`); masked by default.
    pub personal_data: PersonalData,
    group_prefix: String,
    groups: HashMap<String, String>,
    databases: HashMap<String, String>,
}

impl Context {
    pub fn new(
        kafka: KafkaSettings,
        json: bool,
        group_prefix: String,
        groups: &[(String, String)],
        databases: &[(String, String)],
    ) -> anyhow::Result<Self> {
        for (service, _) in groups.iter().chain(databases) {
            services::find(service)?;
        }
        Ok(Self {
            kafka,
            json,
            personal_data: PersonalData::Masked,
            group_prefix,
            groups: groups.iter().cloned().collect(),
            databases: databases.iter().cloned().collect(),
        })
    }

    /// The full name of a logical topic.
    pub fn topic(&self, logical: &str) -> String {
        self.kafka.topic(logical)
    }

    /// The logical name of a full topic name.
    pub fn logical<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(self.kafka.topic_prefix.as_str())
            .unwrap_or(full)
    }

    pub fn group_of(&self, service: &str) -> String {
        self.groups
            .get(service)
            .cloned()
            .unwrap_or_else(|| format!("{}{service}", self.group_prefix))
    }

    /// The database URL of a service: the command's own `--database-url`, then
    /// `--service-db`, then `BAZAAR_<SVC>_DATABASE_URL`, then the local development default.
    pub fn database_url(&self, service: &str, explicit: Option<&str>) -> String {
        if let Some(url) = explicit {
            return url.to_owned();
        }
        if let Some(url) = self.databases.get(service) {
            return url.clone();
        }
        let variable = format!("BAZAAR_{}_DATABASE_URL", service.to_uppercase());
        if let Ok(url) = std::env::var(variable) {
            return url;
        }
        let role = format!("bazaar_{service}");
        format!("postgres://{role}:{role}@127.0.0.1:5432/{role}")
    }

    /// A small pool on a service's database. Connecting fails fast: an operator waiting on a
    /// silent tool is worse than a clear error.
    pub async fn connect(&self, service: &str, explicit: Option<&str>) -> anyhow::Result<PgPool> {
        let url = self.database_url(service, explicit);
        let options: PgConnectOptions = url
            .parse()
            .with_context(|| format!("the {service} database URL {}", redact(&url)))?;
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|error| {
                anyhow::Error::new(Exit::Unavailable(format!(
                    "cannot connect to the {service} database at {}: {error}",
                    redact(&url)
                )))
            })
    }

    pub fn service(&self, name: &str) -> anyhow::Result<&'static ServiceSpec> {
        services::find(name)
    }
}

/// A URL with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Parses `name=value` for repeatable options such as `--service-db order=postgres://...`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !value.is_empty() => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected SERVICE=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://bazaar_order:secret@127.0.0.1:5432/bazaar_order"),
            "postgres://bazaar_order:***@127.0.0.1:5432/bazaar_order"
        );
        assert_eq!(redact("postgres://host/db"), "postgres://host/db");
    }

    #[test]
    fn database_urls_default_to_local_development_credentials() {
        let context = Context::new(
            KafkaSettings::local_defaults("cli"),
            false,
            "bazaar-".into(),
            &[("order".into(), "g".into())],
            &[("payment".into(), "postgres://x".into())],
        )
        .expect("context");
        assert_eq!(
            context.database_url("shipping", None),
            "postgres://bazaar_shipping:bazaar_shipping@127.0.0.1:5432/bazaar_shipping"
        );
        assert_eq!(context.database_url("payment", None), "postgres://x");
        assert_eq!(
            context.database_url("payment", Some("postgres://y")),
            "postgres://y"
        );
        assert_eq!(context.group_of("order"), "g");
        assert_eq!(context.group_of("inventory"), "bazaar-inventory");
    }

    #[test]
    fn unknown_services_are_refused() {
        let error = Context::new(
            KafkaSettings::local_defaults("cli"),
            false,
            "bazaar-".into(),
            &[("ordr".into(), "g".into())],
            &[],
        )
        .expect_err("typo");
        assert!(error.to_string().contains("known: order"), "{error}");
    }
}
