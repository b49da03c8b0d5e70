//! The errorModel body that every non-200 response carries, and the middleware
//! that gives one to responses the framework builds on its own (404, 405,
//! extractor rejections, body-less faults).

use std::borrow::Cow;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// A stable machine-readable error class: HTTP status plus the numeric
/// `errorCode` clients match on. Codes never change meaning once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 500: a fault inside sessiond; details go to the log only.
    Internal,
    /// 404: no route for the path.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 400: the request could not be read.
    BadRequest,
    /// 413: the request body is over the limit.
    PayloadTooLarge,
    /// 415: the request body has the wrong media type.
    UnsupportedMediaType,
    /// 503: no key can sign a new session, or the service is shutting down.
    ServiceUnavailable,
    /// Any other status the framework produced on its own.
    Other(StatusCode),
    /// 401: the admin credential is missing or wrong.
    Unauthorized,
    /// 404: no key with that `kid`.
    KeyNotFound,
    /// 409: a key with that `kid` already exists.
    KeyExists,
    /// 409: the operation would leave no signing key or drop a key whose
    /// tokens may still be valid.
    KeyInUse,
    /// 400: a field of an admin request is invalid.
    InvalidField,
    /// 409: the keys folder is read-only, missing, or contains a file that does
    /// not load, so the operation cannot run.
    KeysFolderUnusable,
}

impl ErrorCode {
    /// Returns the HTTP status sent with this error.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound | Self::KeyNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest | Self::InvalidField => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Other(status) => status,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::KeyExists | Self::KeyInUse | Self::KeysFolderUnusable => StatusCode::CONFLICT,
        }
    }

    /// Returns the numeric `errorCode` string. 1xxxx: HTTP and service level;
    /// 2xxxx: admin API. `Other` carries the HTTP status in its last digits.
    pub fn code(self) -> Cow<'static, str> {
        let code = match self {
            Self::Internal => "10000",
            Self::NotFound => "10001",
            Self::MethodNotAllowed => "10002",
            Self::BadRequest => "10003",
            Self::PayloadTooLarge => "10004",
            Self::UnsupportedMediaType => "10005",
            Self::ServiceUnavailable => "10006",
            Self::Other(status) => return Cow::Owned(format!("19{}", status.as_u16())),
            Self::Unauthorized => "20001",
            Self::KeyNotFound => "20002",
            Self::KeyExists => "20003",
            Self::KeyInUse => "20004",
            Self::InvalidField => "20005",
            Self::KeysFolderUnusable => "20006",
        };
        Cow::Borrowed(code)
    }

    /// Classifies a status produced by the framework.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => Self::Internal,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::BAD_REQUEST => Self::BadRequest,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            other => Self::Other(other),
        }
    }
}

/// An error sent to the client as an errorModel. Its text is written for the
/// client: it never contains library error text, a token or key material.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub dev_message: Option<Cow<'static, str>>,
    pub error_path: Option<String>,
    pub errors: Vec<ApiError>,
    /// Methods for the `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            dev_message: None,
            error_path: None,
            errors: Vec::new(),
            allow: None,
        }
    }

    /// Builds a 405 for a path that accepts only `allow` (for example "GET, HEAD").
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut error = Self::new(
            ErrorCode::MethodNotAllowed,
            format!("This path allows only {allow}."),
        );
        error.allow = Some(allow);
        error
    }

    pub fn with_dev_message(mut self, dev_message: impl Into<Cow<'static, str>>) -> Self {
        self.dev_message = Some(dev_message.into());
        self
    }

    pub fn with_error_path(mut self, path: impl Into<String>) -> Self {
        self.error_path = Some(path.into());
        self
    }

    pub fn with_errors(mut self, errors: Vec<ApiError>) -> Self {
        self.errors = errors;
        self
    }

    /// Builds the default error for a status the framework produced with no body.
    pub fn for_status(status: StatusCode, path: &str) -> Self {
        let code = ErrorCode::from_status(status);
        let message = match code {
            ErrorCode::NotFound => Cow::Owned(format!("No resource at {path}.")),
            ErrorCode::Internal => Cow::Borrowed("The server failed to handle the request."),
            _ => Cow::Borrowed(status.canonical_reason().unwrap_or("Request failed.")),
        };
        Self::new(code, message).with_error_path(path)
    }

    pub fn body(&self) -> ErrorModel<'_> {
        ErrorModel {
            message: &self.message,
            error_code: self.code.code(),
            status: self.code.status().as_u16().to_string(),
            kind: type_uri(self.code.status()),
            dev_message: self.dev_message.as_deref(),
            more_info: None,
            error_path: self.error_path.as_deref(),
            errors: self.errors.iter().map(ApiError::body).collect(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.code())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.code == ErrorCode::Unauthorized {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        let mut response = response.json(self.body());
        response.extensions_mut().insert(HasErrorModel);
        response
    }
}

/// The errorModel JSON object.
#[derive(Debug, Serialize)]
pub struct ErrorModel<'a> {
    pub message: &'a str,
    #[serde(rename = "errorCode")]
    pub error_code: Cow<'static, str>,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "devMessage", skip_serializing_if = "Option::is_none")]
    pub dev_message: Option<&'a str>,
    #[serde(rename = "moreInfo", skip_serializing_if = "Option::is_none")]
    pub more_info: Option<&'a str>,
    #[serde(rename = "o:errorPath", skip_serializing_if = "Option::is_none")]
    pub error_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorModel<'a>>,
}

