//! What a notification carries, typed: the Alertmanager webhook payload (version 4) that the
//! engine builds once per alert group and the outbox stores, and that every receiver reads
//! back as this struct — the webhook sends it as it is, the other receivers format from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One alert in a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AlertPayload {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels, `alertname` and the external labels included.
    pub labels: BTreeMap<String, String>,
    /// Its rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    pub starts_at: String,
    /// When it resolved, or Alertmanager's zero time while firing.
    pub ends_at: String,
    /// A link back to probewatch.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's fingerprint of its labels.
    pub fingerprint: String,
}

impl AlertPayload {
    /// Whether it is firing (not resolved).
    pub fn is_firing(&self) -> bool {
        self.status == "firing"
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// One line about it: its `summary` annotation, else its name and labels.
    pub fn summary(&self) -> String {
        if let Some(s) = self.annotations.get("summary").filter(|s| !s.is_empty()) {
            return s.clone();
        }
        let rest: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{} {}", self.name(), rest.join(" "))
    }
}

/// One notification of an alert group, as Alertmanager's webhook sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GroupPayload {
    /// Always `4`.
    pub version: String,
    /// The group's key.
    pub group_key: String,
    /// Alerts left out (always 0).
    pub truncated_alerts: u64,
    /// `firing` when any alert fires, else `resolved`.
    pub status: String,
    /// The receiver's name.
    pub receiver: String,
    /// The labels the route groups by, with this group's values.
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert has with the same value.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert has with the same value.
    pub common_annotations: BTreeMap<String, String>,
    /// probewatch's URL.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<AlertPayload>,
}

/// The entries every map has with the same value.
fn common<'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut maps = maps;
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

impl GroupPayload {
    /// A notification of `alerts`, with the common labels and annotations worked out here.
    pub fn new(
        group_key: String,
        receiver: String,
        group_labels: BTreeMap<String, String>,
        external_url: String,
        alerts: Vec<AlertPayload>,
    ) -> GroupPayload {
        GroupPayload {
            version: "4".into(),
            group_key,
            truncated_alerts: 0,
            status: if alerts.iter().any(AlertPayload::is_firing) {
                "firing".into()
            } else {
                "resolved".into()
            },
            receiver,
            group_labels,
            common_labels: common(alerts.iter().map(|a| &a.labels)),
            common_annotations: common(alerts.iter().map(|a| &a.annotations)),
            external_url,
            alerts,
        }
    }

    /// A stored notification read back.
    pub fn parse(stored: &str) -> Result<GroupPayload, String> {
        serde_json::from_str(stored)
            .map_err(|e| format!("stored payload is not a notification: {e}"))
    }

    /// Alerts firing in it.
    pub fn firing(&self) -> usize {
        self.alerts.iter().filter(|a| a.is_firing()).count()
    }

    /// The title every receiver starts with: `[FIRING:2] CheckCritical, ProbeSilent` or
    /// `[RESOLVED] CheckCritical`.
    pub fn title(&self) -> String {
        let names: std::collections::BTreeSet<&str> =
            self.alerts.iter().map(AlertPayload::name).collect();
        let firing = self.firing();
        let status = if firing > 0 {
            format!("FIRING:{firing}")
        } else {
            "RESOLVED".into()
        };
        format!(
            "[{status}] {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    }

    /// Where to look: probewatch's alerts page.
    pub fn link(&self) -> String {
        format!("{}/alerts", self.external_url.trim_end_matches('/'))
    }
}
