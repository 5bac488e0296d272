"""Click to live: what the page records during one call, and the phases computed from it
and from the delay proxy's log (bench/delay_proxy.py).

The page side is bench-only instrumentation injected before any page script
(Playwright's add_init_script); the shipped widget is not changed. It wraps the browser
APIs the widget calls (getUserMedia, RTCPeerConnection) to timestamp them, listens to the
widget's own window events, and finds the first non-silent frame of the agent's audio with
an AnalyserNode on the remote stream (polled every 4 ms over a 256-sample window, so
"first audio" is good to about 10 ms).
"""

from __future__ import annotations

import math
import re
import statistics
from urllib.parse import urlsplit

INSTRUMENT = """
(() => {
  const B = { marks: {}, states: [], peak: 0 };
  Object.defineProperty(window, '__bench', { value: B });
  const now = () => performance.now();
  const mark = (k, t = now()) => { if (!(k in B.marks)) B.marks[k] = t; };
  const ours = (e) => e.composedPath().some((n) => n.localName === 'retell-widget');
  addEventListener('retell-widget:state', (e) => {
    B.states.push(e.detail.state);
    mark('state:' + e.detail.state);
  });
  addEventListener('retell-widget:call-start', () => mark('call-start'));
  addEventListener('pointerover', (e) => ours(e) && mark('hover', e.timeStamp), true);
  addEventListener('click', (e) => ours(e) && mark('click', e.timeStamp), true);
  const md = navigator.mediaDevices;
  const gum = md.getUserMedia.bind(md);
  md.getUserMedia = async (c) => {
    mark('mic:start');
    const s = await gum(c);
    mark('mic:end');
    return s;
  };
  // Ours, made before the click: its start-up is not the agent's first audio.
  let ctx;
  addEventListener('DOMContentLoaded', () => {
    ctx = new AudioContext();
    ctx.resume().catch(() => {});
  });
  function listen(stream) {
    if (B.listening) return;
    B.listening = true;
    const an = ctx.createAnalyser();
    an.fftSize = 256;
    ctx.createMediaStreamSource(stream).connect(an);
    const buf = new Float32Array(an.fftSize);
    const poll = setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let peak = 0;
      for (const v of buf) peak = Math.max(peak, Math.abs(v));
      if (peak > 0.02) {
        mark('audio');
        B.peak = peak;
        clearInterval(poll);
      }
    }, 4);
    setTimeout(() => clearInterval(poll), 15000);
  }
  const PC = window.RTCPeerConnection;
  class BenchPC extends PC {
    constructor(...args) {
      super(...args);
      mark('pc:new');
      const on = (type, fn) => this.addEventListener(type, fn);
      on('icegatheringstatechange', () => mark('gather:' + this.iceGatheringState));
      on('iceconnectionstatechange', () => mark('ice:' + this.iceConnectionState));
      on('connectionstatechange', () => mark('pc:' + this.connectionState));
      on('track', (e) => listen(e.streams[0] || new MediaStream([e.track])));
    }
    async createOffer(...a) {
      mark('offer:start');
      const offer = await super.createOffer(...a);
      mark('offer:end');
      return offer;
    }
    async setLocalDescription(...a) {
      mark('local:start');
      await super.setLocalDescription(...a);
      mark('local:end');
    }
    async setRemoteDescription(...a) {
      mark('remote:start');
      await super.setRemoteDescription(...a);
      mark('remote:end');
    }
    createDataChannel(...a) {
      const dc = super.createDataChannel(...a);
      dc.addEventListener('open', () => mark('dc:open'));
      return dc;
    }
  }
  window.RTCPeerConnection = BenchPC;
})();
"""

# What the page hands back after a call: marks, resource timings, its clock's origin.
COLLECT = """() => ({
  marks: window.__bench.marks,
  states: window.__bench.states,
  peak: window.__bench.peak,
  timeOrigin: performance.timeOrigin,
  resources: performance.getEntriesByType('resource').map((e) => ({
    name: e.name, type: e.initiatorType, start: e.startTime, end: e.responseEnd,
    bytes: e.transferSize })),
})"""

# Phases on the critical path, in order: (name, from mark, to mark).
PHASES = (
    ("microphone", "click", "mic:end"),
    ("token", "mic:end", "token:end"),
    ("token to offer sent", "token:end", "offer:sent"),
    ("offer/answer", "offer:sent", "answer:end"),
    ("apply answer", "answer:end", "remote:end"),
    ("ICE", "remote:end", "ice:connected"),
    ("DTLS", "ice:connected", "pc:connected"),
    ("data channel", "pc:connected", "dc:open"),
    ("live event", "dc:open", "state:live"),
)
CREATE_PATH = "/api/create-web-call"
SESSIONS = re.compile(r"/v1/webrtc/sessions$")


def _resource(resources: list[dict], predicate) -> dict | None:
    return next((r for r in resources if predicate(r["name"])), None)


def page_marks(data: dict) -> tuple[dict[str, float], dict[str, str]]:
    """The page's marks plus the network ones from resource timing (ms on the page's clock),
    and the token and offer URLs."""
    marks, urls = dict(data["marks"]), {}
    res = data["resources"]
    token = _resource(res, lambda n: urlsplit(n).path == CREATE_PATH)
    offer = _resource(res, lambda n: bool(SESSIONS.search(urlsplit(n).path)))
    engine = _resource(res, lambda n: "/engine-gateway" in n)
    if token:
        marks["token:start"], marks["token:end"] = token["start"], token["end"]
        urls["token"] = token["name"]
    if offer:
        marks["offer:sent"], marks["answer:end"] = offer["start"], offer["end"]
        urls["offer"] = offer["name"]
    if engine:
        marks["engine:start"], marks["engine:end"] = engine["start"], engine["end"]
    return marks, urls


