//! Confluent Schema Registry's REST API, the subset that serializers and operators use.
//!
//! Bodies are read as bytes and parsed here, whatever their Content-Type: clients send
//! `application/vnd.schemaregistry.v1+json`, `application/vnd.schemaregistry+json`,
//! `application/json`, `application/octet-stream` or nothing at all.

use actix_web::{HttpResponse, web};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::access::{Writer, Writers};
use crate::db;
use crate::domain::{self, AVRO, AvroSchema, CompatibilityLevel, VersionSelector};
use crate::error::{CONTENT_TYPE, RegistryError};

/// Generous: a schema with many nested records runs to hundreds of kilobytes.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

type Reply = Result<HttpResponse, RegistryError>;

/// The registry's routes (health endpoints come from `platform`). Handlers that change the
/// registry take a [`Writer`]: only `writers` get through.
pub fn routes(writers: Writers) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static {
    let writers = web::Data::new(writers);
    move |config| routes_with(config, writers.clone())
}

fn routes_with(config: &mut web::ServiceConfig, writers: web::Data<Writers>) {
    config
        .app_data(writers)
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(
            web::QueryConfig::default().error_handler(|error, _request| {
                RegistryError::MalformedRequest(error.to_string()).into()
            }),
        )
        .route("/", web::get().to(root))
        .route("/schemas/types", web::get().to(schema_types))
        .route("/schemas/ids/{id}", web::get().to(schema_by_id))
        .route(
            "/schemas/ids/{id}/versions",
            web::get().to(versions_of_schema),
        )
        .route(
            "/schemas/ids/{id}/subjects",
            web::get().to(subjects_of_schema),
        )
        .route("/subjects", web::get().to(list_subjects))
        .service(
            web::resource("/subjects/{subject}")
                .route(web::post().to(lookup))
                .route(web::delete().to(delete_subject)),
        )
        .service(
            web::resource("/subjects/{subject}/versions")
                .route(web::get().to(list_versions))
                .route(web::post().to(register)),
        )
        .service(
            web::resource("/subjects/{subject}/versions/{version}")
                .route(web::get().to(get_version))
                .route(web::delete().to(delete_version)),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            web::get().to(get_version_schema),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            web::post().to(check_against_level),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            web::post().to(check_against_version),
        )
        .service(
            web::resource("/config")
                .route(web::get().to(get_global_config))
                .route(web::put().to(put_global_config)),
        )
        .service(
            web::resource("/config/{subject}")
                .route(web::get().to(get_subject_config))
                .route(web::put().to(put_subject_config))
                .route(web::delete().to(delete_subject_config)),
        );
}

fn ok(body: impl Serialize) -> HttpResponse {
    HttpResponse::Ok().content_type(CONTENT_TYPE).json(body)
}

/// Query flags of Confluent's API; every endpoint ignores those it has no use for, as Confluent
/// ignores unknown parameters (clients send e.g. `normalize=false` everywhere).
#[derive(Debug, Default, Deserialize)]
struct Flags {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    verbose: bool,
    #[serde(default, rename = "defaultToGlobal")]
    default_to_global: bool,
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => RegistryError::UnprocessableRequest(error.to_string()),
        _ => RegistryError::MalformedRequest(error.to_string()),
    })
}

/// The body of register, lookup and compatibility requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<serde_json::Value>>,
}

impl SchemaRequest {
    fn parse(body: &[u8]) -> Result<(Self, AvroSchema), RegistryError> {
        let request: Self = parse_body(body)?;
        if let Some(schema_type) = &request.schema_type
            && !schema_type.eq_ignore_ascii_case(AVRO)
        {
            return Err(RegistryError::UnsupportedSchemaType(schema_type.clone()));
        }
        if request
            .references
            .as_ref()
            .is_some_and(|refs| !refs.is_empty())
        {
            return Err(RegistryError::ReferencesUnsupported);
        }
        let schema = AvroSchema::parse(&request.schema)?;
        Ok((request, schema))
    }
}

