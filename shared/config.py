"""Service configuration: one frozen Struct per service, filled from defaults, environment and flags.

Precedence, lowest first: the Struct's defaults, ``RRR_<FIELD>`` for fields every service shares (such as
``RRR_NATS_URL``), ``RRR_<SERVICE>_<FIELD>``, then ``--field-name`` flags. Every value is validated by
msgspec at start-up; an unknown ``RRR_<SERVICE>_*`` variable or a malformed value stops the service with
an error naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import sys
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from rrr.shared.errors import ConfigError
from rrr.shared.limits import (
    DEFAULT_MAX_MSG_BYTES,
    DEFAULT_STORE_MAX_BYTES,
    DEFAULT_STORE_MAX_MSGS,
    MAX_MAX_MSG_BYTES,
    MIN_MAX_MSG_BYTES,
    MIN_STORE_MAX_BYTES,
    MIN_STORE_MAX_MSGS,
    StoreLimits,
)

ExporterName = Literal["none", "console", "otlp"]
DLQ_KEY_MIN_LENGTH = 16
# A lease renewed every quarter of its time to live: below half a second, a busy machine's pauses would lose it.
MIN_LEASE_TTL_MS = 500
# Never shown: a config's repr says only whether they are set.
SECRET_FIELDS = frozenset({"dlq_key"})


class ServiceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every service has."""

    nats_url: Annotated[str, msgspec.Meta(description="NATS server URL(s), comma-separated")] = "nats://127.0.0.1:4222"
    shard: Annotated[int, msgspec.Meta(ge=0, description="which shard of the symbols this instance owns")] = 0
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024, description="how many shards the symbols are split into")] = 1
    instance: Annotated[
        str,
        msgspec.Meta(
            max_length=128,
            pattern=r"\A[!-~]*\Z",
            description="instance name, printable ASCII without spaces (default: <service>-<shard>@<host>)",
        ),
    ] = ""
    heartbeat_ms: Annotated[int, msgspec.Meta(ge=50, description="heartbeat period")] = 1000
    drain_timeout_s: Annotated[
        float, msgspec.Meta(gt=0, le=3600, description="bound on a graceful stop, after which the service is cancelled")
    ] = 30.0
    ack_wait_s: Annotated[
        float, msgspec.Meta(gt=0, description="how long JetStream waits for an ack before redelivering")
    ] = 30.0
    # At least the de-duplication window, which the streams cannot outlive.
    stream_max_age_s: Annotated[
        float, msgspec.Meta(ge=120, le=10 * 365 * 24 * 3600, description="how long JetStream streams keep messages")
    ] = 7 * 24 * 3600.0
    duplicate_window_s: Annotated[
        float,
        msgspec.Meta(gt=0, le=24 * 3600, description="how long JetStream remembers a message id to drop a copy"),
    ] = 120.0
    # The JetStream bounds: see rrr.shared.bus.streams (how they are split) and the README (what happens at each).
    store_max_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=MIN_STORE_MAX_BYTES,
            description="bytes the system's streams and buckets may hold together on the JetStream store",
        ),
    ] = DEFAULT_STORE_MAX_BYTES
    store_max_msgs: Annotated[
        int,
        msgspec.Meta(ge=MIN_STORE_MAX_MSGS, description="messages the system's streams and buckets may hold together"),
    ] = DEFAULT_STORE_MAX_MSGS
    max_msg_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=MIN_MAX_MSG_BYTES,
            le=MAX_MAX_MSG_BYTES,
            description="largest message a stream stores, headers included (a quote is about 300 bytes)",
        ),
    ] = DEFAULT_MAX_MSG_BYTES
    nats_tls_ca: Annotated[
        str,
        msgspec.Meta(
            description="certificate authority (PEM file) that NATS servers' certificates are verified against; "
            "set: TLS, never without verification"
        ),
    ] = ""
    nats_tls_cert: Annotated[
        str, msgspec.Meta(description="client certificate (PEM file) presented to NATS servers that ask for one")
    ] = ""
    nats_tls_key: Annotated[str, msgspec.Meta(description="the client certificate's private key (PEM file)")] = ""
    lease_ttl_ms: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=600_000,
            description="fail-over: 0, this instance acts for its shard alone; else it acts only while it holds the "
            "shard's lease, which lapses this long after its holder stops renewing it (a standby then takes over)",
        ),
    ] = 0
    stream_replicas: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=5,
            description="copies of every stream and bucket, each on its own node of a NATS cluster (1 on one server)",
        ),
    ] = 1
    otel_exporter: Annotated[ExporterName, msgspec.Meta(description="trace exporter: none, console or otlp")] = "none"
    event_loop: Annotated[
        Literal["uvloop", "asyncio"], msgspec.Meta(description="event loop: uvloop (faster) or asyncio")
    ] = "uvloop"
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], msgspec.Meta(description="log level")] = "INFO"
    metrics_port: Annotated[
        int,
        msgspec.Meta(ge=0, le=65535, description="port to serve Prometheus metrics on (/metrics); 0: none"),
    ] = 0
    metrics_host: Annotated[
        str, msgspec.Meta(min_length=1, max_length=255, description="address to serve metrics on (this machine only)")
    ] = "127.0.0.1"
    dlq_key: Annotated[
        str,
        msgspec.Meta(
            description="secret of the system (at least 16 characters) that signs its dead letters: rrr-dlq, given "
            "the same, republishes only those; empty: dead letters are unsigned and never republished"
        ),
    ] = ""

    def __post_init__(self) -> None:
        if 0 < len(self.dlq_key) < DLQ_KEY_MIN_LENGTH:
            raise ConfigError(
                "dlq_key", f"at least {DLQ_KEY_MIN_LENGTH} characters, or none", f"{len(self.dlq_key)} characters"
            )
        if 0 < self.lease_ttl_ms < MIN_LEASE_TTL_MS:
            raise ConfigError("lease_ttl_ms", f"0 (no lease) or at least {MIN_LEASE_TTL_MS}", self.lease_ttl_ms)
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ConfigError("nats_tls_key", "a client certificate and its key together, or neither", "one of them")
        if self.nats_tls_cert and not self.nats_tls_ca:
            raise ConfigError("nats_tls_ca", "the authority servers are verified by, with a client certificate", "none")
        if self.shard >= self.shards:
            raise ConfigError("shard", f"a shard below --shards={self.shards}", self.shard)
        if self.duplicate_window_s > self.stream_max_age_s:
            # JetStream refuses a stream that forgets messages before their ids.
            raise ConfigError(
                "duplicate_window_s", f"at most --stream-max-age-s={self.stream_max_age_s:g}", self.duplicate_window_s
            )

    def nats_tls(self) -> ssl.SSLContext | None:
        """The TLS context of this service's NATS connections, or None for plain TCP.

        Raises:
            ConfigError: a file cannot be read as what it should be.
        """
        return client_tls(self.nats_tls_ca, self.nats_tls_cert, self.nats_tls_key)

    def store_limits(self) -> StoreLimits:
        """The JetStream budget these settings describe."""
        return StoreLimits(self.store_max_bytes, self.store_max_msgs, self.max_msg_bytes)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={'***' if name in SECRET_FIELDS and getattr(self, name) else redact(getattr(self, name))!r}"
            for name in self.__struct_fields__
        )
        return f"{type(self).__name__}({fields})"


