//! What the breaker makes of an export's answer, for every signal: the
//! report of an exporter that only returns the SDK's `Result`, and the
//! breaker outcome of any report. Pure functions, shared by the span, log
//! and metric exporters so that a backend's answer means the same whatever
//! it carried.

use breaker_core::Outcome;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

use crate::{ExportFailure, ExportReport, FailureCause};

/// The report of an exporter that says only what its `Result` says: `Ok` is
/// exported, a timeout is [`FailureCause::Timeout`], any other error
/// [`FailureCause::Internal`], and every error is retryable, since nothing
/// says the backend is up.
pub(crate) fn unclassified(result: OTelSdkResult) -> ExportReport {
    match result {
        Ok(()) => ExportReport::Exported {
            rejected: 0,
            message: None,
        },
        Err(err) => ExportReport::Failed(ExportFailure {
            cause: match err {
                OTelSdkError::Timeout(_) => FailureCause::Timeout,
                _ => FailureCause::Internal,
            },
            retryable: true,
            retry_after: None,
            message: err.to_string(),
        }),
    }
}

/// What the breaker makes of a backend's answer (the table in
/// docs/operations.md, "Health endpoints"). A delay is a throttle, whatever
/// the code; refused credentials count toward opening, so that a dead token
/// does not cost a request per batch, and probing goes on because tokens
/// rotate; a backend that refuses this data for good (non-retryable:
/// invalid, too large, or an answer we cannot place) is up, so it does not
/// count; everything else may be an outage and counts.
pub(crate) fn verdict(report: &ExportReport) -> Outcome {
    let failure = match report {
        ExportReport::Exported { .. } => return Outcome::Success,
        ExportReport::Failed(failure) => failure,
    };
    match (failure.retry_after, failure.cause) {
        (Some(wait), _) => Outcome::Throttled(wait),
        (None, FailureCause::Unauthenticated | FailureCause::PermissionDenied) => Outcome::Failure,
        (None, FailureCause::Invalid | FailureCause::TooLarge) => Outcome::Refused,
        (None, FailureCause::Internal) if !failure.retryable => Outcome::Refused,
        (None, _) => Outcome::Failure,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failed(cause: FailureCause, retryable: bool, retry_after: Option<Duration>) -> ExportReport {
        ExportReport::Failed(ExportFailure {
            cause,
            retryable,
            retry_after,
            message: String::new(),
        })
    }

    #[test]
    fn an_sdk_result_is_a_success_a_timeout_or_an_internal_failure_that_counts() {
        assert_eq!(verdict(&unclassified(Ok(()))), Outcome::Success);
        let timeout = unclassified(Err(OTelSdkError::Timeout(Duration::from_secs(1))));
        assert!(matches!(&timeout, ExportReport::Failed(f) if f.cause == FailureCause::Timeout));
        assert_eq!(verdict(&timeout), Outcome::Failure);
        let other = unclassified(Err(OTelSdkError::InternalFailure("down".into())));
        assert!(matches!(&other, ExportReport::Failed(f) if f.cause == FailureCause::Internal));
        assert_eq!(verdict(&other), Outcome::Failure);
    }

    #[test]
    fn every_cause_has_its_outcome() {
        let wait = Duration::from_secs(5);
        for (report, outcome) in [
            (
                failed(FailureCause::Throttled, true, Some(wait)),
                Outcome::Throttled(wait),
            ),
            (
                failed(FailureCause::Unavailable, true, Some(wait)),
                Outcome::Throttled(wait),
            ),
            (
                failed(FailureCause::Throttled, false, None),
                Outcome::Failure,
            ),
            (
                failed(FailureCause::Unavailable, true, None),
                Outcome::Failure,
            ),
            (failed(FailureCause::Timeout, true, None), Outcome::Failure),
            (failed(FailureCause::Panic, true, None), Outcome::Failure),
            (
                failed(FailureCause::Unauthenticated, false, None),
                Outcome::Failure,
            ),
            (
                failed(FailureCause::PermissionDenied, false, None),
                Outcome::Failure,
            ),
            (failed(FailureCause::Invalid, false, None), Outcome::Refused),
            (
                failed(FailureCause::TooLarge, false, None),
                Outcome::Refused,
            ),
            (
                failed(FailureCause::Internal, false, None),
                Outcome::Refused,
            ),
            (failed(FailureCause::Internal, true, None), Outcome::Failure),
        ] {
            assert_eq!(verdict(&report), outcome, "{report:?}");
        }
    }
}
