//! The registry's PostgreSQL store: schemas by id, subjects' versions, compatibility settings.
//!
//! Everything that changes a subject runs in one transaction holding that subject's advisory
//! lock, so concurrent registrations under one subject queue up instead of both taking the next
//! version number or both minting an id for the same schema.

use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres};

use crate::domain::{self, AvroSchema, CompatibilityLevel, RegisteredVersion, VersionSelector};
use crate::error::RegistryError;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// One version of a subject, in the shape Confluent's API answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub schema: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SubjectAndVersion {
    pub subject: String,
    pub version: i32,
}

async fn lock_subject(conn: &mut PgConnection, subject: &str) -> Result<(), sqlx::Error> {
    // hashtext collisions only make two subjects queue behind each other, which is harmless.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(subject)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn schema_by_id(pool: &PgPool, id: i32) -> Result<Option<String>, RegistryError> {
    let row =
        sqlx::query_as::<Postgres, (String,)>("SELECT schema_text FROM schemas WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(text,)| text))
}

/// Where schema `id` is registered, among live versions; `None` if no schema has that id.
pub async fn versions_of_schema(
    pool: &PgPool,
    id: i32,
) -> Result<Option<Vec<SubjectAndVersion>>, RegistryError> {
    if schema_by_id(pool, id).await?.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query_as::<Postgres, SubjectAndVersion>(
        "SELECT subject, version FROM subject_versions \
         WHERE schema_id = $1 AND NOT deleted ORDER BY subject, version",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(rows))
}

pub async fn subjects(pool: &PgPool, include_deleted: bool) -> Result<Vec<String>, RegistryError> {
    let rows = sqlx::query_as::<Postgres, (String,)>(
        "SELECT DISTINCT subject FROM subject_versions WHERE $1 OR NOT deleted ORDER BY subject",
    )
    .bind(include_deleted)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(subject,)| subject).collect())
}

/// A subject exists while it has a live version.
async fn subject_exists(executor: impl PgExecutor<'_>, subject: &str) -> Result<bool, sqlx::Error> {
    let (exists,) = sqlx::query_as::<Postgres, (bool,)>(
        "SELECT EXISTS (SELECT 1 FROM subject_versions WHERE subject = $1 AND NOT deleted)",
    )
    .bind(subject)
    .fetch_one(executor)
    .await?;
    Ok(exists)
}

pub async fn versions(
    pool: &PgPool,
    subject: &str,
    include_deleted: bool,
) -> Result<Vec<i32>, RegistryError> {
    let rows = sqlx::query_as::<Postgres, (i32,)>(
        "SELECT version FROM subject_versions \
         WHERE subject = $1 AND ($2 OR NOT deleted) ORDER BY version",
    )
    .bind(subject)
    .bind(include_deleted)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Err(RegistryError::SubjectNotFound(subject.to_owned()));
    }
    Ok(rows.into_iter().map(|(version,)| version).collect())
}

pub async fn subject_version(
    pool: &PgPool,
    subject: &str,
    selector: VersionSelector,
    include_deleted: bool,
) -> Result<SubjectVersion, RegistryError> {
    let found = match selector {
        VersionSelector::Latest => {
            sqlx::query_as::<Postgres, SubjectVersion>(
                "SELECT v.subject, v.version, s.id, s.schema_text AS schema \
                 FROM subject_versions v JOIN schemas s ON s.id = v.schema_id \
                 WHERE v.subject = $1 AND ($2 OR NOT v.deleted) \
                 ORDER BY v.version DESC LIMIT 1",
            )
            .bind(subject)
            .bind(include_deleted)
            .fetch_optional(pool)
            .await?
        }
        VersionSelector::Number(version) => {
            sqlx::query_as::<Postgres, SubjectVersion>(
                "SELECT v.subject, v.version, s.id, s.schema_text AS schema \
                 FROM subject_versions v JOIN schemas s ON s.id = v.schema_id \
                 WHERE v.subject = $1 AND v.version = $2 AND ($3 OR NOT v.deleted)",
            )
            .bind(subject)
            .bind(version)
            .bind(include_deleted)
            .fetch_optional(pool)
            .await?
        }
    };
    match found {
        Some(found) => Ok(found),
        None if subject_exists(pool, subject).await? => Err(RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: match selector {
                VersionSelector::Latest => "latest".to_owned(),
                VersionSelector::Number(version) => version.to_string(),
            },
        }),
        None => Err(RegistryError::SubjectNotFound(subject.to_owned())),
    }
}