fn valid_subject(subject: String) -> Result<String, RegistryError> {
    if domain::is_valid_subject(&subject) {
        Ok(subject)
    } else {
        Err(RegistryError::InvalidSubject(subject))
    }
}

/// Ids are positive 32-bit integers; anything else names no schema.
fn schema_id(text: &str) -> Result<i32, RegistryError> {
    text.parse::<i32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| RegistryError::SchemaNotFound(text.to_owned()))
}

async fn root() -> HttpResponse {
    ok(serde_json::json!({}))
}

async fn schema_types() -> HttpResponse {
    ok([AVRO])
}

#[derive(Serialize)]
struct SchemaText {
    schema: String,
}

async fn schema_by_id(pool: web::Data<PgPool>, id: web::Path<String>) -> Reply {
    let id_text = id.into_inner();
    let schema = db::schema_by_id(&pool, schema_id(&id_text)?)
        .await?
        .ok_or(RegistryError::SchemaNotFound(id_text))?;
    Ok(ok(SchemaText { schema }))
}

async fn versions_of_schema(pool: web::Data<PgPool>, id: web::Path<String>) -> Reply {
    let id_text = id.into_inner();
    let found = db::versions_of_schema(&pool, schema_id(&id_text)?)
        .await?
        .ok_or(RegistryError::SchemaNotFound(id_text))?;
    Ok(ok(found))
}

async fn subjects_of_schema(pool: web::Data<PgPool>, id: web::Path<String>) -> Reply {
    let id_text = id.into_inner();
    let found = db::versions_of_schema(&pool, schema_id(&id_text)?)
        .await?
        .ok_or(RegistryError::SchemaNotFound(id_text))?;
    let mut subjects: Vec<String> = found.into_iter().map(|found| found.subject).collect();
    subjects.dedup();
    Ok(ok(subjects))
}

async fn list_subjects(pool: web::Data<PgPool>, flags: web::Query<Flags>) -> Reply {
    Ok(ok(db::subjects(&pool, flags.deleted).await?))
}

async fn list_versions(
    pool: web::Data<PgPool>,
    subject: web::Path<String>,
    flags: web::Query<Flags>,
) -> Reply {
    Ok(ok(db::versions(&pool, &subject, flags.deleted).await?))
}

#[derive(Serialize)]
struct Registered {
    id: i32,
}

async fn register(
    _writer: Writer,
    pool: web::Data<PgPool>,
    subject: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    let subject = valid_subject(subject.into_inner())?;
    let (request, schema) = SchemaRequest::parse(&body)?;
    let id = db::register(&pool, &subject, &schema, &request.schema).await?;
    Ok(ok(Registered { id }))
}

async fn lookup(
    pool: web::Data<PgPool>,
    subject: web::Path<String>,
    flags: web::Query<Flags>,
    body: web::Bytes,
) -> Reply {
    let (_, schema) = SchemaRequest::parse(&body)?;
    Ok(ok(
        db::lookup(&pool, &subject, &schema, flags.deleted).await?
    ))
}

async fn delete_subject(
    _writer: Writer,

    pool: web::Data<PgPool>,
    subject: web::Path<String>,
    flags: web::Query<Flags>,
) -> Reply {
    Ok(ok(
        db::delete_subject(&pool, &subject, flags.permanent).await?
    ))
}

async fn get_version(
    pool: web::Data<PgPool>,
    path: web::Path<(String, String)>,
    flags: web::Query<Flags>,
) -> Reply {
    let (subject, version) = path.into_inner();
    let selector: VersionSelector = version.parse()?;
    Ok(ok(db::subject_version(
        &pool,
        &subject,
        selector,
        flags.deleted,
    )
    .await?))
}

/// The schema text alone, as `kcat -s avro` and `curl` users want it.
async fn get_version_schema(
    pool: web::Data<PgPool>,
    path: web::Path<(String, String)>,
    flags: web::Query<Flags>,
) -> Reply {
    let (subject, version) = path.into_inner();
    let selector: VersionSelector = version.parse()?;
    let found = db::subject_version(&pool, &subject, selector, flags.deleted).await?;
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(found.schema))
}

