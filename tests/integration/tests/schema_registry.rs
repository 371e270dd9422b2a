//! The schema registry against a real PostgreSQL, spoken to the way Confluent's serializers and
//! tools speak to it: register, look up, fetch by id, evolve under a compatibility level.

use std::time::Duration;

use bazaar_integration_tests::{fresh_database, isolated_kafka};
use platform::config::{
    HttpSettings, LOCAL_SCHEMA_REGISTRY_USER_INFO, LogSettings, ServiceSettings,
};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

const REGISTRY_MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

const ORDER_V1: &str = r#"{"type":"record","name":"OrderCreated","namespace":"bazaar.orders",
"fields":[{"name":"order_id","type":"string"},{"name":"total_minor","type":"long"}]}"#;

/// ORDER_V1 spelled differently: same schema.
const ORDER_V1_REFORMATTED: &str = r#"{
    "name": "OrderCreated", "namespace": "bazaar.orders", "type": "record",
    "fields": [
        { "type": {"type": "string"}, "name": "order_id" },
        { "name": "total_minor", "type": "long" }
    ]
}"#;

/// ORDER_V1 plus a field with a default: readable by and readable from ORDER_V1.
const ORDER_V2_WITH_DEFAULT: &str = r#"{"type":"record","name":"OrderCreated",
"namespace":"bazaar.orders","fields":[{"name":"order_id","type":"string"},
{"name":"total_minor","type":"long"},{"name":"currency","type":"string","default":"EUR"}]}"#;

/// ORDER_V1 plus a field without a default: cannot read data written with ORDER_V1.
const ORDER_V2_WITHOUT_DEFAULT: &str = r#"{"type":"record","name":"OrderCreated",
"namespace":"bazaar.orders","fields":[{"name":"order_id","type":"string"},
{"name":"total_minor","type":"long"},{"name":"currency","type":"string"}]}"#;

struct Registry {
    base_url: String,
    client: reqwest::Client,
    /// Sent as basic auth with every request, as the services' client sends its
    /// `kafka.schema_registry_user_info`; `None`: anonymous.
    credentials: Option<(String, String)>,
    pool: sqlx::PgPool,
    stop: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// One answer: status, the Content-Type header and the body (JSON when it parses).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
    text: String,
}

impl Answer {
    fn error_code(&self) -> Option<i64> {
        self.body["error_code"].as_i64()
    }
}

/// A registry with the local defaults, called with the local default credentials.
async fn start_registry() -> Registry {
    start_registry_with(schema_registry::config::AuthSettings::default()).await
}

async fn start_registry_with(auth: schema_registry::config::AuthSettings) -> Registry {
    let database = fresh_database("registry").await.expect("fresh database");
    let service = ServiceSettings {
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            keep_alive_ms: HttpSettings::DEFAULT_KEEP_ALIVE_MS,
        },
        database,
        kafka: isolated_kafka("registry"),
        log: LogSettings::default(),
    };
    let app = schema_registry::startup::build(schema_registry::config::Config { service, auth })
        .await
        .expect("registry starts");
    let (user, password) = LOCAL_SCHEMA_REGISTRY_USER_INFO
        .split_once(':')
        .expect("user:password");
    Registry {
        base_url: format!("http://127.0.0.1:{}", app.port()),
        client: reqwest::Client::new(),
        credentials: Some((user.to_owned(), password.to_owned())),
        pool: app.pool().clone(),
        stop: app.stop_handle(),
        task: tokio::spawn(app.run_until_stopped()),
    }
}

impl Registry {
    async fn stop(self) {
        self.stop.stop(true).await;
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("registry stops within 15 s")
            .expect("registry task did not panic")
            .expect("registry shut down cleanly");
    }

