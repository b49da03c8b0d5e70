//! Rate limiting of log lines that clients can trigger at will, so a flood
//! of bad requests cannot flood the log.

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