async fn delete_version(
    _writer: Writer,

    pool: web::Data<PgPool>,
    path: web::Path<(String, String)>,
    flags: web::Query<Flags>,
) -> Reply {
    let (subject, version) = path.into_inner();
    let selector: VersionSelector = version.parse()?;
    Ok(ok(db::delete_version(
        &pool,
        &subject,
        selector,
        flags.permanent,
    )
    .await?))
}

#[derive(Serialize)]
struct CompatibilityVerdict {
    is_compatible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<String>>,
}

async fn check(
    pool: &PgPool,
    subject: &str,
    against: Option<VersionSelector>,
    verbose: bool,
    body: &[u8],
) -> Reply {
    let (_, schema) = SchemaRequest::parse(body)?;
    let problems = db::incompatibilities(pool, subject, against, &schema).await?;
    Ok(ok(CompatibilityVerdict {
        is_compatible: problems.is_empty(),
        messages: verbose.then_some(problems),
    }))
}

/// Against every version the subject's compatibility level names.
async fn check_against_level(
    pool: web::Data<PgPool>,
    subject: web::Path<String>,
    flags: web::Query<Flags>,
    body: web::Bytes,
) -> Reply {
    check(&pool, &subject, None, flags.verbose, &body).await
}

async fn check_against_version(
    pool: web::Data<PgPool>,
    path: web::Path<(String, String)>,
    flags: web::Query<Flags>,
    body: web::Bytes,
) -> Reply {
    let (subject, version) = path.into_inner();
    let selector: VersionSelector = version.parse()?;
    check(&pool, &subject, Some(selector), flags.verbose, &body).await
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigAnswer {
    compatibility_level: &'static str,
}

#[derive(Deserialize)]
struct ConfigUpdate {
    #[serde(alias = "compatibilityLevel")]
    compatibility: String,
}

#[derive(Serialize)]
struct ConfigUpdated {
    compatibility: &'static str,
}

fn parse_config_update(body: &[u8]) -> Result<CompatibilityLevel, RegistryError> {
    let update: ConfigUpdate = parse_body(body)?;
    Ok(update.compatibility.parse()?)
}

async fn get_global_config(pool: web::Data<PgPool>) -> Reply {
    let level = db::global_level(&pool).await?;
    Ok(ok(ConfigAnswer {
        compatibility_level: level.as_str(),
    }))
}

async fn put_global_config(_writer: Writer, pool: web::Data<PgPool>, body: web::Bytes) -> Reply {
    let level = parse_config_update(&body)?;
    db::set_global_level(&pool, level).await?;
    Ok(ok(ConfigUpdated {
        compatibility: level.as_str(),
    }))
}

async fn get_subject_config(
    pool: web::Data<PgPool>,
    subject: web::Path<String>,
    flags: web::Query<Flags>,
) -> Reply {
    let level = match db::subject_level(&pool, &subject).await? {
        Some(level) => level,
        None if flags.default_to_global => db::global_level(&pool).await?,
        None => return Err(RegistryError::SubjectConfigNotFound(subject.into_inner())),
    };
    Ok(ok(ConfigAnswer {
        compatibility_level: level.as_str(),
    }))
}

async fn put_subject_config(
    _writer: Writer,

    pool: web::Data<PgPool>,
    subject: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    let subject = valid_subject(subject.into_inner())?;
    let level = parse_config_update(&body)?;
    db::set_subject_level(&pool, &subject, level).await?;
    Ok(ok(ConfigUpdated {
        compatibility: level.as_str(),
    }))
}

/// Drops the subject's own level; the global one applies to it again.
async fn delete_subject_config(
    _writer: Writer,
    pool: web::Data<PgPool>,
    subject: web::Path<String>,
) -> Reply {
    let level = db::delete_subject_level(&pool, &subject)
        .await?
        .ok_or_else(|| RegistryError::SubjectConfigNotFound(subject.into_inner()))?;
    Ok(ok(ConfigAnswer {
        compatibility_level: level.as_str(),
    }))
}