    /// Sends `body` as Confluent clients do, with `content_type` (or none).
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base_url));
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            body,
            text,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(REGISTRY_MEDIA_TYPE), Some(body))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, Some(REGISTRY_MEDIA_TYPE), Some(body))
            .await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None, None).await
    }

    async fn register(&self, subject: &str, schema: &str) -> Answer {
        self.post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": schema }),
        )
        .await
    }

    /// Registers and returns the id, failing the test on anything but 200.
    async fn register_ok(&self, subject: &str, schema: &str) -> i64 {
        let answer = self.register(subject, schema).await;
        assert_eq!(answer.status, 200, "register under {subject}: {answer:?}");
        answer.body["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {answer:?}"))
    }

    async fn versions(&self, subject: &str) -> Value {
        let answer = self.get(&format!("/subjects/{subject}/versions")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }
}

#[tokio::test]
async fn registering_returns_an_id_that_identical_schemas_share() {
    let registry = start_registry().await;
    let subject = "order-events-value";

    let id = registry.register_ok(subject, ORDER_V1).await;
    assert!(id > 0);

    // Whatever Content-Type the client sends, or none: same schema, same id, no new version.
    for content_type in [
        Some("application/vnd.schemaregistry+json"),
        Some("application/json"),
        Some("application/octet-stream"),
        None,
    ] {
        let answer = registry
            .send(
                Method::POST,
                &format!("/subjects/{subject}/versions"),
                content_type,
                Some(json!({ "schema": ORDER_V1_REFORMATTED, "schemaType": "AVRO", "references": [] })),
            )
            .await;
        assert_eq!(answer.status, 200, "{content_type:?}: {answer:?}");
        assert_eq!(answer.body, json!({ "id": id }), "{content_type:?}");
        assert_eq!(answer.content_type, REGISTRY_MEDIA_TYPE);
    }
    assert_eq!(registry.versions(subject).await, json!([1]));

    // The same schema under another subject keeps its id, as version 1 there.
    let other = "order-audit-value";
    assert_eq!(registry.register_ok(other, ORDER_V1_REFORMATTED).await, id);
    assert_eq!(registry.versions(other).await, json!([1]));
    let (schemas,): (i64,) = sqlx::query_as("SELECT count(*) FROM schemas")
        .fetch_one(&registry.pool)
        .await
        .expect("count schemas");
    assert_eq!(schemas, 1);

    // By id: the text as first sent.
    let by_id = registry.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(
        (by_id.status, &by_id.body),
        (200, &json!({ "schema": ORDER_V1 }))
    );
    assert_eq!(by_id.content_type, REGISTRY_MEDIA_TYPE);
    let usages = registry.get(&format!("/schemas/ids/{id}/versions")).await;
    assert_eq!(
        usages.body,
        json!([
            { "subject": other, "version": 1 },
            { "subject": subject, "version": 1 },
        ])
    );

    let subjects = registry.get("/subjects").await;
    assert_eq!(subjects.body, json!([other, subject]));

    for version in ["latest", "1", "-1"] {
        let found = registry
            .get(&format!("/subjects/{subject}/versions/{version}"))
            .await;
        assert_eq!(found.status, 200, "{version}: {found:?}");
        assert_eq!(
            found.body,
            json!({ "subject": subject, "version": 1, "id": id, "schema": ORDER_V1 }),
            "{version}"
        );
    }
    let raw = registry
        .get(&format!("/subjects/{subject}/versions/1/schema"))
        .await;
    assert_eq!((raw.status, raw.text.as_str()), (200, ORDER_V1));

    // Lookup finds the schema however it is spelled.
    let looked_up = registry
        .post(
            &format!("/subjects/{subject}"),
            json!({ "schema": ORDER_V1_REFORMATTED }),
        )
        .await;
    assert_eq!(looked_up.status, 200, "{looked_up:?}");
    assert_eq!(
        looked_up.body,
        json!({ "subject": subject, "version": 1, "id": id, "schema": ORDER_V1 })
    );

    registry.stop().await;
}

