//! The overview's last hour: `/stats` sampled into a small ring buffer in this process
//! (the queue keeps no history of its own), folded into one-minute buckets and drawn as
//! an inline SVG bar chart.
//!
//! A bucket's throughput is the last sample's `finished_last_minute` (jobs delivered or
//! skipped in the minute before it); its failures are the increases of the dead-letter
//! count between consecutive samples (a replay or purge lowers the count and is not a
//! failure). The buffer starts empty when the process starts.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aftercall_queue::{Queue, Stats};

/// How far back the chart goes.
pub(crate) const WINDOW_MS: i64 = 3_600_000;
const BUCKET_MS: i64 = 60_000;
const BUCKETS: usize = 60;
/// The background sampler's period.
const EVERY: Duration = Duration::from_secs(10);
/// Samples closer together than this are not kept (pages sample too).
const MIN_GAP_MS: i64 = 2_000;
const CAPACITY: usize = (WINDOW_MS / MIN_GAP_MS) as usize + 2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub at_ms: i64,
    pub finished_last_minute: u64,
    pub dead: u64,
}

impl Sample {
    pub fn of(s: &Stats, at_ms: i64) -> Sample {
        Sample {
            at_ms,
            finished_last_minute: s.finished_last_minute,
            dead: s.dead,
        }
    }
}

#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Keeps `s` unless the last sample is too recent; forgets what is past the window
    /// (one sample older than it stays, as the baseline of the first bucket).
    pub fn record(&self, s: Sample) {
        let mut v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if v.back()
            .is_some_and(|last| s.at_ms - last.at_ms < MIN_GAP_MS)
        {
            return;
        }
        v.push_back(s);
        while v.len() > CAPACITY || v.get(1).is_some_and(|n| n.at_ms < s.at_ms - WINDOW_MS) {
            v.pop_front();
        }
    }

    pub fn snapshot(&self) -> Vec<Sample> {
        let v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        v.iter().copied().collect()
    }
}

/// Samples `/stats` every few seconds while `history` is alive (the dashboard's router
/// holds it), so the chart has data even when nobody is looking.
pub(crate) fn spawn_sampler(history: &Arc<History>, queue: Queue) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(history);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(history) = weak.upgrade() else {
                return;
            };
            match queue.stats().await {
                Ok(s) => history.record(Sample::of(&s, aftercall_queue::now_ms())),
                // Redis being down is reported by the API and the workers already.
                Err(e) => tracing::debug!(error = %e, "dashboard: stats sample failed"),
            }
        }
    });
}

/// One minute of the chart; `None` when no sample fell in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bucket {
    pub start_ms: i64,
    pub finished: Option<u64>,
    pub dead: Option<u64>,
}

/// The last hour as 60 one-minute buckets, oldest first, the last ending at `now_ms`.
pub(crate) fn buckets(samples: &[Sample], now_ms: i64) -> Vec<Bucket> {
    let first_start = now_ms - BUCKETS as i64 * BUCKET_MS;
    let mut out: Vec<Bucket> = (0..BUCKETS)
        .map(|i| Bucket {
            start_ms: first_start + i as i64 * BUCKET_MS,
            finished: None,
            dead: None,
        })
        .collect();
    for (i, s) in samples.iter().enumerate() {
        if s.at_ms <= first_start || s.at_ms > now_ms {
            continue;
        }
        let idx = (((s.at_ms - first_start - 1) / BUCKET_MS) as usize).min(BUCKETS - 1);
        let b = &mut out[idx];
        // Samples are in time order, so the last one of a bucket wins.
        b.finished = Some(s.finished_last_minute);
        let new_dead = match i.checked_sub(1).map(|p| samples[p]) {
            Some(prev) => s.dead.saturating_sub(prev.dead),
            None => 0,
        };
        b.dead = Some(b.dead.unwrap_or(0) + new_dead);
    }
    out
}

/// Totals over the buckets that have data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub finished: u64,
    pub dead: u64,
    /// Start of the first bucket with data.
    pub since_ms: Option<i64>,
}

impl Summary {
    pub fn of(buckets: &[Bucket]) -> Summary {
        Summary {
            finished: buckets.iter().filter_map(|b| b.finished).sum(),
            dead: buckets.iter().filter_map(|b| b.dead).sum(),
            since_ms: buckets
                .iter()
                .find(|b| b.finished.is_some())
                .map(|b| b.start_ms),
        }
    }

    /// Dead letters per job that ended (finished or dead), in percent.
    pub fn failure_rate(&self) -> Option<f64> {
        let total = self.finished + self.dead;
        (total > 0).then(|| self.dead as f64 * 100.0 / total as f64)
    }
}

