//! Shared helpers for the tests against the real control plane that
//! `cluster/up.sh` starts (see `make test`). They read the admin kubeconfig
//! from `KUBECONFIG` and find kubectl and helm on `PATH`.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use healing_guard_operator::crd::{self, Incident, RemediationPolicy};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::{conditions, wait::await_condition},
};
use tokio::sync::OnceCell;

/// How long a test waits for the cluster or the operator to react.
pub const WAIT: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An admin client, with the CRDs installed once per test run.
pub async fn client() -> Client {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.unwrap_or_else(|error| {
        panic!("no Kubernetes API: {error}. Run these tests with `make test`, which starts a local control plane")
    });
    CRDS.get_or_init(|| install_crds(client.clone())).await;
    client
}

async fn install_crds(client: Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("healing-guard-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap()
        .unwrap();
    }
    // Serving lags a moment behind Established.
    let incidents: Api<Incident> = Api::all(client.clone());
    let policies: Api<RemediationPolicy> = Api::all(client);
    eventually("the CRDs to be served", || {
        let (incidents, policies) = (incidents.clone(), policies.clone());
        async move {
            let served = incidents.list(&Default::default()).await.is_ok()
                && policies.list(&Default::default()).await.is_ok();
            served.then_some(())
        }
    })
    .await;
}

/// A fresh namespace whose name starts with `prefix`.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
    name
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
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
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
    eventually_within(&format!("{name}: {what}"), Duration::from_secs(120), || {
        let api = api.clone();
        async move { api.get(name).await.ok().filter(|incident| done(incident)) }
    })
    .await
}

/// The phase an Incident's status reports.
pub fn phase_of(incident: &Incident) -> Option<healing_guard_operator::crd::Phase> {
    incident.status.as_ref()?.phase
}

/// Runs a command (kubectl, helm) and returns stdout, panicking with stderr on failure.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (status, stdout, stderr) = run_status(program, args, stdin);
    assert!(status, "{program} {} failed:\n{stderr}", args.join(" "));
    stdout
}

/// Runs a command and returns (success, stdout, stderr).
pub fn run_status(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it on PATH? use `make test`)"));
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The operator binary running in its own process, as a ServiceAccount bound
/// to the Helm chart's ClusterRole, watching one namespace.
pub struct Operator {
    child: Child,
    pub metrics_url: String,
    pub log: PathBuf,
}

impl Operator {
    /// Installs the chart's ServiceAccount and RBAC into `namespace` and starts
    /// the operator with that account's token; waits until `/readyz` is ok.
    pub async fn start(namespace: &str) -> Operator {
        Operator::start_with(namespace, &[]).await
    }

    /// As [`Operator::start`], with more `run` arguments.
    pub async fn start_with(namespace: &str, extra: &[&str]) -> Operator {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let release = format!("op-{namespace}");
        let rbac = run(
            "helm",
            &[
                "template",
                &release,
                "charts/healing-guard-operator",
                "--namespace",
                namespace,
                "--show-only",
                "templates/serviceaccount.yaml",
                "--show-only",
                "templates/rbac.yaml",
            ],
            None,
        );
        run("kubectl", &["apply", "-f", "-"], Some(&rbac));
        let account = service_account_name(&rbac);
        let token = run(
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
        );

        let dir = repo().join("target").join("test-operators");
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join(format!("{namespace}.kubeconfig"));
        std::fs::write(&kubeconfig, service_account_kubeconfig(token.trim())).unwrap();
        let log = dir.join(format!(
            "{namespace}-{}.log",
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_healing-guard-operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,healing_guard_operator=debug")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap().try_clone().unwrap())
            .spawn()
            .unwrap();
        let operator = Operator {
            child,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log,
        };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let http = reqwest::Client::new();
        eventually("the operator to be ready", || {
            let request = http.get(&ready).send();
            async move { request.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        operator
    }

    /// The operator's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the operator with SIGTERM and returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
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
        false
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
}

impl Drop for Operator {
    fn drop(&mut self) {
        // Only a child still running: after terminate() its PID may be reused.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

fn service_account_name(rendered: &str) -> String {
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(document).unwrap();
        if value["kind"].as_str() == Some("ServiceAccount") {
            return value["metadata"]["name"].as_str().unwrap().to_owned();
        }
    }
    panic!("the chart renders no ServiceAccount:\n{rendered}");
}

/// A kubeconfig for the API server in the admin kubeconfig, with `token`.
fn service_account_kubeconfig(token: &str) -> String {
    let admin_path = std::env::var("KUBECONFIG").expect("KUBECONFIG is set by `make test`");
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin_path).unwrap()).unwrap();
    let mut cluster = admin["clusters"][0]["cluster"].clone();
    if let Some(path) = cluster
        .get("certificate-authority")
        .and_then(|p| p.as_str())
        .map(Path::new)
        && path.is_relative()
    {
        panic!("relative certificate-authority paths are not supported: {path:?}");
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": serde_json::to_value(&mut cluster).unwrap()}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "test",
    });
    serde_yaml::to_string(&config).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
