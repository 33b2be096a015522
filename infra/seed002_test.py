"""Runs seed 002's curl quickstart and Python examples as written against a local Baton.

    python infra/seed002_test.py target/release/baton-local

Starts a fake OpenAI-compatible server (Chat Completions) on 127.0.0.1, then baton-local
on a free loopback port with a temporary database and that server as its managed provider
(BATON_MANAGED_PROVIDER, BATON_ALLOW_PRIVATE_TARGETS=1). The seed's examples are taken
from ../shared/seeds/002_7afb077ff9761d39.txt, else its copy in tests/seeds/ (SEED= overrides), and run with only the host
(`https://api.orchflow.cloud` -> the local server) and the key (`orch_your_key` -> a key
from POST /auth/register) replaced. Between the Python start and resume examples the test
polls the run the way the seed's frontend polling example does, until it is
`waiting_human`; at the end the run must be `completed` with the writer's output, and the
agents must have seen the human's answer. Servers are stopped by their PIDs on exit.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The product's seed documents beside the repository, else the copy in tests/seeds/.
_BESIDE = os.path.join(ROOT, "..", "shared", "seeds", "002_7afb077ff9761d39.txt")
_COPY = os.path.join(ROOT, "tests", "seeds", "002_7afb077ff9761d39.txt")
SEED = os.environ.get("SEED", _BESIDE if os.path.exists(_BESIDE) else _COPY)
HOST = "https://api.orchflow.cloud"
SEEN = []


class FakeOpenAI(BaseHTTPRequestHandler):
    """Chat Completions: the planner's request (with `response_format`) gets one task per
    agent the schema allows, chained; an agent's request gets a short answer naming its
    subtask and whether it saw the human's context."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        SEEN.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
        if not self.path.endswith("/chat/completions"):
            return self.answer(404, {"error": {"message": "not found"}})
        fmt = body.get("response_format")
        if fmt:
            schema = fmt["json_schema"]["schema"]
            agents = schema["properties"]["tasks"]["items"]["properties"]["agent"]["enum"]
            tasks = [
                {"id": f"S{i + 1}", "title": f"{a} work", "agent": a, "prompt": f"Do the {a} part",
                 "depends_on": [f"S{i}"] if i else []}
                for i, a in enumerate(agents)
            ]
            content = json.dumps({"tasks": tasks})
        else:
            user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
            sub = re.search(r"Your subtask \((T\d+)", user)
            saw = "founder-friendly" in user
            content = f"Output of {sub.group(1) if sub else '?'} (saw human context: {saw})"
        self.answer(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
        })

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def between(text, start, end):
    i = text.index(start)
    j = text.index(end, i)
    return text[i:j]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: seed002_test.py <path-to-baton-local>")
    binary = os.path.abspath(sys.argv[1])
    seed = open(SEED, encoding="utf-8").read()

    fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    fake_url = f"http://127.0.0.1:{fake.server_address[1]}/v1"

    work = tempfile.mkdtemp(prefix="baton-seed002.")
    port = free_port()
    env = dict(os.environ, NO_COLOR="1", BATON_ALLOW_PRIVATE_TARGETS="1",
               BATON_MANAGED_PROVIDER=json.dumps({"provider": "openai", "base_url": fake_url,
                                                  "api_key": "sk-fake-managed", "model": "gpt-4o-mini"}),
               BATON_TRIAL_RUNS="5")
    env.pop("BATON_ADDR", None)
    env.pop("BATON_DB", None)
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([binary, "--addr", f"127.0.0.1:{port}", "--db", os.path.join(work, "baton.db")],
                              env=env, stdout=log, stderr=log, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(f"{base}/api/v1/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        key = requests.post(f"{base}/api/v1/auth/register", json={"name": "Tarun", "email": "tarun@example.com"}).json()["api_key"]
        local = lambda s: s.replace(HOST, base).replace("orch_your_key", key)

        # 1. The curl quickstart.
        curl = between(seed, "curl -X POST https://api.orchflow.cloud/api/v1/runs", "Authentication")
        curl = curl[: curl.rindex("}'") + 2]
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", local(curl)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        started = json.loads(out.stdout)
        assert started.get("run_id", "").startswith("run_"), started
        print(f"seed002: curl quickstart started {started['run_id']} ({started['status']})")

        # 2. The Python backend example, then (after polling as the frontend example does)
        #    the resume example, in one namespace as the seed's reader would run them.
        start_py = between(seed, "import requests\n\napi_key", "Resume a human task")
        resume_py = between(seed, "Resume a human task\nPython\n", "Frontend polling example").split("\n", 2)[2]
        ns = {}
        exec(local(start_py), ns)
        run_id = ns["run_id"]
        headers = {"X-API-Key": key}
        status = None
        for _ in range(200):
            run = requests.get(f"{base}/api/v1/runs/{run_id}", headers=headers).json()
            status = run["status"]
            if status == "waiting_human":
                break
            time.sleep(0.05)
        assert status == "waiting_human", run
        assert run["tasks"][0]["id"] == "T1" and "company details" in run["tasks"][0]["prompt"], run["tasks"][0]
        exec(local(resume_py), ns)
        for _ in range(200):
            run = requests.get(f"{base}/api/v1/runs/{run_id}", headers=headers).json()
            if run["status"] in ("completed", "failed"):
                break
            time.sleep(0.05)
        assert run["status"] == "completed", json.dumps(run, indent=1)[:3000]
        tasks = requests.get(f"{base}/api/v1/runs/{run_id}/tasks", headers=headers).json()["data"]
        assert [t["id"] for t in tasks] == ["T1", "T2", "T3", "T4"], tasks
        assert run["output"] == "Output of T4 (saw human context: True)", run["output"]
        assert run["usage"]["input_tokens"] > 0, run["usage"]
        agent_calls = [s for s in SEEN if "response_format" not in s["body"]]
        assert all(s["auth"] == "Bearer sk-fake-managed" for s in SEEN)
        print(f"seed002: Python examples: run {run_id} completed with {run['output']!r} "
              f"({len(agent_calls)} agent calls, usage {run['usage']['input_tokens']}+{run['usage']['output_tokens']} tokens)")
        print("seed002: ok")
    except Exception:
        log.flush()
        sys.stderr.write(open(os.path.join(work, "server.log")).read()[-4000:])
        raise
    finally:
        server.terminate()
        server.wait(timeout=10)
        fake.shutdown()


if __name__ == "__main__":
    main()