/// The buckets as an inline SVG bar chart: jobs finished (bottom) and dead-lettered
/// (stacked on top) per minute. Colours come from the stylesheet, so dark mode works.
pub(crate) fn chart_svg(buckets: &[Bucket]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 170.0;
    const LEFT: f64 = 44.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 22.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let max = buckets
        .iter()
        .map(|b| b.finished.unwrap_or(0) + b.dead.unwrap_or(0))
        .max()
        .unwrap_or(0)
        .max(1);
    let step = plot_w / buckets.len().max(1) as f64;
    let bar_w = (step - 2.0).max(1.0);
    let y = |v: u64| TOP + plot_h - v as f64 / max as f64 * plot_h;
    let last = buckets.iter().rev().find(|b| b.finished.is_some());
    let desc = match last {
        Some(b) => format!(
            "Jobs finished and dead-lettered per minute over the last hour. Most recent minute: {} finished, {} dead. Peak: {max} in a minute.",
            b.finished.unwrap_or(0),
            b.dead.unwrap_or(0)
        ),
        None => "Jobs finished and dead-lettered per minute over the last hour: no samples yet."
            .to_string(),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Throughput and failures, last hour</title><desc id="chart-desc">{desc}</desc>"#
    );
    // Axes and gridlines.
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line class="grid" x1="{LEFT}" y1="{TOP}" x2="{r}" y2="{TOP}"/><text class="label" x="{lx}" y="{ty}" text-anchor="end">{max}</text><text class="label" x="{lx}" y="{by}" text-anchor="end">0</text>"#,
        b = TOP + plot_h,
        r = W - RIGHT,
        lx = LEFT - 6.0,
        ty = TOP + 4.0,
        by = TOP + plot_h + 4.0,
    );
    for (i, text, anchor) in [
        (0usize, "60 min ago", "start"),
        (buckets.len() / 2, "30 min ago", "middle"),
        (buckets.len(), "now", "end"),
    ] {
        let _ = write!(
            s,
            r#"<text class="label" x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{text}</text>"#,
            x = LEFT + i as f64 * step,
            y = H - 6.0,
        );
    }
    for (i, b) in buckets.iter().enumerate() {
        let (Some(ok), dead) = (b.finished, b.dead.unwrap_or(0)) else {
            continue;
        };
        let x = LEFT + i as f64 * step + 1.0;
        let minute = chrono::DateTime::from_timestamp_millis(b.start_ms + BUCKET_MS)
            .map(|t| t.format("%H:%M UTC").to_string())
            .unwrap_or_default();
        let tip = format!("{minute}: {ok} finished, {dead} dead");
        let _ = write!(s, r#"<g><title>{tip}</title>"#);
        // A thin mark even for an empty minute, so "sampled, nothing happened" differs
        // from "not sampled".
        let ok_top = y(ok);
        let ok_h = (TOP + plot_h - ok_top).max(1.0);
        let _ = write!(
            s,
            r#"<rect class="bar-ok" x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{ok_h:.1}"/>"#,
            TOP + plot_h - ok_h
        );
        if dead > 0 {
            let dead_top = y(ok + dead);
            let _ = write!(
                s,
                r#"<rect class="bar-dead" x="{x:.1}" y="{dead_top:.1}" width="{bar_w:.1}" height="{:.1}"/>"#,
                (ok_top - dead_top).max(1.0)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10 * WINDOW_MS;

    fn s(ago_s: i64, finished: u64, dead: u64) -> Sample {
        Sample {
            at_ms: NOW - ago_s * 1000,
            finished_last_minute: finished,
            dead,
        }
    }

    #[test]
    fn buckets_take_the_last_throughput_and_sum_new_dead_letters() {
        let samples = [
            s(3700, 9, 1), // before the window: only a baseline
            s(3590, 5, 3), // first bucket: +2 dead
            s(150, 4, 3),  // 3 minutes ago: nothing new died
            s(110, 6, 4),  // 2 minutes ago: +1 dead, throughput 6
            s(50, 2, 0),   // replay or purge: no failure
            s(10, 3, 2),   // last minute: +2
        ];
        let b = buckets(&samples, NOW);
        assert_eq!(b.len(), 60);
        assert_eq!((b[0].finished, b[0].dead), (Some(5), Some(2)));
        assert_eq!((b[57].finished, b[57].dead), (Some(4), Some(0)));
        assert_eq!((b[58].finished, b[58].dead), (Some(6), Some(1)));
        assert_eq!((b[59].finished, b[59].dead), (Some(3), Some(2)));
        assert_eq!(b[30].finished, None);
        assert_eq!(b[59].start_ms + BUCKET_MS, NOW);
        let sum = Summary::of(&b);
        assert_eq!((sum.finished, sum.dead), (5 + 4 + 6 + 3, 5));
        assert_eq!(sum.since_ms, Some(b[0].start_ms));
        let rate = sum.failure_rate().unwrap();
        assert!((rate - 500.0 / 23.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn no_samples_no_rate() {
        let b = buckets(&[], NOW);
        assert!(b.iter().all(|b| b.finished.is_none() && b.dead.is_none()));
        assert_eq!(Summary::of(&b).failure_rate(), None);
        assert!(chart_svg(&b).contains("no samples yet"));
    }

    #[test]
    fn record_keeps_an_hour_and_skips_close_samples() {
        let h = History::default();
        for i in 0..4000 {
            h.record(Sample {
                at_ms: i * 1000,
                finished_last_minute: 0,
                dead: 0,
            });
        }
        let v = h.snapshot();
        // One sample per two seconds; one baseline older than the window stays.
        assert!(v.windows(2).all(|w| w[1].at_ms - w[0].at_ms >= MIN_GAP_MS));
        let last = v.last().unwrap().at_ms;
        assert_eq!(last, 3_998_000);
        assert!(v[0].at_ms < last - WINDOW_MS);
        assert!(v[1].at_ms >= last - WINDOW_MS);
        assert!(v.len() <= CAPACITY);
    }

    #[test]
    fn chart_draws_a_bar_per_sampled_minute() {
        let b = buckets(&[s(3590, 0, 0), s(100, 7, 0), s(30, 2, 1)], NOW);
        let svg = chart_svg(&b);
        assert_eq!(svg.matches("class=\"bar-ok\"").count(), 3);
        assert_eq!(svg.matches("class=\"bar-dead\"").count(), 1);
        assert!(
            svg.contains("Most recent minute: 2 finished, 1 dead"),
            "{svg}"
        );
        assert!(svg.contains(">7</text>"), "the peak labels the axis: {svg}");
    }
}
