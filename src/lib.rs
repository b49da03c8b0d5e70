//! sessiond: a session-token service. Storefronts call
//! `GET /ccstore/v1/metering/session` to keep a shopper's session alive; the
//! token is a self-contained HMAC JWT, so replicas need no shared database.

// The one exception, in `session::cookie`, explains why it is sound.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod error;
pub mod keys;
pub mod log_limit;
pub mod ops;
pub mod session;
pub mod state;
pub mod token;
