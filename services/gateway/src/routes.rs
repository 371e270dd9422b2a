//! The public route table: which service owns a public path, under which path it knows it, and
//! who may call it. Every entry comes from the services' own documents ([`crate::api`]); this
//! module only matches a request against them. Pure, so every mapping is unit-tested.

use actix_web::http::Method;
pub use platform::openapi::Access;

pub use crate::api::Service;
use crate::api::{self, Endpoint};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Upstream {
        service: Service,
        /// The path at the service, still percent-encoded as received.
        path: String,
        /// An event stream: no deadline on the body, which lasts as long as the client listens.
        streaming: bool,
    },
    /// Inside a protected area, but nothing is there; answered 404 after the access check, so
    /// a customer probing `/api/admin/*` always sees 403.
    Nothing,
    /// A declared path, but not for this method: 405 with `Allow` (the declared methods), after
    /// the access check the path's most open operation needs.
    WrongMethod { allow: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub access: Access,
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// Dot segments and the like, which could climb out of a service's public prefix once the
    /// upstream normalises the path.
    BadPath,
}

/// Everything under it needs the admin role, declared or not (a test checks the declarations
/// agree).
pub const ADMIN_AREA: &str = "/api/admin";

/// Where `path` (as received, percent-encoded) goes.
pub fn resolve(method: &Method, path: &str) -> Result<Route, RouteError> {
    resolve_in(api::endpoints(), method, path)
}

fn resolve_in(
    endpoints: &'static [Endpoint],
    method: &Method,
    path: &str,
) -> Result<Route, RouteError> {
    if !is_clean(path) {
        return Err(RouteError::BadPath);
    }
    let Some(endpoint) = endpoints
        .iter()
        .find(|endpoint| matches(&endpoint.public_path, path))
    else {
        if path == ADMIN_AREA || path.starts_with(&format!("{ADMIN_AREA}/")) {
            return Ok(Route {
                access: Access::Admin,
                target: Target::Nothing,
            });
        }
        return Err(RouteError::NotFound);
    };
    let Some(operation) = endpoint.operation(method) else {
        return Ok(Route {
            access: endpoint.least_access(),
            target: Target::WrongMethod {
                allow: &endpoint.allow,
            },
        });
    };
    // The public path is the service's, moved under a prefix (or not moved at all).
    let prefix = endpoint.public_path.len() - endpoint.service_path.len();
    Ok(Route {
        access: operation.access,
        target: Target::Upstream {
            service: endpoint.service,
            path: path[prefix..].to_owned(),
            streaming: operation.streaming,
        },
    })
}

/// Whether `path` fits `template`: literal segments equal, each `{parameter}` one non-empty
/// segment.
fn matches(template: &str, path: &str) -> bool {
    let mut segments = path.split('/');
    template.split('/').all(|expected| match segments.next() {
        Some(segment) if expected.starts_with('{') => !segment.is_empty(),
        Some(segment) => segment == expected,
        None => false,
    }) && segments.next().is_none()
}

/// Whether a query string may be forwarded: no NUL characters, which no service accepts and
/// PostgreSQL refuses in text.
pub fn is_clean_query(query: &str) -> bool {
    !query.to_ascii_lowercase().contains("%00") && !query.contains('\0')
}