#[tokio::test]
async fn an_incompatible_change_is_refused_and_a_compatible_one_becomes_the_next_version() {
    let registry = start_registry().await;
    let subject = "orders-value";
    let first = registry.register_ok(subject, ORDER_V1).await;

    // BACKWARD (the default): a new field without a default cannot be read from old data.
    let refused = registry.register(subject, ORDER_V2_WITHOUT_DEFAULT).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.error_code(), Some(409));
    assert_eq!(refused.content_type, REGISTRY_MEDIA_TYPE);
    let message = refused.body["message"].as_str().expect("message");
    assert!(message.contains("currency"), "{message}");
    assert_eq!(registry.versions(subject).await, json!([1]), "not stored");
    let (schemas,): (i64,) = sqlx::query_as("SELECT count(*) FROM schemas")
        .fetch_one(&registry.pool)
        .await
        .expect("count schemas");
    assert_eq!(schemas, 1, "the refused schema got no id");

    let verdict = registry
        .post(
            &format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"),
            json!({ "schema": ORDER_V2_WITHOUT_DEFAULT }),
        )
        .await;
    assert_eq!(verdict.status, 200, "{verdict:?}");
    assert_eq!(verdict.body["is_compatible"], json!(false));
    let messages = verdict.body["messages"]
        .as_array()
        .expect("verbose messages");
    assert!(!messages.is_empty(), "{verdict:?}");
    let verdict = registry
        .post(
            &format!("/compatibility/subjects/{subject}/versions/1"),
            json!({ "schema": ORDER_V2_WITH_DEFAULT }),
        )
        .await;
    assert_eq!(verdict.body, json!({ "is_compatible": true }));

    // A field with a default is a compatible change: version 2, with a new id.
    let second = registry.register_ok(subject, ORDER_V2_WITH_DEFAULT).await;
    assert_ne!(second, first);
    assert_eq!(registry.versions(subject).await, json!([1, 2]));
    let latest = registry
        .get(&format!("/subjects/{subject}/versions/latest"))
        .await;
    assert_eq!(
        (&latest.body["version"], &latest.body["id"]),
        (&json!(2), &json!(second))
    );
    let first_version = registry
        .get(&format!("/subjects/{subject}/versions/1"))
        .await;
    assert_eq!(first_version.body["id"], json!(first));
    // Registering an earlier version again is a no-op too.
    assert_eq!(registry.register_ok(subject, ORDER_V1).await, first);
    assert_eq!(registry.versions(subject).await, json!([1, 2]));

    registry.stop().await;
}

