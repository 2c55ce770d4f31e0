//! Counters the VMM keeps about its exits and interrupts, printed by `--stats`.

use std::fmt;
use std::time::{Duration, Instant};

/// Whole milliseconds of `d`, saturating (a u64 of milliseconds lasts 584 million years).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The kinds of guest-initiated exits that are landmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandmarkKind {
    PioIn,
    PioOut,
    MmioRead,
    MmioWrite,
    Hlt,
}

/// Latency samples in microseconds (bounded, so that a long run cannot grow without limit).
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<u32>);

const MAX_SAMPLES: usize = 1 << 20;

impl Samples {
    pub fn record(&mut self, d: Duration) {
        if self.0.len() < MAX_SAMPLES {
            self.0
                .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0..=100), nearest-rank.
    pub fn percentile(&self, p: u32) -> Option<u32> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((p.min(100) as usize * sorted.len()).div_ceil(100)).max(1);
        sorted.get(rank - 1).copied()
    }
}

#[derive(Clone, Debug)]
pub struct Stats {
    pub started: Instant,
    pub landmarks: u64,
    pub pio_in: u64,
    pub pio_out: u64,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub hlt: u64,
    pub interrupts_injected: u64,
    /// From the device raising its line to `KVM_INTERRUPT`.
    pub irq_latency: Samples,
    /// From `KVM_INTERRUPT` to the guest's EOI: how long the guest took to run its handler.
    pub inject_to_eoi: Samples,
    /// FT primary: the replication summary.
    pub ft_summary: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            landmarks: 0,
            pio_in: 0,
            pio_out: 0,
            mmio_read: 0,
            mmio_write: 0,
            hlt: 0,
            interrupts_injected: 0,
            irq_latency: Samples::default(),
            inject_to_eoi: Samples::default(),
            ft_summary: None,
        }
    }
}

impl Stats {
    /// Counts one landmark by kind (the engine numbers them: ft::engine::Trace).
    pub fn count(&mut self, kind: LandmarkKind) {
        match kind {
            LandmarkKind::PioIn => self.pio_in += 1,
            LandmarkKind::PioOut => self.pio_out += 1,
            LandmarkKind::MmioRead => self.mmio_read += 1,
            LandmarkKind::MmioWrite => self.mmio_write += 1,
            LandmarkKind::Hlt => self.hlt += 1,
        }
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.started.elapsed().as_secs_f64();
        writeln!(f, "vmm: stats: run_time_s={secs:.3}")?;
        writeln!(
            f,
            "vmm: stats: landmarks={} pio_in={} pio_out={} mmio_read={} mmio_write={} hlt={} landmarks_per_s={:.0}",
            self.landmarks,
            self.pio_in,
            self.pio_out,
            self.mmio_read,
            self.mmio_write,
            self.hlt,
            self.landmarks as f64 / secs.max(1e-9)
        )?;
        writeln!(
            f,
            "vmm: stats: interrupts_injected={} irq_latency_us_p50={} irq_latency_us_p99={} inject_to_eoi_us_p50={} inject_to_eoi_us_p99={}",
            self.interrupts_injected,
            opt(self.irq_latency.percentile(50)),
            opt(self.irq_latency.percentile(99)),
            opt(self.inject_to_eoi.percentile(50)),
            opt(self.inject_to_eoi.percentile(99)),
        )?;
        if let Some(ft) = &self.ft_summary {
            writeln!(f, "vmm: stats: {ft}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landmarks_are_counted_by_kind() {
        let mut s = Stats::default();
        s.count(LandmarkKind::PioOut);
        s.count(LandmarkKind::Hlt);
        s.count(LandmarkKind::PioOut);
        s.landmarks = 3;
        assert_eq!((s.pio_out, s.hlt, s.pio_in), (2, 1, 0));
        let text = s.to_string();
        assert!(text.contains("landmarks=3 pio_in=0 pio_out=2"), "{text}");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = Samples::default();
        assert_eq!(s.percentile(50), None);
        for us in 1..=100u64 {
            s.record(Duration::from_micros(us));
        }
        assert_eq!(s.percentile(50), Some(50));
        assert_eq!(s.percentile(99), Some(99));
        assert_eq!(s.percentile(100), Some(100));
        assert_eq!(s.percentile(0), Some(1));
    }
}
