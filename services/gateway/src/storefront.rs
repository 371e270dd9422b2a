//! The storefront: the page at `/` and its files at `/assets/{name}`, all compiled into the
//! gateway from `services/gateway/static` (plain ES modules and CSS; nothing is built or
//! fetched at run time).
//!
//! Every answer carries a strong `ETag` (a hash of the file) and `Cache-Control: no-cache`, so
//! browsers revalidate and get `304 Not Modified` until a new gateway serves new files. The
//! page is locked down with a Content-Security-Policy that allows only its own origin.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use platform::http::ApiError;

/// One file of the storefront.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// FNV-1a of the body, the entity tag.
    pub hash: u64,
}

/// FNV-1a (64 bit): a fingerprint for entity tags, computed at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../static/", $name)),
            hash: fnv1a(include_bytes!(concat!("../static/", $name))),
        }
    };
}

/// The page itself, served at `/`.
pub const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// What `/assets/{name}` serves.
pub const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("format.js", "text/javascript; charset=utf-8"),
    asset!("sse.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Scripts, styles, images and API calls from this origin only; no framing, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// `GET /`
pub async fn index(request: HttpRequest) -> HttpResponse {
    serve(&request, &INDEX)
}

/// `GET /assets/{name}`
pub async fn asset(
    request: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    find(&name)
        .map(|asset| serve(&request, asset))
        .ok_or_else(|| ApiError::not_found("no such file"))
}

fn etag_of(asset: &Asset) -> String {
    format!("\"{:016x}\"", asset.hash)
}

/// Whether an `If-None-Match` header names this entity tag (weak comparison, as RFC 9110
/// asks for this header).
fn matches(request: &HttpRequest, etag: &str) -> bool {
    request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

fn serve(request: &HttpRequest, asset: &Asset) -> HttpResponse {
    let etag = etag_of(asset);
    let unchanged = matches(request, &etag);
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if asset.content_type.starts_with("text/html") {
        response
            .insert_header((
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ))
            .insert_header((header::REFERRER_POLICY, "same-origin"))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    }
    if unchanged {
        return response.finish();
    }
    response.content_type(asset.content_type).body(asset.body)
}

#[cfg(test)]
mod tests {
    use actix_web::App;
    use actix_web::http::StatusCode;
    use actix_web::test as http;

    use super::*;

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).expect("utf-8")
    }

    /// `href="/assets/x"`, `src="/assets/x"` and `from "./x.js"` references.
    fn references(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for marker in ["\"/assets/", "from \"./"] {
            let mut rest = source;
            while let Some(start) = rest.find(marker) {
                rest = &rest[start + marker.len()..];
                let end = rest.find('"').expect("closing quote");
                found.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
        found
    }

    #[test]
    fn every_file_the_page_and_its_modules_load_is_served() {
        let mut checked = 0;
        for source in std::iter::once(&INDEX).chain(ASSETS) {
            if !source.content_type.starts_with("text/") {
                continue;
            }
            for name in references(text(source)) {
                assert!(
                    find(&name).is_some(),
                    "{} loads {name}, which is not served",
                    source.name
                );
                checked += 1;
            }
        }
        assert!(checked >= 5, "only {checked} references found");
        assert!(text(&INDEX).contains("<title>Bazaar</title>"));
    }

    #[test]
    fn every_static_file_is_served_and_nothing_else() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        let mut on_disk: Vec<String> = std::fs::read_dir(folder)
            .expect("static folder")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|asset| asset.name.to_owned())
            .collect();
        served.sort();
        assert_eq!(on_disk, served);
    }

    #[actix_web::test]
    async fn files_have_their_types_entity_tags_and_revalidate() {
        let app = http::init_service(
            App::new()
                .route("/", web::get().to(index))
                .route("/assets/{name}", web::get().to(asset)),
        )
        .await;

        let page = http::call_service(&app, http::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(page.status(), StatusCode::OK);
        let header = |response: &actix_web::dev::ServiceResponse, name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header(&page, header::CONTENT_TYPE).as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert!(
            header(&page, header::CONTENT_SECURITY_POLICY)
                .is_some_and(|policy| policy.contains("default-src 'self'"))
        );
        assert_eq!(
            header(&page, header::CACHE_CONTROL).as_deref(),
            Some("no-cache")
        );
        let etag = header(&page, header::ETAG).expect("etag");

        let again = http::call_service(
            &app,
            http::TestRequest::get()
                .uri("/")
                .insert_header((header::IF_NONE_MATCH, format!("\"other\", {etag}")))
                .to_request(),
        )
        .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, header::ETAG), Some(etag.clone()));
        assert!(http::read_body(again).await.is_empty());

        let script = http::call_service(
            &app,
            http::TestRequest::get().uri("/assets/app.js").to_request(),
        )
        .await;
        assert_eq!(script.status(), StatusCode::OK);
        assert_eq!(
            header(&script, header::CONTENT_TYPE).as_deref(),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            header(&script, header::X_CONTENT_TYPE_OPTIONS).as_deref(),
            Some("nosniff")
        );
        assert_ne!(header(&script, header::ETAG), Some(etag));
        assert!(!http::read_body(script).await.is_empty());

        for missing in ["/assets/nope.js", "/assets/index.html"] {
            let response =
                http::call_service(&app, http::TestRequest::get().uri(missing).to_request()).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        }
    }
}
