//! The violation rules (analysis/rules.py): ids, default severities, the violation record.

use crate::record::Val;

pub const ERROR: &str = "error";
pub const WARNING: &str = "warning";
pub const INFO: &str = "info";

/// Rule id -> default severity. Some rules lower or raise it per case (docs/analysis.md says when).
pub const RULES: &[(&str, &str)] = &[
    ("invalid-json", ERROR),
    ("binary-frame", ERROR),
    ("missing-kind", WARNING),
    ("unknown-kind", WARNING),
    ("missing-type", ERROR),
    ("request-without-id", ERROR),
    ("duplicate-request-id", ERROR),
    ("reused-request-id", INFO),
    ("orphan-response", WARNING),
    ("response-type-mismatch", WARNING),
    ("unanswered-request", ERROR),
    ("invalid-response-code", ERROR),
    ("unknown-subscription", WARNING),
    ("notification-after-unsubscribe", WARNING),
    ("keepalive-gap", WARNING),
    ("request-before-init", ERROR),
    ("token-not-refreshed", ERROR),
    ("fast-reconnect", WARNING),
    ("sequence-gap", WARNING),
    ("sequence-duplicate", WARNING),
    ("sequence-regression", ERROR),
    ("missing-accept", WARNING),
    ("publish-after-close", WARNING),
    ("ring-not-answered", WARNING),
];

/// A rule's default severity; None for an id that is not a rule.
pub fn default_severity(rule: &str) -> Option<&'static str> {
    RULES
        .iter()
        .find(|(id, _)| *id == rule)
        .map(|(_, severity)| *severity)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule: &'static str,
    pub severity: String,
    pub conn: Option<String>,
    pub t: Val<'static>,
    pub frame: Option<i128>,
    pub message: String,
    pub at_capture_end: bool,
}
