//! The service's own PostgreSQL database: one pool, migrations applied at start, and sessions
//! of their own for the loops that run a transaction per event.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use crate::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database url: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How to connect to the service's database: its URL, and the settings every connection of the
/// service carries (sessions and listeners derive from the pool's options, so they carry them too).
pub fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    let options: PgConnectOptions = settings.url().parse().map_err(DbError::InvalidUrl)?;
    Ok(options.options([("plan_cache_mode", settings.plan_cache_mode.as_setting())]))
}

/// A pooled connection idle for longer than this is checked with a round trip before it is
/// handed out. Under load none is: connections come back within milliseconds.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Options for every pool a process opens on a service's database.
///
/// sqlx's default pings a connection with a round trip each time it is acquired, as well as
/// each time it is released (that one cannot be turned off). Without the pings on acquire, the
/// services sent 18 % fewer TCP segments to PostgreSQL per checkout at 25/s (236 → 194), each
/// one a wake-up of a backend and of a service thread. Only a connection that sat idle long
/// enough to have been cut (a server restart, a proxy's timeout) is checked now, and one that
/// fails its check is dropped and another opened, as before. A connection cut within the last
/// second fails its statement instead, which every caller treats as a transient database
/// error, and the ping on its release then drops it.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IDLE_AFTER {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Connects (failing fast if the database is unreachable) and applies pending migrations.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    let pool = pool_options()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_with(connect_options(settings)?)
        .await
        .map_err(DbError::Connect)?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// A LISTEN connection of its own, beside `pool` (same database, same settings) rather than
/// taken from it: a listener keeps its connection for as long as it listens, and three of them
/// (the relay's, the order streams', a worker's) taken from a pool of 8 left checkouts and
/// consumer batches waiting for a connection until they failed, in the chaos suite under load.
pub async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = pool_options()
        .max_connections(1)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .connect_lazy_with((*pool.connect_options()).clone());
    PgListener::connect_with(&own).await
}

/// One connection of its own on a service's database, for a loop that runs statement after
/// statement (the relay, a consumer's batches): opened at first use, and again after a failure.
///
/// Not a pooled connection, because sqlx's pool pings every connection it takes back (a round
/// trip that cannot be turned off): at 25 checkouts/s those pings were about one round trip to
/// PostgreSQL in six.
#[derive(Debug)]
pub struct Session {
    options: PgConnectOptions,
    connect_timeout: Duration,
    connection: Option<PgConnection>,
    /// Handed out by [`Session::connection`] and not yet settled by [`Session::keep_if_ok`]: if
    /// the next caller finds it so, the work on it was cut short (a cancelled future) and the
    /// connection may be mid-statement, so it is not used again.
    unsettled: bool,
}

impl Session {
    /// A session with `options`; connecting gives up after `connect_timeout`.
    fn new(options: PgConnectOptions, connect_timeout: Duration) -> Self {
        Self {
            options,
            connect_timeout,
            connection: None,
            unsettled: false,
        }
    }

    /// A session on `pool`'s database, with the pool's settings, named `application_name` (as
    /// `pg_stat_activity` shows it); nothing is opened until used.
    pub fn beside(pool: &PgPool, application_name: &str) -> Self {
        Self::new(
            (*pool.connect_options())
                .clone()
                .application_name(application_name),
            pool.options().get_acquire_timeout(),
        )
    }

    /// The same session with a server setting of its own (`SET name = value` at connection).
    pub fn with_setting(mut self, name: &str, value: &str) -> Self {
        self.options = self.options.options([(name, value)]);
        self
    }

    /// Another session like this one, not opened yet.
    fn unopened_copy(&self) -> Self {
        Self::new(self.options.clone(), self.connect_timeout)
    }

    /// The session's connection, opened if there is none (a failed open leaves none). Settle
    /// what was done on it with [`Session::keep_if_ok`].
    pub async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if std::mem::take(&mut self.unsettled) {
            self.connection = None;
        }
        if self.connection.is_none() {
            let connect = PgConnection::connect_with(&self.options);
            let connection = tokio::time::timeout(self.connect_timeout, connect)
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??;
            self.connection = Some(connection);
        }
        self.unsettled = true;
        Ok(self.connection.as_mut().expect("opened above"))
    }

    /// Settles the work done on the connection: after a failure it is dropped, and the next
    /// use opens a new one, since a failure is likelier a lost session (a server restart) than
    /// anything a new session would repeat. A transaction dropped without a commit leaves its
    /// rollback queued on the connection, and sqlx sends it before the next statement.
    pub fn keep_if_ok<T, E>(&mut self, result: Result<T, E>) -> Result<T, E> {
        self.unsettled = false;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// Ends the session with a goodbye to the server (a session merely dropped shows in its log
    /// as an unexpected end of file).
    pub async fn close(&mut self) {
        if let Some(connection) = self.connection.take()
            && let Err(error) = connection.close().await
        {
            tracing::debug!(%error, "closing a database session");
        }
    }
}

/// Sessions for a loop that works on several things at once (a consumer's partitions): each
/// task takes one and gives it back when done, so there are never more than tasks at once.
#[derive(Debug)]
pub struct Sessions {
    /// What every new session is like; never opened itself.
    prototype: Session,
    idle: Mutex<Vec<Session>>,
}

impl Sessions {
    /// Sessions like [`Session::beside`]; none is opened until used.
    pub fn beside(pool: &PgPool, application_name: &str) -> Self {
        Self {
            prototype: Session::beside(pool, application_name),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle session, or a new one; it comes back when the guard is dropped.
    pub fn take(&self) -> TakenSession<'_> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        TakenSession {
            session: Some(idle.unwrap_or_else(|| self.prototype.unopened_copy())),
            sessions: self,
        }
    }

    /// Closes every idle session.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for mut session in idle {
            session.close().await;
        }
    }
}

/// A session taken from [`Sessions`].
#[derive(Debug)]
pub struct TakenSession<'a> {
    sessions: &'a Sessions,
    session: Option<Session>,
}

impl std::ops::Deref for TakenSession<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for TakenSession<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until dropped")
    }
}

impl Drop for TakenSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.sessions
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(session);
        }
    }
}