#[tokio::test]
async fn compatibility_levels_are_configured_globally_and_per_subject() {
    let registry = start_registry().await;
    let subject = "payments-value";

    let global = registry.get("/config").await;
    assert_eq!(
        (global.status, &global.body),
        (200, &json!({ "compatibilityLevel": "BACKWARD" }))
    );
    let unset = registry.get(&format!("/config/{subject}")).await;
    assert_eq!(
        (unset.status, unset.error_code()),
        (404, Some(40408)),
        "{unset:?}"
    );
    let defaulted = registry
        .get(&format!("/config/{subject}?defaultToGlobal=true"))
        .await;
    assert_eq!(defaulted.body, json!({ "compatibilityLevel": "BACKWARD" }));

    registry.register_ok(subject, ORDER_V1).await;
    assert_eq!(
        registry
            .register(subject, ORDER_V2_WITHOUT_DEFAULT)
            .await
            .status,
        409
    );

    // NONE for this subject only: the same change now goes through.
    let set = registry
        .put(
            &format!("/config/{subject}"),
            json!({ "compatibility": "NONE" }),
        )
        .await;
    assert_eq!(
        (set.status, &set.body),
        (200, &json!({ "compatibility": "NONE" }))
    );
    let subject_level = registry.get(&format!("/config/{subject}")).await;
    assert_eq!(subject_level.body, json!({ "compatibilityLevel": "NONE" }));
    let accepted = registry.register(subject, ORDER_V2_WITHOUT_DEFAULT).await;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert_eq!(registry.versions(subject).await, json!([1, 2]));
    // Other subjects still follow the global BACKWARD.
    registry.register_ok("other-value", ORDER_V1).await;
    assert_eq!(
        registry
            .register("other-value", ORDER_V2_WITHOUT_DEFAULT)
            .await
            .status,
        409
    );

    // Global FULL: removing a field without a default now breaks old readers.
    let full = registry
        .put("/config", json!({ "compatibility": "full" }))
        .await;
    assert_eq!(full.body, json!({ "compatibility": "FULL" }));
    assert_eq!(
        registry.get("/config").await.body,
        json!({ "compatibilityLevel": "FULL" })
    );
    let verdict = registry
        .post(
            "/compatibility/subjects/other-value/versions/latest",
            json!({ "schema": ORDER_V2_WITH_DEFAULT }),
        )
        .await;
    assert_eq!(verdict.body, json!({ "is_compatible": true }));
    let narrower = r#"{"type":"record","name":"OrderCreated","namespace":"bazaar.orders",
        "fields":[{"name":"order_id","type":"string"}]}"#;
    let verdict = registry
        .post(
            "/compatibility/subjects/other-value/versions/latest",
            json!({ "schema": narrower }),
        )
        .await;
    assert_eq!(verdict.body, json!({ "is_compatible": false }));

    // Dropping the subject's own level hands it back to the global one.
    let dropped = registry.delete(&format!("/config/{subject}")).await;
    assert_eq!(dropped.body, json!({ "compatibilityLevel": "NONE" }));
    assert_eq!(
        registry
            .get(&format!("/config/{subject}"))
            .await
            .error_code(),
        Some(40408)
    );

    for (path, body) in [
        ("/config", json!({ "compatibility": "SIDEWAYS" })),
        (
            "/config/payments-value",
            json!({ "compatibility": "MOSTLY" }),
        ),
    ] {
        let invalid = registry.put(path, body).await;
        assert_eq!(
            (invalid.status, invalid.error_code()),
            (422, Some(42203)),
            "{path}: {invalid:?}"
        );
    }
    assert_eq!(
        registry.get("/config").await.body,
        json!({ "compatibilityLevel": "FULL" })
    );

    registry.stop().await;
}

#[tokio::test]
async fn unknown_subjects_versions_and_ids_answer_with_confluents_error_codes() {
    let registry = start_registry().await;
    let subject = "known-value";
    let id = registry.register_ok(subject, ORDER_V1).await;

    let cases = [
        (
            Method::GET,
            format!("/schemas/ids/{}", id + 1000),
            404,
            40403,
        ),
        (
            Method::GET,
            "/schemas/ids/not-a-number".to_owned(),
            404,
            40403,
        ),
        (
            Method::GET,
            "/schemas/ids/0/versions".to_owned(),
            404,
            40403,
        ),
        (
            Method::GET,
            "/subjects/missing-value/versions".to_owned(),
            404,
            40401,
        ),
        (
            Method::GET,
            "/subjects/missing-value/versions/latest".to_owned(),
            404,
            40401,
        ),
        (
            Method::GET,
            format!("/subjects/{subject}/versions/7"),
            404,
            40402,
        ),
        (
            Method::GET,
            format!("/subjects/{subject}/versions/7/schema"),
            404,
            40402,
        ),
        (
            Method::GET,
            format!("/subjects/{subject}/versions/0"),
            422,
            42202,
        ),
        (
            Method::GET,
            format!("/subjects/{subject}/versions/newest"),
            422,
            42202,
        ),
        (
            Method::DELETE,
            "/subjects/missing-value".to_owned(),
            404,
            40401,
        ),
    ];
    for (method, path, status, code) in cases {
        let answer = registry.send(method.clone(), &path, None, None).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (status, Some(code)),
            "{method} {path}: {answer:?}"
        );
        assert_eq!(answer.content_type, REGISTRY_MEDIA_TYPE, "{path}");
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}: {answer:?}"
        );
    }

    let body = json!({ "schema": ORDER_V2_WITH_DEFAULT });
    let posts = [
        ("/subjects/missing-value", 40401),
        ("/subjects/known-value", 40403),
        (
            "/compatibility/subjects/missing-value/versions/latest",
            40401,
        ),
        ("/compatibility/subjects/known-value/versions/9", 40402),
    ];
    for (path, code) in posts {
        let answer = registry.post(path, body.clone()).await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (404, Some(code)),
            "{path}: {answer:?}"
        );
    }
    // Against the level's versions, a subject without any is compatible with anything.
    let fresh = registry
        .post("/compatibility/subjects/missing-value/versions", body)
        .await;
    assert_eq!(fresh.body, json!({ "is_compatible": true }));

    registry.stop().await;
}