# Fields read from RRR_<FIELD> as well as RRR_<SERVICE>_<FIELD>: they describe the deployment, not the service.
SHARED_ENV_FIELDS = frozenset(
    {
        "nats_url",
        "database_url",
        "shards",
        "stream_max_age_s",
        "duplicate_window_s",
        "store_max_bytes",
        "store_max_msgs",
        "max_msg_bytes",
        "stream_replicas",
        "lease_ttl_ms",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "ack_wait_s",
        "otel_exporter",
        "log_level",
        "dlq_key",
        "metrics_host",
    }
)

_PASSWORD_IN_URL = re.compile(r"(//[^:/@]+:)[^@]*@")

# Any frozen settings struct: the services' (ServiceConfig) and the tools' own (the dashboard's).
C = TypeVar("C", bound=msgspec.Struct)


def redact(value: object) -> object:
    """Hide the password of a URL-like string; other values pass unchanged."""
    if isinstance(value, str):
        return _PASSWORD_IN_URL.sub(r"\1***@", value)
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _description(hint: object) -> str:
    for meta in getattr(hint, "__metadata__", ()):
        if isinstance(meta, msgspec.Meta) and meta.description:
            return meta.description
    return ""


def _unannotated(hint: object) -> object:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _is_list(hint: object) -> bool:
    return typing.get_origin(_unannotated(hint)) in (list, tuple)


