//! The SigSentry analysis (seed 000): the payload `POST /v1/analyses` takes
//! and a generic webhook channel receives, and its severity order.
//!
//! Validation is strict on what fan-out and formatting need (ids, severity,
//! summary, URL) and lenient on the rest: unknown fields are kept in the
//! stored bytes (the generic webhook receives the body exactly as posted).

use serde::{Deserialize, Serialize};

/// Severity of an analysis; a channel fires when the analysis' severity is
/// at least its threshold (critical > high > medium > low).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// Whether an analysis of this severity fires a channel of `threshold`.
    pub fn meets(self, threshold: Severity) -> bool {
        self >= threshold
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootCause {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffectedService {
    pub name: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub error_count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuggestedAction {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub action: String,
    #[serde(default)]
    pub priority: Option<i64>,
}

/// Seed 000's analysis payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub analysis_id: String,
    pub tenant_id: String,
    pub project_id: String,
    #[serde(default)]
    pub project_slug: Option<String>,
    pub severity: Severity,
    pub summary: String,
    #[serde(default)]
    pub root_cause: Option<RootCause>,
    #[serde(default)]
    pub affected_services: Vec<AffectedService>,
    #[serde(default)]
    pub suggested_actions: Vec<SuggestedAction>,
    #[serde(default)]
    pub url: Option<String>,
    pub timestamp: String,
}

impl Analysis {
    /// The suggested actions by priority (1 first; none last), at most `n`.
    pub fn top_actions(&self, n: usize) -> Vec<&SuggestedAction> {
        let mut v: Vec<&SuggestedAction> = self.suggested_actions.iter().collect();
        v.sort_by_key(|a| a.priority.unwrap_or(i64::MAX));
        v.truncate(n);
        v
    }

    /// A sample analysis, used by "send test" and the tests.
    pub fn sample(project_id: &str, severity: Severity) -> Analysis {
        Analysis {
            analysis_id: "anl_abc123".into(),
            tenant_id: "tnt_xyz789".into(),
            project_id: project_id.into(),
            project_slug: Some("prod".into()),
            severity,
            summary: "Checkout API returning 500s due to expired auth tokens".into(),
            root_cause: Some(RootCause {
                service: Some("checkout-api".into()),
                error_type: Some("AuthenticationError".into()),
                category: Some("deploy_regression".into()),
            }),
            affected_services: vec![AffectedService {
                name: "checkout-api".into(),
                role: Some("origin".into()),
                error_count: Some(142),
            }],
            suggested_actions: vec![SuggestedAction {
                kind: Some("fix".into()),
                action: "Revert PR #482 or hotfix token check".into(),
                priority: Some(1),
            }],
            url: Some(
                "https://dashboard.sigsentry.com/dashboard/projects/prod/analyses/anl_abc123"
                    .into(),
            ),
            timestamp: "2026-04-25T18:00:00.000Z".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order_is_critical_high_medium_low() {
        assert!(Severity::Critical.meets(Severity::High));
        assert!(Severity::High.meets(Severity::High));
        assert!(!Severity::Medium.meets(Severity::High));
        assert!(Severity::Low.meets(Severity::Low));
        assert!(!Severity::Low.meets(Severity::Medium));
    }

    #[test]
    fn the_seed_payload_parses() {
        let seed = r#"{
  "analysisId": "anl_abc123", "tenantId": "tnt_xyz789", "projectId": "prj_def456",
  "projectSlug": "prod", "severity": "high",
  "summary": "Checkout API returning 500s due to expired auth tokens",
  "rootCause": {"service": "checkout-api", "errorType": "AuthenticationError", "category": "deploy_regression"},
  "affectedServices": [{"name": "checkout-api", "role": "origin", "errorCount": 142}],
  "suggestedActions": [{"type": "fix", "action": "Revert PR #482 or hotfix token check", "priority": 1}],
  "url": "https://dashboard.sigsentry.com/dashboard/projects/prod/analyses/anl_abc123",
  "timestamp": "2026-04-25T18:00:00.000Z"}"#;
        let a: Analysis = serde_json::from_str(seed).unwrap();
        assert_eq!(a, Analysis::sample("prj_def456", Severity::High));
    }
}