#[tokio::test]
async fn invalid_schemas_and_other_schema_types_are_refused_with_422() {
    let registry = start_registry().await;
    let subject = "broken-value";

    let invalid_bodies = [
        json!({ "schema": "{\"type\":\"record\",\"name\":\"R\"}" }),
        json!({ "schema": "{\"type\":\"recrod\",\"name\":\"R\",\"fields\":[]}" }),
        json!({ "schema": "not json at all" }),
        json!({ "schema": "" }),
        json!({ "schema": ORDER_V1, "schemaType": "PROTOBUF" }),
        json!({ "schema": ORDER_V1, "schemaType": "JSON" }),
        json!({ "schema": ORDER_V1, "references": [
            { "name": "bazaar.Money", "subject": "money-value", "version": 1 }
        ] }),
    ];
    for body in invalid_bodies {
        let answer = registry
            .post(&format!("/subjects/{subject}/versions"), body.clone())
            .await;
        assert_eq!(
            (answer.status, answer.error_code()),
            (422, Some(42201)),
            "{body}: {answer:?}"
        );
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Invalid schema")),
            "{answer:?}"
        );
    }

    let malformed = registry
        .send(
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some("application/json"),
            None,
        )
        .await;
    assert_eq!(malformed.status, 400, "empty body: {malformed:?}");
    let missing_schema = registry
        .post(
            &format!("/subjects/{subject}/versions"),
            json!({ "scheme": "x" }),
        )
        .await;
    assert_eq!(
        (missing_schema.status, missing_schema.error_code()),
        (422, Some(422)),
        "{missing_schema:?}"
    );
    let bad_subject = registry.register("bad%0Asubject", ORDER_V1).await;
    assert_eq!(
        (bad_subject.status, bad_subject.error_code()),
        (422, Some(42208)),
        "{bad_subject:?}"
    );

    assert_eq!(registry.get("/subjects").await.body, json!([]));
    let (schemas,): (i64,) = sqlx::query_as("SELECT count(*) FROM schemas")
        .fetch_one(&registry.pool)
        .await
        .expect("count schemas");
    assert_eq!(schemas, 0);

    registry.stop().await;
}

