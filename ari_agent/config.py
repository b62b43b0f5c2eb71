"""Settings: environment (prefix ``AGENT_``, nesting ``__``) over a TOML file over defaults."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ari_agent.errors import ConfigError, ConfigErrors
from ari_agent.knowledge.answer import MIN_SCORE
from ari_agent.knowledge.fusion import HYBRID_MIN_COVERAGE, MIN_SIMILARITY
from ari_agent.knowledge.relevance import MIN_COVERAGE
from ari_agent.pool import pool_app
from ari_agent.profiles import ProfileConfig, builtin_profiles

ENV_PREFIX = "AGENT_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def invalid(problem: str, fix: str, at: str = "") -> PydanticCustomError:
    """A validation error that carries its own fix (and, from a model validator, its field)."""
    return PydanticCustomError("config", "{problem}", {"problem": problem, "fix": fix, "at": at})


_URL_FIX = "correct AGENT_ARI__URL (or 'ari.url' in the config file), e.g. http://127.0.0.1:8088"


class AriSettings(_Section):
    url: str = "http://127.0.0.1:8088"
    username: str = "ai-agent"
    password: SecretStr = SecretStr("")
    app: str = Field("ai-agent", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # https:// URLs: the CA that signed Asterisk's certificate (None: the system's CAs).
    ca_file: Path | None = None
    # False skips certificate checks (said loudly at start and in doctor); never the default.
    tls_verify: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # The messages never quote the URL: it may hold a password.
        try:
            parts = urlsplit(value.strip())
        except ValueError:
            raise invalid("not a valid URL", _URL_FIX) from None
        if parts.scheme.lower() not in ("http", "https"):
            raise invalid("must start with http:// or https://", _URL_FIX)
        if parts.username is not None or parts.password is not None:
            raise invalid(
                "credentials in the URL",
                "remove them from the URL; put them in AGENT_ARI__USERNAME/AGENT_ARI__PASSWORD",
            )
        if not parts.hostname:
            raise invalid("the URL has no host", _URL_FIX)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise invalid("the URL's port is not a number from 1 to 65535", _URL_FIX)
        if parts.query or parts.fragment:
            raise invalid(
                "the URL has a query string or fragment, which ARI does not take",
                "remove everything from '?' or '#' on in AGENT_ARI__URL (or 'ari.url')",
            )
        from ari_agent.ari.client import normalize_ari_url  # the client's own rule, as a last guard

        try:
            normalize_ari_url(value)
        except ValueError:
            raise invalid("the ARI client cannot use this URL", _URL_FIX) from None
        return value


def _ip_literal(value: str, setting: str, fix: str) -> str:
    # Media sockets bind per call or at start: a name would need a DNS lookup on the event loop.
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise invalid(f"{value!r} is not an IP address", f"set {setting} {fix}") from None
    return value


class AudioSocketSettings(_Section):
    """The agent's AudioSocket server: Asterisk connects to it once per call (TCP)."""

    # None: media.bind_host.
    listen_host: str | None = None
    listen_port: int = Field(9092, ge=1, le=65535)
    # What Asterisk is told to connect to (None: media.advertise_host or the listen host; the listen port).
    advertise_host: str | None = None
    advertise_port: int | None = Field(None, ge=1, le=65535)
    # A connection that has not said which call it carries (its UUID) by then is closed.
    hello_timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("listen_host")
    @classmethod
    def _listen_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _ip_literal(
            value,
            "AGENT_MEDIA__AUDIOSOCKET__LISTEN_HOST (or 'media.audiosocket.listen_host')",
            "to an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all "
            "(then set media.audiosocket.advertise_host too)",
        )


_WS_URL_FIX = (
    "set AGENT_MEDIA__WEBSOCKET__URL (or 'media.websocket.url') to Asterisk's HTTP server, "
    "e.g. ws://127.0.0.1:8088, or leave it out to use AGENT_ARI__URL's"
)


