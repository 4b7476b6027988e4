//! The harness of the tests against the real control plane that
//! `cluster/up.sh` starts (see `make test`), shared with the benchmark
//! (`benches/detection.rs`, `make bench`). It reads the admin kubeconfig from
//! `KUBECONFIG` and finds kubectl and helm on `PATH`.
//!
//! What can fail comes in two forms: one that returns the error (`try_*`,
//! [`poll`], [`Operator::launch`]), which the bench reports before it cleans
//! up, and one that panics, which is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    convert::Infallible,
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use healing_guard_operator::crd::{self, Incident, RemediationPolicy};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{conditions, wait::await_condition},
};
use tokio::sync::OnceCell;

/// What the fallible helpers return.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long a test waits for the cluster or the operator to react.
pub const WAIT: Duration = Duration::from_secs(60);

/// How often [`poll`] checks.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An admin client, with the CRDs installed once per process.
pub async fn client() -> Client {
    try_client().await.unwrap_or_else(|error| panic!("{error}"))
}

/// As [`client`], returning what went wrong.
pub async fn try_client() -> Result<Client, Error> {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    // kube's rustls needs a process-wide crypto provider: ring, as in the operator.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.map_err(|error| {
        format!(
            "no Kubernetes API ({error}): run this with `make test` or `make bench`, \
             which start a local control plane"
        )
    })?;
    CRDS.get_or_try_init(|| install_crds(client.clone()))
        .await?;
    Ok(client)
}

/// The requests the operator of `namespace` (its chart's ServiceAccount,
/// `op-<namespace>-healing-guard-operator`) made so far, by verb and
/// resource (`pods`, `pods/eviction`), from the API server's audit log
/// (cluster/up.sh audits every ServiceAccount request).
pub fn operator_requests(namespace: &str) -> std::collections::BTreeMap<(String, String), usize> {
    operator_requests_since(namespace, Timestamp::UNIX_EPOCH)
}

/// As [`operator_requests`], of the requests received from `since` on (by
/// the API server's clock, which is this machine's).
pub fn operator_requests_since(
    namespace: &str,
    since: Timestamp,
) -> std::collections::BTreeMap<(String, String), usize> {
    let mut calls = std::collections::BTreeMap::new();
    for request in operator_request_log(namespace) {
        if request.received >= since {
            *calls.entry((request.verb, request.resource)).or_default() += 1;
        }
    }
    calls
}

/// One request in the audit log.
pub struct AuditedRequest {
    /// When the API server received it.
    pub received: Timestamp,
    pub verb: String,
    /// With its subresource: `pods/eviction`.
    pub resource: String,
}

/// The requests the operator of `namespace` made so far, in the order the
/// audit log has them, each once. Requests made as the namespace's
/// remediator are the operator's too: the audit log names the operator as
/// their user, the remediator as the one impersonated.
pub fn operator_request_log(namespace: &str) -> Vec<AuditedRequest> {
    let kubeconfig =
        std::env::var("KUBECONFIG").expect("KUBECONFIG: run under cluster/with-cluster.sh");
    let audit_log = Path::new(&kubeconfig).with_file_name("audit.log");
    let text = std::fs::read_to_string(&audit_log)
        .unwrap_or_else(|error| panic!("{}: {error}", audit_log.display()));
    let user = format!("system:serviceaccount:{namespace}:op-{namespace}-healing-guard-operator");
    let mut seen = std::collections::BTreeSet::new();
    let mut requests = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue; // a line being written
        };
        if event["user"]["username"].as_str() != Some(user.as_str()) {
            continue;
        }
        let Some(received) = event["requestReceivedTimestamp"]
            .as_str()
            .and_then(|at| at.parse::<Timestamp>().ok())
        else {
            continue;
        };
        // A watch has a ResponseStarted line as well: count requests once.
        let id = event["auditID"].as_str().unwrap_or_default().to_owned();
        if !seen.insert(id) {
            continue;
        }
        let object = &event["objectRef"];
        let resource = object["resource"].as_str().unwrap_or_default();
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        requests.push(AuditedRequest {
            received,
            verb: event["verb"].as_str().unwrap_or_default().to_owned(),
            resource,
        });
    }
    requests
}

