"""``ari-agent load``: what each SIPp caller sends and when, as a SIPp scenario (sans-IO).

SIPp (Debian's ``sip-tester``) places the calls; its ``rtp_stream`` action
plays 8 kHz µ-law WAV files as RTP. SIPp cannot hear, so each caller keeps to
a timeline: wait for the greeting, ask the question, wait for the reply, say
goodbye, then wait for the agent to hang up (and hang up itself if it does
not). Two ways to send the quiet parts:

* streaming (``silent_between=False``): one WAV per call holds the whole
  timeline, silence included, so RTP flows all the time, as from a phone;
* silent on the wire (``silent_between=True``): only the utterances are
  played, nothing is sent between them, as from a phone with silence
  suppression or a caller leg without ``transmit_silence``.

Every event a test or the report needs is a ``<log>`` line
``<call_number> <event>`` (``answered``, ``agent-bye``, ``our-bye``); the
call's caller number is ``<tag><call_number>``, which is how the agent's
call records are matched to SIPp's calls.

With ``auth=True`` the INVITE expects a digest challenge (401 or 407, as an
Asterisk endpoint with ``auth =`` sends), acknowledges it and sends the
INVITE again with SIPp's ``[authentication]`` header, computed from the
user and password given to SIPp (``-au`` / ``-ap``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

DEFAULT_SIP_PORT = 5060


@dataclass(frozen=True)
class Target:
    """Where the calls go: ``EXT@HOST[:PORT]`` (IPv6 hosts in brackets)."""

    extension: str
    host: str
    port: int = DEFAULT_SIP_PORT

    @classmethod
    def parse(cls, text: str) -> Target:
        exten, sep, hostport = text.rpartition("@")
        if not sep or not exten or not hostport:
            raise ValueError(f"target {text!r} is not EXT@HOST[:PORT] (e.g. 100@127.0.0.1:5060)")
        if not re.fullmatch(r"[0-9A-Za-z*#+._-]+", exten):
            raise ValueError(f"extension {exten!r} has characters a SIP user part cannot carry here")
        if hostport.startswith("["):
            host, _, rest = hostport[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
        else:
            host, _, port_text = hostport.partition(":")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host {host!r} is not an IP address (SIPp needs one)") from None
        port = DEFAULT_SIP_PORT
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"port {port_text!r} is not a port number")
            port = int(port_text)
        return cls(exten, host, port)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.extension}@{self.hostport}"


@dataclass(frozen=True)
class CallPlan:
    """One caller's timeline, in seconds."""

    # answer -> the question: the greeting plays meanwhile, and a caller silent on the wire is
    # greeted only after the agent's first-media timeout (2 s by default)
    greeting_wait: float = 7.0
    reply_wait: float = 7.0  # end of the question -> goodbye (the reply plays meanwhile)
    hangup_wait: float = 8.0  # end of goodbye -> we hang up if the agent has not
    silent_between: bool = False

    def __post_init__(self) -> None:
        for name in ("greeting_wait", "reply_wait", "hangup_wait"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True)
class Segment:
    kind: str  # "silence", "question" or "goodbye"
    seconds: float


def timeline(plan: CallPlan, question_s: float, goodbye_s: float) -> list[Segment]:
    """What a caller sends from the answer on; the last silence is the wait for the agent's BYE."""
    return [
        Segment("silence", plan.greeting_wait),
        Segment("question", question_s),
        Segment("silence", plan.reply_wait),
        Segment("goodbye", goodbye_s),
        Segment("silence", plan.hangup_wait),
    ]


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


_INVITE = """\
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "ari-agent load" <sip:{tag}[call_number]@[local_ip]:[local_port]>;tag=[pid]L[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE{auth}
      Contact: <sip:{tag}[call_number]@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: ari-agent load
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [call_number] 1 IN IP[local_ip_type] [local_ip]
      s=ari-agent load
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=sendrecv
"""

_ACK = """\
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "ari-agent load" <sip:{tag}[call_number]@[local_ip]:[local_port]>;tag=[pid]L[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0
"""

# The ACK of a challenge (a non-2xx answer) belongs to the INVITE's transaction: same Via branch.
_ACK_CHALLENGE = """\
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "ari-agent load" <sip:{tag}[call_number]@[local_ip]:[local_port]>;tag=[pid]L[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
"""

