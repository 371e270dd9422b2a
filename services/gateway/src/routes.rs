//! The public route table: which service owns a public path, under which path it knows it, and
//! who may call it. Pure, so every mapping is unit-tested.

use actix_web::http::Method;

/// The services the gateway forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Auth,
    Product,
    Order,
    Inventory,
    Notification,
    Shipping,
}

impl Service {
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
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Any valid access token.
    User,
    /// A valid access token with the `admin` role.
    Admin,
}

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
    /// The route exists, for these methods only.
    MethodNotAllowed(&'static str),
}

/// Auth routes anyone may call.
const PUBLIC_AUTH: [&str; 3] = ["register", "login", "refresh"];

/// Where `path` (as received, percent-encoded) goes.
pub fn resolve(method: &Method, path: &str) -> Result<Route, RouteError> {
    if !is_clean(path) {
        return Err(RouteError::BadPath);
    }
    if path == "/.well-known/jwks.json" {
        if *method != Method::GET {
            return Err(RouteError::MethodNotAllowed("GET"));
        }
        return Ok(upstream(Access::Public, Service::Auth, path));
    }
    let rest = path.strip_prefix("/api/").ok_or(RouteError::NotFound)?;
    let (area, _) = rest.split_once('/').unwrap_or((rest, ""));
    let read_only = method == Method::GET || method == Method::HEAD;
    let service_path = &path["/api".len()..];
    let route = match area {
        "auth" => {
            let endpoint = rest.strip_prefix("auth/").ok_or(RouteError::NotFound)?;
            let access = if PUBLIC_AUTH.contains(&endpoint) {
                Access::Public
            } else {
                Access::User
            };
            upstream(access, Service::Auth, service_path)
        }
        "products" => upstream(
            if read_only {
                Access::Public
            } else {
                Access::User
            },
            Service::Product,
            service_path,
        ),
        "cart" => upstream(Access::User, Service::Order, service_path),
        "orders" => Route {
            access: Access::User,
            target: Target::Upstream {
                service: Service::Order,
                path: service_path.to_owned(),
                streaming: read_only && is_order_event_stream(rest),
            },
        },
        "notifications" => upstream(Access::User, Service::Notification, service_path),
        "admin" => {
            let inner = rest.strip_prefix("admin/").unwrap_or("");
            let (section, _) = inner.split_once('/').unwrap_or((inner, ""));
            let service = match section {
                "products" => Some(Service::Product),
                "inventory" => Some(Service::Inventory),
                "shipments" => Some(Service::Shipping),
                _ => None,
            };
            match service {
                Some(service) => upstream(Access::Admin, service, service_path),
                None => Route {
                    access: Access::Admin,
                    target: Target::Nothing,
                },
            }
        }
        _ => return Err(RouteError::NotFound),
    };
    Ok(route)
}

fn upstream(access: Access, service: Service, path: &str) -> Route {
    Route {
        access,
        target: Target::Upstream {
            service,
            path: path.to_owned(),
            streaming: false,
        },
    }
}

/// `orders/{id}/events`
fn is_order_event_stream(rest: &str) -> bool {
    let segments: Vec<&str> = rest.split('/').collect();
    matches!(segments.as_slice(), ["orders", id, "events"] if !id.is_empty())
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

    #[test]
    fn auth_routes_map_to_the_auth_service_and_only_three_are_public() {
        for endpoint in ["register", "login", "refresh"] {
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
        assert_eq!(target(Method::POST, "/api/auth/logout").0, Access::User);
        assert_eq!(
            target(Method::POST, "/api/auth/login/extra").0,
            Access::User
        );
        assert_eq!(
            resolve(&Method::GET, "/api/auth"),
            Err(RouteError::NotFound)
        );
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
            Err(RouteError::MethodNotAllowed("GET"))
        );
    }

    #[test]
    fn browsing_products_is_public_and_writing_is_not() {
        assert_eq!(
            target(Method::GET, "/api/products"),
            (Access::Public, Service::Product, "/products".into(), false)
        );
        assert_eq!(target(Method::GET, "/api/products/abc").2, "/products/abc");
        assert_eq!(target(Method::HEAD, "/api/products").0, Access::Public);
        assert_eq!(target(Method::POST, "/api/products").0, Access::User);
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
    }

    #[test]
    fn only_the_order_event_stream_streams() {
        assert!(target(Method::GET, "/api/orders/42/events").3);
        assert!(!target(Method::GET, "/api/orders/42").3);
        assert!(!target(Method::GET, "/api/orders/42/events/x").3);
        assert!(!target(Method::POST, "/api/orders/42/events").3);
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
}
