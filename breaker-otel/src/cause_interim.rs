//! Interim copy of the failure causes until the OTLP exporters land.

use std::fmt;

/// Why an export failed: a small fixed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureCause {
    /// Unreachable or unavailable.
    Unavailable,
    /// Timed out.
    Timeout,
    /// Throttled.
    Throttled,
    /// Credentials refused.
    Unauthenticated,
    /// Not allowed.
    PermissionDenied,
    /// Data refused as invalid.
    Invalid,
    /// Request too large.
    TooLarge,
    /// The exporter panicked.
    Panic,
    /// Anything else.
    Internal,
}

impl FailureCause {
    /// Every cause.
    pub const ALL: [Self; 9] = [
        Self::Unavailable,
        Self::Timeout,
        Self::Throttled,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::Invalid,
        Self::TooLarge,
        Self::Panic,
        Self::Internal,
    ];

    /// The label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Throttled => "throttled",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Panic => "panic",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
