import os
from pathlib import Path

import pytest

# ../shared/ beside the checkout (as laid out for developers and CI) holds the design and real
# ToolBench/StableToolBench sample files; tests that read them skip when it is absent.
SHARED = Path(os.environ.get("TOOLSFT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOOLBENCH_SAMPLE = SHARED / "toolbench-sample"

# Tests never reach the hub; fail fast instead of waiting on network time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """All five notebooks, once per test session, through papermill on the smoke profile.

    Outputs go to a temporary folder, so a test run never touches outputs/smoke/.
    """
    from lib.common import config
    from lib.pipeline import run

    out = tmp_path_factory.mktemp("smoke")
    overrides = {"output_dir": str(out)}
    executed = run.run("smoke", overrides, force=True)
    return {"out": out, "executed": executed, "cfg": config.load("smoke", overrides)}


@pytest.fixture
def server():
    """The scripted OpenAI-compatible judge of tests/judge_helpers.py (the stage-04 tests'; a module
    that needs another server, as test_tools does, defines its own)."""
    from judge_helpers import FakeServer, scripted_judge
    srv = FakeServer(scripted_judge)
    yield srv
    srv.close()


class LoopbackServer:
    """A JSON-over-HTTP server on 127.0.0.1 for tests that need a real peer (OpenAI-compatible
    endpoints, the virtual API server): `respond(path, headers, body) -> (status, payload)` or
    `(status, payload, headers)` (extra response headers, e.g. Retry-After; a bytes payload is sent
    as is, e.g. a proxy's HTML page), body None for a GET (the openai client's models.list()); every
    request is kept in `requests` as (path, headers, body). Use as a context manager or close()."""

    def __init__(self, respond):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.respond, self.requests = respond, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.do_POST()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                server.requests.append((self.path, self.headers, body))
                status, payload, *extra = server.respond(self.path, self.headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", **(extra[0] if extra else {})}
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):   # the client gave up (a timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()     # close() waits up to one poll

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def chat_completion(model: str, content: str, completion_tokens: int = 1) -> dict:
    """An OpenAI chat.completion reply carrying `content`."""
    return {"id": "c", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens,
                      "total_tokens": 5 + completion_tokens}}
