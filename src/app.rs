//! Start-up: the key ring, both listeners, the route tables that `main` and
//! the tests share, and the background tasks (folder polling, signals).

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{
    HttpServiceFactory, Server, ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse,
    fn_service,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};

use crate::config::Config;
use crate::error::{ApiError, error_model_middleware, log_client_error_status};
use crate::keys::live::{LiveRing, ReloadOutcome, log_failure};
use crate::keys::store::{self, StoreError};
use crate::ops::metrics::timed_maintain_session;
use crate::session::{SESSION_PATH, SessionWorker};
use crate::state::{AppState, Clock};

/// A start-up failure; the message names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Builds the session endpoint as a plain service rather than a route with a
/// handler: it reads the request itself and tests the method once, which
/// spares each request the route's guard, the extractor and the responder
/// conversions. It serves GET and HEAD and rejects every other method with
/// 405 and `Allow: GET, HEAD`, as the other routes do.
///
/// The application is built once per worker thread, so the worker's part
/// is held in an `Rc` and a request takes it without an atomic count.
fn session_service(state: &web::Data<AppState>) -> impl HttpServiceFactory + 'static {
    let worker = Rc::new(SessionWorker::new(state));
    web::service(SESSION_PATH).finish(fn_service(move |req: ServiceRequest| {
        let worker = Rc::clone(&worker);
        async move {
            let (req, _payload) = req.into_parts();
            let method = req.method();
            let response = if method == Method::GET || method == Method::HEAD {
                timed_maintain_session(&req, &worker)
                    .await
                    .unwrap_or_else(|error| error.error_response())
            } else {
                log_client_error_status(StatusCode::METHOD_NOT_ALLOWED, method);
                ApiError::method_not_allowed("GET, HEAD").error_response()
            };
            Ok::<_, actix_web::Error>(ServiceResponse::new(req, response))
        }
    }))
}

/// Builds the public application: routes, errorModel middleware, 404
/// fallback. `main` and the tests use this same table. The session
/// endpoint sits outside the middleware: it writes its own errorModel
/// bodies, and each request is spared the middleware's future and the
/// conversion of the response body.
pub fn public_app(
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
        .app_data(state.clone())
        .service(session_service(&state))
        .service(
            web::scope("")
                .wrap(error_model_middleware())
                .configure(crate::ops::public_routes)
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(unmatched_target))
}

/// Returns the 404 errorModel for a request target the scope does not
/// match, such as `*`, with the debug line the errorModel middleware
/// writes for the other routes.
async fn unmatched_target(req: HttpRequest) -> HttpResponse {
    log_client_error_status(StatusCode::NOT_FOUND, req.method());
    not_found(req).await
}

/// Builds an application of `routes` with the shared state, the errorModel
/// middleware and the 404 fallback, as the admin listener uses it.
pub(crate) fn app_with_routes(
    state: web::Data<AppState>,
    routes: impl FnOnce(&mut web::ServiceConfig),
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
        .configure(routes)
        .default_service(web::to(not_found))
}

/// Returns a 404 errorModel for every path no route matches.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::for_status(actix_web::http::StatusCode::NOT_FOUND, req.path()).error_response()
}

/// A bound, ready service: listeners are open, keys are loaded.
pub struct Application {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    public: Server,
    admin: Server,
    state: web::Data<AppState>,
    config: Config,
}

impl Application {
    /// Loads keys (generating a development key into an empty folder) and
    /// binds both listeners. Port 0 binds a free port; see the addresses.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let clock = Clock::with_offset_secs(config.clock_offset_secs);
        let now = clock.now();

        if let Some(key) = store::ensure_development_key(&config.keys_dir, now)? {
            log::warn!(
                "no key files in {}: generated development key kid={}; for production, \
                 create keys with `sessiond keys generate` and keep the folder private",
                config.keys_dir.display(),
                key.kid
            );
        }
        let (ring, digest) = store::load_ring(&config.keys_dir, now)?;
        let keys = Arc::new(LiveRing::new(ring, digest, &config.keys_dir));

