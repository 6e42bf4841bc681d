"""Settings: one frozen dataclass, built once at start-up and passed in.

Every setting has a default, a key in the TOML file (`--config PATH`), an
environment variable `OUTPUT_SERVICE_<KEY>` and a command-line flag; later
sources win: defaults < TOML < environment < flags. Nothing here runs at import
time, so tests build configs freely with `Config(db_dir=tmp_path, ...)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from output_service import __version__

ENV_PREFIX = "OUTPUT_SERVICE_"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
STORAGE_BACKENDS = ("sqlite", "postgres")


class ConfigError(Exception):
    """A setting has a value the service cannot start with."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


def _setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    short: str = "",
    secret: bool = False,
) -> Any:
    # A secret (a token) is left out of repr(), so logging a Config never shows it.
    # `positive`: any value above 0 (a limit people read as "more than zero", not a
    # tiny inclusive minimum that would print as 1e-07).
    return field(
        default=default,
        repr=not secret,
        metadata={
            "help": help,
            "minimum": minimum,
            "positive": positive,
            "short": short,
            "secret": secret,
        },
    )


@dataclass(frozen=True, slots=True)
class Config:
    """Every tunable of the service; see config.example.toml for the prose."""

    port: int = _setting(8081, "results port (POST /results, /rotate, /dump)", minimum=0)
    health_port: int = _setting(
        8091, "health port (/health /ready /metrics /stats /recent)", minimum=0
    )
    host: str = _setting("0.0.0.0", "address both ports listen on")
    input_url: str = _setting(
        "http://localhost:8080/hops", 'input service hop endpoint; "" turns the feedback loop off'
    )
    db_dir: Path = _setting(Path("./output_data"), "directory of the SQLite files")
    max_size_mb: float = _setting(
        100.0, "rotate when main file + WAL exceed this many MB", positive=True
    )
    rotation_days: float = _setting(
        7.0, "rotate when the current file is this many days old", positive=True
    )
    keep_files: int = _setting(5, "number of results files to keep", minimum=1)
    verbose: bool = _setting(False, "debug logging", short="-v")
    max_body_mb: float = _setting(
        10.0, "largest accepted request body (after gzip) in MB", positive=True
    )
    max_batch_results: int = _setting(10000, "most results in one POST /results", minimum=1)
    synchronous: str = _setting("FULL", "SQLite synchronous mode: FULL survives power loss")
    commit_max_results: int = _setting(2000, "most results committed in one transaction", minimum=1)
    commit_max_delay_ms: float = _setting(
        0.0, "wait this long for more batches before committing (0: take what is queued)", minimum=0
    )
    queue_max_results: int = _setting(50000, "results waiting for the writer before 503", minimum=1)
    queue_max_mb: float = _setting(
        8.0, "MB of request bodies decoded or waiting for the writer before 503", positive=True
    )
    idempotency_window_hours: float = _setting(
        24.0, "how long Idempotency-Key values are kept", minimum=0
    )
    idempotency_max_keys: int = _setting(
        1_000_000, "most idempotency keys held in memory", minimum=1
    )
    cache_size_mb: int = _setting(16, "SQLite page cache of the writer in MB", minimum=1)
    wal_autocheckpoint: int = _setting(10000, "WAL pages between automatic checkpoints", minimum=0)
    seal_wait_s: float = _setting(
        5.0, "sealing a rotated file waits this long for its readers to let go", positive=True
    )
    shutdown_grace_s: float = _setting(8.0, "seconds to drain on SIGTERM before closing", minimum=0)
    # The hop feedback loop (all inert when input_url is "")
    hops_exclude_private: bool = _setting(
        False, "do not send private hops (10/8, 172.16/12, 192.168/16, fc00::/7)"
    )
    hop_resend_after_hours: float = _setting(
        168.0, "queue a hop again when it is seen this many hours after it was queued", minimum=0
    )
    hops_batch_size: int = _setting(500, "most hops in one POST to the input service", minimum=1)
    hops_flush_interval_s: float = _setting(
        1.0, "send waiting hops at least this often (a full batch goes at once)", positive=True
    )
    hops_cache_size: int = _setting(
        100_000,
        "most seen hops remembered in memory (the rest are looked up in state.db)",
        minimum=1,
    )
    hops_outbox_max: int = _setting(
        1_000_000, "most hops waiting in the outbox; past it the oldest are dropped", minimum=1
    )
    hops_backoff_base_s: float = _setting(
        1.0, "first retry delay after a failed send (doubles per failure, full jitter)", minimum=0
    )
    hops_backoff_max_s: float = _setting(60.0, "longest retry delay after a failed send", minimum=0)
    hops_send_timeout_s: float = _setting(
        10.0, "timeout of one POST to the input service", positive=True
    )
    hops_final_flush_s: float = _setting(
        2.0, "on shutdown, try this long to send what is waiting", minimum=0
    )
    # Authentication and limits
    admin_token: str = _setting(
        "",
        "comma-separated tokens for /rotate /dump /files; empty: loopback clients only",
        secret=True,
    )
    ingest_token: str = _setting(
        "", "comma-separated tokens for POST /results; empty: ingest is open", secret=True
    )
    read_token: str = _setting(
        "",
        "comma-separated tokens for the health port's stored data (/stats /recent ...);"
        " empty: open. /health /ready /metrics stay open",
        secret=True,
    )
    read_timeout_s: float = _setting(
        30.0, "a request body must arrive within this many seconds (else 408)", positive=True
    )
    keepalive_timeout_s: float = _setting(
        75.0, "close connections idle (or sending headers) for this many seconds", positive=True
    )

    # Storage backend. PostgreSQL: many instances on one database (README "Scaling out").
    storage: str = _setting("sqlite", 'where results go: "sqlite" (files in db_dir) or "postgres"')
    database_url: str = _setting(
        "", "PostgreSQL URL when storage is postgres (postgresql://user:pass@host/db)", secret=True
    )
    pg_pool_size: int = _setting(
        8, "most PostgreSQL connections of one instance (two writers, sender, reads)", minimum=4
    )
    pg_partition_days: float = _setting(
        1.0, "width of one results partition in days (PostgreSQL)", minimum=0.01
    )
    pg_partitions_ahead: int = _setting(
        2, "partitions created ahead of the current one (PostgreSQL)", minimum=1
    )
    retention_days: float = _setting(
        30.0, "PostgreSQL: drop result partitions older than this many days", minimum=0.01
    )
    pg_hop_lease_s: float = _setting(
        30.0, "a claimed hop returns to the shared outbox after this many seconds", minimum=1
    )
    # Connections and dumps
    max_connections: int = _setting(
        4096,
        "most open connections on the results port (lowered to fit the descriptor limit)",
        minimum=1,
    )
    health_max_connections: int = _setting(
        64, "most open connections on the health port, its own budget", minimum=1
    )
    max_concurrent_dumps: int = _setting(
        2, "most /dump downloads at once; more get 503 (each may copy the live file)", minimum=1
    )
    dump_send_timeout_s: float = _setting(
        30.0, "drop a /dump download whose client takes no data for this long", minimum=0.001
    )
    # The query API (/api/...)
    max_concurrent_reads: int = _setting(
        2, "read endpoints running at once; more wait a second, then 503", minimum=1
    )
    read_query_timeout_s: float = _setting(
        10.0, "one step of a read stops after this many seconds (503)", minimum=0.001
    )
    read_share_while_ingesting: float = _setting(
        0.1,
        "while ingest is busy, SQLite reads use at most this share of a core (1: no limit)",
        positive=True,
    )
    node_silent_after_s: float = _setting(
        600.0, "/api/nodes marks a node silent after this many seconds without a batch", minimum=0
    )
    prerender_exports: bool = _setting(
        True, "render export items of sealed files once, into db_dir/read-cache (~1.3x their size)"
    )

    def validate(self) -> Config:
        """Check cross-field rules the per-field minimums cannot express."""
        for f in dataclasses.fields(self):
            minimum = f.metadata["minimum"]
            value = getattr(self, f.name)
            if isinstance(value, float) and value != value:
                raise ConfigError(f.name, "must be a number, got nan")
            if minimum is not None and value < minimum:
                raise ConfigError(f.name, f"must be at least {minimum:g}, got {value:g}")
            if f.metadata["positive"] and not value > 0:
                raise ConfigError(f.name, f"must be greater than 0, got {value:g}")
        for name in ("port", "health_port"):
            if getattr(self, name) > 65535:
                raise ConfigError(name, f"must be at most 65535, got {getattr(self, name)}")
        if self.read_share_while_ingesting > 1:
            raise ConfigError(
                "read_share_while_ingesting",
                f"must be at most 1, got {self.read_share_while_ingesting:g}",
            )
        if self.port == self.health_port and self.port != 0:
            raise ConfigError("health_port", "must differ from port")
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise ConfigError("synchronous", f"must be one of {', '.join(SYNCHRONOUS_MODES)}")
        if self.hops_backoff_max_s < self.hops_backoff_base_s:
            raise ConfigError("hops_backoff_max_s", "must be at least hops_backoff_base_s")
        if self.input_url and not self.input_url.startswith(("http://", "https://")):
            raise ConfigError(
                "input_url", f"must be an http(s) URL or empty, got {self.input_url!r}"
            )
        self._validate_storage()
        return self

    def _validate_storage(self) -> None:
        if self.storage not in STORAGE_BACKENDS:
            raise ConfigError("storage", f"must be one of {', '.join(STORAGE_BACKENDS)}")
        if self.storage == "postgres" and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            # the value itself is never shown: it may hold a password
            raise ConfigError(
                "database_url", "must be a postgresql:// URL when storage is postgres"
            )


