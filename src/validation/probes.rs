//! Checks on a policy's probes: unique names, rules that name a probe that
//! exists, intervals and timeouts in bounds (a timeout no longer than the
//! interval), placeholders that fill and a URL that parses, and a target
//! the policy guards.

use std::collections::HashSet;

use super::{
    Problems,
    signals::{guarded_target, http_url, rules_name_existing},
};
use crate::{
    crd::{
        RemediationPolicySpec, Symptom,
        bounds::{PROBE_EVERY, PROBE_TIMEOUT},
    },
    placeholders::fill,
};

/// Adds the problems of `spec`'s probes.
pub fn probes(spec: &RemediationPolicySpec, problems: &mut Problems) {
    let mut names = HashSet::new();
    for (p, probe) in spec.probes.iter().enumerate() {
        let here = format!("spec.probes[{p}]");
        if !names.insert(probe.name.as_str()) {
            problems.add(
                format!("{here}.name"),
                format!("probe name {:?} is used twice", probe.name),
            );
        }
        problems.duration(format!("{here}.every"), &probe.every, PROBE_EVERY);
        problems.duration(format!("{here}.timeout"), &probe.timeout, PROBE_TIMEOUT);
        if let (Ok(every), Ok(timeout)) = (probe.every.checked(), probe.timeout.checked())
            && timeout > every
        {
            problems.add(
                format!("{here}.timeout"),
                "the timeout must not be longer than the interval (every)",
            );
        }
        let kinds = [
            probe.http.is_some(),
            probe.redis.is_some(),
            probe.postgres.is_some(),
            probe.prometheus.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            problems.add(
                here.clone(),
                "a probe has exactly one of http, redis, postgres, prometheus",
            );
        }
        if let Some(prometheus) = &probe.prometheus {
            http_url(
                format!("{here}.prometheus.address"),
                &prometheus.address,
                problems,
            );
            if let Err(error) = fill(&prometheus.query, "namespace", &probe.target.name) {
                problems.add(format!("{here}.prometheus.query"), error.to_string());
            }
            if prometheus.below.is_none() && prometheus.above.is_none() {
                problems.add(
                    format!("{here}.prometheus"),
                    "a prometheus probe needs below or above",
                );
            }
            if [prometheus.below, prometheus.above]
                .into_iter()
                .flatten()
                .any(|bound| !bound.is_finite())
            {
                problems.add(
                    format!("{here}.prometheus"),
                    "bounds must be finite numbers",
                );
            }
        }
        if let Some(http) = &probe.http {
            match fill(&http.url, "namespace", &probe.target.name) {
                Ok(url) => http_url(format!("{here}.http.url"), &url, problems),
                Err(error) => problems.add(format!("{here}.http.url"), error.to_string()),
            }
        }
        if let Some(redis) = &probe.redis
            && redis.clear_below.is_some_and(|clear| clear > redis.above)
        {
            problems.add(
                format!("{here}.redis.clearBelow"),
                "clearBelow must not be above `above`",
            );
        }
        guarded_target(spec, format!("{here}.target"), &probe.target, problems);
    }
    for (r, rule) in spec.rules.iter().enumerate() {
        for (v, name) in rule.verify.probes.iter().enumerate() {
            if !names.contains(name.as_str()) {
                problems.add(
                    format!("spec.rules[{r}].verify.probes[{v}]"),
                    format!("no probe named {name:?} in spec.probes"),
                );
            }
        }
        // A restore waiting on a probe that does not exist would keep its
        // writers down until its timeout.
        for (a, action) in rule.actions.iter().enumerate() {
            if let Some(name) = action
                .restore_data
                .as_ref()
                .and_then(|r| r.verify_probe.as_ref())
                && !names.contains(name.as_str())
            {
                problems.add(
                    format!("spec.rules[{r}].actions[{a}].restoreData.verifyProbe"),
                    format!("no probe named {name:?} in spec.probes"),
                );
            }
        }
    }
    rules_name_existing(
        spec,
        Symptom::ProbeFailing,
        ("probe", "probes"),
        &names,
        |when| when.probe.as_ref(),
        problems,
    );
}

#[cfg(test)]
mod tests {
    use crate::crd::RemediationPolicySpec;

    fn problems(yaml: &str) -> Vec<String> {
        let spec: RemediationPolicySpec = serde_yaml::from_str(yaml).unwrap();
        crate::validation::policy(&spec)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    #[test]
    fn probes_must_be_named_once_bounded_runnable_and_guarded() {
        let found = problems(
            r#"
targets: [{kind: Deployment, names: [webhook-worker]}]
probes:
- {name: queue, target: {kind: Deployment, name: webhook-worker}, every: 5s, timeout: 10s,
   redis: {secretRef: {name: r}, list: q, above: 10, clearBelow: 20}}
- {name: queue, target: {kind: Deployment, name: api}, http: {url: "ftp://{{ name }}/x"}}
rules:
- {name: backlog, when: {symptom: ProbeFailing, probe: queue}, severity: P1, type: IntegrationFailure,
   actions: [{action: restart}]}
- {name: down, when: {symptom: ProbeFailing, probe: nothing}, severity: P0, type: ServiceOutage,
   actions: [{action: restart}]}
"#,
        );
        for expected in [
            "spec.probes[0].timeout: the timeout must not be longer than the interval (every)",
            "spec.probes[0].redis.clearBelow: clearBelow must not be above `above`",
            "spec.probes[1].name: probe name \"queue\" is used twice",
            "spec.probes[1].http.url: scheme \"ftp\": only http and https",
            "spec.probes[1].target: Deployment/api is not among the policy's targets: its incidents could not act on it",
            "spec.rules[1].when.probe: no probe named \"nothing\" in spec.probes",
        ] {
            assert!(
                found.iter().any(|p| p == expected),
                "{expected:?} not in {found:#?}"
            );
        }
        assert!(
            problems(
                r#"
targets: [{kind: Deployment, names: [webhook-worker]}]
probes:
- {name: queue, target: {kind: Deployment, name: webhook-worker},
   redis: {secretRef: {name: r}, list: webhook_queue, above: 1000, clearBelow: 100}}
rules:
- {name: backlog, when: {symptom: ProbeFailing, probe: queue}, severity: P1, type: IntegrationFailure,
   actions: [{action: restart}]}
"#
            )
            .is_empty()
        );
    }

    #[test]
    fn placeholders_must_fill() {
        let found = problems(
            r#"
targets: [{kind: Deployment, names: [api]}]
probes:
- {name: health, target: {kind: Deployment, name: api}, http: {url: "http://{{ target }}.svc/health"}}
- {name: latency, target: {kind: Deployment, name: api},
   prometheus: {address: "http://prometheus:9090/", query: "max(x{job=\"{{ name }\"})", below: 1}}
- {name: ready, target: {kind: Deployment, name: api}, http: {url: "http://{{name}}.{{ namespace }}.svc/ready"}}
- {name: p95, target: {kind: Deployment, name: api},
   prometheus: {address: "http://prometheus:9090/", query: "max(x{job=\"{{ name }}\"})", below: 1}}
rules:
- {name: down, when: {symptom: ProbeFailing, probe: health}, severity: P0, type: ServiceOutage,
   actions: [{action: restart}]}
"#,
        );
        let fields: Vec<&str> = found.iter().filter_map(|p| p.split(':').next()).collect();
        assert_eq!(
            fields,
            ["spec.probes[0].http.url", "spec.probes[1].prometheus.query"],
            "{found:#?}"
        );
    }
}
