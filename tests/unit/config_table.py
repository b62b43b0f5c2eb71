"""The configurations `check` must refuse (each with the field it must name) and ones it must pass.

Shared by the unit tests (check and run through the real CLI) and the
integration test (every good config starts an agent that answers a call).
Values may hold ``{port}`` (a closed local port, so nothing is ever reached)
or ``{ari_url}`` (the ARI the agent is pointed at); ``{secret}`` marks a
password that must never appear in any output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SECRET = "pw-Zq7-never-shown"


@dataclass(frozen=True)
class Case:
    id: str
    field: str = ""  # the field the error must name (bad configs only)
    toml: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def render(self, **values: str) -> tuple[str, dict[str, str]]:
        values = {"secret": SECRET, **values}
        toml = self.toml
        env = dict(self.env)
        for key, value in values.items():
            toml = toml.replace("{" + key + "}", value)
            env = {k: v.replace("{" + key + "}", value) for k, v in env.items()}
        return toml, env


FD = "[profiles.frontdesk]\n"
OPENAI_LOCAL = "[profiles.frontdesk.options.openai]\nbase_url = 'http://127.0.0.1:{port}/v1'\n"


def _url(url: str) -> dict[str, str]:
    return {"AGENT_ARI__URL": url}


BAD: list[Case] = [
    # ARI URL (finding 5)
    Case("ari-url-credentials", "ari.url", env=_url("http://admin:{secret}@127.0.0.1:{port}")),
    Case(
        "ari-url-credentials-in-file",
        "ari.url",
        toml='[ari]\nurl = "http://admin:{secret}@127.0.0.1:{port}"\n',
    ),
    Case("ari-url-user-only", "ari.url", env=_url("http://admin@127.0.0.1:{port}")),
    Case("ari-url-no-host", "ari.url", env=_url("http://:{port}")),
    Case("ari-url-no-host-path", "ari.url", env=_url("http:///ari")),
    Case("ari-url-port-out-of-range", "ari.url", env=_url("http://127.0.0.1:99999")),
    Case("ari-url-port-not-number", "ari.url", env=_url("http://127.0.0.1:80a")),
    Case("ari-url-port-zero", "ari.url", env=_url("http://127.0.0.1:0")),
    Case("ari-url-query", "ari.url", env=_url("http://127.0.0.1:{port}/?api_key=x")),
    Case("ari-url-fragment", "ari.url", env=_url("http://127.0.0.1:{port}/#ari")),
    Case("ari-url-ws-scheme", "ari.url", env=_url("ws://127.0.0.1:{port}")),
    # Media (finding 5)
    Case("bind-host-name", "media.bind_host", env={"AGENT_MEDIA__BIND_HOST": "localhost"}),
    Case("bind-host-with-port", "media.bind_host", env={"AGENT_MEDIA__BIND_HOST": "127.0.0.1:4000"}),
    Case(
        "bind-any-without-advertise",
        "media.advertise_host",
        env={"AGENT_MEDIA__BIND_HOST": "0.0.0.0"},
    ),
    # Provider names, every stage (finding 5)
    Case("provider-os-nope", "profiles.frontdesk.stt", toml=FD + "stt = ['os:nope']\n"),
    Case(
        "provider-module-missing",
        "profiles.frontdesk.llm",
        toml=FD + "llm = ['no_such_module_x:Thing']\n",
    ),
    Case(
        "provider-not-a-provider",
        "profiles.frontdesk.tts",
        toml=FD + "tts = ['providers.base:Intent']\n",
    ),
    Case("provider-unknown-name", "profiles.frontdesk.tts", toml=FD + "tts = ['nosuchvoice']\n"),
    Case(
        "provider-wrong-stage",
        "profiles.frontdesk.llm",
        toml=FD + "llm = ['deepgram']\n",
    ),
    Case("realtime-unknown", "profiles.frontdesk.realtime", toml=FD + "realtime = ['nope']\n"),
    Case("realtime-os-nope", "profiles.frontdesk.realtime", toml=FD + "realtime = ['os:nope']\n"),
    Case("apology-tts-unknown", "profiles.frontdesk.apology_tts", toml=FD + "apology_tts = 'nope'\n"),
    Case(
        "apology-tts-os-nope",
        "profiles.frontdesk.apology_tts",
        toml=FD + "apology_tts = 'os:nope'\n",
    ),
    # Provider options (finding 5)
    Case(
        "option-misspelt-local",
        "profiles.frontdesk.options.local.ratee",
        toml="[profiles.frontdesk.options.local]\nratee = 170\n",
    ),
    Case(
        "option-misspelt-scripted",
        "profiles.frontdesk.options.scripted.threshhold",
        toml="[profiles.frontdesk.options.scripted]\nthreshhold = 0.5\n",
    ),
    Case(
        "option-misspelt-openai-llm",
        "profiles.frontdesk.options.openai.modle",
        toml=FD + "llm = ['openai', 'scripted']\n" + OPENAI_LOCAL + "modle = 'llama3.2'\n",
    ),
    Case(
        "option-misspelt-realtime",
        "profiles.frontdesk.options.openai.realtime_modle",
        toml=FD + "realtime = ['openai']\n" + OPENAI_LOCAL + "realtime_modle = 'x'\n",
    ),
    Case(
        "option-bad-type",
        "profiles.frontdesk.options.local.rate",
        toml="[profiles.frontdesk.options.local]\nrate = 'fast'\n",
    ),
    Case(
        "option-timeout-zero",
        "profiles.frontdesk.options.local.first_audio_timeout",
        toml="[profiles.frontdesk.options.local]\nfirst_audio_timeout = 0\n",
    ),
    Case(
        "option-retry-attempts-zero",
        "profiles.frontdesk.options.scripted.retry_attempts",
        toml="[profiles.frontdesk.options.scripted]\nretry_attempts = 0\n",
    ),
    Case(
        "option-deepgram-url-scheme",
        "profiles.frontdesk.options.deepgram.url",
        toml=FD + "stt = ['deepgram', 'local']\n"
        "[profiles.frontdesk.options.deepgram]\nurl = 'http://127.0.0.1:{port}'\n",
        env={"DEEPGRAM_API_KEY": "dg-test-key"},
    ),
    Case(
        "option-openai-turn-detection",
        "profiles.frontdesk.options.openai.stt_turn_detection",
        toml=FD + "stt = ['openai', 'local']\n" + OPENAI_LOCAL + ""
        "stt_streaming = false\nstt_turn_detection = 'bogus'\n",
    ),
    Case(
        "option-table-of-unknown-provider",
        "profiles.frontdesk.options.opneai",
        toml="[profiles.frontdesk.options.opneai]\nmodel = 'gpt-4o-mini'\n",
    ),
]

# Each of these `check` passes (warnings allowed), and `run` answers a call with it.
GOOD: list[Case] = [
    Case("defaults"),
    Case(
        "instructions-with-braces",
        toml='[profiles.frontdesk]\ntemplate_variables = ["LAB_NUMBER"]\ninstructions = """'
        'Reply as JSON like {"intent": "hours", "slots": {"day": "monday"}}. Format {0}. '
        'Caller {caller_number} on {LAB_NUMBER}; write {{caller_number}} literally; unknown {nmae}."""\n',
    ),
    Case(
        "validated-options",
        toml="[profiles.frontdesk.options.local]\nrate = 170\nprewarm = 1\nfirst_audio_timeout = 5\n"
        "retry_attempts = 3\nbreaker_threshold = 5\n[profiles.frontdesk.options.scripted]\nthreshold = 0.5\n",
    ),
    Case(
        "bind-any-with-advertise",
        env={"AGENT_MEDIA__BIND_HOST": "0.0.0.0", "AGENT_MEDIA__ADVERTISE_HOST": "127.0.0.1"},
    ),
    Case("ari-url-with-path", env={"AGENT_ARI__URL": "{ari_url}/ari/"}),
]
