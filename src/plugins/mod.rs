//! The plugins: state machines, scheduler, backup and cache. Each is built from the checked
//! manifest and uses the database; none parses YAML.

pub mod backup;
pub mod cache;
pub mod scheduler;
pub mod state_machine;