def _both_or_neither(first: tuple[str, object], second: tuple[str, object], why: str, then: str) -> None:
    """Two media.websocket settings that make sense only together: the error names the one missing."""
    (a, a_value), (b, b_value) = first, second
    if (a_value is None) != (b_value is None):
        missing = b if b_value is None else a
        raise invalid(
            f"{a} and {b} go together ({why})",
            f"set AGENT_MEDIA__WEBSOCKET__{missing.upper()} (or 'media.websocket.{missing}') {then}",
            at=missing,
        )


class WebSocketSettings(_Section):
    """chan_websocket (ExternalMedia ``transport=websocket``, Asterisk 22.6+)."""

    # server: Asterisk waits for the agent on its own HTTP server (/media/<connection id>);
    # no websocket_client.conf. client: Asterisk connects out to the agent's listener
    # (listen_host:listen_port) through websocket_client.conf's section client_name.
    connection_type: Literal["server", "client"] = "server"
    # Asterisk's HTTP server for /media/<id>: ws://host:port or wss://host:port
    # (None: AGENT_ARI__URL's host and port, wss when it is https; its CA and checks apply).
    url: str | None = None
    # Asterisk must say MEDIA_START this soon after the connection opens.
    connect_timeout: float = Field(5.0, gt=0, le=60)
    # client: the websocket_client.conf section Asterisk dials (ExternalMedia's external_host).
    client_name: str = "ari-agent"
    # client: where the agent listens (None: media.bind_host); that section's uri must reach it.
    listen_host: str | None = None
    listen_port: int = Field(9093, ge=1, le=65535)
    # client: HTTP Basic credentials Asterisk must present (websocket_client.conf's username
    # and password); connections without them are refused. None: no check.
    username: str | None = None
    password: SecretStr | None = None
    # client: the listener serves wss:// with this certificate (PEM, leaf first) and key;
    # plain ws:// is then refused. Both or neither; the files are checked at check/run start.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSocketSettings:
        _both_or_neither(
            ("tls_cert_file", self.tls_cert_file),
            ("tls_key_file", self.tls_key_file),
            "the listener serves wss:// with both",
            "too, or unset both for plain ws://",
        )
        return self

    @model_validator(mode="after")
    def _credentials(self) -> WebSocketSettings:
        _both_or_neither(
            ("username", self.username),
            ("password", self.password),
            "websocket_client.conf sends both",
            "to the same value as websocket_client.conf's, or unset both",
        )
        return self

    @field_validator("connection_type", mode="before")
    @classmethod
    def _connection_type(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("client_name")
    @classmethod
    def _client_name(cls, value: str) -> str:
        # It goes into the dial string WebSocket/<name>/...: '/' or ',' would change its meaning.
        name = value.strip()
        if not name or any(c in name for c in "/,()[]&|; \t"):
            raise invalid(
                f"{value!r} is not a websocket_client.conf section name",
                "set AGENT_MEDIA__WEBSOCKET__CLIENT_NAME (or 'media.websocket.client_name') to the "
                "[section] of Asterisk's websocket_client.conf, e.g. ari-agent",
            )
        return name

    @field_validator("listen_host")
    @classmethod
    def _listen_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _ip_literal(
            value,
            "AGENT_MEDIA__WEBSOCKET__LISTEN_HOST (or 'media.websocket.listen_host')",
            "to an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all",
        )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value.strip())
            port = parts.port
        except ValueError:
            raise invalid(
                "not a valid URL (or its port is not a number from 1 to 65535)", _WS_URL_FIX
            ) from None
        if parts.scheme.lower() not in ("ws", "wss", "http", "https"):
            raise invalid("must start with ws://, wss://, http:// or https://", _WS_URL_FIX)
        if parts.username is not None or parts.password is not None:
            raise invalid("credentials in the URL (the media URL takes none)", _WS_URL_FIX)
        if not parts.hostname or port == 0:
            raise invalid("the URL has no host or port", _WS_URL_FIX)
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise invalid("the URL has a path, query or fragment (the agent adds /media/<id>)", _WS_URL_FIX)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
        return f"{scheme}://{parts.netloc}"


