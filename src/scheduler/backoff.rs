//! The retry schedule: exponential backoff between `retry_min` and `retry_max`, with jitter so
//! that messages deferred together do not come back together. Pure.

use std::time::Duration;

/// The delay before the next attempt, after `attempts` attempts (≥ 1) have failed.
/// `jitter` is a number in [0, 1) that spreads the delay over ±15 %.
pub fn retry_delay(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(32);
    let base = min.saturating_mul(1u32 << exp.min(31)).min(max);
    let factor = 0.85 + 0.30 * jitter.clamp(0.0, 1.0);
    base.mul_f64(factor).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn doubles_from_min_up_to_max() {
        assert_eq!(retry_delay(1, MIN, MAX, 0.5), Duration::from_secs(60));
        assert_eq!(retry_delay(2, MIN, MAX, 0.5), Duration::from_secs(120));
        assert_eq!(retry_delay(4, MIN, MAX, 0.5), Duration::from_secs(480));
        assert_eq!(retry_delay(7, MIN, MAX, 0.5), MAX);
        assert_eq!(retry_delay(1000, MIN, MAX, 0.5), MAX);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for i in 0..100 {
            let j = f64::from(i) / 100.0;
            let d = retry_delay(3, MIN, MAX, j);
            assert!(
                d >= Duration::from_secs(204) && d <= Duration::from_secs(276),
                "{d:?}"
            );
            assert!(retry_delay(1, MIN, MAX, j) >= MIN);
            assert!(retry_delay(50, MIN, MAX, j) <= MAX);
        }
        assert_ne!(retry_delay(3, MIN, MAX, 0.1), retry_delay(3, MIN, MAX, 0.9));
    }
}
