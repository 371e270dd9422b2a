//! Client of a Confluent-compatible schema registry: registers topic schemas, fetches writer
//! schemas by id. Both answers are immutable, so they are cached for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use platform::config::KafkaSettings;
use platform::http::client::error_chain;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or failed; asking again later may work.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    #[error("schema id {0} is not registered")]
    UnknownSchemaId(u32),
    #[error("the registry refused the schema for {subject}: {message}")]
    Rejected { subject: String, message: String },
    #[error("the registry returned an unparseable schema for id {id}: {message}")]
    InvalidSchema { id: u32, message: String },
}

impl RegistryError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A call that got no usable answer, with every cause (reqwest's own message does not say
/// whether the connection was refused, reset or closed).
fn unavailable(method: &str, url: &str, error: &reqwest::Error) -> RegistryError {
    RegistryError::Unavailable(format!("{method} {url}: {}", error_chain(error)))
}

#[derive(Debug, Clone)]
pub struct SchemaRegistryClient {
    base_url: String,
    /// `user:password`, sent as basic auth with every call; `None` for anonymous calls.
    user_info: Option<SecretString>,
    http: reqwest::Client,
    ids_by_subject_and_text: Arc<RwLock<HashMap<(String, String), u32>>>,
    schemas_by_id: Arc<RwLock<HashMap<u32, Arc<Schema>>>>,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    message: String,
}

impl SchemaRegistryClient {
    /// The registry of `kafka`, called with its credentials (`schema_registry_user_info`).
    pub fn of(kafka: &KafkaSettings) -> Self {
        let user_info = kafka.schema_registry_user_info.expose_secret();
        let mut client = Self::new(&kafka.schema_registry_url);
        if !user_info.is_empty() {
            client.user_info = Some(user_info.into());
        }
        client
    }

    /// An anonymous client: it can read schemas, not register them.
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            // Answers are cached for the life of the process, so calls come in a burst at start
            // and seldom after, mostly after the registry has closed a kept connection (its
            // `http.keep_alive_ms`) or while it is closing it. Each call opens its own.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            user_info: None,
            http,
            ids_by_subject_and_text: Arc::default(),
            schemas_by_id: Arc::default(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Registers `schema` under `subject` (idempotent) and returns its global id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let cache_key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = read(&self.ids_by_subject_and_text).get(&cache_key) {
            return Ok(*id);
        }
        let url = format!("{}/subjects/{}/versions", self.base_url, subject);
        let answer = self
            .authenticated(self.http.post(&url))
            .header("Content-Type", CONTENT_TYPE)
            .json(&json!({ "schema": schema }))
            .send()
            .await
            .map_err(|error| unavailable("POST", &url, &error))?;
        let status = answer.status();
        if status.is_success() {
            let IdAnswer { id } = answer
                .json()
                .await
                .map_err(|error| unavailable("POST", &url, &error))?;
            write(&self.ids_by_subject_and_text).insert(cache_key, id);
            return Ok(id);
        }
        let message = answer
            .json::<ErrorAnswer>()
            .await
            .map(|error| error.message)
            .unwrap_or_else(|_| status.to_string());
        if status.is_server_error() {
            Err(RegistryError::Unavailable(format!(
                "POST {url}: {status} {message}"
            )))
        } else {
            Err(RegistryError::Rejected {
                subject: subject.to_owned(),
                message,
            })
        }
    }

    /// The schema registered under `id`.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = read(&self.schemas_by_id).get(&id) {
            return Ok(schema.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.base_url);
        let answer = self
            .authenticated(self.http.get(&url))
            .send()
            .await
            .map_err(|error| unavailable("GET", &url, &error))?;
        let status = answer.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::UnknownSchemaId(id));
        }
        if !status.is_success() {
            return Err(RegistryError::Unavailable(format!("GET {url}: {status}")));
        }
        let SchemaAnswer { schema } = answer
            .json()
            .await
            .map_err(|error| unavailable("GET", &url, &error))?;
        let parsed = Schema::parse_str(&schema).map_err(|error| RegistryError::InvalidSchema {
            id,
            message: error.to_string(),
        })?;
        let parsed = Arc::new(parsed);
        write(&self.schemas_by_id).insert(id, parsed.clone());
        Ok(parsed)
    }
}

impl SchemaRegistryClient {
    /// `request` with the credentials, if any. A user info without a colon is all user name,
    /// as Confluent's clients take it.
    fn authenticated(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let Some(user_info) = &self.user_info else {
            return request;
        };
        let (user, password) = user_info
            .expose_secret()
            .split_once(':')
            .unwrap_or((user_info.expose_secret(), ""));
        request.basic_auth(user, Some(password))
    }
}

// A poisoned cache lock only means another thread panicked mid-insert of an immutable answer;
// the map itself is still valid.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
