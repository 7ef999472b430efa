//! The integration tests: one binary, one module per area.

mod support;

mod api;
mod backup;

mod cache;
mod db_core;
mod db_processes;
mod deploy;
mod diff;
mod fleet;
mod hooks;
mod layers;
mod manifest_cli;
mod manifest_fixtures;
mod manifest_fuzz;
mod manifest_load;
mod manifest_props;
mod manifest_schema;
mod reload;
mod s3_backend;
mod s3_faults;
mod s3dbjs;
mod schedule;
mod scheduler;
mod state_machines;
mod store_conformance;
