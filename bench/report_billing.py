"""Renders the `billing` section of bench/RESULTS.md (figures from bench/bench_billing.py)."""

from __future__ import annotations

from report import _status, _table


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


def summary_rows(billing: dict) -> list[list[str]]:
    if billing.get("error"):
        return [["Stripe event burst (PostgreSQL)", f"not measured: {billing['error']}", "–", "–", "–"]]
    latency = billing.get("ack_latency_s") or {}
    drain = billing.get("drain_seconds")
    return [
        [f"Stripe burst: {billing['sent']:,} signed events ({billing['duplicates']} duplicates) acknowledged",
         f"{billing['acknowledged_2xx']:,} × 2xx; ack p50 {_ms(latency.get('p50'))}, p99 {_ms(latency.get('p99'))}",
         "all", _status(billing["all_acknowledged"]), "unsigned accepted, no idempotency"],
        [f"Stripe burst: each of {billing['unique']} events applied exactly once; queue drained",
         f"{'yes' if billing['exactly_once'] else 'NO'}; drained in "
         f"{'not within the timeout' if drain is None else f'{drain:.1f} s'}; state = newest event in "
         f"{billing['state_matches_newest']}/{billing['workspaces']} workspaces",
         "exactly once", _status(billing["exactly_once"] and billing["state_matches_newest"] == billing["workspaces"]),
         "one event type, no idempotency"],
    ]


def render_billing(billing: dict) -> list[str]:
    out = ["## Billing: a burst of Stripe events (issue 6)", ""]
    if billing.get("error"):
        return out + [f"Not measured: {billing['error']}", ""]
    pg = billing.get("postgres", {})
    latency = billing.get("ack_latency_s") or {}
    out += [
        f"A throwaway PostgreSQL {pg.get('server_version', '')} cluster, `a3e migrate`, and one `a3e serve` "
        "(ENVIRONMENT=production, WEB_CONCURRENCY=1, billing configured, jobs embedded: the same process "
        "acknowledges the events and applies them, on its two job threads). Through the API: an owner and "
        f"{billing['workspaces']} workspaces. Then {billing['unique']} unique events — "
        f"{billing['subscription_events']} `customer.subscription.updated` ({billing['subscription_events'] // billing['workspaces']} "
        "per workspace, strictly increasing `created`, random status and plan) and "
        f"{billing['ignored_events']} of a type A³E does not use — plus {billing['duplicates']} re-sends of randomly "
        "chosen ids, all shuffled together (a re-send may come before its first copy), each signed as Stripe "
        f"does (HMAC-SHA256 over `t.payload`) as it is sent, over {billing['connections']} keep-alive "
        f"connections on 127.0.0.1 as fast as the server answers. The machine's {billing['cpus']} CPUs are shared "
        "by the sender, the server and PostgreSQL.",
        "",
    ]
    rows = [
        ["Sent", f"{billing['sent']:,}"],
        ["Answered 2xx", f"{billing['acknowledged_2xx']:,} (statuses {billing['statuses']}; connection errors "
                         f"{billing['send_errors']})"],
        ["Answered `duplicate: true` / new", f"{billing['answered_duplicate']} / {billing['answered_new']}"],
        ["Acknowledgement latency p50 / p99 / max", f"{_ms(latency.get('p50'))} / {_ms(latency.get('p99'))} / "
                                                    f"{_ms(latency.get('max'))}"],
        ["Burst duration (all answered)", f"{billing['burst_seconds']:.2f} s ({billing['ack_rate']:.0f} events/s)"],
        ["Queue drained (first send → every event processed or ignored)",
         "not within the timeout" if billing["drain_seconds"] is None else f"{billing['drain_seconds']:.2f} s"],
        ["Stored events (one row per Stripe id)", f"{billing['stored_rows']} of {billing['unique']} unique"],
        ["Events by status", ", ".join(f"{k} {v}" for k, v in sorted(billing["events_by_status"].items()))],
        ["Events applied more than once (attempts ≠ 1)", str(billing["attempts_other_than_1"])],
        ["Workspaces whose state equals their newest event's (id, status, plan)",
         f"{billing['state_matches_newest']} of {billing['workspaces']}"],
        ["State changes audited (`billing.subscription_changed`)", str(billing["state_changes_audited"])],
    ]
    out += _table(["Measure", "Result"], rows)
    out += [
        "",
        "Duplicates are answered 200 with `duplicate: true` and nothing else happens: the event's id is the primary "
        "key of `stripe_events` (INSERT … ON CONFLICT DO NOTHING). Each stored event is applied by one job that "
        "claims it with a conditional UPDATE in the transaction that applies it, so \"attempts = 1\" for every "
        "event means none was applied twice; the per-workspace state check shows that events applied out of order "
        "(two job threads, shuffled arrival) never let an older event overwrite a newer one. Fewer audited changes "
        "than events: an event older than the state already applied, or one that changes nothing, is not a change.",
        "",
    ]
    return out
