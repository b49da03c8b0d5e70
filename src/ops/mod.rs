//! Operating the service: health and readiness probes, Prometheus metrics
//! and the OpenAPI document, with the routes that serve them.

pub mod exporter;
pub mod metrics;
pub mod probes;

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, Resource, ResponseError, guard, web};

use crate::error::ApiError;

/// The OpenAPI 3.1 document of both listeners, compiled into the binary.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/openapi.json");

/// Path of the OpenAPI document on both listeners.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Registers `/healthz`, `/readyz` and the OpenAPI document on the public
/// listener.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get_or_head("/healthz", probes::healthz))
        .service(get_or_head("/readyz", probes::readyz))
        .service(get_or_head(OPENAPI_PATH, openapi));
}

/// Registers `/metrics` and the OpenAPI document on the admin listener.
/// Neither needs the admin credential.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get_or_head("/metrics", exporter::metrics))
        .service(get_or_head(OPENAPI_PATH, openapi));
}

/// Builds a resource that serves GET and HEAD with `handler` and rejects
/// other methods with 405 and `Allow: GET, HEAD`.
pub(crate) fn get_or_head<F, Args>(path: &str, handler: F) -> Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(
            web::route()
                // One test of the method, because `guard::Any` of two
                // method guards makes a boxed call per guard per request.
                .guard(guard::fn_guard(|ctx| {
                    let method = &ctx.head().method;
                    method == Method::GET || method == Method::HEAD
                }))
                .to(handler),
        )
        .default_service(web::to(method_not_allowed))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(OPENAPI_JSON)
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::method_not_allowed("GET, HEAD").error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_parses() {
        let document: serde_json::Value =
            serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");

        assert_eq!(document["openapi"], "3.1.0");
        for path in ["/healthz", "/readyz", "/metrics", OPENAPI_PATH] {
            assert!(document["paths"].get(path).is_some(), "{path} documented");
        }
    }
}