def critical_requests(events: list[dict], route: str, path: str) -> list[dict]:
    """The requests for `path` on one route up to and including its first POST (the
    preflight, then the token or offer POST), each with its connection's accept time and
    its answer's first byte."""
    accepts = {e["conn"]: e["t"] for e in events if e["route"] == route and e["ev"] == "accept"}
    out = []
    for i, e in enumerate(events):
        if e["route"] != route or e["ev"] != "req" or e["line"].split(" ")[1].split("?")[0] != path:
            continue
        answer = next(
            (a for a in events[i + 1 :] if a["route"] == route and a["conn"] == e["conn"]
             and a["ev"] == "resp"),
            None,
        )  # fmt: skip
        out.append({**e, "accepted": accepts.get(e["conn"], e["t"]), "answer": answer})
        if e["line"].startswith("POST "):
            return out
    return []


def injected(requests: list[dict], rtt_ms: float) -> dict:
    """The latency the proxy added on this serial chain: one round trip per request, and the
    part of each new connection's handshake round trip not already over when it was used."""
    seen, setup_ms = set(), 0.0
    for r in requests:
        if r["conn"] not in seen:
            seen.add(r["conn"])
            setup_ms += max(0.0, r["accepted"] * 1000 + rtt_ms - r["t"] * 1000)
    server_ms = sum((r["answer"]["t"] - r["fwd"]) * 1000 for r in requests if r["answer"])
    return {
        "round_trips": len(requests),
        "handshake_ms": round(setup_ms, 1),
        "injected_ms": round(len(requests) * rtt_ms + setup_ms, 1),
        "server_ms": round(server_ms, 1),
        "requests": [r["line"].split(" HTTP/")[0] for r in requests],
    }


def phases(marks: dict[str, float]) -> dict[str, float | None]:
    """Critical-path phases from click to live. Events can be handled out of order on a busy
    main thread (a data channel's open before the connection's "connected"), so each
    boundary is at least the one before it: phases are >= 0 and add up to click -> live."""
    out, prev = {}, marks["click"]
    for name, _, end in PHASES:
        if end not in marks:
            out[name] = None
            continue
        at = max(marks[end], prev)
        out[name], prev = round(at - prev, 1), at
    return out


def call_result(data: dict, events: list[dict], routes: dict, create_ms: int) -> dict:
    """One call: its phases (ms), click -> live, the injected minimum of the sequence it
    sent, the servers' own time, and what is left: the widget's and the browser's.
    routes: {"api": (route name, rtt ms), "sig": (route name, rtt ms)}."""
    marks, urls = page_marks(data)
    click = marks.get("click")
    result: dict = {"states": data["states"], "peak": round(data["peak"], 3)}
    if click is None or "state:live" not in marks or len(urls) < 2:
        result["failed"] = f"states {data['states']}"
        return result
    rel = {k: round(v - click, 1) for k, v in marks.items()}
    result["marks"] = rel
    result["phases"] = phases(marks)
    result["engine_load_ms"] = (
        round(marks["engine:end"] - marks["engine:start"], 1) if "engine:end" in marks else None
    )
    result["engine_after_token_ms"] = (
        round(max(0.0, marks["engine:end"] - marks["token:end"]), 1)
        if "engine:end" in marks and "token:end" in marks
        else None
    )
    result["click_to_live_ms"] = rel["state:live"]
    result["first_audio_ms"] = (
        round(marks["audio"] - marks["state:live"], 1) if "audio" in marks else None
    )
    result["hover_to_click_ms"] = round(click - marks["hover"], 1) if "hover" in marks else None
    (api_route, api_rtt), (sig_route, sig_rtt) = routes["api"], routes["sig"]
    api = injected(critical_requests(events, api_route, urlsplit(urls["token"]).path), api_rtt)
    sig = injected(critical_requests(events, sig_route, urlsplit(urls["offer"]).path), sig_rtt)
    minimum = create_ms + api["injected_ms"] + sig["injected_ms"]
    servers = api["server_ms"] - create_ms + sig["server_ms"]
    result.update(
        token_chain=api,
        signalling_chain=sig,
        injected_minimum_ms=round(minimum, 1),
        servers_ms=round(servers, 1),
        overhead_ms=round(rel["state:live"] - minimum, 1),
        client_ms=round(rel["state:live"] - minimum - servers, 1),
    )
    return result


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: with 20 calls, p95 is the 19th fastest."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def summarize(calls: list[dict]) -> dict:
    ok = [c for c in calls if "failed" not in c]

    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {
            "p50": percentile(values, 0.5),
            "p95": percentile(values, 0.95),
            "mean": round(statistics.fmean(values), 1),
            "n": len(values),
        }

    keys = ("click_to_live_ms", "injected_minimum_ms", "servers_ms", "overhead_ms",
            "client_ms", "first_audio_ms", "engine_load_ms", "engine_after_token_ms",
            "hover_to_click_ms")  # fmt: skip
    out = {"calls": len(calls), "failed": len(calls) - len(ok)}
    out.update({k: stat([c.get(k) for c in ok]) for k in keys})
    out["phases"] = {name: stat([c["phases"][name] for c in ok]) for name, _, _ in PHASES}
    out["round_trips"] = {
        chain: stat([c[chain]["round_trips"] for c in ok])
        for chain in ("token_chain", "signalling_chain")
    }
    out["handshake_ms"] = {
        chain: stat([c[chain]["handshake_ms"] for c in ok])
        for chain in ("token_chain", "signalling_chain")
    }
    return out
