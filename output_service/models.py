"""The wire format: bytes in, a validated batch or a list of field errors out.

Pure and synchronous, so it is easy to test and to fuzz. The ping nodes are Go
programs, so this accepts what Go's `encoding/json` would: keys matched
case-insensitively, unknown fields ignored (but kept, as the item's original
JSON, for the `raw` column), `null` for optional strings, and a single object
where an array is expected.

Two paths keep the common case fast. The fast path decodes straight into
msgspec structs that forbid unknown fields; batches from the Go clients (exact
key names, nothing extra) go through it at C speed. Anything it rejects is
decoded again on the slow path, item by item, which folds key case, collects
unknown fields and names every bad item and field.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

MAX_HOPS = 255
MAX_REPORTED_ERRORS = 100
MAX_DEPTH = 32  # JSON nesting: a result needs 4 levels; unknown fields get some room

_NonNegInt = Annotated[int, Meta(ge=0, le=2**63 - 1)]
_Text = Annotated[str, Meta(max_length=4096)]
_ShortText = Annotated[str, Meta(max_length=64)]


class Hop(msgspec.Struct, forbid_unknown_fields=True):
    """One traceroute hop; `rtt` is in nanoseconds, `ip` may be empty on a timeout."""

    ttl: Annotated[int, Meta(ge=0, le=MAX_HOPS)]
    ip: _ShortText | None = ""
    rtt: _NonNegInt = 0
    timeout: bool = False


class Traceroute(msgspec.Struct, forbid_unknown_fields=True):
    """A traceroute attached to a ping result."""

    method: _ShortText | None = ""
    completed: bool = False
    error: _Text | None = ""
    hops: Annotated[list[Hop], Meta(max_length=MAX_HOPS)] | None = msgspec.field(
        default_factory=list
    )


class Result(msgspec.Struct, forbid_unknown_fields=True):
    """One ping result. `avg_rtt` is in nanoseconds (a Go `time.Duration`).

    After `decode_batch`, `ip` is in canonical form and `timestamp` is UTC with
    nine fractional digits (`2026-01-02T03:04:05.123456789Z`), which sorts as text.
    """

    ip: _ShortText
    sent: _NonNegInt
    received: _NonNegInt
    packet_loss: Annotated[float, Meta(ge=0.0, le=100.0)]
    avg_rtt: _NonNegInt
    timestamp: _ShortText
    error: _Text | None = ""
    traceroute: Traceroute | None = None


_FIELDS: dict[str, tuple[str, ...]] = {
    "result": tuple(Result.__struct_fields__),
    "traceroute": tuple(Traceroute.__struct_fields__),
    "hop": tuple(Hop.__struct_fields__),
}
_FOLDED = {kind: {name.lower(): name for name in names} for kind, names in _FIELDS.items()}

_fast_decoder = msgspec.json.Decoder(list[Result] | Result)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

# [0-9], not \d: \d also matches other scripts' digits (Arabic-Indic ones, say), which would be
# stored as they came and break the text sort order of timestamps.
_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_UTC_OFFSETS = frozenset(("Z", "z", "+00:00", "-00:00"))
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]*)`")


@dataclass(frozen=True, slots=True)
class FieldError:
    """What is wrong with one item: `index` is None for the body as a whole."""

    index: int | None
    field: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


class BatchValidationError(Exception):
    """The batch is invalid; nothing of it may be stored."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} invalid item(s)")
        self.errors = errors


class InvalidUtf8Error(BatchValidationError):
    """The body is not UTF-8 (RFC 8259 requires it); `offset` is the first bad byte."""

    def __init__(self, offset: int, bad: bytes) -> None:
        message = f"body is not valid UTF-8: byte 0x{bad.hex()} at offset {offset}"
        super().__init__([FieldError(None, "", message)])
        self.offset = offset
        self.message = message


