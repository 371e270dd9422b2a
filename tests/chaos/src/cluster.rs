//! A whole Bazaar as separate processes: the real service binaries
//! (`$CARGO_TARGET_DIR/debug/<name>`), each on a free port with a fresh database of its own, all
//! on a topic prefix and consumer groups of their own, sharing the broker, the PostgreSQL server
//! and the schema registry that `make test` / `make chaos` start, and a payment gateway
//! simulator of their own (its ledger is theirs alone).
//!
//! Scaled out ([`ClusterOptions::scaled`]): several instances of every service (same database
//! and consumer group, a port each), the gateway in front balancing over them, and three Kafka
//! nodes of the cluster's own ([`crate::infra::KafkaCluster`], replication factor 3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bazaar_integration_tests::{
    as_test_principal, bootstrap_servers, fresh_database, kafka_auth_env, schema_registry_url,
    unique_tag,
};
use bazaar_invariants::{Checker, Expectations, Sources};
use platform::config::KafkaSettings;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::infra::KafkaCluster;
use crate::process::{Ending, Process, free_port};

/// The services, in start order: auth first (the others fetch its keys), the saga after.
pub const SERVICES: [&str; 7] = [
    "auth",
    "product",
    "order",
    "inventory",
    "payment",
    "notification",
    "shipping",
];
/// The card processor simulator; not a service of Bazaar's, never killed by the scenarios.
pub const SIMULATOR: &str = "payment-gateway";
/// The public entry point of a scaled-out cluster.
pub const GATEWAY: &str = "gateway";

/// The services whose consumers take part in the checkout saga, with their topics.
pub fn consumed_topics(service: &str) -> &'static [&'static str] {
    match service {
        "order" => order_service::consumers::TOPICS,
        "inventory" => inventory_service::consumers::TOPICS,
        "payment" => payment_service::consumers::TOPICS,
        "notification" => notification_service::consumers::TOPICS,
        "shipping" => shipping_service::consumers::TOPICS,
        _ => &[],
    }
}

/// The checkout's catalog: three SKUs that never run out, two that sell out within seconds so
/// rejections keep coming.
pub const COMMON_SKUS: [(&str, i64); 3] = [
    ("CHAOS-TEE", 1999),
    ("CHAOS-MUG", 890),
    ("CHAOS-TOTE", 1250),
];
pub const SCARCE_SKUS: [(&str, i64, i64); 2] =
    [("CHAOS-PRINT", 4500, 12), ("CHAOS-POSTER", 3000, 6)];
const COMMON_STOCK: i64 = 1_000_000;

pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `BAZAAR_RUN_DIR`, as the scripts resolve it.
pub fn run_dir() -> PathBuf {
    std::env::var_os("BAZAAR_RUN_DIR").map_or_else(|| repo_root().join(".run"), PathBuf::from)
}

/// Where `cargo build --workspace --bins` put the binaries: next to this test's own directory,
/// unless `BAZAAR_CHAOS_BIN_DIR` names another (e.g. a release build: on two cores a scaled-out
/// cluster of debug binaries spends its CPU on itself rather than on the load).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BAZAAR_CHAOS_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let test = std::env::current_exe()?;
    let dir = test
        .parent()
        .and_then(Path::parent)
        .context("the test binary has no target directory")?
        .to_path_buf();
    Ok(dir)
}

fn binary_of(name: &str) -> anyhow::Result<PathBuf> {
    let file = match name {
        SIMULATOR | GATEWAY | "bazaar" => name.to_owned(),
        other => format!("{other}-service"),
    };
    let path = bin_dir()?.join(file);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins; make test and \
         make chaos do)",
        path.display()
    );
    Ok(path)
}

/// A registered, signed-in customer.
#[derive(Debug, Clone)]
pub struct Customer {
    pub email: String,
    pub token: String,
    /// The card this customer pays with: declining tokens make cancelled orders.
    pub payment_token: &'static str,
}

