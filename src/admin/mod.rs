//! The admin listener: key operations behind a bearer credential.

pub mod credential;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, ResponseError, web};

use crate::error::{ApiError, error_model_middleware};
use crate::state::AppState;

/// The admin application. `main` and the tests use this same table.
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
    App::new()
        .app_data(state)
        .wrap(error_model_middleware())
        .configure(crate::ops::admin_routes)
        .default_service(web::to(not_found))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::for_status(StatusCode::NOT_FOUND, req.path()).error_response()
}
