"""Query parameters of the read endpoints -> the seam's plain query types.

Every function raises `BadParam` with a sentence naming the parameter, which
the handlers turn into a 400 JSON reply. Unknown parameters are refused too:
a misspelt `sinse=` silently widening an export to everything is worse than
an error.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from output_service.insight import cursor as cursors
from output_service.insight.stats import STEPS, choose_step, epoch_of
from output_service.models import normalize_ip, normalize_timestamp
from output_service.storage.seam import ResultFilter, SeriesQuery, TargetQuery, TargetSort

RESULTS_DEFAULT_LIMIT = 100
RESULTS_MAX_LIMIT = 10_000
TARGETS_DEFAULT_LIMIT = 100
TARGETS_MAX_LIMIT = 100_000
FORMATS = ("json", "ndjson", "csv")
_MEDIA = {"application/x-ndjson": "ndjson", "application/ndjson": "ndjson", "text/csv": "csv"}
SORTS: tuple[TargetSort, ...] = ("loss", "rtt", "results", "last_seen")
NULL_NODE = "null"  # node=null selects batches sent without X-Node-ID
FILTER_KEYS = frozenset({"ip", "node", "since", "until", "failed"})


class BadParam(ValueError):
    """A query parameter is missing, unknown or malformed."""


@dataclass(frozen=True, slots=True)
class ResultsRequest:
    filter: ResultFilter
    limit: int
    cursor: cursors.Position | None
    format: str


def check_known(query: Mapping[str, str], allowed: Collection[str]) -> None:
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadParam(f"unknown parameter(s): {', '.join(unknown)}; allowed: {sorted(allowed)}")


def parse_time(query: Mapping[str, str], name: str) -> str | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return normalize_timestamp(text)
    except ValueError as exc:
        raise BadParam(f"{name}: {exc}") from None


def parse_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not lo <= int(text) <= hi:
        raise BadParam(f"{name} must be an integer from {lo} to {hi}, got {text!r}")
    return int(text)


def parse_filter(query: Mapping[str, str], *, with_ip: bool = True) -> ResultFilter:
    """ip, node (node=null: no X-Node-ID), since (inclusive), until (exclusive), failed."""
    ip = query.get("ip") or None
    if ip is not None:
        if not with_ip:
            raise BadParam("ip is not a parameter here")
        try:
            ip = normalize_ip(ip)
        except ValueError as exc:
            raise BadParam(f"ip: {exc}") from None
    node = query.get("node")
    if node == "":
        raise BadParam("node must not be empty (node=null selects batches without X-Node-ID)")
    failed_text = query.get("failed")
    if failed_text not in (None, "true", "false"):
        raise BadParam(f"failed must be true or false, got {failed_text!r}")
    since, until = parse_time(query, "since"), parse_time(query, "until")
    if since is not None and until is not None and since >= until:
        raise BadParam("since must be before until")
    return ResultFilter(
        ip=ip,
        node=None if node == NULL_NODE else node,
        node_is_null=node == NULL_NODE,
        since=since,
        until=until,
        failed=None if failed_text is None else failed_text == "true",
    )


def parse_format(query: Mapping[str, str], accept: str | None) -> str:
    """format= wins over the Accept header; json when neither names one."""
    fmt = query.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise BadParam(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in _MEDIA:
            return _MEDIA[media]
    return "json"


def parse_results(query: Mapping[str, str], accept: str | None = None) -> ResultsRequest:
    check_known(query, FILTER_KEYS | {"limit", "cursor", "format"})
    fmt = parse_format(query, accept)
    limit = parse_int(query, "limit", RESULTS_DEFAULT_LIMIT, 1, RESULTS_MAX_LIMIT)
    raw_cursor = query.get("cursor")
    try:
        position = cursors.decode(raw_cursor) if raw_cursor else None
    except cursors.BadCursor as exc:
        raise BadParam(f"cursor: {exc}") from None
    return ResultsRequest(parse_filter(query), limit, position, fmt)


def parse_targets(query: Mapping[str, str]) -> TargetQuery:
    check_known(query, {"since", "until", "node", "sort", "limit", "offset"})
    sort = query.get("sort", "loss")
    if sort not in SORTS:
        raise BadParam(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    return TargetQuery(
        filter=parse_filter(query, with_ip=False),
        sort=sort,  # checked against SORTS above
        limit=parse_int(query, "limit", TARGETS_DEFAULT_LIMIT, 1, TARGETS_MAX_LIMIT),
        offset=parse_int(query, "offset", 0, 0, 10**9),
    )


def parse_series(ip: str, query: Mapping[str, str], now: float) -> SeriesQuery:
    """`step` one of 1m 5m 1h 1d, or chosen so the range fits in about 500 buckets
    (an open range counts as the last 7 days on the `since` side, `now` on the other)."""
    check_known(query, {"since", "until", "node", "step"})
    try:
        ip = normalize_ip(ip)
    except ValueError as exc:
        raise BadParam(f"ip: {exc}") from None
    flt = parse_filter(query, with_ip=False)
    step_text = query.get("step")
    if step_text is not None:
        if step_text not in STEPS:
            raise BadParam(f"step must be one of {', '.join(STEPS)}, got {step_text!r}")
        step = STEPS[step_text]
    else:
        end = epoch_of(flt.until) if flt.until else now
        start = epoch_of(flt.since) if flt.since else end - 7 * 86400
        step = choose_step(max(0.0, end - start))
    return SeriesQuery(
        ip=ip,
        step_s=step,
        filter=ResultFilter(
            ip=ip, node=flt.node, node_is_null=flt.node_is_null, since=flt.since, until=flt.until
        ),
    )


def parse_routes(query: Mapping[str, str]) -> tuple[str, ResultFilter]:
    check_known(query, {"ip", "since", "until", "node"})
    if not query.get("ip"):
        raise BadParam("ip is required")
    flt = parse_filter(query)
    assert flt.ip is not None
    return flt.ip, flt
