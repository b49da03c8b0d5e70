//! The admin listener: key operations behind a bearer credential. Without a
//! configured credential the key operations return 404.

pub mod auth;
pub mod credential;
mod keys;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, ResponseError, web};

use crate::error::ApiError;
use crate::state::AppState;

/// Largest admin request body, in bytes.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Registers the admin routes. `main` and the tests use this same table.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .service(
            web::resource("/admin/v1/keys")
                .route(web::get().to(keys::list))
                .route(web::post().to(keys::create))
                .default_service(web::to(|req: HttpRequest| not_allowed(req, "GET, POST"))),
        )
        .service(
            web::resource("/admin/v1/keys/{kid}")
                .route(web::get().to(keys::get))
                .default_service(web::to(|req: HttpRequest| not_allowed(req, "GET"))),
        )
        .service(post_only("/admin/v1/keys/{kid}/activate", keys::activate))
        .service(post_only("/admin/v1/keys/{kid}/retire", keys::retire))
        .service(post_only("/admin/v1/rotate", keys::rotate))
        .service(post_only("/admin/v1/prune", keys::prune));
}

fn post_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|req: HttpRequest| not_allowed(req, "POST")))
}

/// Builds the admin application. `main` and the tests use this same table.
pub fn admin_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    crate::app::app_with_routes(state, |cfg| {
        // /metrics stays outside the credential check of the key operations.
        crate::ops::admin_routes(cfg);
        admin_routes(cfg);
    })
}

/// Returns a 405, or a 404 when key operations are disabled, so that an admin
/// listener without a credential does not reveal its routes.
async fn not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    let enabled = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.admin_credential.is_some());
    if enabled {
        ApiError::method_not_allowed(allow).error_response()
    } else {
        ApiError::for_status(StatusCode::NOT_FOUND, req.path()).error_response()
    }
}