/// Registers `schema` from `RACERS` tasks at once, under `subject_of(task)`, and returns the ids.
/// Each task opens its connection first and then waits for the others, so the registrations
/// really overlap instead of trickling in one connection setup apart.
async fn race(
    registry: &std::sync::Arc<Registry>,
    subject_of: fn(usize) -> String,
    schema: &'static str,
) -> Vec<i64> {
    const RACERS: usize = 10;
    // The server's pool opens connections lazily, and opening one takes longer than a whole
    // registration: unless they are open already, the racers queue behind connection setup.
    let warm = futures::future::try_join_all((0..5).map(|_| registry.pool.acquire()))
        .await
        .expect("database connections");
    drop(warm);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks = (0..RACERS).map(|task| {
        let registry = registry.clone();
        let start = start.clone();
        tokio::spawn(async move {
            assert_eq!(registry.get("/healthz").await.status, 200);
            start.wait().await;
            registry.register_ok(&subject_of(task), schema).await
        })
    });
    futures::future::try_join_all(tasks)
        .await
        .expect("no task panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_new_schema_yield_one_id_and_one_version() {
    let registry = std::sync::Arc::new(start_registry().await);

    let ids = race(&registry, |_| "race-value".to_owned(), ORDER_V1).await;
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(registry.versions("race-value").await, json!([1]));

    // Ten subjects registering one new schema at once still mint a single id.
    let shared = race(
        &registry,
        |task| format!("race-{task}-value"),
        ORDER_V2_WITH_DEFAULT,
    )
    .await;
    assert!(shared.iter().all(|id| *id == shared[0]), "{shared:?}");
    assert_ne!(shared[0], ids[0]);

    let (schemas, versions): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM schemas), (SELECT count(*) FROM subject_versions)",
    )
    .fetch_one(&registry.pool)
    .await
    .expect("counts");
    assert_eq!((schemas, versions), (2, 11));

    let registry = std::sync::Arc::into_inner(registry).expect("every task finished");
    registry.stop().await;
}

#[tokio::test]
async fn deleting_a_subject_hides_its_versions_but_keeps_their_ids() {
    let registry = start_registry().await;
    let subject = "retired-value";
    let first = registry.register_ok(subject, ORDER_V1).await;
    let second = registry.register_ok(subject, ORDER_V2_WITH_DEFAULT).await;

    let not_yet = registry
        .delete(&format!("/subjects/{subject}?permanent=true"))
        .await;
    assert_eq!(not_yet.error_code(), Some(40405), "{not_yet:?}");

    let deleted = registry.delete(&format!("/subjects/{subject}")).await;
    assert_eq!((deleted.status, &deleted.body), (200, &json!([1, 2])));
    assert_eq!(registry.get("/subjects").await.body, json!([]));
    assert_eq!(
        registry.get("/subjects?deleted=true").await.body,
        json!([subject])
    );
    assert_eq!(
        registry
            .get(&format!("/subjects/{subject}/versions"))
            .await
            .error_code(),
        Some(40401)
    );
    assert_eq!(
        registry
            .delete(&format!("/subjects/{subject}"))
            .await
            .error_code(),
        Some(40404)
    );
    // Messages written with those ids can still be read.
    assert_eq!(
        registry.get(&format!("/schemas/ids/{first}")).await.status,
        200
    );

    // Registering again continues the numbering and reuses the id.
    assert_eq!(registry.register_ok(subject, ORDER_V1).await, first);
    assert_eq!(registry.versions(subject).await, json!([3]));
    let one_version = registry
        .delete(&format!("/subjects/{subject}/versions/3"))
        .await;
    assert_eq!((one_version.status, &one_version.body), (200, &json!(3)));

    let purged = registry
        .delete(&format!("/subjects/{subject}?permanent=true"))
        .await;
    assert_eq!((purged.status, &purged.body), (200, &json!([1, 2, 3])));
    assert_eq!(registry.get("/subjects?deleted=true").await.body, json!([]));
    assert_eq!(
        registry.get(&format!("/schemas/ids/{second}")).await.status,
        200
    );

    registry.stop().await;
}

#[tokio::test]
async fn the_registry_is_ready_with_only_its_database() {
    let registry = start_registry().await;

    let ready = registry.get("/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.body["checks"], json!({ "database": "ok" }));
    assert_eq!(registry.get("/healthz").await.status, 200);
    let root = registry.get("/").await;
    assert_eq!((root.status, &root.body), (200, &json!({})));
    assert_eq!(registry.get("/schemas/types").await.body, json!(["AVRO"]));

    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&registry.pool)
        .await
        .expect("migrations table");
    assert!(applied >= 1);

    registry.stop().await;
}

