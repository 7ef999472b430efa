//! Value types every layer may use: durations, time zones, secrets, the cron schedule, the clock,
//! the retry policy, did-you-mean. This module owns their parsing, printing and schema; it
//! imports nothing from the rest of the crate, so the store and the database can use it
//! without depending on the manifest or the plugins.

pub mod cas;
pub mod clock;
pub mod duration;
pub mod fs;
pub mod id;
pub mod retry;
pub mod schedule;
pub mod secret;
pub mod suggest;
pub mod time;
pub mod timezone;

pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::{Duration, DurationError};
pub use id::{BackupId, EntityKey, RestoreId, RunId};
pub use retry::RetryPolicy;
pub use schedule::{Schedule, ScheduleError};
pub use secret::{redact_userinfo, userinfo_range, Secret};
pub use suggest::{closest, did_you_mean};
pub use timezone::TimeZone;

use serde::de;

/// Marks a serde error message that carries a rule code and a help line, so types can raise
/// coded diagnostics through serde's error channel (see `de::DeError::custom`).
pub(crate) const CODED: char = '\u{1e}';

pub(crate) fn coded_error<E: de::Error>(code: &str, message: &str, help: Option<&str>) -> E {
    E::custom(format!(
        "{CODED}{code}{CODED}{message}{CODED}{}",
        help.unwrap_or("")
    ))
}