        let state = web::Data::new(
            AppState::new(keys, config.policy.clone(), config.cookie.clone(), clock)
                .with_admin_credential(config.admin_credential.clone()),
        );

        let (public_listener, public_addr) = bind(config.bind)?;
        let (admin_listener, admin_addr) = bind(config.admin_bind)?;
        let public = {
            let state = state.clone();
            HttpServer::new(move || public_app(state.clone()))
                .workers(config.workers)
                .disable_signals()
                .shutdown_timeout(config.drain_timeout.as_secs())
                .listen(public_listener)
                .map_err(|source| StartError::Bind {
                    address: public_addr,
                    source,
                })?
                .run()
        };
        let admin = {
            let state = state.clone();
            HttpServer::new(move || crate::admin::admin_app(state.clone()))
                .workers(1)
                .disable_signals()
                .shutdown_timeout(config.drain_timeout.as_secs())
                .listen(admin_listener)
                .map_err(|source| StartError::Bind {
                    address: admin_addr,
                    source,
                })?
                .run()
        };

        Ok(Application {
            public_addr,
            admin_addr,
            public,
            admin,
            state,
            config,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until SIGTERM or SIGINT, then drains requests in flight for at
    /// most the configured drain time.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let now = self.state.clock.now();
        log::info!(
            "sessiond {} listening public=http://{} admin=http://{} keys_dir={} {} admin_key_ops={}",
            env!("CARGO_PKG_VERSION"),
            self.public_addr,
            self.admin_addr,
            self.config.keys_dir.display(),
            self.state.keys.summary(now),
            if self.config.admin_credential.is_some() {
                "enabled"
            } else {
                "disabled"
            },
        );

        let handles = [self.public.handle(), self.admin.handle()];
        let poller =
            actix_web::rt::spawn(poll_keys(self.state.clone(), self.config.reload_interval));
        let signals = actix_web::rt::spawn(handle_signals(
            self.state.clone(),
            handles,
            self.config.shutdown_delay,
        ));

        let result = futures_join(self.public, self.admin).await;
        poller.abort();
        signals.abort();
        log::info!("sessiond stopped");
        result
    }
}

async fn futures_join(public: Server, admin: Server) -> std::io::Result<()> {
    let (public, admin) = tokio::join!(public, admin);
    public.and(admin)
}

fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { address, source };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Reloads the keys folder every `interval`; a fault keeps the ring in force.
async fn poll_keys(state: web::Data<AppState>, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        reload_now(&state, "poll").await;
    }
}

/// Reloads on the blocking pool and logs the result.
pub async fn reload_now(state: &web::Data<AppState>, trigger: &'static str) {
    let keys = state.keys.clone();
    let now = state.clock.now();
    match web::block(move || keys.reload(now)).await {
        Ok(Ok(ReloadOutcome::Changed)) => {
            log::info!(
                "keys reloaded trigger={trigger} {}",
                state.keys.summary(now)
            );
        }
        Ok(Ok(ReloadOutcome::Unchanged)) => {
            log::debug!("keys unchanged trigger={trigger}");
        }
        Ok(Err(failure)) => log_failure(trigger, &failure),
        Err(_) => log::error!("keys reload failed trigger={trigger}: the blocking pool is gone"),
    }
}

/// SIGHUP reloads at once. SIGTERM and SIGINT turn `/readyz` to 503, keep
/// serving for `shutdown_delay` (a second signal ends the delay), then stop
/// both listeners gracefully.
async fn handle_signals(
    state: web::Data<AppState>,
    handles: [ServerHandle; 2],
    shutdown_delay: std::time::Duration,
) {
    use tokio::signal::unix::{SignalKind, signal};

    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install signal handlers; SIGHUP reloads and graceful stop are off");
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => reload_now(&state, "sighup").await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    state
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if !shutdown_delay.is_zero() {
        log::info!(
            "stopping: /readyz returns 503; serving for {}s before closing the listeners",
            shutdown_delay.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(shutdown_delay) => {}
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
    log::info!("stopping: finishing requests in flight");
    let [public, admin] = handles;
    tokio::join!(public.stop(true), admin.stop(true));
}
