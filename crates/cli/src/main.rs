//! `bazaar`: one tool for the people who run Bazaar.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error, 3 refused (a precondition does not hold,
//! nothing changed), 4 timed out waiting for a service, 5 Kafka, the registry or a database
//! unreachable, 6 nothing found.

mod cmd;
mod context;
mod decode;
mod exit;
mod kafka;
mod output;
mod partitioner;
mod saga;
mod services;
mod time;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use platform::config::KafkaSettings;
use secrecy::SecretString;

use crate::context::{Context, key_value};
use crate::decode::PersonalData;
use crate::exit::Exit;

/// Operate a Bazaar deployment: topics, event taps, replays, rebuilds, dead letters, order
/// timelines, stuck orders and the global invariants.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        global = true,
        env = "BAZAAR__KAFKA__BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    /// Prefix put in front of every topic name.
    #[arg(
        long,
        global = true,
        env = "BAZAAR__KAFKA__TOPIC_PREFIX",
        default_value = ""
    )]
    topic_prefix: String,
    /// Schema registry base URL.
    #[arg(
        long,
        global = true,
        env = "BAZAAR__KAFKA__SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8088"
    )]
    registry: String,
    /// `user:password` for the schema registry (HTTP basic auth; the local registry's writer
    /// by default). Bazaar's registry lets anyone read; Confluent's may not.
    #[arg(
        long,
        global = true,
        env = "BAZAAR__KAFKA__SCHEMA_REGISTRY_USER_INFO",
        hide_env_values = true,
        value_name = "USER:PASSWORD",
        value_parser = secret
    )]
    registry_user_info: Option<SecretString>,
    /// Consumer groups are `<prefix><service>` unless set with --service-group.
    #[arg(
        long,
        global = true,
        env = "BAZAAR_GROUP_PREFIX",
        default_value = "bazaar-"
    )]
    group_prefix: String,
    /// A service's consumer group, e.g. order=bazaar-order-eu (repeatable).
    #[arg(long = "service-group", global = true, value_name = "SERVICE=GROUP", value_parser = key_value)]
    service_groups: Vec<(String, String)>,
    /// A service's database URL, e.g. order=postgres://... (repeatable; otherwise
    /// BAZAAR_<SERVICE>_DATABASE_URL, otherwise the local development database).
    #[arg(long = "service-db", global = true, value_name = "SERVICE=URL", value_parser = key_value)]
    service_dbs: Vec<(String, String)>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Show the personal fields of events (those marked `"bazaar.pii": true` in their
    /// schemas: e-mail addresses, names, shipping addresses, payment tokens) instead of `***`.
    /// Only the ops principal may.
    #[arg(long, global = true)]
    reveal: bool,
    /// Who runs the tool: the Kafka principal it authenticates as (SASL/SCRAM-SHA-512), whose
    /// ACLs decide what it may do. The analyst's may read topics, never write them.
    #[arg(
        long,
        global = true,
        env = "BAZAAR_PRINCIPAL",
        value_enum,
        default_value_t = Principal::Analyst
    )]
    principal: Principal,
    /// The principal's Kafka password (the local one of `make run` by default).
    #[arg(
        long,
        global = true,
        env = "BAZAAR_KAFKA_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        value_parser = secret
    )]
    kafka_password: Option<SecretString>,
    /// `sasl_plaintext`, `sasl_ssl` (across hosts), or `plaintext` for a broker that lets
    /// anonymous clients in.
    #[arg(
        long,
        global = true,
        env = "BAZAAR__KAFKA__SECURITY_PROTOCOL",
        default_value = "sasl_plaintext"
    )]
    security_protocol: String,
}

/// The roles people run the tool in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Principal {
    /// Reads events with their personal fields masked; cannot write to any topic.
    Analyst,
    /// Operates the deployment (topics, replays, redrives); may `--reveal`.
    Ops,
}

