//! docker-compose.yml cannot run here (no Docker engine), so check its shape: every workspace
//! service is deployed with its configuration, and Kafka is a replicated three-broker cluster.
//!
//! The one exception is the schema registry: production runs Confluent's own image in its place
//! (Kafka-backed, the reference implementation), and ours serves local runs and tests.

use std::path::{Path, PathBuf};

use serde_norway::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    serde_norway::from_str(&text).expect("docker-compose.yml is valid YAML")
}

/// The workspace service that docker-compose.yml deploys as Confluent's image instead.
const SCHEMA_REGISTRY: &str = "schema-registry";
/// The card processor simulator: it keeps its state in memory and needs no database or Kafka.
const PAYMENT_GATEWAY: &str = "payment-gateway";

/// Binaries of the workspace's services, read from their Cargo.toml files.
fn workspace_services() -> Vec<String> {
    let manifest: toml::Table = std::fs::read_to_string(repo_root().join("Cargo.toml"))
        .expect("workspace manifest")
        .parse()
        .expect("valid TOML");
    manifest["workspace"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|member| member.as_str())
        .filter(|member| member.starts_with("services/"))
        .map(|member| member.trim_start_matches("services/").to_owned())
        .collect()
}

fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => serde_norway::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                (key.as_str().unwrap_or_default().to_owned(), value)
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_workspace_service_is_deployed_with_its_configuration() {
    let compose = compose();
    let services = &compose["services"];
    let found = workspace_services();
    assert!(
        found.len() >= 8,
        "expected at least 8 services, found {found:?}"
    );
    for name in found {
        let service = &services[name.as_str()];
        assert!(
            service.is_mapping(),
            "docker-compose.yml has no service {name:?}"
        );
        if name == SCHEMA_REGISTRY {
            assert!(
                service["image"]
                    .as_str()
                    .is_some_and(|image| image.starts_with("confluentinc/cp-schema-registry:")),
                "{name}: must be Confluent's image, got {:?}",
                service["image"]
            );
            continue;
        }
        assert!(
            service["build"]["dockerfile"].as_str().is_some(),
            "{name}: must be built from a Dockerfile in the repo"
        );
        let env = environment(service);
        let has = |key: &str| env.iter().any(|(k, v)| k == key && !v.is_empty());
        if name == "gateway" {
            assert!(
                has("BAZAAR__HTTP__HOST"),
                "{name}: listens on all interfaces in a container"
            );
            for upstream in [
                "AUTH",
                "PRODUCT",
                "ORDER",
                "INVENTORY",
                "PAYMENT",
                "NOTIFICATION",
                "SHIPPING",
            ] {
                assert!(
                    has(&format!("BAZAAR__UPSTREAMS__{upstream}")),
                    "{name}: upstream {upstream}"
                );
            }
            assert!(
                has("BAZAAR__AUTH__JWKS_URL"),
                "{name}: checks tokens against the auth service's keys"
            );
        } else if name == PAYMENT_GATEWAY {
            assert!(
                has("BAZAAR__HTTP__HOST"),
                "{name}: listens on all interfaces in a container"
            );
            assert!(
                !has("BAZAAR__DATABASE__URL"),
                "{name}: keeps its state in memory, without a database"
            );
        } else {
            for key in [
                "BAZAAR__HTTP__HOST",
                "BAZAAR__DATABASE__URL",
                "BAZAAR__KAFKA__BOOTSTRAP_SERVERS",
                "BAZAAR__KAFKA__REPLICATION_FACTOR",
                "BAZAAR__KAFKA__SCHEMA_REGISTRY_URL",
            ] {
                assert!(has(key), "{name}: missing {key}");
            }
            let url = env
                .iter()
                .find(|(k, _)| k == "BAZAAR__DATABASE__URL")
                .map(|(_, v)| v.clone());
            assert!(
                url.is_some_and(|url| url.ends_with(&format!("/bazaar_{name}"))),
                "{name}: must use its own database"
            );
        }
    }
}

#[test]
fn kafka_is_three_brokers_with_replication_factor_three() {
    let compose = compose();
    let Value::Mapping(services) = &compose["services"] else {
        panic!("services must be a mapping");
    };
    let brokers: Vec<&Value> = services
        .values()
        .filter(|service| {
            service["image"]
                .as_str()
                .is_some_and(|image| image.starts_with("apache/kafka"))
        })
        .collect();
    assert_eq!(brokers.len(), 3, "three apache/kafka brokers");
    for broker in brokers {
        let env = environment(broker);
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("KAFKA_PROCESS_ROLES"), Some("broker,controller"));
        assert_eq!(get("KAFKA_DEFAULT_REPLICATION_FACTOR"), Some("3"));
        assert_eq!(get("KAFKA_MIN_INSYNC_REPLICAS"), Some("2"));
        assert_eq!(get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"), Some("3"));
    }
}

