//! The shape every database-backed service runs in: migrate its database, serve HTTP with health
//! endpoints, run background workers, and stop all of it cleanly.

use std::future::Future;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceSettings;
use crate::http::{Readiness, ReadinessCheck};

type Routes = Box<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// Collects what a service is made of; [`ApplicationBuilder::start`] brings it up.
pub struct ApplicationBuilder {
    name: &'static str,
    settings: ServiceSettings,
    migrator: Option<&'static Migrator>,
    shared_migrators: Vec<Migrator>,
    readiness: Vec<ReadinessCheck>,
    routes: Vec<Routes>,
}

impl std::fmt::Debug for ApplicationBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ApplicationBuilder {
    pub fn migrations(mut self, migrator: &'static Migrator) -> Self {
        self.migrator = Some(migrator);
        self
    }

    /// Migrations of a shared crate (e.g. the messaging runtime's tables). They must record
    /// themselves in their own table (`Migrator::dangerous_set_table_name`), apart from the
    /// service's.
    pub fn shared_migrations(mut self, migrator: Migrator) -> Self {
        self.shared_migrators.push(migrator);
        self
    }

    pub fn readiness(mut self, check: ReadinessCheck) -> Self {
        self.readiness.push(check);
        self
    }

    /// Adds routes. Handlers can take `web::Data<PgPool>`.
    pub fn routes(
        mut self,
        configure: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.routes.push(Box::new(configure));
        self
    }

    /// Connects and migrates the database, binds the HTTP listener and starts serving.
    pub async fn start(self) -> anyhow::Result<Application> {
        let migrator = self.migrator.context("a service needs its migrations")?;
        let pool = crate::db::connect_and_migrate(&self.settings.database, migrator)
            .await
            .with_context(|| {
                format!(
                    "{}: database {}",
                    self.name,
                    describe_database(&self.settings)
                )
            })?;
        for shared in &self.shared_migrators {
            shared
                .run(&pool)
                .await
                .with_context(|| format!("{}: shared migrations", self.name))?;
        }
        let listener = crate::http::bind(&self.settings.http).with_context(|| {
            format!(
                "{}: cannot listen on {}",
                self.name,
                self.settings.http.address()
            )
        })?;
        let port = listener.local_addr()?.port();
        let readiness = self.readiness.into_iter().fold(
            Readiness::default().with(ReadinessCheck::database(pool.clone())),
            Readiness::with,
        );
        let routes = std::sync::Arc::new(self.routes);
        let pool_data = web::Data::new(pool.clone());
        let keep_alive = self.settings.http.keep_alive();
        let server = crate::http::serve(listener, keep_alive, readiness, move |config| {
            config.app_data(pool_data.clone());
            for configure in routes.iter() {
                configure(config);
            }
        })?;
        tracing::info!(service = self.name, port, "listening");
        Ok(Application {
            settings: self.settings,
            name: self.name,
            port,
            pool,
            server,
            shutdown: CancellationToken::new(),
            workers: JoinSet::new(),
        })
    }
}

fn describe_database(settings: &ServiceSettings) -> String {
    // Name the database without its credentials.
    crate::db::connect_options(&settings.database)
        .map(|options| {
            format!(
                "{}@{}:{}",
                options.get_database().unwrap_or("?"),
                options.get_host(),
                options.get_port()
            )
        })
        .unwrap_or_else(|_| "(unparseable url)".to_owned())
}

/// A running service.
pub struct Application {
    settings: ServiceSettings,
    name: &'static str,
    port: u16,
    pool: PgPool,
    server: Server,
    shutdown: CancellationToken,
    workers: JoinSet<anyhow::Result<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("name", &self.name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    pub fn builder(name: &'static str, settings: ServiceSettings) -> ApplicationBuilder {
        ApplicationBuilder {
            name,
            settings,
            migrator: None,
            shared_migrators: Vec::new(),
            readiness: Vec::new(),
            routes: Vec::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// The bound port; differs from the configured one when that was 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs a background worker. It must return soon after `shutdown` is cancelled.
    pub fn spawn_worker<F, Fut>(&mut self, worker: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.workers.spawn(worker(self.shutdown.child_token()));
    }

    /// A handle that stops the server (as SIGTERM would) from elsewhere, e.g. a test.
    pub fn stop_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        crate::shutdown::run_until_stopped(self.server, self.shutdown, self.workers).await
    }
}