class BatchLimitError(BatchValidationError):
    """The batch breaks a size limit (`reason` names it, for the metric)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__([FieldError(None, "", message)])
        self.reason = reason


@dataclass(slots=True)
class Batch:
    """A validated batch. `raw` maps item index to the item's original JSON, for
    items that carried fields the columns do not hold."""

    results: list[Result]
    raw: dict[int, bytes] = field(default_factory=dict)


# Dates and times to the second ("2026-01-02T03:04:05") that the full check
# below has accepted: a batch's timestamps share few seconds, so the common UTC
# form skips the regular expression and datetime's parse (BENCHMARKS.md, round
# three). Only the event loop decodes; bounded by clearing.
_SECONDS_CHECKED: dict[str, None] = {}
_SECONDS_CHECKED_MAX = 4096


def normalize_timestamp(text: str) -> str:
    """RFC 3339 with any offset and up to nanoseconds -> fixed-width UTC text.

    Python's datetime stops at microseconds, so the fraction is carried over as
    text: an offset is whole minutes and never changes the sub-second digits.
    """
    head = text[:19]
    if head in _SECONDS_CHECKED:  # "...05Z" or "...05.<1 to 9 ASCII digits>Z"
        rest = text[19:]
        if rest == "Z":
            return f"{head}.000000000Z"
        fraction = rest[1:-1]
        if (
            rest[:1] == "."
            and rest[-1:] == "Z"
            and 0 < len(fraction) <= 9
            and fraction.isascii()
            and fraction.isdigit()
        ):
            return f"{head}.{fraction.ljust(9, '0')}Z"
    stored = _normalize_timestamp_checked(text)
    if text[10:11] == "T" and text[19:20] in ("Z", ".") and stored.startswith(head):
        if len(_SECONDS_CHECKED) >= _SECONDS_CHECKED_MAX:
            _SECONDS_CHECKED.clear()
        _SECONDS_CHECKED[head] = None
    return stored


def _normalize_timestamp_checked(text: str) -> str:
    """`normalize_timestamp` by the full check: the pattern, then datetime."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError("expected an RFC 3339 timestamp like 2026-01-02T03:04:05.5Z")
    date, clock, fraction, offset = match.groups()
    utc = offset in _UTC_OFFSETS
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}{'+00:00' if utc else offset}")
        if not utc:
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid timestamp: {exc}") from None
    fraction9 = (fraction or "").ljust(9, "0")
    if utc:
        return f"{date}T{clock}.{fraction9}Z"
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction9}Z"