/// No `.` or `..` segments (also percent-encoded), no backslashes, no encoded slashes, no
/// control characters.
fn is_clean(path: &str) -> bool {
    if !path.starts_with('/') || path.chars().any(|c| c == '\\' || c.is_control()) {
        return false;
    }
    let lowered = path.to_ascii_lowercase();
    if lowered.contains("%2f") || lowered.contains("%5c") || lowered.contains("%00") {
        return false;
    }
    lowered.split('/').all(|segment| {
        let decoded = segment.replace("%2e", ".");
        decoded != "." && decoded != ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, path: &str) -> (Access, Service, String, bool) {
        match resolve(&method, path).unwrap_or_else(|error| panic!("{path}: {error:?}")) {
            Route {
                access,
                target:
                    Target::Upstream {
                        service,
                        path,
                        streaming,
                    },
            } => (access, service, path, streaming),
            other => panic!("{path}: {other:?}"),
        }
    }

    /// A request path for a template, each parameter filled in.
    fn concrete(template: &str) -> String {
        template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "X-1"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_declared_operation_resolves_to_its_service() {
        assert!(!api::endpoints().is_empty());
        for endpoint in api::endpoints() {
            for operation in &endpoint.operations {
                let path = concrete(&endpoint.public_path);
                assert_eq!(
                    target(operation.method.clone(), &path),
                    (
                        operation.access,
                        endpoint.service,
                        concrete(&endpoint.service_path),
                        operation.streaming
                    ),
                    "{} {path}",
                    operation.method
                );
            }
        }
    }

    #[test]
    fn undeclared_methods_of_a_declared_path_are_refused_with_the_declared_ones() {
        for endpoint in api::endpoints() {
            let path = concrete(&endpoint.public_path);
            for method in [Method::TRACE, Method::HEAD, Method::OPTIONS, Method::PATCH] {
                if endpoint.operation(&method).is_some() {
                    continue;
                }
                assert_eq!(
                    resolve(&method, &path),
                    Ok(Route {
                        access: endpoint.least_access(),
                        target: Target::WrongMethod {
                            allow: &endpoint.allow
                        },
                    }),
                    "{method} {path}"
                );
            }
            let declared: Vec<&str> = endpoint.allow.split(", ").collect();
            let methods: Vec<&str> = endpoint
                .operations
                .iter()
                .map(|operation| operation.method.as_str())
                .collect();
            assert_eq!(declared, methods);
        }
    }

    #[test]
    fn the_admin_area_is_exactly_the_admin_operations() {
        for endpoint in api::endpoints() {
            let in_area = endpoint.public_path.starts_with(&format!("{ADMIN_AREA}/"));
            for operation in &endpoint.operations {
                assert_eq!(
                    in_area,
                    operation.access == Access::Admin,
                    "{} {}",
                    operation.method,
                    endpoint.public_path
                );
            }
        }
    }

    #[test]
    fn auth_routes_map_to_the_auth_service_and_only_four_are_public() {
        // Logout is public: the refresh token it ends is the credential, so a client whose
        // access token expired can still log out.
        for endpoint in ["register", "login", "refresh", "logout"] {
            let (access, service, path, _) = target(Method::POST, &format!("/api/auth/{endpoint}"));
            assert_eq!(
                (access, service, path.as_str()),
                (
                    Access::Public,
                    Service::Auth,
                    format!("/auth/{endpoint}").as_str()
                )
            );
        }
        assert_eq!(target(Method::GET, "/api/auth/me").0, Access::User);
        assert_eq!(
            target(Method::POST, "/api/auth/logout-everywhere").0,
            Access::User
        );
        for nowhere in ["/api/auth", "/api/auth/login/extra"] {
            assert_eq!(resolve(&Method::POST, nowhere), Err(RouteError::NotFound));
        }
    }

    #[test]
    fn the_jwks_is_public_read_only_and_served_by_auth() {
        let (access, service, path, _) = target(Method::GET, "/.well-known/jwks.json");
        assert_eq!(
            (access, service, path.as_str()),
            (Access::Public, Service::Auth, "/.well-known/jwks.json")
        );
        assert_eq!(
            resolve(&Method::POST, "/.well-known/jwks.json"),
            Ok(Route {
                access: Access::Public,
                target: Target::WrongMethod { allow: "GET" }
            })
        );
    }

    #[test]
    fn browsing_products_is_public_and_writing_is_not_declared() {
        assert_eq!(
            target(Method::GET, "/api/products"),
            (Access::Public, Service::Product, "/products".into(), false)
        );
        assert_eq!(target(Method::GET, "/api/products/abc").2, "/products/abc");
        assert_eq!(
            resolve(&Method::POST, "/api/products"),
            Ok(Route {
                access: Access::Public,
                target: Target::WrongMethod { allow: "GET" }
            })
        );
        assert_eq!(
            resolve(&Method::GET, "/api/productsx"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn cart_and_orders_need_a_user_and_go_to_the_order_service() {
        assert_eq!(
            target(Method::PUT, "/api/cart/items/TEE-M"),
            (
                Access::User,
                Service::Order,
                "/cart/items/TEE-M".into(),
                false
            )
        );
        assert_eq!(
            target(Method::POST, "/api/orders"),
            (Access::User, Service::Order, "/orders".into(), false)
        );
        assert_eq!(
            target(Method::GET, "/api/notifications"),
            (
                Access::User,
                Service::Notification,
                "/notifications".into(),
                false
            )
        );
        // Which methods a user's path takes is for users only.
        assert_eq!(
            resolve(&Method::TRACE, "/api/cart").map(|route| route.access),
            Ok(Access::User)
        );
    }

    #[test]
    fn only_the_order_event_stream_streams() {
        assert!(target(Method::GET, "/api/orders/42/events").3);
        assert!(!target(Method::GET, "/api/orders/42").3);
        assert_eq!(
            resolve(&Method::GET, "/api/orders/42/events/x"),
            Err(RouteError::NotFound)
        );
        assert!(matches!(
            resolve(&Method::POST, "/api/orders/42/events").map(|route| route.target),
            Ok(Target::WrongMethod { .. })
        ));
    }

    #[test]
    fn admin_routes_need_the_admin_role_and_map_by_section() {
        assert_eq!(
            target(Method::POST, "/api/admin/products"),
            (
                Access::Admin,
                Service::Product,
                "/admin/products".into(),
                false
            )
        );
        assert_eq!(
            target(Method::PUT, "/api/admin/inventory/TEE-M").1,
            Service::Inventory
        );
        assert_eq!(
            target(Method::GET, "/api/admin/shipments").1,
            Service::Shipping
        );
        for nowhere in [
            "/api/admin",
            "/api/admin/",
            "/api/admin/users",
            "/api/admin/productsx",
            "/api/admin/products/1/2/3",
        ] {
            assert_eq!(
                resolve(&Method::GET, nowhere),
                Ok(Route {
                    access: Access::Admin,
                    target: Target::Nothing
                }),
                "{nowhere}"
            );
        }
        // A wrong method on an admin path also needs the role before it is told so.
        assert_eq!(
            resolve(&Method::DELETE, "/api/admin/products").map(|route| route.access),
            Ok(Access::Admin)
        );
    }

    #[test]
    fn unknown_areas_are_not_found() {
        for path in [
            "/",
            "/api",
            "/api/",
            "/api/payments",
            "/healthz",
            "/apix/products",
            "/api/products/",
            "/api/cart/items/",
        ] {
            assert_eq!(
                resolve(&Method::GET, path),
                Err(RouteError::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_that_could_climb_out_are_refused() {
        for path in [
            "/api/cart/../admin/products",
            "/api/cart/%2e%2e/admin/products",
            "/api/cart/%2E%2e/admin",
            "/api/products/.",
            "/api/products/%2E",
            "/api/cart/items%2f..%2fadmin",
            "/api/cart\\..\\admin",
            "/api/cart/%00",
        ] {
            assert_eq!(
                resolve(&Method::GET, path),
                Err(RouteError::BadPath),
                "{path}"
            );
        }
        assert!(is_clean_query("q=shirt&cursor=abc"));
        assert!(!is_clean_query("q=a%00b"));
        assert!(!is_clean_query("q=%00"));
        // Dots inside a segment are fine.
        assert!(resolve(&Method::GET, "/api/products/a..b").is_ok());
    }

    #[test]
    fn templates_match_whole_segments() {
        assert!(matches("/api/orders/{id}", "/api/orders/42"));
        assert!(!matches("/api/orders/{id}", "/api/orders/"));
        assert!(!matches("/api/orders/{id}", "/api/orders/42/cancel"));
        assert!(!matches("/api/orders/{id}/cancel", "/api/orders/42"));
        assert!(matches("/.well-known/jwks.json", "/.well-known/jwks.json"));
    }
}