/// Timing of the saga in the cluster, shorter than production so that stuck orders show.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The order service cancels an order still pending after this.
    pub order_deadline: Duration,
    /// Inventory releases an unpaid reservation after this.
    pub reservation_ttl: Duration,
    /// How long payment waits for the simulator.
    pub provider_timeout: Duration,
    /// Instances of every service (1: one process per service).
    pub instances: usize,
    /// The gateway in front, balancing over the instances: customers and the load go through it.
    pub gateway: bool,
    /// Three Kafka nodes of the cluster's own (replication factor 3) instead of the shared broker.
    pub own_kafka: bool,
    /// Checkouts per second of the scaled-out scenarios' load, unless `BAZAAR_CHAOS_RATE` says
    /// otherwise (`None`: the load's default, 10).
    pub load_rate: Option<f64>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            order_deadline: Duration::from_secs(60),
            reservation_ttl: Duration::from_secs(90),
            provider_timeout: Duration::from_millis(1000),
            instances: 1,
            gateway: false,
            own_kafka: false,
            load_rate: None,
        }
    }
}

impl ClusterOptions {
    /// Issue 12's cluster: two instances of every service behind the gateway, on three brokers.
    pub fn scaled() -> Self {
        Self {
            instances: 2,
            gateway: true,
            own_kafka: true,
            ..Self::default()
        }
    }

