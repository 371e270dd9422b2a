//! The runtime's own tables (outbox, inbox, parked messages), migrated into every service
//! database with a separate bookkeeping table so service migrations keep their own numbering.

use sqlx::migrate::Migrator;

static MESSAGING_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// A migrator for the runtime's tables, recorded in `_messaging_migrations`.
pub fn migrator() -> Migrator {
    let mut migrator = Migrator {
        migrations: MESSAGING_MIGRATIONS.migrations.clone(),
        ..Migrator::DEFAULT
    };
    migrator.dangerous_set_table_name("_messaging_migrations");
    migrator
}