impl Principal {
    fn kafka_name(self) -> &'static str {
        match self {
            Self::Analyst => cmd::access::ANALYST,
            Self::Ops => cmd::access::OPS,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Topics with partitions, end offsets and each consumer group's lag (`topics apply`
    /// creates and updates them).
    Topics(cmd::topics::TopicsArgs),
    /// The consuming services this tool knows: consumer group, database, topics, projections.
    Services,
    /// Print events of topics as JSON lines, decoded through the schema registry.
    Tap(cmd::tap::TapArgs),
    /// Rewind a service's consumer group so it reprocesses history (dry run first).
    Replay(cmd::replay::ReplayArgs),
    /// Rebuild a service's read model from its topic into a fresh table and swap it in.
    Rebuild(cmd::rebuild::RebuildArgs),
    /// Dead-lettered messages and parked keys: list, show, redrive.
    #[command(subcommand)]
    Dlq(cmd::dlq::DlqCommand),
    /// Every event of one order across the saga's topics, in causal order.
    Timeline(cmd::timeline::TimelineArgs),
    /// Orders not in a final state whose status has not changed for a while.
    Stuck(cmd::stuck::StuckArgs),
    /// The saga at a glance, from Prometheus: orders per status per minute, checkout → paid
    /// percentiles, lag, parked keys and outbox age per service, the card processor's error
    /// rate, alerts firing.
    Overview(cmd::overview::OverviewArgs),
    /// Check the global invariants across every service database and the processor's ledger:
    /// orders final, one charge per order, stock conserved, one shipment and each notice once.
    Check(cmd::check::CheckArgs),
    /// Every Kafka principal and its ACLs, derived from the topic catalog and the services'
    /// rules crates, as `infra/kafka/kafkactl.sh access` applies them.
    Access(cmd::access::AccessArgs),
    /// Wait until a Kafka broker answers a metadata request.
    WaitKafka {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

/// A value kept out of `Debug` output.
fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(text.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::code_of(&error))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    let mut kafka = KafkaSettings::local_defaults("cli");
    kafka.bootstrap_servers = global.bootstrap_servers;
    kafka.topic_prefix = global.topic_prefix;
    kafka.schema_registry_url = global.registry;
    if let Some(user_info) = global.registry_user_info {
        kafka.schema_registry_user_info = user_info;
    }
    let principal = global.principal.kafka_name();
    kafka = kafka.as_principal(
        principal,
        global
            .kafka_password
            .unwrap_or_else(|| platform::config::local_kafka_password(principal)),
    );
    kafka.security_protocol = global.security_protocol;
    if global.reveal && global.principal != Principal::Ops {
        return Err(Exit::Refused(
            "--reveal shows personal data: only the ops principal may (--principal ops, or \
             BAZAAR_PRINCIPAL=ops)"
                .to_owned(),
        )
        .into());
    }
    let mut context = Context::new(
        kafka,
        global.json,
        global.group_prefix,
        &global.service_groups,
        &global.service_dbs,
    )?;
    if global.reveal {
        context.personal_data = PersonalData::Revealed;
    }
    match cli.command {
        Command::Access(args) => cmd::access::run(&context, &args),
        Command::Topics(args) => cmd::topics::run(&context, args).await,
        Command::Services => {
            cmd::services::run(&context);
            Ok(())
        }
        Command::Tap(args) => cmd::tap::run(&context, args).await,
        Command::Replay(args) => cmd::replay::run(&context, args).await,
        Command::Rebuild(args) => cmd::rebuild::run(&context, args).await,
        Command::Dlq(command) => cmd::dlq::run(&context, command).await,
        Command::Timeline(args) => cmd::timeline::run(&context, args).await,
        Command::Stuck(args) => cmd::stuck::run(&context, args).await,
        Command::Check(args) => cmd::check::run(&context, args).await,
        Command::Overview(args) => cmd::overview::run(&context, args).await,
        Command::WaitKafka { timeout_secs } => wait_kafka(&context.kafka, timeout_secs).await,
    }
}

async fn wait_kafka(settings: &KafkaSettings, timeout_secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        match messaging::client::ping(settings, Duration::from_secs(2)).await {
            Ok(brokers) if brokers > 0 => {
                println!(
                    "kafka: {brokers} broker(s) at {}",
                    settings.bootstrap_servers
                );
                return Ok(());
            }
            outcome if Instant::now() >= deadline => {
                return Err(Exit::Unavailable(format!(
                    "kafka at {} did not answer within {timeout_secs}s: {outcome:?}",
                    settings.bootstrap_servers
                ))
                .into());
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