    /// The scaled-out cluster for `make test`: two instances of every service behind the
    /// gateway on the shared broker (no JVMs to start), under a lighter load (debug binaries of
    /// 16 processes share two cores with the rest of the tests).
    pub fn scaled_light() -> Self {
        Self {
            own_kafka: false,
            load_rate: Some(4.0),
            ..Self::scaled()
        }
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub tag: String,
    /// Logs, mail and the catalog of this cluster.
    pub dir: PathBuf,
    pub kafka: KafkaSettings,
    /// Its own Kafka nodes, when it has them.
    pub brokers: Option<KafkaCluster>,
    /// Every process by label: a service's name, or `order-2` with several instances.
    pub processes: BTreeMap<String, Process>,
    /// The labels of each service's instances, in order.
    pub instances: BTreeMap<&'static str, Vec<String>>,
    /// Each service's settings but its port, for instances added later.
    service_env: BTreeMap<&'static str, Vec<(String, String)>>,
    pub database_urls: BTreeMap<&'static str, String>,
    /// Small pools for the harness's own reads (the checker, progress probes).
    pub pools: BTreeMap<&'static str, PgPool>,
    pub customers: Vec<Customer>,
    pub options: ClusterOptions,
    pub initial_stock: BTreeMap<String, i64>,
    pub mail_dir: PathBuf,
    pub http: reqwest::Client,
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

impl Cluster {
    pub fn group_of(&self, service: &str) -> String {
        format!("{}-{service}", self.kafka.group_id)
    }

    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let started = Instant::now();
        let tag = unique_tag();
        let dir = run_dir().join("chaos").join(&tag);
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir)?;
        let brokers = if options.own_kafka {
            let run_dir = dir.join("kafka");
            Some(tokio::task::block_in_place(|| {
                KafkaCluster::start(run_dir)
            })?)
        } else {
            None
        };
        let kafka = as_test_principal(KafkaSettings {
            bootstrap_servers: brokers
                .as_ref()
                .map_or_else(bootstrap_servers, KafkaCluster::bootstrap),
            topic_prefix: format!("chaos-{tag}."),
            group_id: format!("chaos-{tag}"),
            replication_factor: if brokers.is_some() { 3 } else { 1 },
            schema_registry_url: schema_registry_url(),
            ..KafkaSettings::local_defaults("chaos")
        });
        messaging::topics::apply(&messaging::TopicCatalog::bundled()?, &kafka)
            .await
            .context("creating the cluster's topics")?;

        let catalog = dir.join("catalog.json");
        let mut initial_stock = BTreeMap::new();
        let mut products = Vec::new();
        let scarce = SCARCE_SKUS
            .iter()
            .map(|(sku, price, stock)| (*sku, *price, *stock));
        let common = COMMON_SKUS
            .iter()
            .map(|(sku, price)| (*sku, *price, COMMON_STOCK));
        for (sku, price, stock) in common.chain(scarce) {
            initial_stock.insert(sku.to_owned(), stock);
            products.push(json!({
                "slug": sku.to_lowercase(),
                "name": sku,
                "description": "chaos test stock",
                "variants": [{"sku": sku, "name": "one size", "price_minor": price, "currency": "EUR", "stock": stock}],
            }));
        }
        std::fs::write(
            &catalog,
            serde_json::to_vec_pretty(&json!({ "products": products }))?,
        )?;

        let instances = options.instances.max(1);
        let label = |name: &str, i: usize| {
            if instances == 1 {
                name.to_owned()
            } else {
                format!("{name}-{i}")
            }
        };
        let mut ports: BTreeMap<String, u16> = BTreeMap::new();
        ports.insert(SIMULATOR.to_owned(), free_port()?);
        ports.insert(GATEWAY.to_owned(), free_port()?);
        let mut labels: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for name in SERVICES {
            for i in 1..=instances {
                let label = label(name, i);
                ports.insert(label.clone(), free_port()?);
                labels.entry(name).or_default().push(label);
            }
        }
        let url = |label: &str| format!("http://127.0.0.1:{}", ports[label]);
        let gateway_url = url(GATEWAY);
        let mut database_urls = BTreeMap::new();
        for name in SERVICES {
            let database = fresh_database(&format!("chaos_{name}")).await?;
            database_urls.insert(name, database.url().to_owned());
        }

        let mut processes = BTreeMap::new();
        let simulator_env = vec![
            ("BAZAAR__HTTP__HOST".to_owned(), "127.0.0.1".to_owned()),
            // Faults are injected and the invariants read the ledger under `/_sim`.
            ("BAZAAR__TEST_MODE".to_owned(), "true".to_owned()),
            (
                "BAZAAR__HTTP__PORT".to_owned(),
                ports[SIMULATOR].to_string(),
            ),
        ];
        processes.insert(
            SIMULATOR.to_owned(),
            Process::new(
                SIMULATOR,
                SIMULATOR.to_owned(),
                binary_of(SIMULATOR)?,
                ports[SIMULATOR],
                simulator_env,
                dir.join(format!("{SIMULATOR}.log")),
                dir.clone(),
            ),
        );
        let mut service_env = BTreeMap::new();
        for name in SERVICES {
            let mut env: Vec<(String, String)> = vec![
                ("BAZAAR__HTTP__HOST".into(), "127.0.0.1".into()),
                ("BAZAAR__DATABASE__URL".into(), database_urls[name].clone()),
                (
                    "BAZAAR__DATABASE__MAX_CONNECTIONS".into(),
                    // The saga's three carry the load; the server's connections (400) are
                    // shared with every other test. A relay holds one for its lock and a
                    // consumer one per partition batch in flight: with 4, a backlog after a
                    // Kafka outage left checkouts waiting for a connection until they failed.
                    match name {
                        "payment" | "order" | "inventory" => "8",
                        _ => "4",
                    }
                    .into(),
                ),
                (
                    "BAZAAR__KAFKA__BOOTSTRAP_SERVERS".into(),
                    kafka.bootstrap_servers.clone(),
                ),
                (
                    "BAZAAR__KAFKA__TOPIC_PREFIX".into(),
                    kafka.topic_prefix.clone(),
                ),
                (
                    "BAZAAR__KAFKA__GROUP_ID".into(),
                    format!("{}-{name}", kafka.group_id),
                ),
                (
                    "BAZAAR__KAFKA__SCHEMA_REGISTRY_URL".into(),
                    kafka.schema_registry_url.clone(),
                ),
                (
                    "BAZAAR__KAFKA__REPLICATION_FACTOR".into(),
                    kafka.replication_factor.to_string(),
                ),
                // Several instances drain before they stop, so the gateway moves callers to
                // the others first; a lone one has nobody to hand over to.
                (
                    "BAZAAR_DRAIN_MS".into(),
                    if instances > 1 { "2000" } else { "0" }.into(),
                ),
            ];
            env.extend(kafka_auth_env(&kafka));
            if name != "auth" && name != "payment" {
                // Through the gateway, keys come from whichever auth instance serves.
                let jwks = if options.gateway {
                    format!("{gateway_url}/.well-known/jwks.json")
                } else {
                    format!("{}/.well-known/jwks.json", url(&labels["auth"][0]))
                };
                env.push(("BAZAAR__AUTH__JWKS_URL".into(), jwks));
            }
            let extra: Vec<(&str, String)> = match name {
                "order" => vec![
                    (
                        "BAZAAR__CHECKOUT__DEADLINE_MS",
                        millis(options.order_deadline),
                    ),
                    ("BAZAAR__CHECKOUT__DEADLINE_INTERVAL_MS", "500".into()),
                ],
                "inventory" => vec![
                    (
                        "BAZAAR__RESERVATIONS__TTL_MS",
                        millis(options.reservation_ttl),
                    ),
                    ("BAZAAR__RESERVATIONS__EXPIRY_INTERVAL_MS", "500".into()),
                ],
                "payment" => vec![
                    ("BAZAAR__PROVIDER__BASE_URL", url(SIMULATOR)),
                    (
                        "BAZAAR__PROVIDER__TIMEOUT_MS",
                        millis(options.provider_timeout),
                    ),
                    // No more charges in flight than the pool has connections to record them.
                    ("BAZAAR__WORKERS__CONCURRENCY", "4".into()),
                    ("BAZAAR__WORKERS__POLL_MS", "200".into()),
                    ("BAZAAR__WORKERS__RETRY_INITIAL_MS", "100".into()),
                    ("BAZAAR__WORKERS__RETRY_MAX_MS", "2000".into()),
                    // A killed worker's claim lapses this soon.
                    ("BAZAAR__WORKERS__LEASE_MS", "5000".into()),
                ],
                "notification" => vec![
                    ("BAZAAR__MAIL__FILE__DIR", mail_dir.display().to_string()),
                    ("BAZAAR__DELIVERY__POLL_MS", "200".into()),
                    ("BAZAAR__DELIVERY__RETRY_INITIAL_MS", "100".into()),
                    ("BAZAAR__DELIVERY__RETRY_MAX_MS", "2000".into()),
                    ("BAZAAR__DELIVERY__LEASE_MS", "10000".into()),
                ],
                _ => vec![],
            };
            env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            for label in &labels[name] {
                processes.insert(
                    label.clone(),
                    service_process(name, label.clone(), ports[label], &env, &dir)?,
                );
            }
            service_env.insert(name, env);
        }
        if options.gateway {
            let mut env: Vec<(String, String)> = vec![
                ("BAZAAR__HTTP__HOST".into(), "127.0.0.1".into()),
                ("BAZAAR__HTTP__PORT".into(), ports[GATEWAY].to_string()),
                (
                    "BAZAAR__AUTH__JWKS_URL".into(),
                    format!("{gateway_url}/.well-known/jwks.json"),
                ),
                ("BAZAAR_DRAIN_MS".into(), "0".into()),
            ];
            for name in SERVICES {
                let urls: Vec<String> = labels[name].iter().map(|label| url(label)).collect();
                env.push((
                    format!("BAZAAR__UPSTREAMS__{}", name.to_uppercase()),
                    urls.join(","),
                ));
            }
            processes.insert(
                GATEWAY.to_owned(),
                Process::new(
                    GATEWAY,
                    GATEWAY.to_owned(),
                    binary_of(GATEWAY)?,
                    ports[GATEWAY],
                    env,
                    dir.join(format!("{GATEWAY}.log")),
                    dir.clone(),
                ),
            );
        }

        let mut pools = BTreeMap::new();
        for name in SERVICES {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(&database_urls[name])?;
            pools.insert(name, pool);
        }

        let mut cluster = Self {
            tag,
            dir,
            kafka,
            brokers,
            processes,
            instances: labels,
            service_env,
            options: options.clone(),
            database_urls,
            pools,
            customers: Vec::new(),
            initial_stock,
            mail_dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let catalog = catalog.display().to_string();
        for name in ["product", "inventory"] {
            let process = &cluster.processes[&cluster.instances[name][0]];
            tokio::task::block_in_place(|| process.run_to_end(&["seed-demo", "--file", &catalog]))?;
        }
        let labels: Vec<String> = cluster.processes.keys().cloned().collect();
        // The simulator and the services first, the gateway (which checks them) last.
        for label in labels.iter().filter(|label| label.as_str() != GATEWAY) {
            cluster.process(label).start()?;
        }
        if cluster.options.gateway {
            cluster.process(GATEWAY).start()?;
        }
        for label in &labels {
            cluster.wait_ready(label, Duration::from_secs(120)).await?;
        }
        cluster.wait_for_catalog().await?;
        cluster.register_customers().await?;
        println!(
            "cluster {} up in {:.1}s: {} process(es){} (logs in {})",
            cluster.tag,
            started.elapsed().as_secs_f64(),
            cluster.processes.len(),
            cluster
                .brokers
                .as_ref()
                .map_or(String::new(), |brokers| format!(
                    ", Kafka {}",
                    brokers.bootstrap()
                )),
            cluster.dir.display()
        );
        Ok(cluster)
    }

    /// Adds and starts one more instance of `service` (same settings, a port of its own);
    /// returns its label. The gateway does not learn of it: meant for services it does not
    /// route to, or whose work is consuming (payment).
    pub async fn add_instance(&mut self, service: &'static str) -> anyhow::Result<String> {
        let count = self.instances.get(service).map_or(0, Vec::len);
        let label = format!("{service}-{}", count + 1);
        let port = free_port()?;
        let process = service_process(
            service,
            label.clone(),
            port,
            &self.service_env[service],
            &self.dir,
        )?;
        self.processes.insert(label.clone(), process);
        self.instances
            .entry(service)
            .or_default()
            .push(label.clone());
        self.process(&label).start()?;
        self.wait_ready(&label, Duration::from_secs(90)).await?;
        Ok(label)
    }

    /// The process labelled `name` (with one instance per service, a service's name).
    pub fn process(&mut self, name: &str) -> &mut Process {
        self.processes
            .get_mut(name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// The process labelled `name`, or the first instance of the service `name`.
    fn resolve(&self, name: &str) -> &Process {
        self.processes
            .get(name)
            .or_else(|| {
                self.instances
                    .get(name)
                    .and_then(|labels| labels.first())
                    .and_then(|label| self.processes.get(label))
            })
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    pub fn url(&self, name: &str) -> String {
        self.resolve(name).base_url()
    }

    /// Where a client reaches `service`'s API: through the gateway (`/api` and the service's
    /// paths) when the cluster has one, else at the service itself.
    pub fn api(&self, service: &str) -> String {
        if self.options.gateway {
            format!("{}/api", self.url(GATEWAY))
        } else {
            self.url(service)
        }
    }

    /// Polls `/readyz` of the process labelled `name` until 200; fails at once if it exits.
    pub async fn wait_ready(&mut self, name: &str, within: Duration) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.processes[name].base_url());
        let deadline = Instant::now() + within;
        loop {
            if let Some(ending) = self.process(name).reap()? {
                anyhow::bail!(
                    "{name} exited ({ending:?}) while starting; last log lines:\n{}",
                    self.processes[name].log_tail(30)
                );
            }
            let ready = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{name} not ready after {within:?}; last log lines:\n{}",
                    self.processes[name].log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_catalog(&self) -> anyhow::Result<()> {
        let expected = i64::try_from(self.initial_stock.len())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found: Result<(i64,), _> =
                sqlx::query_as("SELECT count(*) FROM catalog_replica WHERE available")
                    .fetch_one(&self.pools["order"])
                    .await;
            if found.is_ok_and(|(count,)| count == expected) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the order service's catalog replica did not fill within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Six customers through the real auth service (so notification learns their addresses
    /// from UserRegistered): four pay by Visa, one card is declined, one lacks funds.
    async fn register_customers(&mut self) -> anyhow::Result<()> {
        let cards = [
            "tok_visa",
            "tok_visa",
            "tok_mastercard",
            "tok_visa",
            "tok_chargeDeclined",
            "tok_chargeDeclinedInsufficientFunds",
        ];
        let auth = self.api("auth");
        for (i, card) in cards.into_iter().enumerate() {
            let email = format!("chaos-{}-{i}@example.com", self.tag);
            let password = format!("chaos-password-{i}");
            let registered = self
                .http
                .post(format!("{auth}/auth/register"))
                .json(&json!({"email": email, "password": password, "name": format!("Chaos {i}")}))
                .send()
                .await?;
            anyhow::ensure!(
                registered.status().as_u16() == 201,
                "register {email}: {}",
                registered.text().await?
            );
            let login: Value = self
                .http
                .post(format!("{auth}/auth/login"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await?
                .json()
                .await?;
            let token = login["access_token"]
                .as_str()
                .with_context(|| format!("no access token for {email}: {login}"))?
                .to_owned();
            self.customers.push(Customer {
                email,
                token,
                payment_token: card,
            });
        }
        Ok(())
    }

    /// Restarts every process that ended by itself, and returns what ended. Crash points exit
    /// with their own codes; anything else is a real crash.
    pub fn restart_exited(&mut self) -> anyhow::Result<Vec<(String, Ending)>> {
        let mut ended = Vec::new();
        for (label, process) in &mut self.processes {
            if let Some(ending) = process.reap()? {
                ended.push((label.clone(), ending));
                process.start()?;
            }
        }
        Ok(ended)
    }

    /// Endings that no fault injection explains, per process.
    pub fn crashes(&self) -> Vec<String> {
        let injected = [
            messaging::fault::RELAY_EXIT_CODE,
            messaging::fault::CONSUMER_EXIT_CODE,
        ];
        self.processes
            .values()
            .flat_map(|process| {
                process
                    .unplanned
                    .iter()
                    .filter(
                        |ending| !matches!(ending, Ending::Code(code) if injected.contains(code)),
                    )
                    .map(|ending| format!("{} ended by itself: {ending:?}", process.label))
            })
            .collect()
    }

    /// How many times each crash point fired, per process.
    pub fn injected_exits(&self, code: i32) -> BTreeMap<String, usize> {
        self.processes
            .values()
            .map(|process| {
                (
                    process.label.clone(),
                    process
                        .unplanned
                        .iter()
                        .filter(|ending| **ending == Ending::Code(code))
                        .count(),
                )
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Replaces the simulator's injected faults (`{}` clears them).
    pub async fn set_faults(&self, faults: Value) -> anyhow::Result<()> {
        let answer = self
            .http
            .put(format!("{}/_sim/faults", self.url(SIMULATOR)))
            .json(&faults)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "setting faults: {}",
            answer.text().await?
        );
        Ok(())
    }

    /// Orders the order service holds as `pending`: sagas in flight.
    pub async fn pending_orders(&self) -> i64 {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM orders WHERE status = 'pending'")
            .fetch_one(&self.pools["order"])
            .await
            .map_or(-1, |(count,)| count)
    }

    /// Messages the cluster's consumer groups have not committed yet, over all their topics.
    pub async fn total_lag(&self) -> anyhow::Result<i64> {
        let mut total = 0;
        for service in SERVICES {
            let topics = consumed_topics(service);
            if topics.is_empty() {
                continue;
            }
            total += bazaar_integration_tests::offsets::lag(
                &self.kafka,
                &self.group_of(service),
                topics,
            )
            .await?;
        }
        Ok(total)
    }

    pub fn checker(&self) -> Checker {
        Checker::new(Sources {
            order: self.pools["order"].clone(),
            inventory: Some(self.pools["inventory"].clone()),
            payment: Some(self.pools["payment"].clone()),
            shipping: Some(self.pools["shipping"].clone()),
            notification: Some(self.pools["notification"].clone()),
            payment_gateway: Some(self.url(SIMULATOR)),
            mail_dir: Some(self.mail_dir.clone()),
        })
    }

    pub fn expectations(&self, accepted: Vec<String>) -> Expectations {
        Expectations {
            accepted,
            initial_stock: self.initial_stock.clone(),
            ..Expectations::default()
        }
    }

    /// The `bazaar` tool pointed at this cluster's topics, groups and databases.
    pub fn bazaar(&self, args: &[&str]) -> anyhow::Result<std::process::Command> {
        let mut command = std::process::Command::new(binary_of("bazaar")?);
        command
            .args(args)
            .args(["--bootstrap-servers", &self.kafka.bootstrap_servers])
            .args(["--topic-prefix", &self.kafka.topic_prefix])
            .args(["--registry", &self.kafka.schema_registry_url])
            .stdin(std::process::Stdio::null())
            // As operators run it: the ops principal may move groups and redrive.
            .env("BAZAAR_PRINCIPAL", "ops")
            .env(
                "BAZAAR__KAFKA__SECURITY_PROTOCOL",
                &self.kafka.security_protocol,
            )
            .env_remove("BAZAAR__KAFKA__TOPIC_PREFIX")
            .env_remove("BAZAAR_GROUP_PREFIX");
        for service in SERVICES {
            if consumed_topics(service).is_empty() {
                continue;
            }
            command
                .args([
                    "--service-group",
                    &format!("{service}={}", self.group_of(service)),
                ])
                .args([
                    "--service-db",
                    &format!("{service}={}", self.database_urls[service]),
                ]);
        }
        Ok(command)
    }

    /// Stops every process (SIGTERM) and deletes the cluster's topics (or stops its own Kafka
    /// nodes), and its logs and mail unless `keep_logs` (a failure worth reading about); its
    /// databases are left for `pgctl.sh drop-test-dbs`.
    pub async fn stop(mut self, keep_logs: bool) -> anyhow::Result<()> {
        let mut order: Vec<String> = Vec::new();
        if self.options.gateway {
            order.push(GATEWAY.to_owned());
        }
        for name in SERVICES.iter().rev() {
            order.extend(self.instances[name].iter().cloned());
        }
        order.push(SIMULATOR.to_owned());
        for label in order {
            let process = self.process(&label);
            tokio::task::block_in_place(|| process.terminate(Duration::from_secs(20)))?;
        }
        for pool in self.pools.values() {
            pool.close().await;
        }
        let own_kafka = self.brokers.take();
        match own_kafka {
            Some(mut brokers) => tokio::task::block_in_place(|| brokers.stop())?,
            None => crate::infra::delete_topics(&self.kafka).await?,
        }
        if keep_logs {
            println!(
                "logs of cluster {} kept in {}",
                self.tag,
                self.dir.display()
            );
        } else {
            std::fs::remove_dir_all(&self.dir)?;
        }
        Ok(())
    }
}

/// One instance of a service, not started.
fn service_process(
    name: &'static str,
    label: String,
    port: u16,
    env: &[(String, String)],
    dir: &Path,
) -> anyhow::Result<Process> {
    let mut env = env.to_vec();
    env.push(("BAZAAR__HTTP__PORT".into(), port.to_string()));
    let log = dir.join(format!("{label}.log"));
    Ok(Process::new(
        name,
        label,
        binary_of(name)?,
        port,
        env,
        log,
        dir.to_path_buf(),
    ))
}
