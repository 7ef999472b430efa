//! The scheduler plugin: cron schedules in a time zone, jobs, history.

pub mod jobs;

pub use jobs::{JobEvent, Scheduler};
