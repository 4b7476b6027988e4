#!/usr/bin/env python3
"""A loopback stand-in for Slack, PagerDuty and Statuspage in the demo.

None of the three has a server to be had here, so this one answers as
each provider documents, checks each request against the provider's
schema (refusing what the provider would refuse), and appends one line
per accepted message to a log that the demo shows.

    receiver.py PORT LOG

  POST  /slack/<channel>                   Slack incoming webhook (Block Kit)
  POST  /pagerduty/<person>                PagerDuty Events API v2
  POST  /statuspage/v1/pages/<page>/incidents          Statuspage: create
  PATCH /statuspage/v1/pages/<page>/incidents/<id>     Statuspage: update
  GET   /statuspage/v1/pages/<page>/incidents/unresolved and .../<id>
  GET   /health, /api/v1/status   the healing-guard API's own endpoints, for
                                  the demo's HTTP probes (the API's Service
                                  is not reachable from outside the cluster)
"""
import json
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
INCIDENTS = []  # Statuspage incidents, as its API shows them
ALERTS = {}  # PagerDuty: (routing key, dedup key) -> last action


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def slack_problem(body):
    text = body.get("text")
    if not isinstance(text, str) or not text:
        return "no_text"
    blocks = body.get("blocks", [])
    if len(blocks) > 50:
        return "invalid_blocks: more than 50"
    for block in blocks:
        limit = {"header": 150, "section": 3000}.get(block.get("type"))
        if limit is None:
            return f"invalid_blocks: type {block.get('type')!r}"
        inner = (block.get("text") or {}).get("text", "")
        if not inner or len(inner) > limit:
            return f"invalid_blocks: text of {len(inner)} characters"
    return None


def pagerduty_problem(body):
    if not body.get("routing_key"):
        return "routing_key is required"
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        return f"event_action {action!r} is invalid"
    if not body.get("dedup_key"):
        return "dedup_key is required"
    if action == "trigger":
        payload = body.get("payload") or {}
        summary = payload.get("summary") or ""
        if not summary or len(summary) > 1024:
            return "payload.summary is required, at most 1024"
        if not payload.get("source"):
            return "payload.source is required"
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            return "payload.severity is invalid"
    return None


def statuspage_problem(headers, body):
    if not (headers.get("Authorization") or "").startswith("OAuth "):
        return 401, "unauthorized"
    incident = body.get("incident") or {}
    if not incident.get("name"):
        return 422, "incident.name can't be blank"
    if incident.get("status") not in ("investigating", "identified", "monitoring", "resolved"):
        return 422, f"incident.status {incident.get('status')!r} is not valid"
    return None


class Handler(BaseHTTPRequestHandler):
    log_path = None

    def log_message(self, *args):  # quiet: the message log is the output
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self, line):
        with LOCK, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{now()}  {line}\n")

    def body(self):
        length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return None

    def do_POST(self):
        self.write("POST")

    def do_PATCH(self):
        self.write("PATCH")

    def write(self, method):
        parts = self.path.strip("/").split("/")
        body = self.body()
        if not isinstance(body, dict):
            return self.answer(400, {"error": "invalid_payload"})
        if parts[0] == "slack" and method == "POST":
            problem = slack_problem(body)
            if problem:
                return self.answer(400, {"error": problem})
            first = body["text"].splitlines()[0]
            self.record(f"Slack #{parts[-1]:<18} {first}")
            return self.answer(200, "ok")
        if parts[0] == "pagerduty" and method == "POST":
            problem = pagerduty_problem(body)
            if problem:
                return self.answer(400, {"status": "invalid event", "errors": [problem]})
            key = (body["routing_key"], body["dedup_key"])
            action = body["event_action"]
            with LOCK:
                before = ALERTS.get(key)
                changes = (before in (None, "resolve") and action == "trigger") or (
                    before == "trigger" and action in ("acknowledge", "resolve")) or (
                    before == "acknowledge" and action == "resolve")
                if changes:
                    ALERTS[key] = action
            if changes:
                summary = (body.get("payload") or {}).get("summary", "")
                self.record(f"PagerDuty {parts[-1]:<16} {action:<11} {summary}")
            return self.answer(202, {"status": "success", "dedup_key": body["dedup_key"]})
        if parts[0] == "statuspage":
            problem = statuspage_problem(self.headers, body)
            if problem:
                return self.answer(problem[0], {"error": problem[1]})
            incident = body["incident"]
            update = {"status": incident["status"], "body": incident.get("body", ""), "created_at": now()}
            with LOCK:
                if method == "POST":
                    found = {"id": f"inc-{len(INCIDENTS) + 1}", "name": incident["name"],
                             "status": incident["status"], "metadata": incident.get("metadata", {}),
                             "components": incident.get("components", {}), "incident_updates": [update]}
                    INCIDENTS.append(found)
                else:
                    found = next((i for i in INCIDENTS if i["id"] == parts[-1]), None)
                    if found is None:
                        return self.answer(404, {"error": "not found"})
                    found["status"] = incident["status"]
                    found["components"] = incident.get("components", found["components"])
                    found["incident_updates"].insert(0, update)
            components = ", ".join(f"{k}: {v}" for k, v in incident.get("components", {}).items())
            self.record(f"Statuspage {found['id']:<15} {incident['status']:<11} {components}")
            return self.answer(200, found)
        return self.answer(404, {"error": "not found"})

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/health":
            return self.answer(200, {"status": "healthy"})
        if path == "/api/v1/status":
            return self.answer(200, {"status": "operational", "components": {"database": "ok", "redis": "ok"}})
        parts = self.path.strip("/").split("/")
        if parts[0] != "statuspage" or not (self.headers.get("Authorization") or "").startswith("OAuth "):
            return self.answer(404, {"error": "not found"})
        with LOCK:
            if parts[-1] == "unresolved":
                return self.answer(200, [i for i in INCIDENTS if i["status"] != "resolved"])
            found = next((i for i in INCIDENTS if i["id"] == parts[-1]), None)
        return self.answer(200, found) if found else self.answer(404, {"error": "not found"})


def main():
    port, Handler.log_path = int(sys.argv[1]), sys.argv[2]
    open(Handler.log_path, "w", encoding="utf-8").close()
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
