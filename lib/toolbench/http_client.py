"""The HTTP environments' client: one call sent with its time-out, HTTP 429 and 502-504 retried as
Retry-After asks, the answer (or its absence) in the project's words; and their common base class."""
from __future__ import annotations

import dataclasses
import time

import httpx

from lib.toolbench.tool_env import ToolEnv

RETRIES = 3                 # waits on HTTP 429 / 502-504 before a call counts as failed
MAX_RETRY_AFTER_S = 60.0    # a longer Retry-After is cut to this


def retry_wait(retry_after, attempt: int) -> float:
    """Seconds before retry `attempt` (from 0): the server's Retry-After in its seconds form, else
    (absent, or an HTTP date) 1, 2, 4 ... s; never more than MAX_RETRY_AFTER_S."""
    try:
        wait = float(retry_after)
    except (TypeError, ValueError):
        wait = 2.0 ** attempt
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def new_client(timeout: float) -> httpx.Client:
    """An environment's HTTP client: `timeout` s for connecting and for each read and write;
    redirects followed; any other status comes back as a response (send sorts them)."""
    return httpx.Client(timeout=timeout, follow_redirects=True)


@dataclasses.dataclass
class Reply:
    """What one HTTP call got: `status` (0: no answer), the body as text (UTF-8, undecodable bytes
    replaced), and `problem`, None for a 2xx, else what went wrong in the project's words
    ("<service> answered HTTP 500", "... gave no answer within 30 s", "... unreachable (...)")."""
    status: int
    text: str = ""
    problem: str | None = None
    timed_out: bool = False


def send(client: httpx.Client, request: dict, timeout: float, service: str, retries: int = RETRIES,
          sleep=time.sleep) -> Reply:
    """One call of `service`; `request` is {method, url, headers, body}. Nothing answering within
    `timeout` s (`client`'s time-out) is status 0, timed_out. HTTP 429 and 502-504 (busy,
    temporarily down) are retried up to `retries` times, waiting as Retry-After asks (`sleep`: tests
    inject it); the last answer is returned, its body kept (RapidAPI's error bodies are observations)."""
    for attempt in range(retries + 1):
        try:
            reply = client.request(request["method"], request["url"], headers=request.get("headers"),
                                   content=request.get("body"))
        except httpx.TimeoutException:
            return Reply(0, "", f"{service} gave no answer within {timeout:g} s", timed_out=True)
        except (httpx.RequestError, httpx.InvalidURL) as err:    # refused, reset, no route, bad url
            detail = f": {err}" if str(err) else ""
            return Reply(0, "", f"{service} unreachable ({type(err).__name__}{detail})")
        text = reply.content.decode("utf-8", errors="replace")
        if reply.is_success:
            return Reply(reply.status_code, text)
        if reply.status_code in (429, 502, 503, 504) and attempt < retries:
            sleep(retry_wait(reply.headers.get("Retry-After"), attempt))
            continue
        return Reply(reply.status_code, text, f"{service} answered HTTP {reply.status_code}")


class HttpToolEnv(ToolEnv):
    """An environment over HTTP: one client, made with the environment's time-out, for all its calls
    (it keeps connections open for the next call); closed by close(), or when the environment goes."""

    client = None

    def close(self):
        if self.client is not None:
            self.client.close()

    def __del__(self):
        self.close()

