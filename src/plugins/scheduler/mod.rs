//! The scheduler plugin: cron schedules in a time zone, jobs, history.

pub mod clock;
pub mod jobs;
pub mod schedule;

pub use jobs::{JobEvent, Scheduler};
