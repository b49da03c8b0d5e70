//! Operating the service: health and readiness probes and Prometheus
//! metrics, with the routes that serve them.

pub mod exporter;
pub mod metrics;
pub mod probes;

use actix_web::{HttpResponse, Resource, ResponseError, guard, web};

use crate::error::{ApiError, ErrorCode};

/// Registers `/healthz` and `/readyz` on the public listener.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get_or_head("/healthz", probes::healthz))
        .service(get_or_head("/readyz", probes::readyz));
}

/// Registers `/metrics` on the admin listener; it needs no admin credential.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get_or_head("/metrics", exporter::metrics));
}

/// Builds a resource that serves GET and HEAD with `handler` and rejects
/// other methods with 405 and `Allow: GET, HEAD`.
fn get_or_head<F, Args>(path: &str, handler: F) -> Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(
            web::route()
                .guard(guard::Any(guard::Get()).or(guard::Head()))
                .to(handler),
        )
        .default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "Only GET and HEAD are allowed on this path.",
    )
    .error_response()
}
