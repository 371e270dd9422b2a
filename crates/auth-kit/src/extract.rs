//! actix extractors: a handler that takes [`AuthenticatedUser`] or [`AdminUser`] only runs for a
//! request with a valid access token (and, for admins, the `admin` role).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use platform::http::ApiError;
use uuid::Uuid;

use crate::roles;
use crate::verifier::{Claims, JwtVerifier, VerifyError};

/// The caller, as its verified access token names it. Handlers take the user id from here,
/// never from the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub user_id: Uuid,
    pub email: String,
    pub roles: Vec<String>,
}

impl AuthenticatedUser {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(roles::ADMIN)
    }
}

impl TryFrom<Claims> for AuthenticatedUser {
    type Error = VerifyError;

    fn try_from(claims: Claims) -> Result<Self, Self::Error> {
        Ok(Self {
            user_id: claims.user_id()?,
            email: claims.email,
            roles: claims.roles,
        })
    }
}

/// An authenticated caller holding the `admin` role; anyone else gets 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser(pub AuthenticatedUser);

/// A refused request: 401 (with `WWW-Authenticate: Bearer`), 403, or 503 when the verifier
/// cannot get keys. The body is the platform's error shape.
#[derive(Debug)]
pub struct AuthError(pub ApiError);

impl AuthError {
    pub fn missing_token() -> Self {
        Self(ApiError::unauthorized("a bearer token is required"))
    }

    pub fn forbidden() -> Self {
        Self(ApiError::forbidden("this needs the admin role"))
    }
}

impl From<VerifyError> for AuthError {
    fn from(error: VerifyError) -> Self {
        tracing::debug!(%error, "access token refused");
        Self(match error {
            VerifyError::Expired => ApiError::unauthorized("the access token has expired"),
            VerifyError::KeysUnavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "access tokens cannot be checked right now",
            ),
            // One message for every forgery, so probing learns nothing.
            _ => ApiError::unauthorized("the access token is invalid"),
        })
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AuthError {}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = self.0.error_response();
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bazaar\""),
            );
        }
        response
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

type Extracted<T> = Pin<Box<dyn Future<Output = Result<T, AuthError>>>>;

impl FromRequest for AuthenticatedUser {
    type Error = AuthError;
    type Future = Extracted<Self>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let verifier = request.app_data::<web::Data<JwtVerifier>>().cloned();
        let token = bearer_token(request.headers()).map(str::to_owned);
        Box::pin(async move {
            let Some(verifier) = verifier else {
                return Err(AuthError(ApiError::internal(std::io::Error::other(
                    "no web::Data<JwtVerifier> registered with the app",
                ))));
            };
            let token = token.ok_or_else(AuthError::missing_token)?;
            let claims = verifier.verify(&token).await?;
            Ok(Self::try_from(claims)?)
        })
    }
}

impl FromRequest for AdminUser {
    type Error = AuthError;
    type Future = Extracted<Self>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = AuthenticatedUser::from_request(request, payload);
        Box::pin(async move {
            let user = user.await?;
            if user.is_admin() {
                Ok(Self(user))
            } else {
                Err(AuthError::forbidden())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::App;
    use actix_web::test as actix_test;
    use serde_json::Value;

    use super::*;
    use crate::testing::TestIssuer;

    async fn whoami(user: AuthenticatedUser) -> HttpResponse {
        HttpResponse::Ok().json(serde_json::json!({
            "id": user.user_id, "email": user.email, "roles": user.roles,
        }))
    }

    async fn admin_only(AdminUser(user): AdminUser) -> HttpResponse {
        HttpResponse::Ok().body(user.email)
    }

    macro_rules! app {
        ($issuer:expr) => {
            actix_test::init_service(
                App::new()
                    .app_data(web::Data::new($issuer.verifier()))
                    .route("/me", web::get().to(whoami))
                    .route("/admin", web::get().to(admin_only)),
            )
            .await
        };
    }

    fn get(path: &str, token: Option<&str>) -> actix_test::TestRequest {
        let mut request = actix_test::TestRequest::get().uri(path);
        if let Some(token) = token {
            request = request.insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
        }
        request
    }

    #[actix_web::test]
    async fn a_valid_token_reaches_the_handler() {
        let issuer = TestIssuer::new();
        let app = app!(issuer);
        let id = Uuid::now_v7();
        let token = issuer.token_for(id, "ada@example.com", &["customer"]);
        let response = actix_test::call_service(&app, get("/me", Some(&token)).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = actix_test::read_body_json(response).await;
        assert_eq!(body["id"], id.to_string());
        assert_eq!(body["roles"][0], "customer");
    }

    #[actix_web::test]
    async fn no_or_bad_tokens_answer_401_in_the_shared_shape() {
        let issuer = TestIssuer::new();
        let app = app!(issuer);
        let mut cases = issuer.forged_tokens_for(Uuid::now_v7(), "eve@example.com", &["admin"]);
        cases.push(("no token", String::new()));
        for (what, token) in cases {
            let token = (!token.is_empty()).then_some(token.as_str());
            let response = actix_test::call_service(&app, get("/me", token).to_request()).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
            assert!(
                response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .is_some_and(|value| value.as_bytes().starts_with(b"Bearer")),
                "{what}"
            );
            let body: Value = actix_test::read_body_json(response).await;
            assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
        }
    }

    #[actix_web::test]
    async fn a_customer_is_forbidden_from_admin_routes_and_an_admin_is_not() {
        let issuer = TestIssuer::new();
        let app = app!(issuer);
        let customer = issuer.token_for(Uuid::now_v7(), "c@example.com", &["customer"]);
        let response =
            actix_test::call_service(&app, get("/admin", Some(&customer)).to_request()).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body: Value = actix_test::read_body_json(response).await;
        assert_eq!(body["error"]["code"], "forbidden");

        let admin = issuer.token_for(Uuid::now_v7(), "a@example.com", &["customer", "admin"]);
        let response =
            actix_test::call_service(&app, get("/admin", Some(&admin)).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_nothing_else_is() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer   abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_token(&headers), expected, "{value:?}");
        }
    }
}
