//! The public API as the services declare it, and nothing else.
//!
//! Every service describes its real handlers (`#[utoipa::path]` on each, see
//! `platform::openapi`), and its test keeps a copy of that document in `api/<service>.json`
//! (`BAZAAR_WRITE_OPENAPI=1 cargo test -p <service>-service openapi` rewrites it). The gateway
//! depends on no service crate: it reads those copies and derives from them both its route
//! table ([`endpoints`]: public path, service, methods, who may call, which answers stream) and
//! the public OpenAPI document ([`document`]: the same paths under `/api`, the answers the
//! gateway itself adds, the security scheme). No route is written down anywhere else.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::http::Method;
use platform::openapi::{ADMIN_ROLE, Access, BEARER, access_from_json};
use serde_json::{Map, Value, json};

/// The services the gateway forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Auth,
    Product,
    Order,
    Inventory,
    Notification,
    Shipping,
}

impl Service {
    pub const ALL: [Self; 6] = [
        Self::Auth,
        Self::Product,
        Self::Order,
        Self::Inventory,
        Self::Notification,
        Self::Shipping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Product => "product",
            Self::Order => "order",
            Self::Inventory => "inventory",
            Self::Notification => "notification",
            Self::Shipping => "shipping",
        }
    }

    /// The service's own document, as its test committed it.
    pub fn document(self) -> &'static str {
        match self {
            Self::Auth => include_str!("../api/auth.json"),
            Self::Product => include_str!("../api/product.json"),
            Self::Order => include_str!("../api/order.json"),
            Self::Inventory => include_str!("../api/inventory.json"),
            Self::Notification => include_str!("../api/notification.json"),
            Self::Shipping => include_str!("../api/shipping.json"),
        }
    }
}

/// Where the public API lives: a service's `/x` is published as `/api/x`, except the well-known
/// URIs (RFC 8615), which clients look for at the root.
pub const PUBLIC_PREFIX: &str = "/api";

pub fn public_path(service_path: &str) -> String {
    if service_path.starts_with("/.well-known/") {
        service_path.to_owned()
    } else {
        format!("{PUBLIC_PREFIX}{service_path}")
    }
}

/// One declared path and what may be done there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub service: Service,
    /// As published, e.g. `/api/orders/{id}`.
    pub public_path: String,
    /// As the service knows it, e.g. `/orders/{id}`.
    pub service_path: String,
    pub operations: Vec<Operation>,
    /// The declared methods, for `Allow`.
    pub allow: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: Method,
    pub access: Access,
    /// Answers `text/event-stream`: no deadline on the body.
    pub streaming: bool,
}

impl Endpoint {
    pub fn operation(&self, method: &Method) -> Option<&Operation> {
        self.operations
            .iter()
            .find(|operation| operation.method == *method)
    }

    /// What a caller needs to learn anything about the path, even which methods it takes.
    pub fn least_access(&self) -> Access {
        self.operations
            .iter()
            .map(|operation| operation.access)
            .min()
            .unwrap_or(Access::Public)
    }
}

/// The methods a path item may declare, as OpenAPI spells them.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

struct Declared {
    endpoints: Vec<Endpoint>,
    document: String,
}

