#!/usr/bin/env python3
"""The official Telnyx SDK (PyPI `telnyx`, pinned in scripts/telnyx-sdk.sh)
against the test suite's Telnyx API stand-in (tests/common/telnyx_api.rs).

The SDK is generated from Telnyx's OpenAPI spec, so it is the reference for
paths, query names, bodies, models and errors. This script drives the
stand-in through it and checks what the SDK makes of the answers (its own
pagination, its pydantic models, its exception classes); it prints one JSON
report on stdout. tests/it/telnyx_standin.rs fills the stand-in, runs this,
and compares the report and the requests the stand-in recorded.

    telnyx_sdk_check.py --base-url http://127.0.0.1:PORT/v2 --key KEY --since T

Exits non-zero, saying why on stderr, when a check fails.
"""
import argparse
import json
import sys
from datetime import datetime

import telnyx
from telnyx.types.attempt import Attempt
from telnyx.types.webhook_delivery import Webhook, WebhookDelivery


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def no_extra_fields(model, where):
    """Every field the stand-in sent is one the SDK's model knows (a typo in
    a field name would otherwise be kept silently as an extra)."""
    extra = getattr(model, "model_extra", None) or {}
    check(not extra, f"{where}: fields unknown to the SDK: {sorted(extra)}")


def check_attempt(a, where):
    check(isinstance(a, Attempt), f"{where} is an Attempt")
    no_extra_fields(a, where)
    check(a.status in ("delivered", "failed"), f"{where}.status")
    check(isinstance(a.started_at, datetime) and a.started_at.tzinfo, f"{where}.started_at")
    check(isinstance(a.finished_at, datetime), f"{where}.finished_at")
    check(a.started_at <= a.finished_at, f"{where}: starts before it finishes")
    check(a.http is not None and isinstance(a.http.request.url, str), f"{where}.http.request.url")
    no_extra_fields(a.http, f"{where}.http")
    check(all(isinstance(e, int) for e in (a.errors or [])), f"{where}.errors are codes")


def check_delivery(d, since, status):
    where = f"delivery {d.id}"
    check(isinstance(d, WebhookDelivery), f"{where} is a WebhookDelivery")
    no_extra_fields(d, where)
    check(d.record_type == "webhook_delivery", f"{where}.record_type")
    check(status is None or d.status == status, f"{where}.status is {status}")
    check(isinstance(d.started_at, datetime) and isinstance(d.finished_at, datetime), f"{where} times")
    check(d.started_at <= d.finished_at, f"{where}: started before finished")
    check(since is None or d.finished_at >= since, f"{where} finished at or after {since}")
    check(d.attempts, f"{where} has attempts")
    for i, a in enumerate(d.attempts):
        check_attempt(a, f"{where}.attempts[{i}]")
    starts = [a.started_at for a in d.attempts]
    check(starts == sorted(starts, reverse=True), f"{where}: attempts newest first")
    w = d.webhook
    check(isinstance(w, Webhook), f"{where}.webhook is a Webhook")
    no_extra_fields(w, f"{where}.webhook")
    check(w.record_type == "event" and w.id and w.event_type, f"{where}.webhook id/type")
    check(isinstance(w.occurred_at, datetime), f"{where}.webhook.occurred_at")
    check(isinstance(w.payload, dict), f"{where}.webhook.payload")


def list_all(client, filt, page_size, since=None, status=None):
    """Every page through the SDK's own pagination (DefaultFlatPagination)."""
    kwargs = {"filter": filt}
    if page_size is not None:
        kwargs["page_size"] = page_size
    first = client.webhook_deliveries.list(**kwargs)
    ids, pages = [], []
    for page in first.iter_pages():
        pages.append({"page_number": page.meta.page_number, "total_pages": page.meta.total_pages,
                      "count": len(page.data)})
        for d in page.data:
            check_delivery(d, since, status)
            ids.append(d.id)
    return {"ids": ids, "pages": pages}


# (SDK method, the path's action, keyword arguments): every action callbridge
# offers, with the parameters Telnyx requires.
ACTIONS = [
    ("answer", "answer", {}),
    ("hangup", "hangup", {}),
    ("reject", "reject", {"cause": "USER_BUSY"}),
    ("transfer", "transfer", {"to": "+15550001111"}),
    ("bridge", "bridge", {"call_control_id_to_bridge_with": "v3:sdk-other"}),
    ("send_dtmf", "send_dtmf", {"digits": "1234#"}),
    ("speak", "speak", {"payload": "Hello", "voice": "female", "language": "en-US"}),
    ("start_playback", "playback_start", {"audio_url": "https://example.com/a.mp3"}),
    ("stop_playback", "playback_stop", {}),
    ("start_recording", "record_start", {"channels": "single", "format": "mp3"}),
    ("stop_recording", "record_stop", {}),
    ("pause_recording", "record_pause", {}),
    ("resume_recording", "record_resume", {}),
    ("enqueue", "enqueue", {"queue_name": "support"}),
    ("leave_queue", "leave_queue", {}),
]