/// Returns the RFC 9110 section that defines `status`, used as the errorModel `type`.
pub fn type_uri(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.1",
        401 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.2",
        404 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.5",
        405 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.6",
        406 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.7",
        408 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.9",
        409 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.10",
        411 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.12",
        413 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.14",
        414 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.15",
        415 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.16",
        500 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.1",
        503 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.4",
        code if code < 500 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5",
        _ => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6",
    }
}

/// Marks a response whose body is already an errorModel.
#[derive(Debug, Clone, Copy)]
struct HasErrorModel;

/// Middleware that replaces the body of every error response lacking an
/// errorModel (framework 404s, extractor rejections, empty 5xx) with one.
/// A 1xx-3xx response passes through unchanged after one status check.
///
/// NOTE: actix-http 3.20 responds to a request it cannot parse (a bad request
/// line, too many or too large header fields) with an empty 400 or 431
/// before any middleware runs, so those responses carry no errorModel.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorModelMiddleware;

/// Returns the middleware that gives error responses an errorModel.
pub fn error_model_middleware() -> ErrorModelMiddleware {
    ErrorModelMiddleware
}

impl<S, B> Transform<S, ServiceRequest> for ErrorModelMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: Unpin,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = ErrorModelService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ErrorModelService { service }))
    }
}

/// The service [`ErrorModelMiddleware`] wraps around an application.
pub struct ErrorModelService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for ErrorModelService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: Unpin,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = ErrorModelFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        ErrorModelFuture {
            inner: self.service.call(req),
        }
    }
}

/// Future of the wrapped service's response. An error response without an
/// errorModel gets one.
pub struct ErrorModelFuture<F> {
    inner: F,
}

impl<F, B> Future for ErrorModelFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + Unpin,
    B: 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(Pin::new(&mut self.inner).poll(cx))?;
        let status = res.status();
        Poll::Ready(Ok(
            if status.is_client_error() || status.is_server_error() {
                to_error_model(res)
            } else {
                res.map_into_left_body()
            },
        ))
    }
}

fn to_error_model<B: 'static>(res: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> {
    log_client_error(&res);
    if res.response().extensions().get::<HasErrorModel>().is_some() {
        return res.map_into_left_body();
    }

    let status = res.status();
    if status.is_server_error() {
        // The path is left out of the line: a client may put a token in it.
        log::error!(
            "outcome=error status={} reason=server_error_without_body method={}",
            status.as_u16(),
            res.request().method()
        );
    }
    let error = ApiError::for_status(status, res.request().path());
    let (req, old) = res.into_parts();
    let mut new = error.error_response();
    for (name, value) in old.headers() {
        if name == header::ALLOW || name == header::WWW_AUTHENTICATE {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(req, new.map_into_boxed_body()).map_into_right_body()
}

/// Logs the one debug line of a request that ends in a 4xx response. A 5xx
/// response gets an error line from the code that failed.
fn log_client_error<B>(res: &ServiceResponse<B>) {
    let status = res.status();
    if status.is_client_error() {
        log_client_error_status(status, res.request().method());
    }
}

/// Logs the debug line of a request that ends in the 4xx `status`, for
/// responses built outside the errorModel middleware too. The path is left
/// out because a client may put a token in it.
pub(crate) fn log_client_error_status(status: StatusCode, method: &Method) {
    let reason = status
        .canonical_reason()
        .unwrap_or("client_error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    log::debug!(
        "outcome=error status={} reason={reason} method={method}",
        status.as_u16()
    );
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::test::{self, TestRequest};
    use actix_web::{App, HttpResponse, web};
    use serde_json::Value;

    use super::*;

    async fn reply(path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let app = test::init_service(
            App::new()
                .wrap(error_model_middleware())
                .route(
                    "/teapot",
                    web::get().to(|| async { HttpResponse::ImATeapot().finish() }),
                )
                .route(
                    "/moved",
                    web::get().to(|| async {
                        HttpResponse::Found()
                            .insert_header((header::LOCATION, "/there"))
                            .body("see /there")
                    }),
                )
                .route(
                    "/modelled",
                    web::get().to(|| async {
                        Err::<HttpResponse, _>(ApiError::new(ErrorCode::ServiceUnavailable, "busy"))
                    }),
                ),
        )
        .await;
        let response = test::call_service(&app, TestRequest::get().uri(path).to_request()).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        (
            status,
            content_type,
            test::read_body(response).await.to_vec(),
        )
    }

    #[actix_web::test]
    async fn bare_error_gets_error_model() {
        let (status, _, body) = reply("/teapot").await;

        let body: Value = serde_json::from_slice(&body).expect("json body");
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        assert_eq!(body["status"], "418");
        assert!(body["errorCode"].is_string(), "{body}");
    }

    #[actix_web::test]
    async fn redirect_passes_unchanged() {
        let (status, content_type, body) = reply("/moved").await;

        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(content_type, None);
        assert_eq!(body, b"see /there");
    }

    #[actix_web::test]
    async fn error_model_kept_as_written() {
        let (status, _, body) = reply("/modelled").await;

        let body: Value = serde_json::from_slice(&body).expect("json body");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["message"], "busy");
    }
}
