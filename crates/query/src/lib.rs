//! authwatch's SQL side, on Apache DataFusion.
//!
//! - [`SqlDetector`]: windowed streaming SQL detections. Each `.sql` file of `sql/` declares in
//!   a header its rule id, window (tumbling, hopping or session), key and severity
//!   ([`SqlRule`]); its query is planned once and evaluated over Arrow record batches as windows
//!   close by the watermark. Result rows become [`authwatch_event::Alert`]s in the same schema,
//!   with the same deterministic `alert_id`, as the compiled rules.
//! - [`ArchiveSink`] / [`ArchiveWriter`]: enriched events and alerts as Parquet, partitioned by
//!   date and hour (`dt=YYYY-MM-DD/hour=HH`), to a local directory or object storage.
//! - [`Catalog`]: the `events` and `alerts` tables (archive, recorded files, the live window)
//!   with authwatch's UDFs, for `authwatch sql` and the Postgres-wire endpoint ([`server`]).
//! - [`DistinctCount`]: DataFusion's `count` plus a groups accumulator for
//!   `count(DISTINCT string) … GROUP BY`, registered in every session.
#![deny(missing_docs)]

mod archive;
mod catalog;
mod convert;
mod count_distinct;
mod error;
mod interned_agg;
mod live;
mod output;
mod rule;
pub mod server;
mod stream;
mod udf;
mod view_intern;

pub use archive::{
    ArchiveOptions, ArchiveSink, ArchiveStats, ArchiveWriter, local_dir, open_store,
};
pub use catalog::{ARCHIVE_LISTING_TTL, Catalog, LimitedResult, QueryResult, Truncation};
pub use convert::{alert_schema, alerts_to_batch, event_schema, events_to_batch};
pub use count_distinct::DistinctCount;
pub use error::QueryError;
pub use interned_agg::{InternedAggregateExec, InternedAggregation};
pub use live::{LiveWindow, LiveWindowFeed};
pub use output::{OutputFormat, write_result};
pub use rule::{SqlRule, WindowSpec, load_dir};
pub use stream::{DEFAULT_MAX_MEMORY, SqlDetections, SqlDetector, SqlLimits, SqlRuleStats};
pub use udf::register_udfs;

#[cfg(test)]
mod tests;
