//! Inhibition, as Alertmanager's `inhibit_rules`: while an alert matching a rule's source
//! matchers fires, alerts matching its target matchers that carry the same values of its
//! `equal` labels are not notified (a host down mutes its checks' alerts). The source
//! alert itself is never muted by its own rule.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use probewatch_promql::{MatchOp, Matcher};

use crate::silence::Silence;

/// One inhibition rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    /// What the muting alert matches.
    pub source: Vec<Matcher>,
    /// What the muted alerts match.
    pub target: Vec<Matcher>,
    /// Labels whose values must be the same on both (absent counts as empty, as in
    /// Alertmanager).
    pub equal: Vec<String>,
    /// The rule as written, for pages.
    pub text: String,
}

impl InhibitRule {
    /// A rule from its configuration (PromQL matcher texts).
    pub fn from_config(
        source: &[String],
        target: &[String],
        equal: &[String],
    ) -> Result<InhibitRule, String> {
        if source.is_empty() || target.is_empty() {
            return Err("an [[inhibit]] rule needs source_matchers and target_matchers".into());
        }
        let source_m = crate::silence::parse_matchers(source)
            .map_err(|e| format!("inhibit source_matchers: {e}"))?;
        let target_m = crate::silence::parse_matchers(target)
            .map_err(|e| format!("inhibit target_matchers: {e}"))?;
        Ok(InhibitRule {
            source: source_m,
            target: target_m,
            equal: equal.to_vec(),
            text: format!(
                "{} mutes {}{}",
                source.join(", "),
                target.join(", "),
                if equal.is_empty() {
                    String::new()
                } else {
                    format!(" on the same {}", equal.join(", "))
                }
            ),
        })
    }

    fn source_matches(&self, labels: &BTreeMap<String, String>) -> bool {
        all_match(&self.source, labels)
    }

    fn target_matches(&self, labels: &BTreeMap<String, String>) -> bool {
        all_match(&self.target, labels)
    }
}

fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
}

/// The silences that the firing alerts (`firing`: their labels, `alertname` included)
/// cause through `rules`: one per rule and source alert, muting the rule's targets with the
/// source's values of the `equal` labels. A source that matches the target side too mutes
/// no alert that matches the source side (Alertmanager's rule against self-inhibition).
pub fn silences(rules: &[InhibitRule], firing: &[&BTreeMap<String, String>]) -> Vec<Silence> {
    let mut out = Vec::new();
    for rule in rules {
        for source in firing.iter().filter(|l| rule.source_matches(l)) {
            let mut matchers = rule.target.clone();
            for name in &rule.equal {
                let value = source.get(name).map_or("", String::as_str);
                matchers.push(Matcher {
                    name: name.clone(),
                    op: MatchOp::Equal,
                    value: value.to_string(),
                });
            }
            let two_sided = rule.target_matches(source);
            out.push(Silence {
                id: 0,
                matchers,
                spare: two_sided.then(|| rule.source.clone()),
            });
        }
    }
    out
}

/// The configured rules, shared by the rule evaluator and the pages, replaced by a reload.
#[derive(Debug, Default)]
pub struct Inhibitions(RwLock<Arc<Vec<InhibitRule>>>);

impl Inhibitions {
    /// The rules now.
    pub fn load(&self) -> Arc<Vec<InhibitRule>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes a reloaded configuration's rules.
    pub fn replace(&self, rules: Vec<InhibitRule>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::silence::labels;

    #[test]
    fn a_host_down_mutes_its_own_checks_only_and_never_itself() {
        let rule = InhibitRule::from_config(
            &["alertname=\"HostDown\"".into()],
            &["severity=~\"ticket|page\"".into()],
            &["host".into()],
        )
        .expect("rule");
        let down = labels(&[
            ("alertname", "HostDown"),
            ("host", "db-1"),
            ("severity", "page"),
        ]);
        let muted = silences(&[rule], &[&down]);
        let check_on = |host: &str| {
            labels(&[
                ("alertname", "CheckCritical"),
                ("host", host),
                ("severity", "page"),
            ])
        };
        assert!(crate::silence::silenced(&muted, &check_on("db-1")));
        assert!(!crate::silence::silenced(&muted, &check_on("db-2")));
        assert!(!crate::silence::silenced(&muted, &down), "not itself");
        assert!(InhibitRule::from_config(&[], &["a=\"b\"".into()], &[]).is_err());
    }

    #[test]
    fn alerts_that_match_both_sides_do_not_mute_each_other() {
        // Alertmanager's example: critical mutes warning on the same host; a rule whose
        // two sides overlap (severity=~"critical|warning" mutes severity="warning").
        let rule = InhibitRule::from_config(
            &["severity=~\"critical|warning\"".into()],
            &["severity=\"warning\"".into()],
            &["host".into()],
        )
        .expect("rule");
        let warning =
            |name: &str| labels(&[("alertname", name), ("host", "h"), ("severity", "warning")]);
        let (a, b) = (warning("A"), warning("B"));
        let muted = silences(std::slice::from_ref(&rule), &[&a, &b]);
        assert!(
            !crate::silence::silenced(&muted, &a),
            "B matches both sides"
        );
        assert!(
            !crate::silence::silenced(&muted, &b),
            "A matches both sides"
        );
        let critical = labels(&[("alertname", "C"), ("host", "h"), ("severity", "critical")]);
        let muted = silences(&[rule], &[&a, &b, &critical]);
        assert!(
            crate::silence::silenced(&muted, &a),
            "C matches the source only"
        );
        assert!(crate::silence::silenced(&muted, &b));
        assert!(!crate::silence::silenced(&muted, &critical));
    }
}
