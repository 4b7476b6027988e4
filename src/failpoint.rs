//! Fault injection for tests: at a named point, the operator aborts itself
//! (as a SIGKILL would stop it there) or pauses, when `HGO_FAILPOINTS`
//! lists the point (comma-separated; `point` aborts, `point=pause:SECONDS`
//! pauses). Tests use it to prove what happens in windows too narrow to hit
//! by chance (a change made, its record not yet saved). Unset, it costs one
//! environment lookup per point. Only builds with debug assertions (the
//! tests') carry it: in a release binary every point is a no-op, so no
//! environment variable can make a deployed operator abort or stall.

#[cfg(debug_assertions)]
use std::time::Duration;

/// After a remediation change is made, before the status that records it is saved.
pub const AFTER_APPLY: &str = "after-apply";

/// After messages are sent, before the status that records how it went is saved.
pub const AFTER_SEND: &str = "after-send";

/// What a listed point does.
#[cfg(debug_assertions)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Abort,
    Pause(Duration),
}

/// What `HGO_FAILPOINTS` (as `listed`) says to do at `point`, if anything.
#[cfg(debug_assertions)]
fn fault(listed: &str, point: &str) -> Option<Fault> {
    listed.split(',').find_map(|entry| {
        let (name, action) = entry
            .trim()
            .split_once('=')
            .unwrap_or((entry.trim(), "abort"));
        if name != point {
            return None;
        }
        match action.strip_prefix("pause:") {
            Some(seconds) => seconds
                .parse()
                .ok()
                .map(|seconds| Fault::Pause(Duration::from_secs(seconds))),
            None => Some(Fault::Abort),
        }
    })
}

/// Aborts the process, or pauses this task, if `HGO_FAILPOINTS` names `point`.
#[cfg(debug_assertions)]
pub async fn reached(point: &str) {
    let Ok(listed) = std::env::var("HGO_FAILPOINTS") else {
        return;
    };
    match fault(&listed, point) {
        Some(Fault::Abort) => {
            tracing::error!(point, "failpoint reached: aborting");
            std::process::abort();
        }
        Some(Fault::Pause(pause)) => {
            tracing::warn!(point, ?pause, "failpoint reached: pausing");
            tokio::time::sleep(pause).await;
        }
        None => {}
    }
}

/// A release build injects no faults.
#[cfg(not(debug_assertions))]
pub async fn reached(_point: &str) {}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn a_listed_point_aborts_or_pauses_and_others_do_nothing() {
        let pause = Some(Fault::Pause(Duration::from_secs(3)));
        for (listed, point, expected) in [
            ("after-apply", AFTER_APPLY, Some(Fault::Abort)),
            ("after-send, after-apply", AFTER_APPLY, Some(Fault::Abort)),
            ("after-apply=pause:3", AFTER_APPLY, pause),
            ("after-apply=pause:3", AFTER_SEND, None),
            ("after-apply=pause:soon", AFTER_APPLY, None),
            ("", AFTER_APPLY, None),
        ] {
            assert_eq!(fault(listed, point), expected, "{listed:?} at {point}");
        }
    }
}