/// A client for one of the cluster's users ("tester", "commander",
/// "responder"), from the kubeconfig beside the admin's.
pub async fn client_as(user: &str) -> Client {
    let path = user_kubeconfig(user);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// The kubeconfig of one of the cluster's users, beside the admin's.
pub fn user_kubeconfig(user: &str) -> PathBuf {
    let admin = std::env::var("KUBECONFIG").expect("KUBECONFIG: run this with `make test`");
    Path::new(&admin).with_file_name(format!("kubeconfig-{user}"))
}

async fn install_crds(client: Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crd::all() {
        let name = crd.metadata.name.clone().ok_or("a CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("healing-guard-tests").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| format!("CRD {name} not established within {WAIT:?}"))??;
    }
    // Serving lags a moment behind Established.
    let incidents: Api<Incident> = Api::all(client.clone());
    let policies: Api<RemediationPolicy> = Api::all(client);
    poll("the CRDs to be served", WAIT, || {
        let (incidents, policies) = (incidents.clone(), policies.clone());
        async move {
            let one = ListParams::default().limit(1);
            incidents.list(&one).await?;
            policies.list(&one).await?;
            Ok::<_, kube::Error>(Some(()))
        }
    })
    .await
}

/// A fresh namespace whose name starts with `prefix`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    try_namespace(client, prefix)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// As [`namespace`], returning what went wrong.
pub async fn try_namespace(client: &Client, prefix: &str) -> Result<String, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns)
        .await
        .map_err(|error| format!("cannot create namespace {name}: {error}"))?;
    Ok(name)
}

/// Creates a Deployment in `namespace` from its JSON.
pub async fn create_deployment(client: &Client, namespace: &str, spec: serde_json::Value) {
    try_create_deployment(client, namespace, spec)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// As [`create_deployment`], returning what went wrong.
pub async fn try_create_deployment(
    client: &Client,
    namespace: &str,
    spec: serde_json::Value,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &serde_json::from_value(spec)?)
        .await?;
    Ok(())
}

/// Polls `check` until it returns Some, or panics after `WAIT` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, check).await
}

