"""The operator's live console at ``/``: calls in progress (SSE), recent calls, provider health.

One agent's console: in a pool each agent serves its own (the page says which instance).

Access:
- With an HTTP token, the page and its data need a login: ``POST /console/login`` with the
  token sets a session cookie (HttpOnly, SameSite=Strict) holding a nonce and its HMAC under
  the token, so it stops working when the token changes. ``Authorization: Bearer`` works too.
- Actions (hand back to the dialplan, hang up) are POSTs that need the cookie, an ``Origin``
  equal to this server's own, and the CSRF token the page carries (``X-CSRF-Token``, derived
  from the cookie's nonce). Each is written to the audit log, refused ones too.
- Without a token the console is read-only, and served only when the server binds loopback.

The call views come from :class:`ConsoleSource`; transcripts and caller numbers appear only
where the operator opted into text (the profile's ``store_text``, else ``AGENT_STORE__TEXT``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import secrets
from datetime import date
from typing import Any, Literal, Protocol

from aiohttp import web

COOKIE = "aia_console"
SESSION_SECONDS = 12 * 3600
EVENTS_INTERVAL = 1.0
Action = Literal["handback", "hangup"]
ACTIONS: tuple[Action, ...] = ("handback", "hangup")


class ConsoleSource(Protocol):
    instance: str

    def live_calls(self) -> list[dict[str, Any]]: ...

    async def recent_calls(self, *, day: date | None, outcome: str | None) -> list[dict[str, Any]]: ...

    async def stored_call(self, call_id: str) -> dict[str, Any] | None: ...

    def provider_health(self) -> dict[str, str]: ...

    async def operator_action(self, call_id: str, action: Action) -> bool: ...

    async def audit(self, action: str, **details: Any) -> None: ...


def _mac(token: str, purpose: str, nonce: str) -> str:
    return hmac.new(token.encode(), f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()


class ConsoleAuth:
    """The cookie, the CSRF token and the Origin check; ``token`` None: read-only."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    def new_cookie(self) -> str:
        assert self.token is not None
        nonce = secrets.token_hex(16)
        return f"{nonce}.{_mac(self.token, 'session', nonce)}"

    def nonce(self, request: web.Request) -> str | None:
        """The session nonce of a valid cookie, else None."""
        if self.token is None:
            return None
        value = request.cookies.get(COOKIE, "")
        nonce, _, mac = value.partition(".")
        if nonce and hmac.compare_digest(mac.encode(), _mac(self.token, "session", nonce).encode()):
            return nonce
        return None

    def bearer(self, request: web.Request) -> bool:
        if self.token is None:
            return False
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def can_read(self, request: web.Request) -> bool:
        return self.token is None or self.bearer(request) or self.nonce(request) is not None

    def csrf(self, nonce: str) -> str:
        assert self.token is not None
        return _mac(self.token, "csrf", nonce)

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        """A browser's POST says where its page came from: it must be this server."""
        origin = request.headers.get("Origin")
        return origin is not None and origin == f"{request.scheme}://{request.host}"


