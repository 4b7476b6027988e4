//! Bounded work, tried as a hostile user would: a probe pointed at an
//! endless answer and a flood of slow unauthenticated uploads to the alert
//! webhook leave the operator's memory well under its chart limit (256Mi).

use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use futures::stream;
use healing_guard_operator::crd::RemediationPolicy;
use kube::{Api, api::PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Launch, Operator, client, create_deployment, namespace};

/// The chart's memory limit, and the bound asserted: half of it.
const CHART_LIMIT_KIB: u64 = 256 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A server whose every answer is an endless stream of zeros.
async fn endless() -> String {
    let chunk = vec![b'0'; 64 * 1024];
    let app = Router::new().fallback(get(move || {
        let chunk = chunk.clone();
        async move {
            let forever = stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            Body::from_stream(forever)
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// An upload that announces 100 MiB and sends a byte every 100 ms, without
/// the bearer token; returns the status line it was answered with.
async fn slow_upload(port: u16) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return "not connected".into();
    };
    let head = "POST /alertmanager HTTP/1.1\r\nHost: operator\r\nContent-Type: application/json\r\n\
                Content-Length: 104857600\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return "refused".into();
    }
    let mut answer = vec![0u8; 64];
    for _ in 0..100 {
        tokio::select! {
            read = stream.read(&mut answer) => {
                return match read {
                    Ok(n) if n > 0 => String::from_utf8_lossy(&answer[..n])
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    _ => "closed".into(),
                };
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stream.write_all(b"{").await.is_err() {
                    return "closed".into();
                }
            }
        }
    }
    "no answer".into()
}

#[tokio::test]
async fn endless_answers_and_slow_uploads_leave_the_operators_memory_bounded() {
    let client = client().await;
    let ns = namespace(&client, "bounded").await;
    let operator = Operator::launch(&Launch {
        extra: &["--alertmanager-token", "bounded-token"],
        ..Launch::namespaced(&ns)
    })
    .await
    .unwrap();
    let pid = operator.pid();
    let before = rss_kib(pid);

    // A probe pointed at an answer that never ends, every 2 s.
    let address = endless().await;
    create_deployment(
        &client,
        &ns,
        json!({"metadata": {"name": "api"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                        "template": {"metadata": {"labels": {"app": "api"}},
                                     "spec": {"containers": [{"name": "app", "image": "api:1"}]}}}}),
    )
    .await;
    let policy: RemediationPolicy = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "RemediationPolicy",
        "metadata": {"name": "guard"},
        "spec": {"mode": "DryRun", "targets": [{"kind": "Deployment", "names": ["api"]}],
                 "probes": [{"name": "endless", "target": {"kind": "Deployment", "name": "api"},
                             "every": "2s", "timeout": "1s",
                             "prometheus": {"address": address, "query": "up", "below": 1.0}}],
                 "rules": [{"name": "slow", "when": {"symptom": "ProbeFailing", "probe": "endless"},
                            "severity": "P3", "type": "PerformanceDegradation",
                            "actions": [{"action": "restart"}]}]}
    }))
    .unwrap();
    Api::<RemediationPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    // 200 slow uploads without the token, all at once.
    let port: u16 = operator
        .metrics_url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uploads: Vec<_> = (0..200).map(|_| tokio::spawn(slow_upload(port))).collect();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for upload in uploads {
        *answers.entry(upload.await.unwrap()).or_default() += 1;
    }
    // The probe reads the endless answer every 2 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = rss_kib(pid);
    let checks = operator.metrics().await;
    println!(
        "operator VmRSS: {before} KiB before, {after} KiB after 200 slow uploads and \
         endless probe answers; uploads answered: {answers:?}"
    );
    assert_eq!(
        answers.get("HTTP/1.1 401 Unauthorized"),
        Some(&200),
        "each refused at once, its body unread: {answers:?}"
    );
    assert!(
        after < CHART_LIMIT_KIB / 2,
        "{after} KiB is not well under the chart's limit"
    );
    // The probe's answers were cut at the bound and counted as failed checks.
    assert!(
        checks
            .lines()
            .any(|l| l.starts_with("healing_guard_probe_checks_total{")
                && l.contains("kind=\"prometheus\"")
                && l.contains("result=\"failed\"")),
        "{checks}"
    );
}
