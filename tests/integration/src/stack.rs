//! A whole Bazaar checkout stack in one test process: product, order, inventory and payment
//! services, the payment gateway simulator and a JWKS endpoint, on free ports, each service with
//! a fresh database, all sharing one Kafka topic prefix of their own. With
//! [`StackOptions::fulfilment`], the shipping and notification services join in.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use auth_kit::AuthSettings;
use auth_kit::testing::TestIssuer;
use events::UserRegistered;
use platform::app::Application;
use platform::config::{HttpSettings, KafkaSettings, LogSettings, ServiceSettings};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::publisher::Publisher;
use crate::{eventually, fresh_database, isolated_kafka, unique_tag};

/// A service running in this process. It can be halted (as SIGTERM would) and started again
/// while the rest of the stack runs on, e.g. to leave its consumer group empty.
#[derive(Debug)]
pub struct Service {
    pub base_url: String,
    pub pool: sqlx::PgPool,
    /// What it was started with: its database URL and consumer group, for tools under test.
    pub settings: ServiceSettings,
    stop: ServerHandle,
    /// `None` once halted.
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    pub async fn start(
        app: impl Future<Output = anyhow::Result<Application>>,
    ) -> anyhow::Result<Self> {
        let app = app.await?;
        Ok(Self {
            base_url: format!("http://127.0.0.1:{}", app.port()),
            pool: app.pool().clone(),
            settings: app.settings().clone(),
            stop: app.stop_handle(),
            task: Some(tokio::spawn(app.run_until_stopped())),
        })
    }

    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Stops as SIGTERM would and waits for a clean shutdown; nothing happens if it is halted
    /// already. Its pool stays usable for inspection.
    pub async fn halt(&mut self) -> anyhow::Result<()> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        self.stop.stop(true).await;
        tokio::time::timeout(Duration::from_secs(30), task).await???;
        Ok(())
    }

    /// Halts it if it runs, then runs `app` in its place (on a new port).
    pub async fn restart(
        &mut self,
        app: impl Future<Output = anyhow::Result<Application>>,
    ) -> anyhow::Result<()> {
        self.halt().await?;
        *self = Self::start(app).await?;
        Ok(())
    }

    /// Stops as SIGTERM would and waits for a clean shutdown.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.halt().await
    }
}

/// A plain actix server (simulator, JWKS) running in this process.
#[derive(Debug)]
pub struct Server {
    stop: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn spawn(server: actix_web::dev::Server) -> Self {
        Self {
            stop: server.handle(),
            task: tokio::spawn(server),
        }
    }

    pub async fn stop(self) {
        self.stop.stop(true).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Serves `issuer`'s public keys as the auth service would, and returns the settings that make
/// a service trust them.
pub fn serve_jwks(issuer: &TestIssuer) -> anyhow::Result<(Server, AuthSettings)> {
    let jwks_body = issuer.jwks_json();
    let jwks_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let jwks_port = jwks_listener.local_addr()?.port();
    let jwks = Server::spawn(
        actix_web::HttpServer::new(move || {
            let body = jwks_body.clone();
            actix_web::App::new().route(
                "/.well-known/jwks.json",
                actix_web::web::get().to(move || {
                    let body = body.clone();
                    async move {
                        actix_web::HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }),
            )
        })
        .workers(1)
        .listen(jwks_listener)?
        .run(),
    );
    let mut auth = issuer.settings().clone();
    auth.jwks_url = format!("http://127.0.0.1:{jwks_port}/.well-known/jwks.json");
    Ok((jwks, auth))
}

pub fn service_settings(
    database: platform::config::DatabaseSettings,
    kafka: KafkaSettings,
) -> ServiceSettings {
    ServiceSettings {
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            keep_alive_ms: HttpSettings::DEFAULT_KEEP_ALIVE_MS,
        },
        database,
        kafka,
        log: LogSettings::default(),
    }
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub order_deadline: Duration,
    pub reservation_ttl: Duration,
    /// How long the payment service waits for the payment gateway.
    pub provider_timeout: Duration,
    /// Also run what follows a payment: the shipping service, and the notification service
    /// mailing into [`Stack::mail_dir`].
    pub fulfilment: bool,
    /// Run the real auth service (registration, login, its own signing key) instead of a
    /// stand-in JWKS; tokens minted by [`Stack::customer`] are then signed with its key.
    pub auth_service: bool,
    /// Instances of each saga service (order, inventory, payment, and shipping and notification
    /// with `fulfilment`): the others share the first one's database and consumer groups, as
    /// `make cluster` runs them. The gateway routes to the first.
    pub instances: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            order_deadline: Duration::from_secs(120),
            reservation_ttl: Duration::from_secs(120),
            provider_timeout: Duration::from_secs(2),
            fulfilment: false,
            auth_service: false,
            instances: 1,
        }
    }
}

