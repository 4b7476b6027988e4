//! The limits of every field a person writes, in one place: the CRD schema
//! is generated from them (so the API server refuses what is out of bounds,
//! naming the field) and validation checks the same numbers in code, for
//! objects stored under an older schema.

use kube::core::{Rule, cel::Message};

use super::duration::Duration;

/// A DNS-1123 label: a step, rule or container name.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: a workload, policy or ConfigMap name.
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Replicas a scale step may set or reach.
pub const MAX_REPLICAS: i32 = 1000;
/// The most replicas one scale step may add.
pub const MAX_INCREMENT: i32 = 100;
/// Upper bound of small counts: maxActions, thresholds, maxUnavailable.
pub const MAX_COUNT: i32 = 100;
/// The highest restart count a CrashLoopBackOff rule may wait for.
pub const MAX_RESTARTS: i32 = 1000;
/// Resources one scale step may set per list (limits or requests).
pub const MAX_RESOURCES: usize = 8;
/// Free text a person writes: notes, reasons.
pub const MAX_NOTE: usize = 1024;

/// The range a duration field accepts.
#[derive(Clone, Copy, Debug)]
pub struct DurationBound {
    /// The longest value, as a Go duration the schema's CEL can read.
    pub longest: &'static str,
    /// Whether zero is refused (meaningless for this field).
    pub positive: bool,
    /// The shortest value that makes sense, if more than zero (a Go duration).
    pub shortest: Option<&'static str>,
}

impl DurationBound {
    /// The CEL rule that enforces the bound in the schema.
    pub fn rule(self) -> Rule {
        let longest = self.longest;
        let (rule, message) = if let Some(shortest) = self.shortest {
            (
                format!(
                    "duration(self) >= duration('{shortest}') && duration(self) <= duration('{longest}')"
                ),
                format!("must be at least {shortest} and at most {longest}"),
            )
        } else if self.positive {
            (
                format!(
                    "duration(self) > duration('0s') && duration(self) <= duration('{longest}')"
                ),
                format!("must be longer than 0s and at most {longest}"),
            )
        } else {
            (
                format!("duration(self) <= duration('{longest}')"),
                format!("must be at most {longest}"),
            )
        };
        Rule::new(rule).message(Message::Message(message))
    }

    /// What is wrong with `value` for this field, if anything.
    pub fn check(self, value: &Duration) -> Option<String> {
        let value = match value.checked() {
            Ok(value) => value,
            Err(bad) => return Some(bad.to_string()),
        };
        let longest = Duration::parse(self.longest).as_std();
        let shortest = self.shortest.map(|s| Duration::parse(s).as_std());
        if value > longest || shortest.is_some_and(|shortest| value < shortest) {
            Some(match self.shortest {
                Some(shortest) => {
                    format!("must be at least {shortest} and at most {}", self.longest)
                }
                None => format!("must be at most {}", self.longest),
            })
        } else if self.positive && value.is_zero() {
            Some("must be longer than 0s".into())
        } else {
            None
        }
    }
}

/// How long a cleared signal must stay clear, or a workload healthy.
pub const HOLD_DOWN: DurationBound = DurationBound {
    longest: "24h",
    positive: false,
    shortest: None,
};
/// How long a symptom must last before it counts.
pub const SUSTAINED_FOR: DurationBound = DurationBound {
    longest: "24h",
    positive: false,
    shortest: None,
};
/// How long verification of one step may take.
pub const STEP_TIMEOUT: DurationBound = DurationBound {
    longest: "24h",
    positive: true,
    shortest: None,
};
/// The quiet time between two actions on a target.
pub const COOLDOWN: DurationBound = DurationBound {
    longest: "24h",
    positive: false,
    shortest: None,
};
/// The window over which actions are counted, and the reopen window.
pub const WINDOW: DurationBound = DurationBound {
    longest: "168h",
    positive: true,
    shortest: None,
};
/// Reopening after resolution; zero turns it off.
pub const REOPEN_WINDOW: DurationBound = DurationBound {
    longest: "168h",
    positive: false,
    shortest: None,
};
/// How often an open incident gets a status update.
pub const UPDATE_EVERY: DurationBound = DurationBound {
    longest: "24h",
    positive: true,
    shortest: Some("1m"),
};
/// How long an escalation step waits for an acknowledgement.
pub const ESCALATION_WAIT: DurationBound = DurationBound {
    longest: "24h",
    positive: true,
    shortest: Some("1m"),
};
/// One turn of an on-call rotation.
pub const ROTATION_TURN: DurationBound = DurationBound {
    longest: "720h",
    positive: true,
    shortest: Some("1h"),
};
/// How often a probe runs.
pub const PROBE_EVERY: DurationBound = DurationBound {
    longest: "10m",
    positive: true,
    shortest: Some("1s"),
};
/// How long one probe check may take.
pub const PROBE_TIMEOUT: DurationBound = DurationBound {
    longest: "1m",
    positive: true,
    shortest: None,
};
/// How long closed incidents are kept.
pub const RETENTION: DurationBound = DurationBound {
    longest: "8784h",
    positive: true,
    shortest: None,
};

/// Schema rules for each bound, as `#[x_kube(validation = ...)]` needs a
/// function call.
pub fn hold_down() -> Rule {
    HOLD_DOWN.rule()
}
pub fn sustained_for() -> Rule {
    SUSTAINED_FOR.rule()
}
pub fn step_timeout() -> Rule {
    STEP_TIMEOUT.rule()
}
pub fn cooldown() -> Rule {
    COOLDOWN.rule()
}
pub fn window() -> Rule {
    WINDOW.rule()
}
pub fn reopen_window() -> Rule {
    REOPEN_WINDOW.rule()
}
pub fn update_every() -> Rule {
    UPDATE_EVERY.rule()
}
pub fn probe_every() -> Rule {
    PROBE_EVERY.rule()
}
pub fn probe_timeout() -> Rule {
    PROBE_TIMEOUT.rule()
}
pub fn escalation_wait() -> Rule {
    ESCALATION_WAIT.rule()
}
pub fn rotation_turn() -> Rule {
    ROTATION_TURN.rule()
}
pub fn retention() -> Rule {
    RETENTION.rule()
}

/// A non-negative Kubernetes quantity (the API server's own grammar, less the sign).
pub const QUANTITY: &str = r"^(\+)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A resources map (limits or requests): at most [`MAX_RESOURCES`] entries,
/// each a non-negative quantity such as `512Mi`, `2Gi`, `500m` or `2`.
pub fn quantities(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": MAX_RESOURCES,
        // Strings by the grammar, whole numbers not below zero.
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "maxLength": 32,
            "pattern": QUANTITY,
            "minimum": 0
        }
    })
}

/// An object whose fields the API server keeps as written (a Job's spec,
/// checked by the controller against the Job type, and by the API server
/// when the Job is created).
pub fn free_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Any JSON value kept as written (a patch: an object or a list).
pub fn free_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}
