//! The database: resources, records, queries, partitions and optimistic concurrency on top of an
//! object store.

pub mod attribute;
