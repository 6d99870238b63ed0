"""The dashboard's admin API under generated input: schemathesis reads /api/openapi.json and sends requests built
from it (within and outside the schemas) to every operation, a bounded number per operation.

Usage: dashboard_schemathesis.py HTTP_ADDR EXAMPLES_PER_OPERATION

Passes when no answer is a 5xx other than 503 (busy, or a service not running), every answer is JSON (the message
search's a stream of events with JSON data, ending with `done` or `error`) and every refusal carries an `error`
message. Runs pytest on itself; its summary line says how many operations passed.
"""

import json
import os
import sys

if __name__ == "__main__":
    import pytest

    os.environ["FJORD_DASHBOARD"], os.environ["FJORD_EXAMPLES"] = sys.argv[1:3]
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--tb=short", __file__]))

import schemathesis
from hypothesis import HealthCheck, Phase, settings

BASE = f"http://{os.environ['FJORD_DASHBOARD']}"
EXAMPLES = int(os.environ["FJORD_EXAMPLES"])
# The live streams (`.../stream`) never end while the client stays: the Rust tests check them (their head, 404,
# 405, the 503 past the cap); requests would wait for their end here.
schema = schemathesis.openapi.from_url(BASE + "/api/openapi.json").exclude(path_regex=r"/stream$")
# Valid and invalid requests alike.
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)
def test_api(case):
    # Topics of up to 10,000 partitions are valid input; a handful keeps the run bounded in time and disk.
    if isinstance(case.body, dict):
        for k in ("partitions", "count"):
            if isinstance(case.body.get(k), int) and case.body[k] > 8:
                case.body[k] = 8
    # Changes carry the CSRF token (any value, the same in the cookie and the header), so that they reach the
    # handlers rather than the CSRF refusal.
    r = case.call(base_url=BASE, timeout=60, headers={"Cookie": "fjord_csrf=t0k3n", "X-CSRF-Token": "t0k3n"})
    where = f"{case.method} {case.formatted_path} {case.query} {str(case.body)[:200]}"
    assert r.status_code < 500 or r.status_code == 503, f"{where}: {r.status_code} {r.text[:500]}"
    ctype = {k.lower(): v for k, v in r.headers.items()}.get("content-type", "")
    ctype = ctype[0] if isinstance(ctype, list) and ctype else ctype
    if r.status_code == 200 and str(ctype).startswith("text/event-stream"):
        # The message search: events whose data is JSON, ending with `done` or `error`.
        frames = [f for f in r.text.split("\n\n") if f]
        names = []
        for f in frames:
            lines = f.split("\n")
            assert lines[0].startswith("event: ") and lines[1].startswith("data: "), f"{where}: {f[:200]}"
            names.append(lines[0][7:])
            json.loads(lines[1][6:])
        assert names and names[-1] in ("done", "error"), f"{where}: {names[-5:]}"
        return
    assert str(ctype).startswith("application/json"), f"{where}: {r.status_code} {r.headers}"
    body = r.json()
    if r.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], f"{where}: {body}"
