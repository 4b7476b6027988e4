//! Writes what the detector saw into Incidents: creates them, counts repeats,
//! reopens them, and marks signals cleared, as `write_plan` decides. The
//! detector owns only `status.detection` (its own field manager); the
//! Incident controller owns the rest of the status and reacts to what is
//! written here.

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::reflector::Store,
};
use tracing::info;

use super::{
    report::Report,
    write_plan::{DetectionPatch, DetectionPlan, IncidentId, WriteMemory, WritePlan},
};
use crate::{crd::Incident, metrics::Metrics, names::DETECTOR_FIELD_MANAGER};

/// What became of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// In the API (or nothing to write).
    Done,
    /// Only counts moved and the incident was updated a moment ago: keep
    /// the report and fold it into the next one.
    Deferred,
}

/// Applies reports to the API.
pub struct Writer {
    client: Client,
    metrics: Arc<Metrics>,
    incidents: Store<Incident>,
    memory: WriteMemory,
}

impl Writer {
    pub fn new(client: Client, metrics: Arc<Metrics>, incidents: Store<Incident>) -> Self {
        Writer {
            client,
            metrics,
            incidents,
            memory: WriteMemory::default(),
        }
    }

    /// Whether an open detected incident exists for the key whose signal is
    /// not yet marked cleared (so a clear report has something to do).
    pub fn open_uncleared(&self, namespace: &str, key: &str) -> bool {
        self.memory
            .open_uncleared(namespace, &self.same_key(namespace, key))
    }

    fn same_key(&self, namespace: &str, key: &str) -> Vec<Arc<Incident>> {
        self.incidents.state_filter(|incident| {
            incident.namespace().as_deref() == Some(namespace)
                && incident.spec.source.dedup_key.as_deref() == Some(key)
        })
    }

    /// Forgets what it remembers of incidents that no longer exist (after
    /// a resync, when deletions may have been missed).
    pub fn prune(&mut self) {
        let existing: BTreeSet<IncidentId> = self
            .incidents
            .state()
            .iter()
            .map(|i| (i.namespace().unwrap_or_default(), i.name_any()))
            .collect();
        self.memory.prune(&existing);
    }

    /// Records one report.
    pub async fn write(&mut self, report: Report) -> Result<Written, kube::Error> {
        let same_key = self.same_key(&report.namespace, &report.key());
        let incidents = &self.incidents;
        let plan = self.memory.plan(
            &report,
            &same_key,
            |name| stored(incidents, &report.namespace, name),
            Timestamp::now(),
        );
        match plan {
            WritePlan::Nothing => Ok(Written::Done),
            WritePlan::Detection(plan) => self.apply(plan, &report).await,
            WritePlan::Create(incident) => {
                self.create(&incident, &report).await?;
                let name = incident.name_any();
                self.memory.created(&report, &name);
                // Planned after the create: it may have met one that exists.
                let stored = stored(&self.incidents, &report.namespace, &name);
                let plan = self.memory.plan_detection(
                    &report,
                    &name,
                    false,
                    stored.as_deref(),
                    Timestamp::now(),
                );
                self.apply(plan, &report).await
            }
        }
    }

