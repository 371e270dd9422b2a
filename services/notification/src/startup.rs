use std::sync::Arc;

use actix_web::web;
use platform::app::Application;

use crate::config::{Config, SERVICE};
use crate::consumers::{NotificationHandler, TOPICS, run_sender};
use crate::mail::Mailer;

/// Migrates the database, serves HTTP, and runs the relay, the event consumer and the e-mail
/// sender. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let mailer = Arc::new(Mailer::new(&config.mail)?);
    let verifier = web::Data::new(auth_kit::JwtVerifier::new(config.auth.clone()));
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR).routes(move |routes| {
            routes.app_data(verifier.clone());
            crate::http::routes(routes);
        })
    })
    .await?;
    let handler = NotificationHandler {
        message_domain: mailer.domain().to_owned(),
    };
    messaging::service::consume(&mut app, TOPICS, handler);
    let pool = app.pool().clone();
    let delivery = config.delivery.clone();
    tracing::info!(?mailer, "e-mail delivery");
    app.spawn_worker(move |shutdown| run_sender(pool, mailer, delivery, shutdown));
    Ok(app)
}