/// The same lock-down as local runs (issue 13, part 2): the registry asks for basic auth, every
/// service that registers or reads schemas sends the writer's credentials, taken from the same
/// variable as the registry's password file, and the card processor simulator runs without its
/// `/_sim` controls.
#[test]
fn the_registry_needs_credentials_and_the_simulator_has_no_test_controls() {
    let compose = compose();
    let Value::Mapping(services) = &compose["services"] else {
        panic!("services must be a mapping");
    };
    let registry = environment(&compose["services"][SCHEMA_REGISTRY]);
    let get = |env: &[(String, String)], key: &str| {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    assert_eq!(
        get(&registry, "SCHEMA_REGISTRY_AUTHENTICATION_METHOD").as_deref(),
        Some("BASIC")
    );
    let password = get(&registry, "BAZAAR_REGISTRY_PASSWORD").expect("the writer's password");
    let user = get(&registry, "BAZAAR_REGISTRY_USER").expect("the writer's user");
    let mut clients = 0;
    for (name, service) in services {
        let env = environment(service);
        if get(&env, "BAZAAR__KAFKA__SCHEMA_REGISTRY_URL").is_none() {
            continue;
        }
        clients += 1;
        assert_eq!(
            get(&env, "BAZAAR__KAFKA__SCHEMA_REGISTRY_USER_INFO"),
            Some(format!("{user}:{password}")),
            "{name:?}: calls the registry with the writer's credentials"
        );
    }
    assert!(clients >= 7, "every saga service calls the registry");
    let simulator = environment(&compose["services"][PAYMENT_GATEWAY]);
    assert!(
        get(&simulator, "BAZAAR__TEST_MODE").is_none_or(|value| value != "true"),
        "the simulator's /_sim controls stay off"
    );
}

/// Kafka authenticates every client (issue 13, part 1): the brokers refuse what no ACL allows,
/// every service connects as its own principal with the password kafka-access gives that
/// principal, and every principal `bazaar access` derives gets a password there.
#[test]
fn every_kafka_client_is_its_own_principal_with_the_password_its_acls_were_made_for() {
    let mut compose = compose();
    compose.apply_merge().expect("merge keys");
    let Value::Mapping(services) = &compose["services"] else {
        panic!("services must be a mapping");
    };
    let get = |env: &[(String, String)], key: &str| {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let mut brokers = 0;
    for service in services.values() {
        if !service["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("apache/kafka"))
        {
            continue;
        }
        brokers += 1;
        let env = environment(service);
        assert_eq!(
            get(&env, "KAFKA_AUTHORIZER_CLASS_NAME").as_deref(),
            Some("org.apache.kafka.metadata.authorizer.StandardAuthorizer")
        );
        assert_eq!(
            get(&env, "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND").as_deref(),
            Some("false")
        );
        assert_eq!(
            get(&env, "KAFKA_SUPER_USERS").as_deref(),
            Some("User:admin")
        );
        let protocols = get(&env, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP").expect("protocols");
        assert!(!protocols.contains(":PLAINTEXT"), "{protocols}");
    }
    assert_eq!(brokers, 3);

    let access = environment(&compose["services"]["kafka-access"]);
    let password_of = |principal: &str| {
        let variable = format!(
            "BAZAAR_KAFKA_PASSWORD_{}",
            principal.to_uppercase().replace('-', "_")
        );
        get(&access, &variable).unwrap_or_else(|| panic!("kafka-access sets no {variable}"))
    };
    let deployed = std::fs::read_to_string(repo_root().join("infra/kafka/access.deploy.txt"))
        .expect("infra/kafka/access.deploy.txt");
    let mut principals = 0;
    for line in deployed.lines().filter(|line| line.starts_with("user ")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields.get(2),
            Some(&"-"),
            "a deployment's passwords are its own: {line}"
        );
        password_of(fields[1]);
        principals += 1;
    }
    assert!(principals >= 9, "every service, ops and analyst");

    let mut clients = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        let env = environment(service);
        if get(&env, "BAZAAR__KAFKA__BOOTSTRAP_SERVERS").is_none() {
            continue;
        }
        clients += 1;
        if name == "topics" {
            let command = serde_norway::to_string(&service["command"]).unwrap_or_default();
            assert!(command.contains("ops"), "topics runs as ops: {command}");
            assert_eq!(get(&env, "BAZAAR_KAFKA_PASSWORD"), Some(password_of("ops")));
            continue;
        }
        assert_eq!(
            get(&env, "BAZAAR__KAFKA__SASL_USERNAME").as_deref(),
            Some(name),
            "{name}: its own principal"
        );
        assert_eq!(
            get(&env, "BAZAAR__KAFKA__SASL_PASSWORD"),
            Some(password_of(name)),
            "{name}: the password its principal was created with"
        );
        assert!(
            deployed.contains(&format!("user {name} ")),
            "{name}: a principal of `bazaar access`"
        );
    }
    assert!(clients >= 8, "every Kafka client of the deployment");
    let registry = environment(&compose["services"][SCHEMA_REGISTRY]);
    let store = get(&registry, "SCHEMA_REGISTRY_KAFKASTORE_SASL_JAAS_CONFIG").expect("store");
    assert!(
        store.contains(&password_of("schema-registry")),
        "the registry's store authenticates as its principal"
    );
}