def normalize_ip(text: str) -> str:
    """Validate an IPv4/IPv6 address and return its canonical form: the one Go's
    `net.IP.String()` prints, so a Go client and we agree on every address. That is
    RFC 5952 compressed IPv6, and the IPv4 host for an IPv4-mapped address
    (`::ffff:192.0.2.1` -> `192.0.2.1`). Dotted-quad IPv4, the common case, is
    checked in C.

    A zone index (`fe80::1%eth0`) is refused: it names an interface of the node
    that sent it, not a target, and Go's net.ParseIP refuses it too."""
    if "%" in text:
        if ":" in text.partition("%")[0]:  # fe80::1%eth0, not %FF or 10.0.0.1%
            raise ValueError(f"a zone index is not allowed in an address: {text!r}")
        raise ValueError(f"not an IPv4 or IPv6 address: {text!r}")
    if ":" not in text:
        try:
            socket.inet_pton(socket.AF_INET, text)  # refuses leading zeros and short forms
            return text
        except (OSError, ValueError):
            pass
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {text!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def canonical_hop_ip(text: str | None) -> str | None:
    """A hop address in the same canonical form as a target's. Hop text is not
    validated (a node may send anything for a hop it could not name), so text that
    is no address is kept as sent; dotted IPv4 is already canonical when it parses."""
    if not text or ":" not in text:
        return text
    try:
        return normalize_ip(text)
    except ValueError:
        return text


def _finish(
    index: int, result: Result, errors: list[FieldError], skip: frozenset[str] = frozenset()
) -> None:
    """Checks msgspec cannot express, and the normal forms we store. `skip` names
    fields already reported (their value is a stand-in)."""
    if "ip" not in skip:
        try:
            result.ip = normalize_ip(result.ip)
        except ValueError as exc:
            errors.append(FieldError(index, "ip", str(exc)))
    if "timestamp" not in skip:
        try:
            result.timestamp = normalize_timestamp(result.timestamp)
        except ValueError as exc:
            errors.append(FieldError(index, "timestamp", str(exc)))
    trace = result.traceroute
    if trace is not None and trace.hops:
        for hop in trace.hops:
            if hop.ip and ":" in hop.ip:
                hop.ip = canonical_hop_ip(hop.ip)


def _hops_null(result: Result) -> bool:
    """A traceroute sent with `"hops": null` (a Go nil slice): kept in `raw` so a
    read gives back null rather than []."""
    trace = result.traceroute
    return trace is not None and trace.hops is None


def decode_batch(body: bytes, max_results: int) -> Batch:
    """Decode and validate a whole batch; raise BatchValidationError naming every bad item."""
    try:
        decoded = _fast_decoder.decode(body)
    except msgspec.ValidationError:
        return _decode_slow(body, max_results)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed(body, exc) from None
    results = decoded if isinstance(decoded, list) else [decoded]
    _check_count(len(results), max_results)
    errors: list[FieldError] = []
    raw: dict[int, bytes] = {}
    for index, result in enumerate(results):
        if _hops_null(result):
            raw[index] = _encoder.encode(result)  # before _finish: the values as sent
        _finish(index, result, errors)
    if errors:
        raise BatchValidationError(errors[:MAX_REPORTED_ERRORS])
    return Batch(results, raw)


def _malformed(body: bytes, exc: Exception) -> BatchValidationError:
    """Why a body did not parse. Invalid UTF-8 is told apart with its byte offset
    (msgspec only says "Invalid UTF-8"); it is looked for only once parsing failed,
    so valid bodies pay nothing. Python's decoder is strict: overlong forms
    (`\\xc0\\x80`), CESU-8 surrogates and code points past U+10FFFF are all refused."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return InvalidUtf8Error(bad.start, body[bad.start : bad.end])
    return BatchValidationError([FieldError(None, "", f"malformed JSON: {exc}")])


def _check_count(count: int, max_results: int) -> None:
    if count > max_results:
        raise BatchLimitError(
            "too_many_results", f"batch has {count} results, at most {max_results} allowed"
        )


def _check_depth(data: Any) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH (iteratively: depth is what is attacked)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BatchLimitError("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))


def _decode_slow(body: bytes, max_results: int) -> Batch:
    try:
        data = _any_decoder.decode(body)
    except RecursionError:  # msgspec gives up on very deep nesting before we can count
        raise BatchLimitError("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # the fast path stopped earlier
        raise _malformed(body, exc) from None
    _check_depth(data)
    if data is None:  # a Go client's nil slice: an empty batch, as Go's server reads it
        return Batch([])
    if isinstance(data, dict):
        items: list[Any] = [data]
    elif isinstance(data, list):
        items = data
    else:
        raise BatchValidationError(
            [FieldError(None, "", "expected a JSON array of results or a single result object")]
        )
    _check_count(len(items), max_results)
    errors: list[FieldError] = []
    batch = Batch([])
    for index, item in enumerate(items):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if not isinstance(item, dict):
            errors.append(FieldError(index, "", f"expected an object, got {_json_kind(item)}"))
            continue
        folded, had_unknown = _fold(item, "result")
        result, reported = _convert_reporting_all(index, folded, errors)
        _finish(index, result, errors, reported)
        batch.results.append(result)
        if had_unknown or _hops_null(result):
            batch.raw[index] = _encoder.encode(item)
    if errors:
        raise BatchValidationError(errors[:MAX_REPORTED_ERRORS])
    return batch


# Valid stand-ins for a field already reported as bad, so that converting the item
# again finds the next bad field instead of stopping at the first.
_STAND_INS: dict[str, Any] = {
    "ip": "0.0.0.0",
    "sent": 0,
    "received": 0,
    "packet_loss": 0.0,
    "avg_rtt": 0,
    "timestamp": "2000-01-01T00:00:00Z",
    "error": "",
    "traceroute": None,
    "method": "",
    "completed": False,
    "hops": [],
    "ttl": 0,
    "rtt": 0,
    "timeout": False,
}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _convert_reporting_all(
    index: int, folded: dict[str, Any], errors: list[FieldError]
) -> tuple[Result, frozenset[str]]:
    """msgspec stops at the first bad field; report it, put a valid stand-in in its
    place and convert again, until the item converts or the error cap is reached.
    Returns the (stand-in) result and the top-level fields already reported."""
    reported: set[str] = set()
    data = folded
    while True:
        try:
            return msgspec.convert(data, Result), frozenset(reported)
        except msgspec.ValidationError as exc:
            error = _field_error(index, str(exc))
            errors.append(error)
            if data is folded:
                data = copy.deepcopy(folded)
            if len(errors) >= MAX_REPORTED_ERRORS or not _stand_in(data, error.field):
                return Result("0.0.0.0", 0, 0, 0.0, 0, "", None, None), frozenset(_FIELDS["result"])
            reported.add(_PATH_PART.match(error.field).group(0))  # type: ignore[union-attr]


def _stand_in(data: dict[str, Any], path: str) -> bool:
    """Replace the value at `path` (`traceroute.hops[1].ttl`) with a valid stand-in;
    False when the path cannot be followed (then the item stops here)."""
    parts = [name or int(number) for name, number in _PATH_PART.findall(path)]
    if not parts or not isinstance(parts[-1], str) or parts[-1] not in _STAND_INS:
        return False
    node: Any = data
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(node, dict):
        return False
    node[parts[-1]] = _STAND_INS[parts[-1]]
    return True


def hops_were_null(raw: bytes | str) -> bool:
    """True when a stored item's original JSON had `"hops": null` (keys in any case,
    as decode_batch matched them)."""
    try:
        item = _any_decoder.decode(raw)
    except msgspec.DecodeError:
        return False
    if not isinstance(item, dict):
        return False
    folded, _ = _fold(item, "result")
    trace = folded.get("traceroute")
    return isinstance(trace, dict) and "hops" in trace and trace["hops"] is None


def _fold(obj: dict[str, Any], kind: str) -> tuple[dict[str, Any], bool]:
    """Map keys onto field names as Go does (exact match first, then any case);
    drop unknown keys and report whether there were any."""
    names = _FOLDED[kind]
    exact = _FIELDS[kind]
    out: dict[str, Any] = {}
    unknown = False
    for key, value in obj.items():
        name = key if key in exact else names.get(key.lower())
        if name is None:
            unknown = True
            continue
        if name != key and name in obj:
            continue  # an exact match elsewhere in the object wins
        if name == "traceroute" and isinstance(value, dict):
            value, nested_unknown = _fold(value, "traceroute")
            unknown |= nested_unknown
        elif name == "hops" and kind == "traceroute" and isinstance(value, list):
            hops = []
            for hop in value:
                if isinstance(hop, dict):
                    hop, nested_unknown = _fold(hop, "hop")
                    unknown |= nested_unknown
                hops.append(hop)
            value = hops
        out[name] = value
    return out, unknown


def _field_error(index: int, message: str) -> FieldError:
    """Turn msgspec's message (`Expected int, got str - at $.traceroute.hops[0].ttl`)
    into a field path and a reason."""
    path = ""
    match = _MSGSPEC_PATH.search(message)
    if match:
        path = match.group(1).lstrip(".")
        message = message[: match.start()]
    missing = _MISSING_FIELD.match(message)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        message = "required field is missing"
    return FieldError(index, path, message)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"