/// The services that follow a payment, when [`StackOptions::fulfilment`] asks for them.
#[derive(Debug)]
pub struct Fulfilment {
    pub shipping: Service,
    pub notification: Service,
    /// Where the notification service writes its e-mails, one `.eml` per message.
    pub mail_dir: PathBuf,
    /// Stands in for the auth service's UserRegistered events.
    pub users: Publisher,
}

#[derive(Debug)]
pub struct Stack {
    pub issuer: TestIssuer,
    pub kafka: KafkaSettings,
    pub product: Service,
    pub order: Service,
    /// What the order service was started with, to start more instances of it.
    pub order_config: order_service::config::Config,
    pub inventory: Service,
    pub payment: Service,
    pub payment_gateway_url: String,
    pub fulfilment: Option<Fulfilment>,
    /// The second and later instances of the saga services ([`StackOptions::instances`]), by
    /// service.
    pub more_instances: Vec<(&'static str, Service)>,
    /// The public entry point: every `/api/...` call of the tests goes through it.
    pub gateway_url: String,
    pub http: reqwest::Client,
    identity: Identity,
    payment_gateway: Server,
    gateway: Server,
}

/// A postal address in the shop's home country (DE), as the storefront sends it.
pub fn home_address() -> Value {
    serde_json::json!({
        "name": "Test Shopper",
        "line1": "1 Test Street",
        "city": "Springfield",
        "postal_code": "12345",
        "country": "DE",
    })
}

/// `infra/demo/catalog.json`: what [`Stack::seed_demo`] loads.
pub fn demo_catalog() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra/demo/catalog.json")
}

/// The stock each SKU of the demo catalog starts with, for the invariant checker.
pub fn demo_initial_stock() -> std::collections::BTreeMap<String, i64> {
    let catalog = std::fs::read_to_string(demo_catalog()).expect("the demo catalog");
    bazaar_invariants::initial_stock_from_json(&catalog).expect("the demo catalog's stock")
}

/// Every SKU of `infra/demo/catalog.json`.
pub const DEMO_SKUS: [&str; 7] = [
    "TEE-BLK-M",
    "TEE-BLK-L",
    "TEE-WHT-M",
    "TOTE-NAT",
    "CUP-ESP-GRY",
    "CUP-ESP-BLU",
    "PRINT-A3-001",
];

/// A customer with a valid token.
#[derive(Debug, Clone)]
pub struct Customer {
    pub user_id: Uuid,
    pub token: String,
}

impl Customer {
    fn email_of(user_id: Uuid) -> String {
        format!("{user_id}@example.com")
    }