#[tokio::test]
async fn writes_need_a_writer_and_reads_stay_open() {
    let mut registry = start_registry_with(schema_registry::config::AuthSettings {
        writers: "ci:old-secret,ci:new-secret".into(),
    })
    .await;
    let subject = "auth-events-value";
    let writes = |subject: &str| {
        [
            (
                Method::POST,
                format!("/subjects/{subject}/versions"),
                Some(json!({ "schema": ORDER_V1 })),
            ),
            (
                Method::DELETE,
                format!("/subjects/{subject}/versions/1"),
                None,
            ),
            (Method::DELETE, format!("/subjects/{subject}"), None),
            (
                Method::PUT,
                "/config".to_owned(),
                Some(json!({ "compatibility": "NONE" })),
            ),
            (
                Method::PUT,
                format!("/config/{subject}"),
                Some(json!({ "compatibility": "NONE" })),
            ),
            (Method::DELETE, format!("/config/{subject}"), None),
        ]
    };

    // Anonymous, a wrong password, and the local default this registry was not given: 401 with
    // a challenge, before anything is read or changed.
    for credentials in [
        None,
        Some(("ci".to_owned(), "wrong".to_owned())),
        LOCAL_SCHEMA_REGISTRY_USER_INFO
            .split_once(':')
            .map(|(user, password)| (user.to_owned(), password.to_owned())),
    ] {
        registry.credentials = credentials.clone();
        for (method, path, body) in writes(subject) {
            let answer = registry
                .send(method.clone(), &path, Some(REGISTRY_MEDIA_TYPE), body)
                .await;
            assert_eq!(
                answer.status, 401,
                "{credentials:?} {method} {path}: {answer:?}"
            );
            assert_eq!(answer.error_code(), Some(401), "{answer:?}");
        }
    }
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM schemas")
        .fetch_one(&registry.pool)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing was registered");

    // Either password of a writer being rotated works.
    registry.credentials = Some(("ci".to_owned(), "old-secret".to_owned()));
    let id = registry.register_ok(subject, ORDER_V1).await;
    registry.credentials = Some(("ci".to_owned(), "new-secret".to_owned()));
    assert_eq!(
        registry
            .put(
                &format!("/config/{subject}"),
                json!({ "compatibility": "FULL" })
            )
            .await
            .status,
        200
    );

    // Reads need nothing: what a deserializer and `bazaar tap` ask.
    registry.credentials = None;
    for path in [
        format!("/schemas/ids/{id}"),
        format!("/subjects/{subject}/versions"),
        format!("/subjects/{subject}/versions/latest"),
        "/subjects".to_owned(),
        format!("/config/{subject}"),
    ] {
        let answer = registry.get(&path).await;
        assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
    }
    let lookup = registry
        .post(
            &format!("/subjects/{subject}"),
            json!({ "schema": ORDER_V1 }),
        )
        .await;
    assert_eq!(lookup.status, 200, "{lookup:?}");

    // The services' client registers with its configured credentials, and without them is
    // refused for good (not "unavailable", which would be retried).
    let mut kafka = isolated_kafka("registry-client");
    kafka.schema_registry_url = registry.base_url.clone();
    let anonymous = messaging::registry::SchemaRegistryClient::new(&kafka.schema_registry_url);
    let refused = anonymous
        .register("client-value", ORDER_V1)
        .await
        .expect_err("anonymous registration is refused");
    assert!(!refused.is_transient(), "{refused}");
    kafka.schema_registry_user_info = "ci:new-secret".into();
    let writer = messaging::registry::SchemaRegistryClient::of(&kafka);
    assert_eq!(
        i64::from(
            writer
                .register("client-value", ORDER_V1)
                .await
                .expect("registered")
        ),
        id,
        "the same schema, the same id"
    );
    registry.stop().await;
}