def call_actions(client):
    out = {}
    for method, action, kwargs in ACTIONS:
        r = getattr(client.calls.actions, method)(
            f"v3:sdk-{action}", command_id=f"sdk-{action}", client_state="c2Rr", **kwargs)
        check(r.data is not None and r.data.result == "ok", f"{method}: data.result is ok")
        out[action] = r.data.result
    return out


def dial(client):
    r = client.calls.dial(connection_id="conn-sdk", to="+15559870002", from_="+15551230001",
                          client_state="eyJ1c2VySWQiOiJ1MSJ9", command_id="sdk-dial")
    d = r.data
    check(d is not None, "dial: data")
    no_extra_fields(d, "dial.data")
    check(d.record_type == "call" and d.is_alive is False, "dial: a call, not yet alive")
    check(d.call_control_id and d.call_leg_id and d.call_session_id, "dial: ids")
    check(d.client_state == "eyJ1c2VySWQiOiJ1MSJ9", "dial: client_state echoed")
    return {"call_control_id": d.call_control_id, "call_leg_id": d.call_leg_id,
            "call_session_id": d.call_session_id}


def expect_error(exc_class, fn, where):
    try:
        fn()
    except exc_class as e:
        body = e.body if isinstance(e.body, dict) else {}
        errors = body.get("errors") or []
        check(errors and all({"code", "title", "detail"} <= set(x) for x in errors),
              f"{where}: errors[] with code, title, detail: {e.body!r}")
        return {"status": e.status_code, "code": errors[0]["code"], "title": errors[0]["title"]}
    except Exception as e:  # noqa: BLE001 - report what the SDK raised instead
        raise CheckFailed(f"{where}: expected {exc_class.__name__}, got {type(e).__name__}: {e}")
    raise CheckFailed(f"{where}: expected {exc_class.__name__}, got success")


def errors(args):
    bad = telnyx.Telnyx(api_key="not-the-key", base_url=args.base_url, max_retries=0)
    ok = telnyx.Telnyx(api_key=args.key, base_url=args.base_url, max_retries=0)
    retrying = telnyx.Telnyx(api_key=args.key, base_url=args.base_url, max_retries=2)
    out = {
        "bad_key": expect_error(telnyx.AuthenticationError,
                                lambda: bad.webhook_deliveries.list(), "bad key"),
        "ended": expect_error(telnyx.UnprocessableEntityError,
                              lambda: ok.calls.actions.answer(args.ended_call), "ended call"),
        "missing": expect_error(telnyx.UnprocessableEntityError,
                                lambda: ok.calls.actions.transfer("v3:sdk-x", to=""), "missing to"),
        "unavailable": expect_error(telnyx.InternalServerError,
                                    lambda: ok.calls.actions.answer(args.failing_call), "503"),
        "bad_page_size": expect_error(telnyx.BadRequestError,
                                      lambda: ok.webhook_deliveries.list(page_size=251), "page[size] 251"),
    }
    # 429 then 200: the SDK waits for Retry-After and retries by itself.
    r = retrying.calls.actions.answer(args.limited_call)
    check(r.data.result == "ok", "429 then ok: retried")
    out["rate_limited_then_ok"] = r.data.result
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--since", required=True, help="finished_at lower bound (RFC 3339)")
    ap.add_argument("--page-size", type=int, default=100)
    ap.add_argument("--ended-call", required=True)
    ap.add_argument("--failing-call", required=True)
    ap.add_argument("--limited-call", required=True)
    args = ap.parse_args()

    client = telnyx.Telnyx(api_key=args.key, base_url=args.base_url, max_retries=0)
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
    report = {"sdk": telnyx.__version__}
    report["failed_since"] = list_all(
        client, {"status": {"eq": "failed"}, "finished_at": {"gte": args.since}},
        args.page_size, since=since, status="failed")
    report["messages"] = list_all(client, {"event_type": "message.received"}, None)
    report["actions"] = call_actions(client)
    report["dial"] = dial(client)
    report["errors"] = errors(args)
    print(json.dumps(report))


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"telnyx_sdk_check: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
