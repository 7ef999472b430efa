//! S3 requests by operation and outcome, with their latency, for `/metrics`: an interceptor on
//! every S3 client this process makes (the database's, backup destinations', caches') feeds
//! process-wide families that the API's registry includes.

use std::sync::LazyLock;
use std::time::Instant;

use aws_sdk_s3::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

type Latency = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The families, shared by every client of the process.
pub struct S3Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Latency,
}

pub static S3_METRICS: LazyLock<S3Metrics> = LazyLock::new(|| S3Metrics {
    requests: Family::default(),
    duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
});

/// Counts each S3 operation once, retries included in its duration.
#[derive(Debug)]
pub struct RequestMetrics;

#[derive(Debug, Clone)]
struct Started(Instant);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl Intercept for RequestMetrics {
    fn name(&self) -> &'static str {
        "s3db-request-metrics"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map_or("unknown", |m| m.name())
            .to_string();
        let outcome = match context.response() {
            Some(response) => outcome_of(response.status().as_u16()),
            None => match context.output_or_error() {
                Some(Err(e)) if e.is_timeout_error() => "timeout",
                _ => "network_error",
            },
        };
        S3_METRICS
            .requests
            .get_or_create(&RequestLabels {
                operation: operation.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(Started(at)) = cfg.load::<Started>() {
            S3_METRICS
                .duration
                .get_or_create(&OperationLabels { operation })
                .observe(at.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

/// The outcome label of an HTTP status: the cases an operator tells apart.
fn outcome_of(status: u16) -> &'static str {
    match status {
        200..=299 => "success",
        304 => "not_modified",
        404 => "not_found",
        409 | 412 => "precondition_failed",
        429 | 503 => "throttled",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_map_to_the_outcomes_operators_alert_on() {
        let cases = [
            (200, "success"),
            (204, "success"),
            (404, "not_found"),
            (412, "precondition_failed"),
            (503, "throttled"),
            (403, "client_error"),
            (500, "server_error"),
        ];
        for (status, outcome) in cases {
            assert_eq!(super::outcome_of(status), outcome, "{status}");
        }
    }
}
