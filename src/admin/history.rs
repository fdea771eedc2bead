//! Queue depth over the last hours, sampled by the monitor, for the dashboard's chart.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// One sample of the queue's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub at_ms: i64,
    pub messages: u64,
    pub recipients: u64,
}

/// A bounded series of samples, oldest first.
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    keep: usize,
}

impl History {
    pub fn new(keep: usize) -> Self {
        Self {
            samples: Mutex::new(VecDeque::new()),
            keep: keep.max(2),
        }
    }

    pub fn push(&self, s: Sample) {
        let mut v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        v.push_back(s);
        while v.len() > self.keep {
            v.pop_front();
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// An SVG polyline's points for `samples` in a `width`×`height` box (y grows downwards),
/// and the largest value (the top of the scale).
pub fn polyline(samples: &[Sample], width: f64, height: f64) -> (String, u64) {
    let max = samples.iter().map(|s| s.messages).max().unwrap_or(0).max(1);
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (String::new(), max);
    };
    let span = (last.at_ms - first.at_ms).max(1) as f64;
    let points = samples
        .iter()
        .map(|s| {
            let x = (s.at_ms - first.at_ms) as f64 / span * width;
            let y = height - s.messages as f64 / max as f64 * height;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    (points, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_scaled() {
        let h = History::new(3);
        for (i, m) in [5u64, 10, 0, 10].into_iter().enumerate() {
            h.push(Sample {
                at_ms: i as i64 * 1000,
                messages: m,
                recipients: m,
            });
        }
        let s = h.samples();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].messages, 10);
        let (points, max) = polyline(&s, 100.0, 50.0);
        assert_eq!(max, 10);
        assert_eq!(points, "0.0,0.0 50.0,50.0 100.0,0.0");
    }
}