    async fn create(&self, incident: &Incident, report: &Report) -> Result<(), kube::Error> {
        let api: Api<Incident> = Api::namespaced(self.client.clone(), &report.namespace);
        match api.create(&PostParams::default(), incident).await {
            Ok(_) => {
                let latency = Timestamp::now().duration_since(report.noticed);
                self.metrics
                    .detection_latency
                    .observe(latency.as_secs_f64().max(0.0));
                let previous = incident.spec.source.previous_incident.as_deref();
                info!(
                    incident = %incident.name_any(),
                    key = %report.key(),
                    rule = %report.rule,
                    severity = %report.severity,
                    previous = previous.unwrap_or("-"),
                    "incident opened"
                );
                Ok(())
            }
            // Created before (a restart, or a report racing its own create).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn apply(
        &mut self,
        plan: DetectionPlan,
        report: &Report,
    ) -> Result<Written, kube::Error> {
        let patch = match plan {
            DetectionPlan::Unchanged => return Ok(Written::Done),
            DetectionPlan::Deferred => return Ok(Written::Deferred),
            DetectionPlan::Patch(patch) => patch,
        };
        if patch.reopen {
            info!(incident = %patch.name, key = %report.key(), "signal returned within the reopen window: reopening");
        }
        self.patch_detection(*patch).await?;
        Ok(Written::Done)
    }

    async fn patch_detection(&mut self, patch: DetectionPatch) -> Result<(), kube::Error> {
        let api: Api<Incident> = Api::namespaced(self.client.clone(), &patch.namespace);
        let detection = serde_json::to_value(&patch.detection).map_err(kube::Error::SerdeError)?;
        let body = serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1",
            "kind": "Incident",
            "status": { "detection": detection },
        });
        let written = api
            .patch_status(
                &patch.name,
                &PatchParams::apply(DETECTOR_FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await;
        if let Err(kube::Error::Api(status)) = &written
            && status.code == 404
        {
            // Deleted by a human: forget it, so that the signal, if it goes
            // on, opens a new incident rather than updating a gone one.
            info!(incident = %patch.name, "incident deleted; a signal that goes on opens it again");
            self.memory.forget(&patch.id());
        }
        written?;
        self.memory.wrote(patch, Timestamp::now());
        Ok(())
    }

    /// How many entries it keeps about incidents.
    pub fn remembered(&self) -> usize {
        self.memory.remembered()
    }

    /// Forgets what it remembers of one incident (deleted).
    pub fn forget(&mut self, id: &IncidentId) {
        self.memory.forget(id);
    }
}

/// The incident of that name, as the store holds it.
fn stored(incidents: &Store<Incident>, namespace: &str, name: &str) -> Option<Arc<Incident>> {
    incidents
        .state_filter(|i| i.namespace().as_deref() == Some(namespace) && i.name_any() == name)
        .into_iter()
        .next()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use kube::{client::Body, runtime::reflector};
    use serde_json::{Value, json};

    use super::*;
    use crate::detector::fixtures::{at, clear_report, crash_report, incident};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn writer() -> (Writer, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (store, _filler) = reflector::store::<Incident>();
        let client = Client::new(service, "default");
        (
            Writer::new(client, Arc::new(Metrics::default()), store),
            handle,
        )
    }

    /// Answers the next request with `code`: the incident on success, an
    /// API status otherwise. Returns the request's method and URI, and its body.
    async fn answer(handle: &mut Handle, code: u16) -> (String, Value) {
        let (request, send) = handle.next_request().await.unwrap();
        let line = format!("{} {}", request.method(), request.uri());
        let body = request.into_body().collect_bytes().await.unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let reply = if code < 300 {
            serde_json::to_value(incident("api-crashloop", None, None)).unwrap()
        } else {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                   "reason": "Refused", "message": "refused"})
        };
        let response = Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap();
        send.send_response(response);
        (line, sent)
    }

    async fn write(writer: &mut Writer, report: Report) -> Result<Written, kube::Error> {
        tokio::time::timeout(Duration::from_secs(10), writer.write(report))
            .await
            .unwrap()
    }

    const INCIDENTS: &str = "/apis/healing-guard.io/v1alpha1/namespaces/hg/incidents";

    #[tokio::test]
    async fn creates_then_applies_the_detection_and_forgets_an_incident_deleted_under_it() {
        let (mut writer, mut handle) = writer();
        let server = async {
            let (create, incident) = answer(&mut handle, 201).await;
            assert!(
                create.starts_with(&format!("POST {INCIDENTS}?")),
                "{create}"
            );
            assert_eq!(incident["metadata"]["name"], "api-crashloop");
            let (patch, body) = answer(&mut handle, 200).await;
            assert!(
                patch.starts_with(&format!("PATCH {INCIDENTS}/api-crashloop/status?")),
                "{patch}"
            );
            assert!(patch.contains("fieldManager=healing-guard-operator-detector"));
            assert!(patch.contains("force=true"));
            assert_eq!(body["status"]["detection"]["occurrences"], 1);
        };
        let first = crash_report(at(0), &["api-1"], 1);
        let (written, ()) = tokio::join!(write(&mut writer, first), server);
        assert_eq!(written.unwrap(), Written::Done);
        assert_eq!(writer.remembered(), 4);

        // A count-only repeat right after: no request, kept for later.
        let repeat = crash_report(at(1), &["api-1"], 1);
        assert_eq!(write(&mut writer, repeat).await.unwrap(), Written::Deferred);

        // Deleted by a human: the clear meets 404, and it is forgotten.
        let server = async {
            let (patch, body) = answer(&mut handle, 404).await;
            assert!(patch.starts_with("PATCH"), "{patch}");
            assert!(body["status"]["detection"]["clearedAt"].is_string());
        };
        let (written, ()) = tokio::join!(write(&mut writer, clear_report(at(2))), server);
        assert!(written.is_err());
        assert_eq!(writer.remembered(), 0);

        // The signal goes on: created again (it exists: as good), then applied.
        let server = async {
            let (create, _) = answer(&mut handle, 409).await;
            assert!(create.starts_with("POST"), "{create}");
            let (patch, _) = answer(&mut handle, 200).await;
            assert!(patch.starts_with("PATCH"), "{patch}");
        };
        let again = crash_report(at(3), &["api-1"], 1);
        let (written, ()) = tokio::join!(write(&mut writer, again), server);
        assert_eq!(written.unwrap(), Written::Done);
    }
}