/// The version of `subject` that holds `candidate` (the same schema, however it is spelled).
pub async fn lookup(
    pool: &PgPool,
    subject: &str,
    candidate: &AvroSchema,
    include_deleted: bool,
) -> Result<SubjectVersion, RegistryError> {
    let found = sqlx::query_as::<Postgres, SubjectVersion>(
        "SELECT v.subject, v.version, s.id, s.schema_text AS schema \
         FROM subject_versions v JOIN schemas s ON s.id = v.schema_id \
         WHERE v.subject = $1 AND s.fingerprint = $2 AND ($3 OR NOT v.deleted) \
         ORDER BY v.deleted, v.version DESC LIMIT 1",
    )
    .bind(subject)
    .bind(&candidate.fingerprint()[..])
    .bind(include_deleted)
    .fetch_optional(pool)
    .await?;
    match found {
        Some(found) => Ok(found),
        None if subject_exists(pool, subject).await? => {
            Err(RegistryError::SchemaNotUnderSubject(subject.to_owned()))
        }
        None => Err(RegistryError::SubjectNotFound(subject.to_owned())),
    }
}

/// Registers `candidate` (sent as `text`) as the next version of `subject` and returns its id.
/// A schema the subject already holds keeps its id and version; one registered under another
/// subject keeps its id.
pub async fn register(
    pool: &PgPool,
    subject: &str,
    candidate: &AvroSchema,
    text: &str,
) -> Result<i32, RegistryError> {
    let fingerprint = candidate.fingerprint();
    let mut tx = pool.begin().await?;
    lock_subject(&mut tx, subject).await?;

    let existing = sqlx::query_as::<Postgres, (i32,)>(
        "SELECT s.id FROM subject_versions v JOIN schemas s ON s.id = v.schema_id \
         WHERE v.subject = $1 AND s.fingerprint = $2 AND NOT v.deleted",
    )
    .bind(subject)
    .bind(&fingerprint[..])
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id,)) = existing {
        return Ok(id);
    }

    let level = effective_level(&mut tx, subject).await?;
    let history = live_history(&mut tx, subject).await?;
    let problems = domain::incompatibilities(level, candidate, &history);
    if !problems.is_empty() {
        return Err(RegistryError::Incompatible {
            subject: subject.to_owned(),
            details: problems,
        });
    }

    let id = schema_id(&mut tx, &fingerprint, text).await?;
    // Soft-deleted versions still count: their numbers are not handed out again.
    sqlx::query(
        "INSERT INTO subject_versions (subject, version, schema_id) \
         SELECT $1, coalesce(max(version), 0) + 1, $2 FROM subject_versions WHERE subject = $1",
    )
    .bind(subject)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The id of the schema with `fingerprint`, adding it (as `text`) if it is new.
async fn schema_id(
    conn: &mut PgConnection,
    fingerprint: &[u8],
    text: &str,
) -> Result<i32, sqlx::Error> {
    const BY_FINGERPRINT: &str = "SELECT id FROM schemas WHERE fingerprint = $1";
    if let Some((id,)) = sqlx::query_as::<Postgres, (i32,)>(BY_FINGERPRINT)
        .bind(fingerprint)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(id);
    }
    // Another subject may be adding the same schema right now; the unique fingerprint lets one
    // insert win, and the other waits for it and then finds the winner's row.
    let inserted = sqlx::query_as::<Postgres, (i32,)>(
        "INSERT INTO schemas (fingerprint, schema_text) VALUES ($1, $2) \
         ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
    )
    .bind(fingerprint)
    .bind(text)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some((id,)) => Ok(id),
        None => {
            let (id,) = sqlx::query_as::<Postgres, (i32,)>(BY_FINGERPRINT)
                .bind(fingerprint)
                .fetch_one(&mut *conn)
                .await?;
            Ok(id)
        }
    }
}