def _fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, raw: Any, *, from_text: bool) -> Any:
    """Turn a TOML value or a text (env, flag) into the field's type, or say why not."""
    default = _fields()[name].default
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            if from_text and str(raw).strip().lower() in ("1", "true", "yes", "on"):
                return True
            if from_text and str(raw).strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if isinstance(default, int):
            if isinstance(raw, bool) or (not from_text and not isinstance(raw, int)):
                raise ValueError
            return int(raw)
        if isinstance(default, float):
            if isinstance(raw, bool) or (not from_text and not isinstance(raw, int | float)):
                raise ValueError
            return float(raw)
        if isinstance(default, Path):
            if not from_text and not isinstance(raw, str):
                raise ValueError
            return Path(raw)
        if not from_text and not isinstance(raw, str):
            raise ValueError
        if name == "storage":
            return str(raw).strip().lower()
        return str(raw).upper() if name == "synchronous" else str(raw)
    except ValueError:
        kind = type(default).__name__ if not isinstance(default, Path) else "path"
        raise ConfigError(name, f"expected {kind}, got {raw!r}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    known = _fields()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(key, f"unknown key in {path} ({closest_setting(key)})")
        out[key] = _coerce(key, value, from_text=False)
    return out


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_BOOL_WORDS.update({"0": False, "false": False, "no": False, "off": False})

USAGE_EPILOG = """\
Every setting can also come from a TOML file (--config PATH, or the
OUTPUT_SERVICE_CONFIG environment variable) and from an environment variable
named OUTPUT_SERVICE_ plus the setting in capitals (OUTPUT_SERVICE_KEEP_FILES=10).
Later sources win: defaults < config file < environment < command line.
Boolean flags take --flag, --flag=true|false or --no-flag. An unknown TOML key or
OUTPUT_SERVICE_ variable is refused, naming the closest setting.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that answers a mistake with one line, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _BoolFlag(argparse.Action):
    """`--flag`, `--flag=true|false` (or yes/no, on/off, 1/0) and `--no-flag`, so the
    command line can turn off a `true` from the config file."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        negatives = [f"--no-{o[2:]}" for o in option_strings if o.startswith("--")]
        super().__init__([*option_strings, *negatives], dest, nargs="?", metavar="BOOL", **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        negative = bool(option_string and option_string.startswith("--no-"))
        if values is None:
            setattr(namespace, self.dest, not negative)
            return
        word = _BOOL_WORDS.get(str(values).strip().lower())
        if negative or word is None:
            parser.error(f"argument {option_string}: expected true or false, got {values!r}")
        setattr(namespace, self.dest, word)


def build_parser() -> argparse.ArgumentParser:
    """Flags mirror the Go service (`--port 8081`, `--port=8081`, `-v`)."""
    parser = _Parser(
        prog="output-service",
        description="Receive ping/traceroute results, store them in rotating SQLite files, "
        "and feed discovered hops back to the input service.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="TOML file with settings (env OUTPUT_SERVICE_CONFIG)")
    parser.add_argument("--version", action="version", version=f"output-service {__version__}")
    for name, f in _fields().items():
        flag = "--" + name.replace("_", "-")
        names = [f.metadata["short"], flag] if f.metadata["short"] else [flag]
        default = "" if f.metadata["secret"] else f" (default: {f.default})"
        help_text = f"{f.metadata['help']}{default} [env {ENV_PREFIX}{name.upper()}]"
        if isinstance(f.default, bool):
            parser.add_argument(*names, dest=name, action=_BoolFlag, help=help_text)
        else:
            parser.add_argument(*names, dest=name, metavar=name.upper(), help=help_text)
    return parser


def closest_setting(name: str) -> str:
    """` (did you mean keep_files?)` for a near miss, else a pointer to the list."""
    known = [*_fields(), "config"]
    folded = name.lower().replace("-", "_")
    matches = difflib.get_close_matches(folded, known, n=1, cutoff=0.6)
    if not matches:  # KEEPFILES -> keep_files: compare without the underscores too
        bare = {k.replace("_", ""): k for k in known}
        matches = [bare[m] for m in difflib.get_close_matches(folded, list(bare), n=1)]
    if matches:
        return f"did you mean {matches[0]}?"
    return "see output-service --help for the settings"


def _env_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Every OUTPUT_SERVICE_* variable as a setting name; an unknown one is refused."""
    known = _fields()
    out: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in known:
            raise ConfigError(key, f"no such setting ({closest_setting(name)})")
        out[name] = value
    return out


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Merge defaults, TOML, environment and flags; raise ConfigError on any bad value."""
    flags = vars(build_parser().parse_args(list(argv)))
    values: dict[str, Any] = {}
    config_path = flags.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        values.update(_read_toml(Path(config_path)))
    for name, env_value in _env_settings(environ).items():
        values[name] = _coerce(name, env_value, from_text=True)
    for name, raw in flags.items():
        values[name] = raw if isinstance(raw, bool) else _coerce(name, raw, from_text=True)
    return Config(**values).validate()