/// Polls `check` until it returns Some, or panics after `limit`.
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, limit, || {
        let checked = check();
        async move { Ok::<_, Infallible>(checked.await) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Calls `check` until it returns `Ok(Some)`, for at most `limit`. An error
/// (the API server may be busy for a moment under load) is reported and the
/// check made again; the last one is part of the time-out error.
pub async fn poll<T, E, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T, Error>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => {
                eprintln!("while waiting for {what}: {error}");
                last_error = Some(error.to_string());
            }
        }
        if start.elapsed() >= limit {
            let last = last_error.map_or_else(String::new, |e| format!(" (last error: {e})"));
            return Err(format!("timed out after {limit:?} waiting for: {what}{last}").into());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Sleeps until the clock has passed `at`, a deadline computed from times the
/// API reported (the operator runs on the same clock). For limits that are
/// made of time, such as a cooldown or a reopen window, nothing else shows
/// that they are over.
pub async fn until_past(at: Timestamp) {
    if let Ok(left) = Duration::try_from(at.duration_since(Timestamp::now())) {
        tokio::time::sleep(left).await;
    }
}

/// Waits until the named Incident satisfies `done`, then returns it.
pub async fn incident_where(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    done: impl Fn(&Incident) -> bool,
) -> Incident {
    let api: Api<Incident> = Api::namespaced(client.clone(), namespace);
    let done = &done;
    let limit = Duration::from_secs(120);
    let found =
        poll(&format!("{name}: {what}"), limit, || {
            let api = api.clone();
            async move {
                Ok::<_, kube::Error>(api.get(name).await.ok().filter(|incident| done(incident)))
            }
        })
        .await;
    match found {
        Ok(incident) => incident,
        // Say where it got to: the phase, the ledger and the timeline.
        Err(error) => {
            let last = api.get(name).await.ok().and_then(|i| i.status);
            panic!("{error}\nlast seen status: {last:#?}")
        }
    }
}

/// The phase an Incident's status reports.
pub fn phase_of(incident: &Incident) -> Option<healing_guard_operator::crd::Phase> {
    incident.status.as_ref()?.phase
}

/// Proof that the Incident controller has looked at the Incident as it is
/// now: changes `spec.description` (which bumps `metadata.generation`, and
/// which nothing in the operator acts on) and waits until
/// `status.observedGeneration` reaches the new generation. Returns the
/// Incident as that reconcile left it; whatever the operator would do about
/// the Incident's state at that moment, it has done (or recorded) by then.
pub async fn reconciled_now(client: &Client, namespace: &str, name: &str) -> Incident {
    let api: Api<Incident> = Api::namespaced(client.clone(), namespace);
    let note = format!("looked at again at {}", Timestamp::now());
    let patch = serde_json::json!({"spec": {"description": note}});
    let generation = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    incident_where(
        client,
        namespace,
        name,
        &format!("status.observedGeneration to reach {generation}"),
        |incident| {
            incident
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .is_some_and(|observed| observed >= generation)
        },
    )
    .await
}

/// Runs a command (kubectl, helm) and returns stdout, panicking with stderr on failure.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    try_run(program, args, stdin).unwrap_or_else(|error| panic!("{error}"))
}

/// As [`run`], returning the failure with its stderr.
pub fn try_run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
    let (status, stdout, stderr) = try_run_status(program, args, stdin)?;
    if !status {
        return Err(format!("{program} {} failed:\n{stderr}", args.join(" ")).into());
    }
    Ok(stdout)
}

/// Runs a command and returns (success, stdout, stderr).
pub fn run_status(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    try_run_status(program, args, stdin).unwrap_or_else(|error| panic!("{error}"))
}

fn try_run_status(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(bool, String, String), Error> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e} (is it on PATH? use `make test`)"))?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    input.write_all(stdin.unwrap_or_default().as_bytes())?;
    drop(input);
    let output = child.wait_with_output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// How to run the operator.
pub struct Launch<'a> {
    /// Where the chart's ServiceAccount and RBAC are installed; the operator
    /// runs with that account's token, so the chart's RBAC is what it has.
    pub namespace: &'a str,
    /// Watch only `namespace` (the tests), or every namespace (as in
    /// production, and in the bench).
    pub namespaced: bool,
    /// More `run` arguments.
    pub extra: &'a [&'a str],
    /// `RUST_LOG`; empty leaves it unset, for the operator's own default.
    pub log_filter: &'a str,
    /// `HGO_FAILPOINTS`: where the operator aborts itself (see src/failpoint.rs).
    pub failpoints: &'a str,
    /// Copy log lines into evidence (`--capture-logs`, and the chart's
    /// `evidence.captureLogs` for the RBAC it needs).
    pub capture_logs: bool,
    /// More chart values (`--set`), for the RBAC they render.
    pub chart_values: &'a [&'a str],
}

impl<'a> Launch<'a> {
    /// What a test runs: watching `namespace` only, logging at debug level.
    pub fn namespaced(namespace: &'a str) -> Launch<'a> {
        Launch {
            namespace,
            namespaced: true,
            extra: &[],
            log_filter: "info,healing_guard_operator=debug",
            failpoints: "",
            capture_logs: false,
            chart_values: &[],
        }
    }
}

/// The operator binary running in its own process, as a ServiceAccount bound
/// to the Helm chart's ClusterRole. It is built with the test profile for the
/// tests, with the release settings for the bench.
pub struct Operator {
    child: Child,
    pub metrics_url: String,
    pub log: PathBuf,
}

impl Operator {
    /// Installs the chart's ServiceAccount and RBAC into `namespace` and starts
    /// the operator with that account's token, watching that namespace; waits
    /// until `/readyz` is ok.
    pub async fn start(namespace: &str) -> Operator {
        Operator::start_with(namespace, &[]).await
    }

