//! Rate limiting of log lines that clients can trigger at will, so a flood
//! of bad requests cannot flood the log, and the process logger that
//! applies it to actix-http's own records.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Lets one line a second through for one kind of event and counts the
/// lines it holds back.
#[derive(Debug)]
pub struct LogLimiter {
    last_second: AtomicI64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub const fn new() -> Self {
        LogLimiter {
            last_second: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns the number of lines held back since the last one written when
    /// a line may be written in second `now_secs`, else `None`.
    pub fn allow(&self, now_secs: i64) -> Option<u64> {
        let last = self.last_second.load(Ordering::Relaxed);
        if last < now_secs
            && self
                .last_second
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// Target prefix of actix-http's HTTP/1 records. Its parser logs an error for
/// each request it rejects, and any client can send such requests at will.
const HTTP1_TARGET: &str = "actix_http::h1";

/// Installs env_logger, filtered by `RUST_LOG` or else `default_filter`,
/// with warnings and errors of actix-http's HTTP/1 code limited to one line
/// a second.
pub fn init_logger(default_filter: &str) -> Result<(), log::SetLoggerError> {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .build();
    let max_level = inner.filter();
    log::set_boxed_logger(Box::new(LimitedLogger {
        inner,
        http1_errors: LogLimiter::new(),
    }))?;
    log::set_max_level(max_level);
    Ok(())
}

/// env_logger behind a limiter for the records of [`HTTP1_TARGET`].
struct LimitedLogger {
    inner: env_logger::Logger,
    http1_errors: LogLimiter,
}

impl log::Log for LimitedLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        if record.level() <= log::Level::Warn && record.target().starts_with(HTTP1_TARGET) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs() as i64);
            match self.http1_errors.allow(now) {
                None => return,
                Some(0) => {}
                Some(held_back) => self.inner.log(
                    &log::Record::builder()
                        .level(log::Level::Warn)
                        .target(record.target())
                        .args(format_args!(
                            "{held_back} lines of this target held back since its last line"
                        ))
                        .build(),
                ),
            }
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second() {
        let limiter = LogLimiter::new();

        let first = limiter.allow(10);
        let second = limiter.allow(10);
        let third = limiter.allow(10);
        let next_second = limiter.allow(11);

        assert_eq!(first, Some(0));
        assert_eq!(second, None);
        assert_eq!(third, None);
        assert_eq!(next_second, Some(2), "held-back lines are counted");
    }
}
