//! How many connections a route may open at once: additive increase while the primary
//! accepts promptly, multiplicative decrease when it pushes back (421, refused connections,
//! timeouts), then a hold before growing again, so a recovering primary is not knocked over by
//! the backlog. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// After a push-back, no growth for this long.
pub const HOLD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Concurrency {
    initial: f64,
    limit: f64,
    max: f64,
    hold_until: Option<Instant>,
}

impl Concurrency {
    pub fn new(initial: usize, max: usize) -> Self {
        let max = max.max(1) as f64;
        let initial = (initial.max(1) as f64).min(max);
        Self {
            initial,
            limit: initial,
            max,
            hold_until: None,
        }
    }

    /// Connections allowed now (at least one).
    pub fn allowed(&self) -> usize {
        (self.limit.floor() as usize).max(1)
    }

    /// A message went through: grow by one connection per `limit` successes.
    pub fn success(&mut self, now: Instant) {
        if self.hold_until.is_some_and(|h| now < h) {
            return;
        }
        self.limit = (self.limit + 1.0 / self.limit).min(self.max);
    }

    /// The primary pushed back: halve, and hold.
    /// The primary came back after an outage: start again from the initial limit, without
    /// a hold. Failures that led up to the outage were the outage, not push-back.
    pub fn reset(&mut self) {
        self.limit = self.initial;
        self.hold_until = None;
    }

    pub fn overload(&mut self, now: Instant) {
        self.limit = (self.limit / 2.0).max(1.0);
        self.hold_until = Some(now + HOLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_additively_up_to_the_ceiling() {
        let now = Instant::now();
        let mut c = Concurrency::new(2, 5);
        assert_eq!(c.allowed(), 2);
        c.success(now);
        assert_eq!(c.allowed(), 2);
        c.success(now);
        assert_eq!(c.allowed(), 2, "2 + 1/2 + 1/2.5 = 2.9");
        c.success(now);
        assert_eq!(c.allowed(), 3);
        for _ in 0..100 {
            c.success(now);
        }
        assert_eq!(c.allowed(), 5);
    }

    #[test]
    fn halves_on_push_back_and_holds() {
        let now = Instant::now();
        let mut c = Concurrency::new(8, 10);
        c.overload(now);
        assert_eq!(c.allowed(), 4);
        c.overload(now);
        c.overload(now);
        c.overload(now);
        assert_eq!(c.allowed(), 1, "never below one");
        for _ in 0..10 {
            c.success(now + Duration::from_secs(1));
        }
        assert_eq!(c.allowed(), 1, "no growth during the hold");
        for _ in 0..10 {
            c.success(now + HOLD);
        }
        assert!(c.allowed() >= 3);
        assert_eq!(Concurrency::new(0, 0).allowed(), 1);
    }

    #[test]
    fn a_recovered_primary_starts_again_from_the_initial_limit() {
        let now = Instant::now();
        let mut c = Concurrency::new(2, 10);
        // The outage began with one connection refused while another was open.
        c.overload(now);
        assert_eq!(c.allowed(), 1);
        c.reset();
        assert_eq!(c.allowed(), 2);
        c.success(now);
        c.success(now);
        c.success(now);
        assert_eq!(c.allowed(), 3, "no hold after a reset: it grows at once");
    }
}