_BYE = """\
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "ari-agent load" <sip:{tag}[call_number]@[local_ip]:[local_port]>;tag=[pid]L[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      Max-Forwards: 70
      Content-Length: 0
"""

_OK = """\
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
"""


# SIPp fills [authentication] with the digest answer to the last challenge (-au / -ap).
_AUTH_HEADER = "\n      [authentication]"


def _cdata(text: str) -> str:
    return f"<![CDATA[\n{text}\n    ]]>"


def _play(wav: str) -> str:
    # file, loops, payload type 0 (PCMU)
    return f"<exec rtp_stream={quoteattr(f'{wav},1,0')}/>"


def _log(event: str) -> str:
    return f"<log message={quoteattr(f'[call_number] {event}')}/>"


def scenario(
    plan: CallPlan,
    *,
    tag: str,
    question_wav: str,
    goodbye_wav: str,
    call_wav: str,
    question_s: float,
    goodbye_s: float,
    auth: bool = False,
) -> str:
    """The SIPp scenario XML.

    ``call_wav`` is the whole timeline as one file (streaming callers);
    ``question_wav`` / ``goodbye_wav`` are the utterances alone (silent callers).
    ``auth``: answer a digest challenge to the INVITE (SIPp needs ``-au`` and ``-ap``).
    """
    if not tag.isdigit():
        raise ValueError("the tag must be digits: it starts every caller number")
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>',
        '<scenario name="ari-agent load">',
        f'  <send retrans="500">\n    {_cdata(_INVITE.format(tag=tag, cseq=1, auth=""))}\n  </send>',
        '  <recv response="100" optional="true"/>',
    ]
    cseq = 1
    if auth:
        # Asterisk challenges with 401 (407 from a proxy): either will do, one must come.
        cseq = 2
        parts += [
            '  <recv response="401" auth="true" optional="true" next="3"/>',
            '  <recv response="407" auth="true"/>',
            '  <label id="3"/>',
            f"  <send>\n    {_cdata(_ACK_CHALLENGE.format(tag=tag))}\n  </send>",
            '  <send retrans="500">\n'
            f"    {_cdata(_INVITE.format(tag=tag, cseq=cseq, auth=_AUTH_HEADER))}\n  </send>",
            '  <recv response="100" optional="true"/>',
        ]
    parts += [
        '  <recv response="180" optional="true"/>',
        '  <recv response="183" optional="true"/>',
        '  <recv response="200" rrs="true"/>',
        f"  <send>\n    {_cdata(_ACK.format(tag=tag, cseq=cseq))}\n  </send>",
    ]
    if plan.silent_between:
        parts += [
            f"  <nop><action>{_log('answered')}</action></nop>",
            f'  <pause milliseconds="{_ms(plan.greeting_wait)}"/>',
            f"  <nop><action>{_play(question_wav)}</action></nop>",
            f'  <pause milliseconds="{_ms(question_s + plan.reply_wait)}"/>',
            f"  <nop><action>{_play(goodbye_wav)}</action></nop>",
            f'  <pause milliseconds="{_ms(goodbye_s)}"/>',
        ]
        wait_bye = plan.hangup_wait
    else:
        parts.append(f"  <nop><action>{_log('answered')}{_play(call_wav)}</action></nop>")
        wait_bye = sum(s.seconds for s in timeline(plan, question_s, goodbye_s))
    parts += [
        # The agent hangs up after its goodbye; if it does not, we do (label 1).
        f'  <recv request="BYE" timeout="{_ms(wait_bye)}" ontimeout="1"/>',
        f"  <send>\n    {_cdata(_OK)}\n  </send>",
        f'  <nop next="2"><action>{_log("agent-bye")}</action></nop>',
        '  <label id="1"/>',
        f"  <nop><action>{_log('our-bye')}</action></nop>",
        f'  <send retrans="500">\n    {_cdata(_BYE.format(tag=tag, cseq=cseq + 1))}\n  </send>',
        '  <recv response="200"/>',
        '  <label id="2"/>',
        "</scenario>",
        "",
    ]
    return "\n".join(parts)


def parse_log(text: str) -> dict[int, set[str]]:
    """SIPp's ``<log>`` lines (``<call_number> <event>``) as events per call number."""
    calls: dict[int, set[str]] = {}
    for line in text.splitlines():
        number, _, event = line.strip().partition(" ")
        if number.isdigit() and event:
            calls.setdefault(int(number), set()).add(event.strip())
    return calls
