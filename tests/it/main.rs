//! The integration tests: one binary, one module per area.

mod support;

mod manifest_cli;
mod manifest_fixtures;
mod manifest_load;
mod manifest_props;
mod manifest_schema;
