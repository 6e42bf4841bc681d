"""The backend-neutral query pieces: parameters, percentiles, buckets, cursors, routes, rows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from output_service.insight import cursor, params, rows, stats
from output_service.insight.routes import Observation, path_of, summarize
from output_service.insight.summaries import TargetAccumulator, sort_targets, target_page


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))  # 1..100
    assert stats.nearest_rank(values, 50) == 50
    assert stats.nearest_rank(values, 95) == 95
    assert stats.nearest_rank(values, 10) == 10
    assert stats.nearest_rank([7], 99) == 7
    assert stats.nearest_rank([], 50) is None
    assert stats.nearest_rank([10, 20, 30, 40], 50) == 20  # ceil(0.5*4)=2nd
    assert stats.nearest_rank([10, 20, 30, 40], 51) == 30
    assert stats.nearest_rank([10, 20, 30], 0) == 10


def test_buckets_are_epoch_aligned() -> None:
    t = stats.epoch_of("2026-01-02T03:04:05.999999999Z")
    assert stats.rfc3339(stats.bucket_start(t, 3600)) == "2026-01-02T03:00:00Z"
    assert stats.rfc3339(stats.bucket_start(t, 300)) == "2026-01-02T03:00:00Z"
    assert stats.rfc3339(stats.bucket_start(t, 60)) == "2026-01-02T03:04:00Z"
    assert stats.rfc3339(stats.bucket_start(t, 86400)) == "2026-01-02T00:00:00Z"


def test_step_from_range() -> None:
    assert stats.choose_step(3600) == 60
    assert stats.choose_step(500 * 60) == 60
    assert stats.choose_step(500 * 60 + 1) == 300
    assert stats.choose_step(7 * 86400) == 3600
    assert stats.choose_step(30 * 86400) == 86400
    assert stats.choose_step(10_000 * 86400) == 86400


def test_cursor_round_trip_and_garbage() -> None:
    pos = cursor.Position("results_2026-01-01_00-00-00.db", 42)
    assert cursor.decode(cursor.encode(pos)) == pos
    for bad in ("!!", "bm90IGpzb24", cursor.encode(cursor.Position("x", 1))[:-2] + "zz", "WzEsMl0"):
        with pytest.raises(cursor.BadCursor):
            cursor.decode(bad)


def test_filter_parsing() -> None:
    flt = params.parse_filter(
        {"ip": "2001:db8:0::1", "since": "2026-01-01T01:00:00+01:00", "failed": "true"}
    )
    assert flt.ip == "2001:db8::1"
    assert flt.since == "2026-01-01T00:00:00.000000000Z"
    assert flt.failed is True
    assert params.parse_filter({"node": "null"}).node_is_null
    assert params.parse_filter({"node": "n1"}).node == "n1"


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "before"),
        ({"failed": "yes"}, "failed"),
        ({"ip": "1.2.3"}, "ip"),
        ({"cursor": "%%%"}, "cursor"),
        ({"format": "xml"}, "format"),
        ({"sinse": "x"}, "unknown"),
        ({"node": ""}, "node"),
    ],
)
def test_bad_results_params(query: dict[str, str], needle: str) -> None:
    with pytest.raises(params.BadParam, match=needle):
        params.parse_results(query)


def test_format_from_accept() -> None:
    assert params.parse_results({}, "application/x-ndjson").format == "ndjson"
    assert params.parse_results({}, "text/csv;q=0.9").format == "csv"
    assert params.parse_results({"format": "json"}, "text/csv").format == "json"
    assert params.parse_results({}, None).format == "json"


def test_series_and_targets_params() -> None:
    q = params.parse_series(
        "10.0.0.1", {"since": "2026-01-01T00:00:00Z", "until": "2026-01-08T00:00:00Z"}, 0
    )
    assert q.step_s == 3600 and q.filter.ip == "10.0.0.1"
    assert params.parse_series("10.0.0.1", {"step": "5m"}, 0).step_s == 300
    with pytest.raises(params.BadParam, match="step"):
        params.parse_series("10.0.0.1", {"step": "2h"}, 0)
    assert params.parse_targets({"sort": "rtt"}).sort == "rtt"
    with pytest.raises(params.BadParam, match="sort"):
        params.parse_targets({"sort": "name"})
    with pytest.raises(params.BadParam, match="ip is required"):
        params.parse_routes({})


def test_route_changes() -> None:
    a = path_of([(1, "10.0.0.1", False), (2, None, True), (3, "8.8.8.8", False)])
    b = path_of([(1, "10.0.0.1", False), (2, "10.9.9.9", False), (3, "8.8.8.8", False)])
    assert a == ("10.0.0.1", None, "8.8.8.8")
    obs = [
        Observation("n1", "2026-01-01T00:00:00.000000000Z", a),
        Observation("n1", "2026-01-01T00:02:00.000000000Z", b),
        Observation("n1", "2026-01-01T00:01:00.000000000Z", a),
        Observation("n1", "2026-01-01T00:03:00.000000000Z", a),
        Observation("n2", "2026-01-01T00:00:30.000000000Z", b),
    ]
    out = summarize(obs)
    assert [p["hops"] for p in out["paths"]] == [list(a), list(b)]
    assert out["paths"][0]["results"] == 3 and out["paths"][0]["nodes"] == 1
    assert out["paths"][1]["nodes"] == 2
    assert out["paths"][1]["first_seen"] == "2026-01-01T00:00:30.000000000Z"
    n1 = out["changes"][0]
    assert n1["node"] == "n1"
    assert [c["at"] for c in n1["changes"]] == [
        "2026-01-01T00:02:00.000000000Z",
        "2026-01-01T00:03:00.000000000Z",
    ]
    assert n1["changes"][0]["from"] == list(a) and n1["changes"][0]["to"] == list(b)
    assert out["changes"][1] == {"node": "n2", "changes": []}


def test_csv_rows() -> None:
    item = {
        "file": "f.db",
        "id": 1,
        "ip": "1.1.1.1",
        "timestamp": "t",
        "received_at": "r",
        "node_id": None,
        "sent": 4,
        "received": 3,
        "packet_loss": 25.0,
        "avg_rtt": 9,
        "error": "",
        "traceroute": {
            "method": "icmp",
            "completed": True,
            "error": "",
            "hops": [
                {"ttl": 1, "ip": "10.0.0.1", "rtt": 1, "timeout": False},
                {"ttl": 2, "ip": "", "rtt": 0, "timeout": True},
            ],
        },
    }
    text = rows.csv_text([item], header=True)
    assert text.splitlines()[1] == "f.db,1,1.1.1.1,t,r,,4,3,25.0,9,,icmp,true,10.0.0.1|*"
    assert text.splitlines()[0].startswith("file,id,ip,")


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.1"]),
            st.booleans(),  # which of the two partials (files) it lands in
            st.integers(0, 4),  # received of 4 (0: failed, no RTT)
            st.integers(1, 50),  # RTT
            st.sampled_from(["n1", "n2", None]),
            st.integers(0, 59),  # minute
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["loss", "rtt", "results", "last_seen"]),
    st.integers(0, 5),
    st.integers(1, 5),
)
def test_a_target_page_is_the_page_of_every_row_sorted(
    results: list[tuple[str, bool, int, int, str | None, int]], sort: str, offset: int, limit: int
) -> None:
    """Deciding the order without RTTs and computing them for the page only
    gives the page of the full rows, sorted (two partials, as live + older)."""
    parts = (TargetAccumulator(), TargetAccumulator())
    for which, acc in enumerate(parts):
        mine = [r for r in results if r[1] == bool(which)]
        acc.add_totals(
            (
                ip,
                1,
                int(got == 0),
                100 - 25 * got,
                f"2026-01-01T00:{m:02d}:00Z",
                f"2026-01-01T00:{m:02d}:00Z",
            )
            for ip, _, got, _, _, m in mine
        )
        acc.add_nodes((ip, node) for ip, _, _, _, node, _ in mine)
        for ip in {r[0] for r in mine}:
            rtts = sorted(rtt for i, _, got, rtt, _, _ in mine if i == ip and got)
            acc.add_rtts([(ip, ",".join(map(str, rtts)))])
    everything = sort_targets(parts[0].rows(parts[1]), sort)
    assert (
        target_page(parts[0], parts[1], sort, offset, limit) == everything[offset : offset + limit]
    )
