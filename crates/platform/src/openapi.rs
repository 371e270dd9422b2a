//! Each service's OpenAPI document, made from its handlers.
//!
//! A service declares each route once: on the handler, as an actix route attribute (method and
//! path) under a `#[utoipa::path]` attribute (what it takes, what it answers, who may call it).
//! [`register`] serves those handlers, [`document`] collects their descriptions from the very
//! same list. The gateway never sees the service crates: it reads the committed copies in
//! `services/gateway/api/<service>.json`, which [`assert_committed`] keeps current (a test in
//! each service fails when its copy is stale; `BAZAAR_WRITE_OPENAPI=1` rewrites it).

use std::path::PathBuf;

use actix_web::{App, web};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa_actix_web::AppExt;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::http::method_not_allowed;

/// Who may call an operation, as written in `security(...)` of `#[utoipa::path]`. The gateway
/// reads the same: no requirement is public, `bearer` with no role is any user, `bearer` with
/// the role `admin` is an administrator.
pub const BEARER: &str = "bearer";
pub const ADMIN_ROLE: &str = "admin";

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Public,
    /// Any valid access token.
    User,
    /// A valid access token with the `admin` role.
    Admin,
}

/// Reads an operation's `security`: none is public, [`BEARER`] without roles any user, with the
/// role [`ADMIN_ROLE`] an administrator. Anything else is refused, so that no requirement is
/// silently read as public.
pub fn access_of(operation: &utoipa::openapi::path::Operation) -> Result<Access, String> {
    let value = serde_json::to_value(&operation.security).map_err(|error| error.to_string())?;
    access_from_json(&value)
}

/// [`access_of`] for an operation's `security` as JSON (the gateway reads the documents as JSON).
pub fn access_from_json(security: &serde_json::Value) -> Result<Access, String> {
    let requirements = match security {
        serde_json::Value::Null => return Ok(Access::Public),
        serde_json::Value::Array(requirements) => requirements,
        other => return Err(format!("security is not a list: {other}")),
    };
    match requirements.as_slice() {
        [] => Ok(Access::Public),
        [requirement] => {
            let roles = requirement
                .as_object()
                .filter(|schemes| schemes.len() == 1)
                .and_then(|schemes| schemes.get(BEARER))
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| format!("unknown security requirement {requirement}"))?;
            match roles.as_slice() {
                [] => Ok(Access::User),
                [role] if role == ADMIN_ROLE => Ok(Access::Admin),
                _ => Err(format!("unknown roles {roles:?}")),
            }
        }
        _ => Err(format!("more than one security requirement: {security}")),
    }
}

/// The handlers of one service, registered and described by the same calls.
pub type Handlers = fn(&mut ServiceConfig<'_>);

/// Serves `handlers`. A documented path asked with a method it does not take answers 405 with
/// `Allow` in the shared error shape (actix would answer 404).
pub fn register(config: &mut web::ServiceConfig, handlers: Handlers) {
    handlers(&mut ServiceConfig::new(config));
    let document = collect(handlers);
    for (path, item) in &document.paths.paths {
        let allow = methods_of(item).join(", ");
        config.service(
            web::resource(path.as_str()).default_service(web::to(move || {
                let allow = allow.clone();
                async move { method_not_allowed(&allow) }
            })),
        );
    }
}

/// The service's document: `base` (title, tags) with every path and schema of `handlers`, and the
/// answers [`crate::http`] gives on its own (a JSON body it cannot read, a bad query string).
pub fn document(base: OpenApi, handlers: Handlers) -> OpenApi {
    let mut document = base;
    let collected = collect(handlers);
    document.paths = collected.paths;
    let schemas = collected
        .components
        .map(|components| components.schemas)
        .unwrap_or_default();
    document
        .components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    add_common_answers(&mut document);
    document
}

fn collect(handlers: Handlers) -> OpenApi {
    let (_, document) = App::new()
        .into_utoipa_app()
        .configure(handlers)
        .split_for_parts();
    document
}

/// The methods a path item declares, upper case, in a fixed order.
pub fn methods_of(item: &utoipa::openapi::PathItem) -> Vec<&'static str> {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
        ("HEAD", &item.head),
        ("PATCH", &item.patch),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter(|(_, operation)| operation.is_some())
    .map(|(method, _)| method)
    .collect()
}

/// What [`crate::http::json_config`] and [`crate::http::query_config`] answer for any operation:
/// 415 and 422 for a body that is not JSON of the right shape, 400 for a query string that does
/// not parse.
fn add_common_answers(document: &mut OpenApi) {
    for item in document.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let mut common = Vec::new();
            if operation.request_body.is_some() {
                common.push(("415", "The body is not `application/json`"));
                common.push(("422", "The body is not valid for this operation"));
            }
            let has_query = operation.parameters.iter().flatten().any(|parameter| {
                matches!(
                    parameter,
                    RefOr::T(parameter)
                        if matches!(parameter.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                )
            });
            if has_query {
                common.push(("400", "The query string does not parse"));
            }
            // The `AuthenticatedUser` and `AdminUser` extractors of `auth-kit`.
            match access_of(operation) {
                Ok(Access::User) => common.push(("401", "No valid access token")),
                Ok(Access::Admin) => {
                    common.push(("401", "No valid access token"));
                    common.push(("403", "Not an admin"));
                }
                Ok(Access::Public) | Err(_) => {}
            }
            for (status, description) in common {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error_answer(description));
            }
        }
    }
}

/// An answer in the shared error shape.
pub fn error_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
        .into()
}

/// Where the gateway reads `service`'s document from.
pub fn committed_path(service: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../services/gateway/api")
        .join(format!("{service}.json"))
}

/// Fails unless the committed copy of `service`'s document is `document`, so a changed handler
/// cannot leave the gateway routing by a stale one. With `BAZAAR_WRITE_OPENAPI=1` it writes the
/// copy instead.
pub fn assert_committed(service: &str, document: &OpenApi) {
    let path = committed_path(service);
    let mut rendered = document
        .to_pretty_json()
        .expect("the document renders as JSON");
    rendered.push('\n');
    if std::env::var_os("BAZAAR_WRITE_OPENAPI").is_some_and(|value| value == "1") {
        std::fs::write(&path, &rendered)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is not the {service} service's current document; regenerate it with \
         `BAZAAR_WRITE_OPENAPI=1 cargo test -p {service}-service openapi` and commit it",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::http::header;
    use serde_json::json;

    use super::*;

    #[test]
    fn security_requirements_read_as_access_levels() {
        assert_eq!(access_from_json(&json!(null)), Ok(Access::Public));
        assert_eq!(access_from_json(&json!([])), Ok(Access::Public));
        assert_eq!(access_from_json(&json!([{"bearer": []}])), Ok(Access::User));
        assert_eq!(
            access_from_json(&json!([{"bearer": ["admin"]}])),
            Ok(Access::Admin)
        );
        for unknown in [
            json!([{"apiKey": []}]),
            json!([{"bearer": ["root"]}]),
            json!([{"bearer": []}, {}]),
            json!({"bearer": []}),
        ] {
            assert!(access_from_json(&unknown).is_err(), "{unknown}");
        }
        assert!(Access::Public < Access::User && Access::User < Access::Admin);
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let response = method_not_allowed("GET, POST");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response
                .headers()
                .get(header::ALLOW)
                .and_then(|value| value.to_str().ok()),
            Some("GET, POST")
        );
    }
}
