//! s3db-run: a declarative runner for a document database that lives in S3.
//!
//! Data flows one way: manifest → checked model → plugins → database → object store.

pub mod api;
pub mod cli;
pub mod db;
pub mod hooks;
pub mod manifest;
pub mod plugins;
pub mod runtime;
pub mod store;
pub mod types;