def add_console(app: web.Application, source: ConsoleSource, token: str | None, *, loopback: bool) -> None:
    """The console's routes on the agent's HTTP app (the token middleware lets them through)."""
    auth = ConsoleAuth(token)
    # Open event streams: ended at shutdown, which otherwise waits for them (they never end).
    streams: set[asyncio.Task[Any]] = set()

    async def end_streams(_: web.Application) -> None:
        for task in list(streams):
            task.cancel()

    app.on_shutdown.append(end_streams)

    def guard(request: web.Request) -> None:
        if auth.token is None and not loopback:
            raise web.HTTPNotFound(text="the console needs AGENT_HTTP__TOKEN off loopback")
        if not auth.can_read(request):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "login required"}), content_type="application/json"
            )

    async def index(request: web.Request) -> web.Response:
        if auth.token is None and not loopback:
            raise web.HTTPNotFound(text="the console needs AGENT_HTTP__TOKEN off loopback")
        if not auth.can_read(request):
            return _page(LOGIN_HTML.replace("{{instance}}", html.escape(source.instance)))
        nonce = auth.nonce(request)
        csrf = auth.csrf(nonce) if nonce is not None else ""
        day, outcome = _filters(request)
        recent = await source.recent_calls(day=day, outcome=outcome)
        body = (
            CONSOLE_HTML.replace("{{instance}}", html.escape(source.instance))
            .replace("{{csrf}}", html.escape(csrf))
            .replace("{{mode}}", "actions" if csrf else "read-only")
            .replace("{{day}}", html.escape(day.isoformat() if day else ""))
            .replace("{{outcome}}", html.escape(outcome or ""))
            .replace("{{recent}}", _recent_rows(recent))
        )
        return _page(body)

    async def login(request: web.Request) -> web.Response:
        if auth.token is None:
            raise web.HTTPForbidden(text="read-only console: no token configured")
        if not auth.same_origin(request):
            await source.audit("console_login", outcome="refused", why="origin")
            raise web.HTTPForbidden(text="foreign origin")
        form = await request.post()
        given = str(form.get("token", "")).encode()
        if not hmac.compare_digest(given, auth.token.encode()):
            await source.audit("console_login", outcome="refused", why="token")
            raise web.HTTPUnauthorized(text="wrong token")
        await source.audit("console_login", outcome="ok", remote=request.remote or "")
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(
            COOKIE, auth.new_cookie(), max_age=SESSION_SECONDS, httponly=True, samesite="Strict", path="/"
        )
        return response

    async def logout(request: web.Request) -> web.Response:
        if not auth.same_origin(request):
            raise web.HTTPForbidden(text="foreign origin")
        response = web.Response(status=303, headers={"Location": "/"})
        response.del_cookie(COOKIE, path="/")
        return response

    async def events(request: web.Request) -> web.StreamResponse:
        guard(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        streams.add(task)
        try:
            while True:
                data = {"calls": source.live_calls(), "health": source.provider_health()}
                await response.write(f"data: {json.dumps(data)}\n\n".encode())
                await asyncio.sleep(EVENTS_INTERVAL)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            streams.discard(task)
        return response

    async def recent(request: web.Request) -> web.Response:
        guard(request)
        day, outcome = _filters(request)
        return web.json_response(await source.recent_calls(day=day, outcome=outcome))

    async def call(request: web.Request) -> web.Response:
        guard(request)
        found = await source.stored_call(request.match_info["call_id"])
        if found is None:
            raise web.HTTPNotFound(text="no such call")
        return web.json_response(found)

    async def action(request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        what = request.match_info["action"]
        if what not in ACTIONS:
            raise web.HTTPNotFound()
        name = f"console_{what}"
        if auth.token is None:
            raise web.HTTPForbidden(text="read-only console: no token configured")
        nonce = auth.nonce(request)
        if nonce is None:
            await source.audit(name, call_id=call_id, outcome="refused", why="login")
            raise web.HTTPUnauthorized(text="login required")
        if not auth.same_origin(request):
            await source.audit(name, call_id=call_id, outcome="refused", why="origin")
            raise web.HTTPForbidden(text="foreign origin")
        given = request.headers.get("X-CSRF-Token", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, auth.csrf(nonce).encode()):
            await source.audit(name, call_id=call_id, outcome="refused", why="csrf")
            raise web.HTTPForbidden(text="bad CSRF token")
        done = await source.operator_action(call_id, "hangup" if what == "hangup" else "handback")
        await source.audit(name, call_id=call_id, outcome="done" if done else "no such call")
        if not done:
            raise web.HTTPNotFound(text="no such call in progress")
        return web.json_response({"call_id": call_id, "action": what})

    app.router.add_get("/", index)
    app.router.add_post("/console/login", login)
    app.router.add_post("/console/logout", logout)
    app.router.add_get("/console/events", events)
    app.router.add_get("/console/recent", recent)
    app.router.add_get("/console/calls/{call_id}", call)
    app.router.add_post("/console/calls/{call_id}/{action}", action)


CONSOLE_PATHS = ("/", "/console/")


def is_console_path(path: str) -> bool:
    return path == "/" or path.startswith("/console/")


def _filters(request: web.Request) -> tuple[date | None, str | None]:
    try:
        day = date.fromisoformat(request.query["date"]) if request.query.get("date") else None
    except ValueError:
        raise web.HTTPBadRequest(text="date: YYYY-MM-DD") from None
    return day, request.query.get("outcome") or None


def _page(body: str) -> web.Response:
    # No framing, no outside scripts: the page's own inline script only.
    return web.Response(
        text=body,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' 'self'; "
            "style-src 'unsafe-inline'; frame-ancestors 'none'",
            # no-referrer would make browsers send "Origin: null" on the form POST.
            "Referrer-Policy": "same-origin",
        },
    )


def _recent_rows(calls: list[dict[str, Any]]) -> str:
    rows = []
    for c in calls:
        cid = html.escape(str(c.get("call_id", "")))
        cells = [
            f'<a href="/console/calls/{cid}">{cid[:12]}</a>',
            html.escape(str(c.get("started_at") or "")),
            html.escape(str(c.get("profile") or "")),
            html.escape(str(c.get("end_reason") or "")),
            html.escape(str(c.get("status") or "")),
            html.escape(str(c.get("turns", ""))),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return "\n".join(rows) or '<tr><td colspan="6">none</td></tr>'


LOGIN_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>ari-agent {{instance}}</title></head>
<body><h1>ari-agent console ({{instance}})</h1>
<form method="post" action="/console/login">
<label>HTTP token <input type="password" name="token" id="token" autocomplete="current-password"></label>
<button type="submit" id="login">Log in</button></form></body></html>
"""

CONSOLE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="csrf" content="{{csrf}}">
<title>ari-agent {{instance}}</title>
<style>
body{font-family:sans-serif;margin:1em} table{border-collapse:collapse} td,th{padding:2px 8px;
border-bottom:1px solid #ddd;text-align:left;vertical-align:top} .bar{display:inline-block;height:8px}
.end_of_turn{background:#999}.stt{background:#4a90d9}.llm_first_token{background:#e6a23c}
.tts_first_audio{background:#67c23a} small{color:#666}
</style></head><body>
<h1>ari-agent console <small>agent {{instance}} ({{mode}}; a pool's other agents serve their own)</small></h1>
<h2>Calls in progress</h2>
<table id="live"><thead><tr><th>call</th><th>profile</th><th>state</th><th>duration</th>
<th>quality</th><th>turns (ms: end of turn, STT, LLM first token, TTS first audio)</th><th></th></tr></thead>
<tbody id="live-rows"><tr><td colspan="7">none</td></tr></tbody></table>
<h2>Provider health</h2><ul id="health"><li>no breaker yet</li></ul>
<h2>Recent calls</h2>
<form method="get" action="/"><label>date <input type="date" name="date" value="{{day}}"></label>
<label>outcome <input name="outcome" value="{{outcome}}" placeholder="end_reason"></label>
<button type="submit">filter</button></form>
<table id="recent"><thead><tr><th>call</th><th>started</th><th>profile</th><th>end_reason</th>
<th>status</th><th>turns</th></tr></thead><tbody>
{{recent}}
</tbody></table>
<script>
"use strict";
const csrf = document.querySelector('meta[name="csrf"]').content;
const STAGES = [["end_of_turn", null], ["stt", "stt_ms"], ["llm_first_token", "llm_first_token_ms"],
  ["tts_first_audio", "tts_first_audio_ms"]];
function cell(row, text) {
  const td = document.createElement("td"); td.textContent = text; row.appendChild(td); return td;
}
function waterfall(td, turns) {
  for (const t of turns) {
    const line = document.createElement("div");
    const label = document.createElement("span");
    label.textContent = t.role + (t.text !== undefined ? ": " + t.text : "") + " ";
    line.appendChild(label);
    const ms = t.timings || {};
    const eot = (ms.turn_latency_ms !== undefined && ms.end_to_audio_ms !== undefined)
      ? ms.turn_latency_ms - ms.end_to_audio_ms : undefined;
    const parts = [];
    for (const [name, key] of STAGES) {
      const v = key ? ms[key] : eot;
      if (v === undefined) continue;
      const bar = document.createElement("span");
      bar.className = "bar " + name; bar.style.width = Math.max(1, v / 10) + "px";
      bar.title = name + " " + v + " ms";
      line.appendChild(bar);
      parts.push(name + " " + Math.round(v));
    }
    if (parts.length) {
      const s = document.createElement("small"); s.textContent = " " + parts.join(", "); line.appendChild(s);
    }
    td.appendChild(line);
  }
}
async function act(callId, action) {
  const r = await fetch("/console/calls/" + encodeURIComponent(callId) + "/" + action,
    {method: "POST", headers: {"X-CSRF-Token": csrf}, credentials: "same-origin"});
  if (!r.ok) alert(action + ": " + r.status + " " + await r.text());
}
function render(data) {
  const body = document.getElementById("live-rows");
  body.replaceChildren();
  if (!data.calls.length) { const r = body.insertRow(); const td = cell(r, "none"); td.colSpan = 7; }
  for (const c of data.calls) {
    const r = body.insertRow(); r.dataset.callId = c.call_id; r.className = "live-call";
    cell(r, c.call_id.slice(0, 12)); cell(r, c.profile); cell(r, c.state); cell(r, c.duration_s + " s");
    const q = c.quality;
    cell(r, q ? `MOS ${q.mos}, loss ${(q.loss * 100).toFixed(1)} %, jitter ${q.jitter_ms} ms` : "-");
    waterfall(cell(r, ""), c.turns);
    const td = cell(r, "");
    if (csrf) for (const a of ["handback", "hangup"]) {
      const b = document.createElement("button"); b.textContent = a === "handback" ? "hand back" : "hang up";
      b.className = "action-" + a; b.onclick = () => act(c.call_id, a); td.appendChild(b);
    }
  }
  const health = document.getElementById("health");
  health.replaceChildren();
  const entries = Object.entries(data.health);
  if (!entries.length) entries.push(["no breaker yet", "-"]);
  for (const [key, state] of entries) {
    const li = document.createElement("li"); li.textContent = key + ": " + state; health.appendChild(li);
  }
}
new EventSource("/console/events").onmessage = (e) => render(JSON.parse(e.data));
</script></body></html>
"""