    /// As [`Operator::start`], with more `run` arguments.
    pub async fn start_with(namespace: &str, extra: &[&str]) -> Operator {
        let launch = Launch {
            extra,
            ..Launch::namespaced(namespace)
        };
        Operator::launch(&launch)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts the operator as `launch` says; waits until `/readyz` is ok, and
    /// fails at once if it exits first.
    pub async fn launch(launch: &Launch<'_>) -> Result<Operator, Error> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let namespace = launch.namespace;
        let release = format!("op-{namespace}");
        // Namespaced, as with the chart's watchNamespace: a Role, not a ClusterRole.
        let watch = format!(
            "watchNamespace={}",
            if launch.namespaced { namespace } else { "" }
        );
        let logs = format!("evidence.captureLogs={}", launch.capture_logs);
        let mut helm = vec![
            "template",
            &release,
            "charts/healing-guard-operator",
            "--namespace",
            namespace,
            "--set",
            &watch,
            "--set",
            &logs,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
            "--show-only",
            "templates/remediator.yaml",
        ];
        for value in launch.chart_values {
            helm.extend(["--set", value]);
        }
        let rbac = try_run("helm", &helm, None)?;
        try_run("kubectl", &["apply", "-f", "-"], Some(&rbac))?;
        let account = service_account_name(&rbac)?;
        let token = try_run(
            "kubectl",
            &[
                "create",
                "token",
                &account,
                "-n",
                namespace,
                "--duration",
                "2h",
            ],
            None,
        )?;

        let dir = repo().join("target").join("test-operators");
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join(format!("{namespace}.kubeconfig"));
        std::fs::write(&kubeconfig, service_account_kubeconfig(token.trim())?)?;
        let log = dir.join(format!(
            "{namespace}-{}.log",
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["run", "--listen", &listen];
        if launch.namespaced {
            args.extend(["--namespace", namespace]);
        }
        if launch.capture_logs {
            args.push("--capture-logs");
        }
        // The one Lease the chart's role grants: named after the release.
        let lease = format!("{release}-healing-guard-operator");
        if launch.extra.contains(&"--leader-elect") {
            args.extend(["--lease-name", &lease]);
        }
        let binary = env!("CARGO_BIN_EXE_healing-guard-operator");
        let output = std::fs::File::create(&log)?;
        let mut command = Command::new(binary);
        if launch.log_filter.is_empty() {
            command.env_remove("RUST_LOG");
        } else {
            command.env("RUST_LOG", launch.log_filter);
        }
        let child = command
            .args(args)
            .args(launch.extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("HGO_FAILPOINTS", launch.failpoints)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .map_err(|error| format!("cannot start {binary}: {error}"))?;
        let mut operator = Operator {
            child,
            metrics_url: format!("http://{listen}/metrics"),
            log,
        };
        let ready = format!("http://{listen}/readyz");
        let http = reqwest::Client::new();
        let child = &mut operator.child;
        let log = &operator.log;
        poll("the operator to be ready", WAIT, || {
            let exited = child.try_wait().ok().flatten();
            let request = http.get(&ready).send();
            async move {
                if let Some(status) = exited {
                    let logs = std::fs::read_to_string(log).unwrap_or_default();
                    return Ok::<_, Infallible>(Some(Err(format!(
                        "the operator exited with {status} before it was ready:\n{logs}"
                    ))));
                }
                let ready = request.await.is_ok_and(|r| r.status().is_success());
                Ok(ready.then_some(Ok(())))
            }
        })
        .await??;
        Ok(operator)
    }

    /// The operator's process id.
    #[allow(dead_code, reason = "the bench reads the operator's memory by it")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The operator's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.try_metrics()
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// As [`Operator::metrics`], returning what went wrong.
    pub async fn try_metrics(&self) -> Result<String, Error> {
        let response = reqwest::get(&self.metrics_url).await?.error_for_status()?;
        Ok(response.text().await?)
    }

    /// Stops the operator with SIGTERM and returns whether it exited cleanly
    /// (within 15 s; after that it is killed).
    pub fn terminate(mut self) -> bool {
        self.stop()
    }

    /// Kills the operator with SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the operator logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How it exited, once it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// When it first logged a line containing `text`, by the log's own clock.
    pub fn logged_at(&self, text: &str) -> Option<Timestamp> {
        self.logs()
            .lines()
            .find(|line| line.contains(text))
            .and_then(|line| {
                let plain: String = strip_ansi(line);
                plain.split_whitespace().next()?.parse().ok()
            })
    }

    /// SIGTERM, up to 15 s to exit, then SIGKILL; whether it exited cleanly.
    fn stop(&mut self) -> bool {
        // Only a child still running: once reaped, its PID may be reused.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The account each test namespace's remediator is (the chart's default).
pub const REMEDIATOR: &str = "healing-guard-remediator";

fn service_account_name(rendered: &str) -> Result<String, Error> {
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(document)?;
        // The operator's own, not the namespace's remediator.
        if value["kind"].as_str() == Some("ServiceAccount")
            && value["metadata"]["name"].as_str() != Some(REMEDIATOR)
        {
            let name = value["metadata"]["name"].as_str();
            return Ok(name.ok_or("the ServiceAccount has no name")?.to_owned());
        }
    }
    Err(format!("the chart renders no ServiceAccount:\n{rendered}").into())
}

/// A kubeconfig for the API server in the admin kubeconfig, with `token`.
fn service_account_kubeconfig(token: &str) -> Result<String, Error> {
    let admin_path =
        std::env::var("KUBECONFIG").map_err(|_| "KUBECONFIG is not set (`make test` sets it)")?;
    let admin: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(admin_path)?)?;
    let mut cluster = admin["clusters"][0]["cluster"].clone();
    if let Some(path) = cluster
        .get("certificate-authority")
        .and_then(|p| p.as_str())
        .map(Path::new)
        && path.is_relative()
    {
        return Err(
            format!("relative certificate-authority paths are not supported: {path:?}").into(),
        );
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": serde_json::to_value(&mut cluster)?}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "test",
    });
    Ok(serde_yaml::to_string(&config)?)
}

/// A log line without its terminal colours.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (a letter).
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Creates every document of `yaml` in `ns`, whatever its kind.
pub async fn apply(client: &Client, ns: &str, yaml: &str) {
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = <serde_json::Value as serde::Deserialize>::deserialize(document).unwrap();
        let mut object: kube::api::DynamicObject = serde_json::from_value(value).unwrap();
        object.metadata.namespace = Some(ns.to_owned());
        let gvk = kube::core::GroupVersionKind::try_from(object.types.as_ref().unwrap()).unwrap();
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &resource);
        api.create(&PostParams::default(), &object).await.unwrap();
    }
}

/// The Ready condition of `kind`/`name`, as (status, message).
pub async fn ready_of(
    client: &Client,
    ns: &str,
    plural: &str,
    name: &str,
) -> Option<(String, String)> {
    let resource = kube::api::ApiResource {
        group: "healing-guard.io".into(),
        version: "v1alpha1".into(),
        api_version: "healing-guard.io/v1alpha1".into(),
        kind: String::new(),
        plural: plural.into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let object = api.get(name).await.ok()?;
    let conditions = object.data["status"]["conditions"].as_array()?.clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_owned(),
        ready["message"].as_str()?.to_owned(),
    ))
}