static DECLARED: LazyLock<Result<Declared, String>> = LazyLock::new(|| {
    let documents = Service::ALL
        .iter()
        .map(|service| {
            serde_json::from_str::<Value>(service.document())
                .map(|document| (*service, document))
                .map_err(|error| format!("api/{}.json: {error}", service.name()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Declared {
        endpoints: endpoints_of(&documents)?,
        document: merge(&documents)?.to_string(),
    })
});

/// Whether the services' documents make a route table and a document; the gateway checks at
/// start, so a broken document stops it rather than its first request.
pub fn check() -> Result<(), String> {
    DECLARED.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Every declared path, most specific first (a literal segment before a parameter).
pub fn endpoints() -> &'static [Endpoint] {
    DECLARED
        .as_ref()
        .map_or(&[], |declared| declared.endpoints.as_slice())
}

/// The public OpenAPI document.
pub fn document() -> &'static str {
    DECLARED
        .as_ref()
        .map_or("{}", |declared| declared.document.as_str())
}

fn endpoints_of(documents: &[(Service, Value)]) -> Result<Vec<Endpoint>, String> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for (service, document) in documents {
        let paths = document["paths"]
            .as_object()
            .ok_or_else(|| format!("{}: no paths", service.name()))?;
        for (service_path, item) in paths {
            let mut operations = Vec::new();
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let access = access_from_json(&operation["security"])
                    .map_err(|error| format!("{method} {service_path}: {error}"))?;
                let streaming = operation["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(status, _)| status.starts_with('2'))
                    .any(|(_, answer)| answer["content"].get("text/event-stream").is_some());
                operations.push(Operation {
                    method: Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                        .map_err(|error| error.to_string())?,
                    access,
                    streaming,
                });
            }
            let public_path = public_path(service_path);
            if let Some(taken) = endpoints.iter().find(|e| e.public_path == public_path) {
                return Err(format!(
                    "{public_path} is declared by both {} and {}",
                    taken.service.name(),
                    service.name()
                ));
            }
            endpoints.push(Endpoint {
                service: *service,
                allow: operations
                    .iter()
                    .map(|operation| operation.method.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                public_path,
                service_path: service_path.clone(),
                operations,
            });
        }
    }
    endpoints.sort_by_key(|endpoint| specificity(&endpoint.public_path));
    Ok(endpoints)
}

/// Sorts literal segments before parameters, position by position.
fn specificity(template: &str) -> Vec<(bool, String)> {
    template
        .split('/')
        .map(|segment| (segment.starts_with('{'), segment.to_owned()))
        .collect()
}

/// The services' documents as one: their paths where the gateway publishes them, every answer
/// the gateway itself may give, and the bearer scheme their security requirements name.
fn merge(documents: &[(Service, Value)]) -> Result<Value, String> {
    let mut paths = Map::new();
    let mut schemas = BTreeMap::<String, Value>::new();
    let mut tags = Vec::<Value>::new();
    let mut operation_ids = BTreeMap::<String, String>::new();
    for (service, document) in documents {
        for (service_path, item) in document["paths"].as_object().into_iter().flatten() {
            let mut item = item.clone();
            for method in METHODS {
                if let Some(operation) = item.get_mut(method) {
                    if let Some(id) = operation["operationId"].as_str() {
                        let here = format!("{method} {service_path}");
                        if let Some(there) = operation_ids.insert(id.to_owned(), here.clone()) {
                            return Err(format!("operationId {id} of {here} is also {there}'s"));
                        }
                    }
                    add_gateway_answers(operation);
                }
            }
            paths.insert(public_path(service_path), item);
        }
        let declared = document["components"]["schemas"].as_object();
        for (name, schema) in declared.into_iter().flatten() {
            match schemas.get(name) {
                Some(known) if known != schema => {
                    return Err(format!(
                        "{} declares schema {name} unlike another service",
                        service.name()
                    ));
                }
                _ => {
                    schemas.insert(name.clone(), schema.clone());
                }
            }
        }
        for tag in document["tags"].as_array().into_iter().flatten() {
            if !tags.iter().any(|known| known["name"] == tag["name"]) {
                tags.push(tag.clone());
            }
        }
    }
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Bazaar public API",
            "description": "Everything a storefront calls, through the gateway. Errors share one \
                shape: `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`. Log in at \
                /api/auth/login and send the access token as `Authorization: Bearer <token>`; \
                operations that need the `admin` role say so in their security requirement.",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": format!("An access token from /api/auth/login; some \
                        operations also need the role `{ADMIN_ROLE}`."),
                },
            },
        },
        "tags": tags,
    }))
}

