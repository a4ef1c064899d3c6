//! The settings of the event-time views: how long a window waits for late events, and the
//! alert rules' thresholds. A rebuild with the same settings reproduces the same windows and
//! alerts; changing them changes what a rebuild decides, not what is already stored.

use chrono::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct Thresholds {
    /// Seconds a window stays open after its end for events committed late (a transaction
    /// that began in the window and committed after it).
    #[arg(long, env = "WINDOW_GRACE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(i64).range(0..=3600))]
    pub window_grace_seconds: i64,

    /// Shop rules: a minute is a spike at this many times the baseline, a drop at one
    /// this-th of it.
    #[arg(long, env = "ALERT_SPIKE_FACTOR", default_value_t = 3, value_parser = clap::value_parser!(i64).range(2..=100))]
    pub spike_factor: i64,

    /// Shop rules: an open spike (drop) closes once minutes are back under (over) this many
    /// times (this-th of) the baseline: the hysteresis between opening and closing.
    #[arg(long, env = "ALERT_CLEAR_FACTOR", default_value_t = 2, value_parser = clap::value_parser!(i64).range(1..=100))]
    pub clear_factor: i64,

    /// Shop rules: consecutive minutes that must meet a rule to open its alert, and that must
    /// clear it to close it.
    #[arg(long, env = "ALERT_CONSECUTIVE_MINUTES", default_value_t = 2, value_parser = clap::value_parser!(i64).range(1..=60))]
    pub consecutive_minutes: i64,

    /// Shop rules: the baseline is the mean of this many earlier ordinary minutes (minutes in
    /// an anomaly do not count, so a long spike does not become normal).
    #[arg(long, env = "ALERT_BASELINE_MINUTES", default_value_t = 15, value_parser = clap::value_parser!(i64).range(1..=1440))]
    pub baseline_minutes: i64,

    /// Shop rules: no rule is judged before the baseline has this many minutes.
    #[arg(long, env = "ALERT_WARMUP_MINUTES", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=1440))]
    pub warmup_minutes: i64,

    /// Shop rules: the volume below which rates are noise: a spike needs this many orders in
    /// the minute, a drop a baseline of this many orders per minute.
    #[arg(long, env = "ALERT_MIN_ORDERS_PER_MINUTE", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub min_orders_per_minute: i64,

    /// Fraud: this many orders from one customer ...
    #[arg(long, env = "ALERT_VELOCITY_ORDERS", default_value_t = 5, value_parser = clap::value_parser!(i64).range(2..=10_000))]
    pub velocity_orders: i64,

    /// ... within this many minutes.
    #[arg(long, env = "ALERT_VELOCITY_MINUTES", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=1440))]
    pub velocity_minutes: i64,

    /// Fraud: a customer's first order at or above this total, in cents.
    #[arg(long, env = "ALERT_LARGE_FIRST_ORDER_CENTS", default_value_t = 50_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub large_first_order_cents: i64,

    /// Fraud: this many declined payments for one customer ...
    #[arg(long, env = "ALERT_DECLINES", default_value_t = 3, value_parser = clap::value_parser!(i64).range(2..=1000))]
    pub declines: i64,

    /// ... within this many minutes.
    #[arg(long, env = "ALERT_DECLINE_MINUTES", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=1440))]
    pub decline_minutes: i64,

    /// Fraud alerts stay open this many minutes after their last trigger.
    #[arg(long, env = "ALERT_HOLD_MINUTES", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=10_080))]
    pub hold_minutes: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            window_grace_seconds: 10,
            spike_factor: 3,
            clear_factor: 2,
            consecutive_minutes: 2,
            baseline_minutes: 15,
            warmup_minutes: 5,
            min_orders_per_minute: 5,
            velocity_orders: 5,
            velocity_minutes: 10,
            large_first_order_cents: 50_000,
            declines: 3,
            decline_minutes: 30,
            hold_minutes: 30,
        }
    }
}

impl Thresholds {
    pub fn grace(&self) -> Duration {
        Duration::seconds(self.window_grace_seconds)
    }
}