    /// The address in the customer's token.
    pub fn email(&self) -> String {
        Self::email_of(self.user_id)
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Who issues tokens in a stack.
#[derive(Debug)]
enum Identity {
    /// A stand-in that only publishes a test key.
    Jwks(Server),
    /// The real auth service.
    AuthService(Box<Service>),
}

impl Stack {
    /// Every service, shipping and notification included, with the demo catalog loaded: where
    /// a test of whole orders, from checkout to delivery, starts. Panics if it cannot start.
    pub async fn with_fulfilment() -> Self {
        let stack = Self::start(StackOptions {
            fulfilment: true,
            ..StackOptions::default()
        })
        .await
        .expect("stack starts");
        stack.seed_demo().await.expect("demo catalog");
        stack
    }

    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        crate::init_test_logging();
        let kafka = isolated_kafka("stack");
        messaging::topics::apply(&messaging::TopicCatalog::bundled()?, &kafka).await?;
        let (issuer, auth, identity) = if options.auth_service {
            let mut auth_config = auth_service::config::Config::defaults();
            auth_config.service = service_settings(
                fresh_database("auth").await?,
                KafkaSettings {
                    group_id: format!("{}-auth", kafka.group_id),
                    ..kafka.clone()
                },
            );
            // Every simulated customer logs in from this one address.
            auth_config.login_limit.max_failures_per_address = u32::MAX;
            let mut auth = auth_config.auth.clone();
            let service = Service::start(auth_service::startup::build(auth_config)).await?;
            auth.jwks_url = format!("{}/.well-known/jwks.json", service.base_url);
            let key = auth_service::keys::active_signing_key(&service.pool).await?;
            (
                TestIssuer::from_signing_key(auth.clone(), key),
                auth,
                Identity::AuthService(Box::new(service)),
            )
        } else {
            let issuer = TestIssuer::new();
            let (jwks, auth) = serve_jwks(&issuer)?;
            (issuer, auth, Identity::Jwks(jwks))
        };

        let mut simulator = payment_gateway::config::Config::defaults();
        simulator.http.port = 0;
        // The invariants read its ledger and tests inject faults: both under `/_sim`.
        simulator.test_mode = true;
        let simulator = payment_gateway::startup::build(simulator)?;
        let payment_gateway_url = format!("http://127.0.0.1:{}", simulator.port);
        let payment_gateway = Server::spawn(simulator.server);

        let kafka_for = |service: &str| KafkaSettings {
            group_id: format!("{}-{service}", kafka.group_id),
            ..kafka.clone()
        };

        let mut product_config = product_service::config::Config::defaults();
        product_config.service =
            service_settings(fresh_database("product").await?, kafka_for("product"));
        product_config.auth = auth.clone();
        let product = Service::start(product_service::startup::build(product_config)).await?;
        let mut order_config = order_service::config::Config::defaults();
        order_config.service = service_settings(fresh_database("order").await?, kafka_for("order"));
        order_config.auth = auth.clone();
        order_config.checkout.deadline_ms = millis(options.order_deadline);
        order_config.checkout.deadline_interval_ms = 100;
        let order = Service::start(order_service::startup::build(order_config.clone())).await?;
        let mut more_instances = Vec::new();
        for _ in 1..options.instances {
            let instance = Service::start(order_service::startup::build(order_config.clone()));
            more_instances.push(("order", instance.await?));
        }
        let mut inventory_config = inventory_service::config::Config::defaults();
        inventory_config.service =
            service_settings(fresh_database("inventory").await?, kafka_for("inventory"));
        inventory_config.auth = auth.clone();
        inventory_config.reservations.ttl_ms = millis(options.reservation_ttl);
        inventory_config.reservations.expiry_interval_ms = 100;
        for _ in 1..options.instances {
            let instance = inventory_service::startup::build(inventory_config.clone());
            more_instances.push(("inventory", Service::start(instance).await?));
        }
        let inventory = Service::start(inventory_service::startup::build(inventory_config)).await?;
        let mut payment_config = payment_service::config::Config::defaults();
        payment_config.service =
            service_settings(fresh_database("payment").await?, kafka_for("payment"));
        payment_config.provider.base_url = payment_gateway_url.clone();
        payment_config.provider.timeout_ms = millis(options.provider_timeout);
        payment_config.workers.poll_ms = 100;
        payment_config.workers.retry_initial_ms = 50;
        payment_config.workers.retry_max_ms = 500;
        payment_config.workers.lease_ms = 3_000;
        for _ in 1..options.instances {
            let instance = payment_service::startup::build(payment_config.clone());
            more_instances.push(("payment", Service::start(instance).await?));
        }
        let payment = Service::start(payment_service::startup::build(payment_config)).await?;

        let fulfilment = if options.fulfilment {
            // Light traffic: small pools leave the server's connections to the saga services
            // when two stacks run side by side.
            let small_pool =
                |database: platform::config::DatabaseSettings| platform::config::DatabaseSettings {
                    max_connections: 3,
                    ..database
                };
            let mut shipping_config = shipping_service::config::Config::defaults();
            shipping_config.service = service_settings(
                small_pool(fresh_database("shipping").await?),
                kafka_for("shipping"),
            );
            shipping_config.auth = auth.clone();
            for _ in 1..options.instances {
                let instance = shipping_service::startup::build(shipping_config.clone());
                more_instances.push(("shipping", Service::start(instance).await?));
            }
            let shipping =
                Service::start(shipping_service::startup::build(shipping_config)).await?;
            let mail_dir = std::env::temp_dir().join(format!("bazaar-test-mail-{}", unique_tag()));
            let mut notification_config = notification_service::config::Config::defaults();
            notification_config.service = service_settings(
                small_pool(fresh_database("notification").await?),
                kafka_for("notification"),
            );
            notification_config.auth = auth.clone();
            notification_config.mail.file.dir = mail_dir.clone();
            notification_config.delivery.poll_ms = 100;
            notification_config.delivery.retry_initial_ms = 50;
            notification_config.delivery.retry_max_ms = 500;
            for _ in 1..options.instances {
                let instance = notification_service::startup::build(notification_config.clone());
                more_instances.push(("notification", Service::start(instance).await?));
            }
            let notification =
                Service::start(notification_service::startup::build(notification_config)).await?;
            let users = Publisher::start("users", &kafka).await?;
            Some(Fulfilment {
                shipping,
                notification,
                mail_dir,
                users,
            })
        } else {
            None
        };

        let closed = "http://127.0.0.1:1".to_owned();
        let mut gateway_config = gateway::config::Config::defaults();
        gateway_config.http.port = 0;
        gateway_config.auth = auth.clone();
        // The auth service, or the JWKS server standing in for it.
        gateway_config.upstreams.auth = auth
            .jwks_url
            .trim_end_matches("/.well-known/jwks.json")
            .to_owned();
        gateway_config.upstreams.product = product.base_url.clone();
        gateway_config.upstreams.order = order.base_url.clone();
        gateway_config.upstreams.inventory = inventory.base_url.clone();
        gateway_config.upstreams.payment = payment.base_url.clone();
        gateway_config.upstreams.shipping = fulfilment
            .as_ref()
            .map_or(closed.clone(), |f| f.shipping.base_url.clone());
        gateway_config.upstreams.notification = fulfilment
            .as_ref()
            .map_or(closed, |f| f.notification.base_url.clone());
        let gateway = gateway::startup::build(gateway_config)?;
        let gateway_url = format!("http://127.0.0.1:{}", gateway.port);
        let gateway = Server::spawn(gateway.server);

        Ok(Self {
            gateway_url,
            gateway,
            issuer,
            kafka,
            product,
            order,
            order_config,
            inventory,
            payment,
            payment_gateway_url,
            fulfilment,
            more_instances,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            identity,
            payment_gateway,
        })
    }

    /// Another instance of the order service: the same database and consumer group, a port of
    /// its own. The gateway does not know it; call it at its `base_url`.
    pub async fn start_order_instance(&self) -> anyhow::Result<Service> {
        Service::start(order_service::startup::build(self.order_config.clone())).await
    }

    pub fn customer(&self) -> Customer {
        let user_id = Uuid::now_v7();
        let token = self
            .issuer
            .token_for(user_id, &Customer::email_of(user_id), &["customer"]);
        Customer { user_id, token }
    }

    pub fn admin_token(&self) -> String {
        let user_id = Uuid::now_v7();
        self.issuer
            .token_for(user_id, "admin@example.com", &["customer", "admin"])
    }

    /// The shipping and notification services; panics unless the stack was started with
    /// [`StackOptions::fulfilment`].
    /// The invariant checker over every database of the stack, the simulator's ledger and the
    /// mail folder. Needs [`StackOptions::fulfilment`].
    pub fn checker(&self) -> bazaar_invariants::Checker {
        let fulfilment = self.fulfilment();
        bazaar_invariants::Checker::new(bazaar_invariants::Sources {
            order: self.order.pool.clone(),
            inventory: Some(self.inventory.pool.clone()),
            payment: Some(self.payment.pool.clone()),
            shipping: Some(fulfilment.shipping.pool.clone()),
            notification: Some(fulfilment.notification.pool.clone()),
            payment_gateway: Some(self.payment_gateway_url.clone()),
            mail_dir: Some(fulfilment.mail_dir.clone()),
        })
    }

    pub fn fulfilment(&self) -> &Fulfilment {
        self.fulfilment
            .as_ref()
            .expect("start the stack with StackOptions { fulfilment: true, .. }")
    }

    /// Announces `customer` as the auth service would on registration (UserRegistered), so the
    /// notification service learns the address it mails to.
    pub async fn register(&self, customer: &Customer, display_name: &str) -> anyhow::Result<()> {
        let registered = UserRegistered {
            user_id: customer.user_id.to_string(),
            email: customer.email(),
            display_name: display_name.to_owned(),
            registered_at: now_millis(),
        };
        self.fulfilment()
            .users
            .publish(&[registered.into()])
            .await?;
        Ok(())
    }

    /// The gateway URL of a public API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.gateway_url, path)
    }