/// What the gateway answers before or instead of the service, in the shared error shape: a
/// path or query it refuses (400), a body over its limit (413), a missing or bad token (401), a
/// token without the admin role (403), a service that does not answer (502) or not in time (504).
fn add_gateway_answers(operation: &mut Value) {
    let access = access_from_json(&operation["security"]).unwrap_or(Access::Public);
    let mut answers = vec![
        ("400", "Malformed path or query string"),
        ("502", "The service behind this route is unavailable"),
        (
            "504",
            "The service behind this route did not answer in time",
        ),
    ];
    if operation.get("requestBody").is_some() {
        answers.push(("413", "Body too large"));
    }
    if access >= Access::User {
        answers.push(("401", "No valid access token"));
    }
    if access == Access::Admin {
        answers.push(("403", "Not an admin"));
    }
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    for (status, description) in answers {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(document: &str) -> Value {
        serde_json::from_str(document).expect("json")
    }

    #[test]
    fn the_services_documents_make_a_route_table_and_a_document() {
        check().expect("the committed documents are consistent");
        assert!(!endpoints().is_empty());
    }

    #[test]
    fn every_declared_operation_is_published_with_its_access_and_streaming() {
        let published = parsed(document());
        for service in Service::ALL {
            let own = parsed(service.document());
            for (path, item) in own["paths"].as_object().expect("paths") {
                let public = &published["paths"][public_path(path)];
                for method in METHODS {
                    let Some(operation) = item.get(method) else {
                        continue;
                    };
                    assert_eq!(
                        public[method]["security"], operation["security"],
                        "{method} {path}"
                    );
                    let endpoint = endpoints()
                        .iter()
                        .find(|endpoint| endpoint.service_path == *path)
                        .expect("an endpoint");
                    assert_eq!(endpoint.service, service);
                    let declared = endpoint
                        .operation(
                            &Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"),
                        )
                        .expect("the operation");
                    assert_eq!(
                        Ok(declared.access),
                        access_from_json(&operation["security"])
                    );
                }
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        found.push(target);
                    }
                    map.values().for_each(|inner| references(inner, found));
                }
                Value::Array(items) => items.iter().for_each(|inner| references(inner, found)),
                _ => {}
            }
        }
        let document = parsed(document());
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').expect("local reference");
            assert!(
                document.pointer(pointer).is_some(),
                "{target} does not resolve"
            );
        }
    }

    #[test]
    fn every_security_requirement_names_the_published_scheme() {
        let document = parsed(document());
        for item in document["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("item").values() {
                for requirement in operation["security"].as_array().into_iter().flatten() {
                    for scheme in requirement.as_object().expect("requirement").keys() {
                        assert!(
                            document["components"]["securitySchemes"]
                                .get(scheme)
                                .is_some(),
                            "{scheme}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_gateway_answers_are_documented_where_it_gives_them() {
        let document = parsed(document());
        let login = &document["paths"]["/api/auth/login"]["post"]["responses"];
        for status in ["400", "413", "502", "504"] {
            assert!(login.get(status).is_some(), "{status}");
        }
        assert!(login.get("403").is_none());
        let stock = &document["paths"]["/api/admin/inventory/{sku}"]["put"]["responses"];
        for status in ["401", "403"] {
            assert!(stock.get(status).is_some(), "{status}");
        }
    }

    #[test]
    fn two_services_may_not_declare_one_path_or_one_schema_differently() {
        let one = json!({"paths": {"/x": {"get": {"responses": {}}}}, "components": {"schemas": {"A": {"type": "string"}}}});
        let other = json!({"paths": {"/x": {"post": {"responses": {}}}}, "components": {"schemas": {"A": {"type": "integer"}}}});
        let documents = [(Service::Auth, one.clone()), (Service::Order, other)];
        assert!(endpoints_of(&documents).is_err());
        assert!(merge(&documents).is_err());
        let same = [
            (Service::Auth, one.clone()),
            (
                Service::Order,
                json!({"paths": {}, "components": {"schemas": {"A": {"type": "string"}}}}),
            ),
        ];
        assert!(merge(&same).is_ok());
    }

    #[test]
    fn literal_segments_come_before_parameters() {
        let mut templates = ["/api/x/{id}", "/api/x/new", "/api/{any}/new"];
        templates.sort_by_key(|template| specificity(template));
        assert_eq!(templates, ["/api/x/new", "/api/x/{id}", "/api/{any}/new"]);
    }
}