class MediaSettings(_Section):
    # How the call's audio travels between Asterisk and the agent (one per installation):
    # rtp = ExternalMedia RTP over UDP (any Asterisk with ARI ExternalMedia, 16.6+);
    # audiosocket = ExternalMedia AudioSocket over TCP (Asterisk 18+, chan_audiosocket);
    # websocket = ExternalMedia over chan_websocket (Asterisk 22.6+, 21.11+, 20.16+; marks 22.8+):
    # Asterisk paces the agent's audio and does pause, flush and marks itself.
    transport: Literal["rtp", "audiosocket", "websocket"] = "rtp"
    audiosocket: AudioSocketSettings = AudioSocketSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    bind_host: str = "127.0.0.1"
    advertise_host: str | None = None
    port_min: int = Field(40000, ge=1024, le=65535)
    port_max: int = Field(40999, ge=1024, le=65535)
    # slin16: wideband 16 kHz end to end, so STT gets twice the bandwidth of
    # G.711 and nothing is companded twice; Asterisk transcodes per caller
    # codec anyway. ulaw halves the bandwidth for sites that prefer it.
    format: Literal["slin16", "ulaw"] = "slin16"
    # Receive jitter buffer window (0 = off). It costs nothing while packets come in order;
    # only a missing packet makes later ones wait, up to this long, for it to turn up.
    # 40 ms covers two frames of reordering, more than a LAN or one IP hop to Asterisk shows,
    # and keeps the worst case well under a syllable.
    jitter_buffer_ms: int = Field(40, ge=0, le=200)

    @field_validator("transport", mode="before")
    @classmethod
    def _transport(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("bind_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        # Each call binds its RTP socket here: a name would need a DNS lookup per call
        # (and fails at once today), so every call would go back BUSY.
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise invalid(
                f"{value!r} is not an IP address",
                "set AGENT_MEDIA__BIND_HOST (or 'media.bind_host') to an address of this machine, "
                "e.g. 127.0.0.1, or 0.0.0.0 for all (then set media.advertise_host too)",
            ) from None
        return value

    @model_validator(mode="after")
    def _range(self) -> MediaSettings:
        if self.port_max < self.port_min:
            raise ValueError("port_max must be >= port_min")
        if self.advertise_host is None and ipaddress.ip_address(self.bind_host).is_unspecified:
            # Asterisk would be told to send the call's audio to 0.0.0.0.
            raise invalid(
                f"required when media.bind_host is {self.bind_host} (Asterisk needs an address to send to)",
                "set AGENT_MEDIA__ADVERTISE_HOST (or 'media.advertise_host') to the address "
                "Asterisk reaches this machine on",
                at="advertise_host",
            )
        sock = self.audiosocket
        if (
            self.transport == "audiosocket"
            and sock.advertise_host is None
            and self.advertise_host is None
            and ipaddress.ip_address(self.audiosocket_listen_host).is_unspecified
        ):
            raise invalid(
                f"required when the AudioSocket server listens on {self.audiosocket_listen_host} "
                "(Asterisk needs an address to connect to)",
                "set AGENT_MEDIA__AUDIOSOCKET__ADVERTISE_HOST (or 'media.audiosocket.advertise_host') "
                "to the address Asterisk reaches this machine on",
                at="audiosocket.advertise_host",
            )
        return self

    @property
    def advertised(self) -> str:
        return self.advertise_host or self.bind_host

    @property
    def audiosocket_listen_host(self) -> str:
        return self.audiosocket.listen_host or self.bind_host

    @property
    def websocket_listen_host(self) -> str:
        return self.websocket.listen_host or self.bind_host

    @property
    def audiosocket_advertised(self) -> tuple[str, int]:
        """The host and port Asterisk connects to for AudioSocket."""
        sock = self.audiosocket
        listen = self.audiosocket_listen_host
        host = sock.advertise_host or self.advertise_host or listen
        return host, sock.advertise_port or sock.listen_port


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=1, le=65535)
    # Bearer token for /metrics and /calls (also read from AGENT_HTTP_TOKEN, the older name).
    token: SecretStr | None = None
    token_file: Path | None = None
    # A connection that sends nothing for this long is closed (aiohttp's default is an hour).
    idle_timeout: float = Field(15.0, gt=0)
    # Above this many open connections new ones are closed at once: each holds a file
    # descriptor, and RTP sockets for new calls need them more than scrapers do.
    max_connections: int = Field(64, ge=1)


class CallSettings(_Section):
    max_concurrent: int = Field(100, ge=1)
    # Wait this long for the first inbound RTP packet before greeting anyway.
    first_media_timeout: float = Field(2.0, gt=0)
    # On SIGTERM, active calls get this long to finish before they are handed back.
    drain_timeout: float = Field(30.0, ge=0)


class PoolSettings(_Section):
    # True: register <ari.app>-pool-<instance_id> and claim calls StasisBroadcast offers.
    enabled: bool = False
    # Longest wait before claiming (at the limit's edge); StasisBroadcast's timeout must exceed it.
    claim_delay_max: float = Field(0.25, ge=0, le=5)
    # A peer whose beat has not changed this long is dead: its parked callers go back.
    dead_after: float = Field(5.0, ge=2, le=300)


class RecordsSettings(_Section):
    dir: Path | None = None


def default_store_path() -> Path:
    """systemd's StateDirectory, else /var/lib for root (containers), else the user's state dir."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "calls.db"
    if os.geteuid() == 0:
        return Path("/var/lib/ari-agent/calls.db")
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "ari-agent" / "calls.db"


class StoreSettings(_Section):
    enabled: bool = True
    path: Path = Field(default_factory=default_store_path)
    retention_days: int | None = Field(30, ge=1)
    # Turn text is stored only when the operator opts in (here or per profile).
    text: bool = False
    purge_interval: float = Field(3600.0, gt=0)
    # Data keys (AES-256-GCM), newest first: turn texts and captured fields are stored sealed.
    keys: SecretStr | None = None
    keys_file: Path | None = None


class LeadsSettings(_Section):
    """Where completed leads go besides the store: an optional webhook (README: Leads)."""

    webhook_url: str | None = None
    # HMAC-SHA256 key of the X-Ari-Agent-Signature header; also *_FILE or /run/secrets.
    webhook_secret: SecretStr | None = None
    webhook_secret_file: Path | None = None
    attempts: int = Field(6, ge=1, le=50)  # in all, the first included
    backoff_s: float = Field(2.0, gt=0, le=3600)  # before the second attempt, doubled each time
    max_backoff_s: float = Field(300.0, gt=0)
    timeout_s: float = Field(10.0, gt=0, le=120)  # per attempt


class AuditSettings(_Section):
    enabled: bool = True
    # None: audit.jsonl beside the call store.
    path: Path | None = None


class KnowledgeSettings(_Section):
    # None: knowledge.db beside the call store.
    path: Path | None = None
    # No answer unless the best passage has this IDF-weighted share of the question's words
    # (tests/bench/bench_knowledge.py measures the trade-off); higher rejects more.
    min_coverage: float = Field(MIN_COVERAGE, ge=0, le=1)
    # A BM25 floor under each passage handed over; 0: none.
    min_score: float = Field(MIN_SCORE, ge=0)
    top: int = Field(3, ge=1, le=10)  # passages handed to the LLM per search
    # Hybrid search (a profile with embeddings): answered only when the nearest passage's cosine
    # similarity reaches min_similarity and some passage covers hybrid_min_coverage of the
    # question's words. Measured for the local embedder (all-MiniLM-L6-v2); another embedder's
    # similarities have another scale: measure yours (tests/bench/bench_knowledge.py).
    min_similarity: float = Field(MIN_SIMILARITY, ge=-1, le=1)
    hybrid_min_coverage: float = Field(HYBRID_MIN_COVERAGE, ge=0, le=1)


class OtelSettings(_Section):
    # OTLP/HTTP traces (the otel extra): one trace per call, written when the call ends. A base
    # URL (http://collector:4318, /v1/traces appended) or the full traces URL. None: the standard
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else no traces.
    endpoint: str | None = None
    service_name: str = "ari-agent"


def default_instance_id() -> str:
    """Stable across restarts on one host, so a restarted agent finds its own leftovers."""
    host = re.sub(r"[^a-z0-9]+", "-", socket.gethostname().lower()).strip("-")
    return host[:24] or "agent"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    ari: AriSettings = AriSettings()
    media: MediaSettings = MediaSettings()
    http: HttpSettings = HttpSettings()
    calls: CallSettings = CallSettings()
    pool: PoolSettings = PoolSettings()
    records: RecordsSettings = RecordsSettings()
    store: StoreSettings = StoreSettings()
    audit: AuditSettings = AuditSettings()
    leads: LeadsSettings = LeadsSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    otel: OtelSettings = OtelSettings()
    default_profile: str = "frontdesk"
    # Marks the bridges and channels this instance creates; give each agent
    # instance sharing one Asterisk its own.
    instance_id: str = Field(default_factory=default_instance_id, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    profiles: dict[str, ProfileConfig] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if settings_cls.model_config.get("toml_file"):
            sources += (TomlConfigSettingsSource(settings_cls),)
        return sources

    @property
    def stasis_app(self) -> str:
        """The app this agent registers: ``ari.app``, or ``<ari.app>-pool-<instance_id>`` in a pool."""
        if self.pool.enabled:
            return pool_app(self.ari.app, self.instance_id)
        return self.ari.app

    @property
    def audit_path(self) -> Path:
        return self.audit.path or self.store.path.parent / "audit.jsonl"

    @property
    def knowledge_path(self) -> Path:
        return self.knowledge.path or self.store.path.parent / "knowledge.db"

    def all_profiles(self) -> dict[str, ProfileConfig]:
        """Built-in profiles with the file's merged over them, field by field (the file wins)."""
        merged = builtin_profiles()
        for name, profile in self.profiles.items():
            base = merged.get(name)
            if base is None:
                merged[name] = profile
                continue
            fields = profile.model_dump(include=profile.model_fields_set)
            merged[name] = ProfileConfig.model_validate({**base.model_dump(), **fields})
        return merged


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets a settings field."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _explain(exc: ValidationError, source: str) -> ConfigError:
    return ConfigErrors([_explain_one(err, source) for err in exc.errors()])


def _explain_one(err: Any, source: str) -> ConfigError:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if ctx.get("at"):
        loc += (ctx["at"],)
    dotted = ".".join(str(p) for p in loc) or "settings"
    problem = err["msg"].removeprefix("Value error, ")
    if ctx.get("fix"):
        fix = ctx["fix"]
    elif err["type"] == "extra_forbidden":
        fix = f"remove '{dotted}' ({source}); it is not a known setting"
    elif err["type"] == "literal_error":
        allowed = problem.removeprefix("Input should be ")
        fix = f"set {env_name(loc)} (or '{dotted}' in the config file) to {allowed}"
    elif loc and loc[0] == "profiles":
        fix = f"correct '{dotted}' in the profile in the config file"
    else:
        fix = f"correct {env_name(loc)} (or '{dotted}' in the config file)"
    return ConfigError(dotted, f"{problem}.", fix)


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Load and validate settings; any problem raises ConfigError naming the field and the fix."""
    path_text = str(config_file) if config_file else os.environ.get(ENV_PREFIX + "CONFIG")
    cls: type[Settings] = Settings
    source = "environment"
    if path_text:
        path = Path(path_text)
        if not path.is_file():
            raise ConfigError("config", f"file {path} not found.", "pass an existing TOML file to --config")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("config", f"{path} is not valid TOML: {exc}.", "correct the file") from None
        cls = type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
        )
        source = f"environment or {path}"
    try:
        settings = cls()
    except ValidationError as exc:
        raise _explain(exc, source) from None
    _check_profiles(settings)
    return settings


def _check_profiles(settings: Settings) -> None:
    profiles = settings.all_profiles()
    if settings.default_profile not in profiles:
        raise ConfigError(
            "default_profile",
            f"no profile named '{settings.default_profile}'.",
            f"set AGENT_DEFAULT_PROFILE to one of: {', '.join(sorted(profiles))}",
        )


def masked(settings: Settings) -> dict[str, Any]:
    """The resolved settings as plain data, secrets masked, for ``ari-agent check``."""
    data: dict[str, Any] = settings.model_dump(mode="json", exclude={"profiles"})
    data["ari"]["password"] = "********" if settings.ari.password.get_secret_value() else "(empty)"
    data["http"]["token"] = "********" if settings.http.token else None
    data["profiles"] = sorted(settings.all_profiles())
    return data