    /// The URL of the service that owns a public API path, bypassing the gateway (for checks
    /// that a service defends itself).
    pub fn direct_url(&self, path: &str) -> String {
        let service =
            if path.starts_with("/api/products") || path.starts_with("/api/admin/products") {
                &self.product
            } else if path.starts_with("/api/admin/inventory") {
                &self.inventory
            } else if path.starts_with("/api/admin/shipments") {
                &self.fulfilment().shipping
            } else if path.starts_with("/api/notifications") {
                &self.fulfilment().notification
            } else {
                &self.order
            };
        format!("{}{}", service.base_url, path.trim_start_matches("/api"))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = request.send().await?;
        let status = answer.status().as_u16();
        let text = answer.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    /// Loads the demo catalog and stock, and waits until the order service's replica has it.
    pub async fn seed_demo(&self) -> anyhow::Result<()> {
        let demo = demo_catalog();
        product_service::seed::seed_demo_catalog(&self.product.pool, &demo).await?;
        inventory_service::seed::seed_demo_stock(&self.inventory.pool, &demo).await?;
        // Each product's snapshot travels on its own partition: wait for every one of them.
        for sku in DEMO_SKUS {
            self.wait_for_replica(sku).await?;
        }
        Ok(())
    }

    /// Waits until the order service can sell `sku`.
    pub async fn wait_for_replica(&self, sku: &str) -> anyhow::Result<()> {
        let pool = self.order.pool.clone();
        eventually(
            &format!("{sku} in the order service's catalog replica"),
            Duration::from_secs(60),
            || {
                let pool = pool.clone();
                async move {
                    let found: Option<(bool,)> =
                        sqlx::query_as("SELECT available FROM catalog_replica WHERE sku = $1")
                            .bind(sku)
                            .fetch_optional(&pool)
                            .await
                            .ok()?;
                    found.filter(|(available,)| *available).map(drop)
                }
            },
        )
        .await;
        Ok(())
    }

    /// Sets the stock of a SKU through the admin API.
    pub async fn set_stock(&self, sku: &str, on_hand: i64) -> anyhow::Result<()> {
        let token = self.admin_token();
        let body = serde_json::json!({ "on_hand": on_hand });
        let answer = self
            .call(
                Method::PUT,
                &format!("/api/admin/inventory/{sku}"),
                Some(&token),
                Some(&body),
            )
            .await?;
        anyhow::ensure!(
            answer.status == 200,
            "set stock {sku}: {} {}",
            answer.status,
            answer.body
        );
        Ok(())
    }

    /// Checks out `items` for `customer`, shipped to [`home_address`], and returns the new
    /// order id.
    pub async fn checkout(
        &self,
        customer: &Customer,
        items: &[(&str, i32)],
        payment_token: &str,
    ) -> anyhow::Result<String> {
        self.checkout_to(customer, items, payment_token, home_address())
            .await
    }

    /// Checks out `items` for `customer`, shipped to `shipping_address` (a postal address
    /// object, or the deprecated free text), and returns the new order id.
    pub async fn checkout_to(
        &self,
        customer: &Customer,
        items: &[(&str, i32)],
        payment_token: &str,
        shipping_address: Value,
    ) -> anyhow::Result<String> {
        let lines: Vec<Value> = items
            .iter()
            .map(|(sku, quantity)| serde_json::json!({"sku": sku, "quantity": quantity}))
            .collect();
        let body = serde_json::json!({
            "items": lines,
            "payment_token": payment_token,
            "shipping_address": shipping_address,
        });
        let answer = self
            .call(
                Method::POST,
                "/api/orders",
                Some(&customer.token),
                Some(&body),
            )
            .await?;
        anyhow::ensure!(
            answer.status == 202,
            "checkout: {} {}",
            answer.status,
            answer.body
        );
        answer.body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no id in {}", answer.body))
    }

    /// Polls an order until its status is one of `statuses`.
    pub async fn wait_for_status(
        &self,
        customer: &Customer,
        order_id: &str,
        statuses: &[&str],
    ) -> Value {
        eventually(
            &format!("order {order_id} to reach {statuses:?}"),
            Duration::from_secs(60),
            || async {
                let path = format!("/api/orders/{order_id}");
                let answer = self
                    .call(Method::GET, &path, Some(&customer.token), None)
                    .await
                    .ok()?;
                let status = answer.body["status"].as_str()?.to_owned();
                statuses.contains(&status.as_str()).then_some(answer.body)
            },
        )
        .await
    }

    /// Stock of a SKU as (on hand, reserved), read from the inventory database.
    pub async fn stock(&self, sku: &str) -> anyhow::Result<(i64, i64)> {
        Ok(
            sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE sku = $1")
                .bind(sku)
                .fetch_one(&self.inventory.pool)
                .await?,
        )
    }

    /// Successful charges and refunds the simulator recorded for an order (charges carry the
    /// order id as their idempotency key).
    pub async fn charges_for(&self, order_id: &str) -> anyhow::Result<(usize, usize)> {
        let url = format!("{}/_sim/charges", self.payment_gateway_url);
        let ledger: Value = self.http.get(url).send().await?.json().await?;
        let charges = ledger["charges"].as_array().cloned().unwrap_or_default();
        let mine: Vec<&Value> = charges
            .iter()
            .filter(|c| c["idempotency_key"] == order_id)
            .collect();
        let succeeded = mine.iter().filter(|c| c["status"] == "succeeded").count();
        let refunds = ledger["refunds"].as_array().map_or(0, |refunds| {
            refunds
                .iter()
                .filter(|r| {
                    mine.iter()
                        .any(|c| c["payment_intent"] == r["payment_intent"])
                })
                .count()
        });
        Ok((succeeded, refunds))
    }

    /// Changes the payment gateway simulator's injected faults (see its `/_sim/faults`).
    pub async fn set_faults(&self, faults: Value) -> anyhow::Result<()> {
        let url = format!("{}/_sim/faults", self.payment_gateway_url);
        let answer = self.http.put(url).json(&faults).send().await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "set faults: {}",
            answer.text().await?
        );
        Ok(())
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.gateway.stop().await;
        for (_, instance) in self.more_instances {
            instance.stop().await?;
        }
        if let Some(fulfilment) = self.fulfilment {
            fulfilment.notification.stop().await?;
            fulfilment.shipping.stop().await?;
            fulfilment.users.stop().await?;
            let _ = std::fs::remove_dir_all(&fulfilment.mail_dir);
        }
        self.order.stop().await?;
        self.inventory.stop().await?;
        self.payment.stop().await?;
        self.product.stop().await?;
        self.payment_gateway.stop().await;
        match self.identity {
            Identity::Jwks(jwks) => jwks.stop().await,
            Identity::AuthService(auth) => auth.stop().await?,
        }
        Ok(())
    }
}