def build_parser(config_type: type[msgspec.Struct], service: str, parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per config field to ``parser``, with the field's description and env var."""
    hints = typing.get_type_hints(config_type, include_extras=True)
    defaults = {f.name: f.default for f in msgspec.structs.fields(config_type)}
    for name in config_type.__struct_fields__:
        env = " or ".join(env_names(service, name))
        parser.add_argument(
            _flag(name),
            dest=f"cfg_{name}",
            default=None,
            metavar=name.upper(),
            help=f"{_description(hints[name])} [env {env}; default {redact(defaults[name])!r}]",
        )


def env_names(service: str, field: str) -> list[str]:
    """Every environment variable that sets ``field`` for ``service``, lowest precedence first."""
    shared = [f"RRR_{field.upper()}"] if field in SHARED_ENV_FIELDS or field == "shard" else []
    return [*shared, env_name(service, field)]


def env_name(service: str, field: str) -> str:
    """The environment variable that sets ``field`` for ``service``."""
    return f"RRR_{service.upper().replace('-', '_')}_{field.upper()}"


def load_config(
    config_type: type[C],
    service: str,
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Build ``config_type`` from defaults, environment and parsed flags, failing loudly on bad input.

    Raises:
        ConfigError: an unknown ``RRR_<SERVICE>_*`` variable, or a value of the wrong type or range.
    """
    environ = os.environ if environ is None else environ
    fields = config_type.__struct_fields__
    hints = typing.get_type_hints(config_type, include_extras=True)
    prefix = env_name(service, "")
    names = {env_name(service, f) for f in fields}
    unknown = sorted(k for k in environ if k.startswith(prefix) and k not in names)
    if unknown:
        known = ", ".join(env_name(service, f) for f in fields)
        raise ConfigError(unknown[0], f"one of {known}", redact(environ[unknown[0]]))

    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in fields:
        candidates = [(env, environ.get(env)) for env in env_names(service, name)]
        candidates.append((_flag(name), getattr(args, f"cfg_{name}", None)))
        for source, value in candidates:
            if value is not None:
                raw[name] = [v.strip() for v in value.split(",") if v.strip()] if _is_list(hints[name]) else value
                sources[name] = source
    # Each value is converted on its own, against its field's type: the failing field is then known, not
    # read back out of msgspec's message.
    values: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            values[name] = msgspec.convert(value, type=hints[name], strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(sources[name], _expected(hints[name], exc), value) from None
    try:
        # Every value fits its field's type now; what is left are __post_init__'s checks across fields.
        return config_type(**values)
    except ConfigError as exc:
        # Raised by a __post_init__ check with the field's name as source: name what actually set it.
        if exc.source in fields:
            raise ConfigError(
                sources.get(exc.source, f"{_flag(exc.source)} (default)"), exc.expected, exc.got
            ) from None
        raise


def _expected(hint: object, exc: msgspec.ValidationError) -> str:
    """What a field of type ``hint`` expects, in words, from the error of converting a value to it."""
    base = _unannotated(hint)
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(base))
    if base is Decimal:
        return "a decimal number"
    # "Expected `int` >= 1" or "Expected `str`, got `int` - at `$[0]`": keep what was expected.
    message = str(exc).split(" - at ")[0].split(", got ")[0]
    return message.removeprefix("Expected ") if message.startswith("Expected ") else f"a valid value ({message})"


def parse_config(
    config_type: type[C],
    service: str,
    argv: Sequence[str] | None = None,
    *,
    description: str = "",
    parser: argparse.ArgumentParser | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[C, argparse.Namespace]:
    """Parse ``argv`` into ``config_type``; print a clear error and exit 2 on bad config."""
    parser = parser or argparse.ArgumentParser(prog=f"rrr-{service.replace('_', '-')}", description=description)
    build_parser(config_type, service, parser)
    args = parser.parse_args(argv)
    try:
        return load_config(config_type, service, args, environ), args
    except ConfigError as exc:
        parser.error(str(exc))


def client_tls(ca: str, cert: str = "", key: str = "") -> ssl.SSLContext | None:
    """A NATS client's TLS context: servers verified against the authority in ``ca`` and by name, and the
    client certificate ``cert`` (with ``key``) presented when given; None without an authority (plain TCP).

    Verification is never turned off: without ``ca`` there is no TLS at all rather than TLS that trusts anyone.

    Raises:
        ConfigError: a file cannot be read as a certificate or a key.
    """
    if not ca:
        return None
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("nats_tls_ca", "a PEM file of the certificate authority", f"{ca} ({exc})") from None
    if cert:
        try:
            context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("nats_tls_cert", "a PEM certificate and its key", f"{cert} ({exc})") from None
    return context


def tls_from_env(environ: Mapping[str, str] | None = None) -> ssl.SSLContext | None:
    """``client_tls`` from ``RRR_NATS_TLS_CA``, ``_CERT`` and ``_KEY``: how the tools connect to a system with TLS."""
    environ = os.environ if environ is None else environ
    return client_tls(
        environ.get("RRR_NATS_TLS_CA", ""), environ.get("RRR_NATS_TLS_CERT", ""), environ.get("RRR_NATS_TLS_KEY", "")
    )


LOCAL_SYSTEM_ENV = Path(".run") / "env"


def local_system(start: Path | None = None) -> Path | None:
    """The settings file ``rrr-stack up`` wrote for the system run from ``start`` (the working directory) or
    one of its parents (``.run/env``), if there is one."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / LOCAL_SYSTEM_ENV
        if candidate.is_file():
            return candidate
    return None


def with_local_system(tool: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` completed with the local system's settings (``.run/env``) when it names no NATS server.

    A tool run by hand (``rrr-tap``, ``rrr-dlq``, ``rrr-market-data replay``) then talks to the system that
    ``just up`` runs here, with the identity ``up`` gave it, and says so on stderr; a setting in the
    environment still wins over the file's.
    """
    environ = dict(os.environ if environ is None else environ)
    if any(key.startswith("RRR_") and key.endswith("NATS_URL") for key in environ):
        return environ  # the environment names its system: never mix it with another's settings
    found = local_system()
    if found is None:
        return environ
    try:
        lines = found.read_text().splitlines()
    except OSError:
        return environ
    pairs = (line.partition("=") for line in lines)
    taken = {key: value for key, sep, value in pairs if sep and key.startswith("RRR_") and key not in environ}
    if taken:
        print(f"{tool}: using the system of {found.parent.parent} (settings from {found})", file=sys.stderr)
    return {**taken, **environ}