/// The subject's live versions, oldest first, parsed.
async fn live_history(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<Vec<RegisteredVersion>, RegistryError> {
    let rows = sqlx::query_as::<Postgres, (i32, i32, String)>(
        "SELECT v.version, s.id, s.schema_text \
         FROM subject_versions v JOIN schemas s ON s.id = v.schema_id \
         WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version",
    )
    .bind(subject)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(version, id, text)| {
            let schema = AvroSchema::parse(&text).map_err(|error| {
                RegistryError::Internal(anyhow::anyhow!(
                    "stored schema {id} does not parse: {error}"
                ))
            })?;
            Ok(RegisteredVersion { version, schema })
        })
        .collect()
}

/// Why `candidate` is incompatible with `subject`: against the versions its compatibility level
/// names when `against` is `None`, else against that one version. Empty when compatible.
pub async fn incompatibilities(
    pool: &PgPool,
    subject: &str,
    against: Option<VersionSelector>,
    candidate: &AvroSchema,
) -> Result<Vec<String>, RegistryError> {
    let mut conn = pool.acquire().await?;
    let level = effective_level(&mut conn, subject).await?;
    let history = live_history(&mut conn, subject).await?;
    let compared = match against {
        None => history.as_slice(),
        Some(_) if history.is_empty() => {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Some(VersionSelector::Latest) => &history[history.len() - 1..],
        Some(VersionSelector::Number(number)) => {
            let position = history
                .iter()
                .position(|registered| registered.version == number)
                .ok_or_else(|| RegistryError::VersionNotFound {
                    subject: subject.to_owned(),
                    version: number.to_string(),
                })?;
            &history[position..=position]
        }
    };
    Ok(domain::incompatibilities(level, candidate, compared))
}

fn parse_level(stored: &str) -> Result<CompatibilityLevel, RegistryError> {
    stored
        .parse()
        .map_err(|error: domain::InvalidCompatibilityLevel| {
            RegistryError::Internal(anyhow::anyhow!("stored compatibility level: {error}"))
        })
}

/// The subject's own level if it has one, else the global level.
async fn effective_level(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<CompatibilityLevel, RegistryError> {
    let (level,) = sqlx::query_as::<Postgres, (String,)>(
        "SELECT coalesce(\
            (SELECT compatibility FROM subject_config WHERE subject = $1), \
            (SELECT compatibility FROM global_config))",
    )
    .bind(subject)
    .fetch_one(conn)
    .await?;
    parse_level(&level)
}

pub async fn global_level(pool: &PgPool) -> Result<CompatibilityLevel, RegistryError> {
    let (level,) = sqlx::query_as::<Postgres, (String,)>("SELECT compatibility FROM global_config")
        .fetch_one(pool)
        .await?;
    parse_level(&level)
}

pub async fn set_global_level(
    pool: &PgPool,
    level: CompatibilityLevel,
) -> Result<(), RegistryError> {
    sqlx::query("UPDATE global_config SET compatibility = $1")
        .bind(level.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn subject_level(
    pool: &PgPool,
    subject: &str,
) -> Result<Option<CompatibilityLevel>, RegistryError> {
    let row = sqlx::query_as::<Postgres, (String,)>(
        "SELECT compatibility FROM subject_config WHERE subject = $1",
    )
    .bind(subject)
    .fetch_optional(pool)
    .await?;
    row.map(|(level,)| parse_level(&level)).transpose()
}

pub async fn set_subject_level(
    pool: &PgPool,
    subject: &str,
    level: CompatibilityLevel,
) -> Result<(), RegistryError> {
    sqlx::query(
        "INSERT INTO subject_config (subject, compatibility) VALUES ($1, $2) \
         ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
    )
    .bind(subject)
    .bind(level.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes the subject's own level (the global one applies again) and returns it.
pub async fn delete_subject_level(
    pool: &PgPool,
    subject: &str,
) -> Result<Option<CompatibilityLevel>, RegistryError> {
    let row = sqlx::query_as::<Postgres, (String,)>(
        "DELETE FROM subject_config WHERE subject = $1 RETURNING compatibility",
    )
    .bind(subject)
    .fetch_optional(pool)
    .await?;
    row.map(|(level,)| parse_level(&level)).transpose()
}

/// Soft-deletes every live version of `subject`, or with `permanent` removes the versions a soft
/// delete already hid. Returns the affected version numbers. Schemas keep their ids either way:
/// messages written with them may still be in topics.
pub async fn delete_subject(
    pool: &PgPool,
    subject: &str,
    permanent: bool,
) -> Result<Vec<i32>, RegistryError> {
    let mut tx = pool.begin().await?;
    lock_subject(&mut tx, subject).await?;
    let rows = sqlx::query_as::<Postgres, (i32, bool)>(
        "SELECT version, deleted FROM subject_versions WHERE subject = $1 ORDER BY version",
    )
    .bind(subject)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Err(RegistryError::SubjectNotFound(subject.to_owned()));
    }
    let live: Vec<i32> = rows
        .iter()
        .filter(|(_, deleted)| !deleted)
        .map(|(version, _)| *version)
        .collect();
    let affected = if permanent {
        if !live.is_empty() {
            return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
        }
        sqlx::query("DELETE FROM subject_versions WHERE subject = $1")
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM subject_config WHERE subject = $1")
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        rows.into_iter().map(|(version, _)| version).collect()
    } else {
        if live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
        }
        sqlx::query("UPDATE subject_versions SET deleted = true WHERE subject = $1")
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        live
    };
    tx.commit().await?;
    Ok(affected)
}

/// Soft-deletes one live version, or with `permanent` removes one that was soft-deleted.
pub async fn delete_version(
    pool: &PgPool,
    subject: &str,
    selector: VersionSelector,
    permanent: bool,
) -> Result<i32, RegistryError> {
    let mut tx = pool.begin().await?;
    lock_subject(&mut tx, subject).await?;
    let rows = sqlx::query_as::<Postgres, (i32, bool)>(
        "SELECT version, deleted FROM subject_versions WHERE subject = $1 ORDER BY version",
    )
    .bind(subject)
    .fetch_all(&mut *tx)
    .await?;
    let has_live = rows.iter().any(|(_, deleted)| !deleted);
    // A soft-deleted subject is gone for everything but the permanent delete that follows.
    if rows.is_empty() || (!permanent && !has_live) {
        return Err(RegistryError::SubjectNotFound(subject.to_owned()));
    }
    let target = match selector {
        // The latest version a soft delete can still hide, or a permanent delete can remove.
        VersionSelector::Latest => rows
            .iter()
            .rev()
            .find(|(_, deleted)| *deleted == permanent)
            .copied(),
        VersionSelector::Number(number) => {
            rows.iter().find(|(version, _)| *version == number).copied()
        }
    };
    let not_found = || RegistryError::VersionNotFound {
        subject: subject.to_owned(),
        version: match selector {
            VersionSelector::Latest => "latest".to_owned(),
            VersionSelector::Number(number) => number.to_string(),
        },
    };
    let (version, deleted) = target.ok_or_else(not_found)?;
    match (permanent, deleted) {
        (false, false) => {
            sqlx::query(
                "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND version = $2",
            )
            .bind(subject)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        (false, true) => return Err(not_found()),
        (true, false) => {
            return Err(RegistryError::VersionNotSoftDeleted {
                subject: subject.to_owned(),
                version,
            });
        }
        (true, true) => {
            sqlx::query("DELETE FROM subject_versions WHERE subject = $1 AND version = $2")
                .bind(subject)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(version)
}
