"""Proactive negotiation (RFC 9110 §12): which content coding, and HTML or JSON for listings.

Pure functions over header values. Only what a static server needs: choosing among precompressed
siblings by Accept-Encoding (§12.5.3) and telling whether a client prefers application/json to
text/html (§12.5.1) for directory listings.
"""

from __future__ import annotations

# Our codings, best first: brotli is smaller than gzip for the same text.
CODINGS = ("br", "gzip")
ALIASES = {"x-gzip": "gzip"}  # RFC 9110 §8.4.1.3


def qvalues(value: str) -> dict[str, float]:
    """`token;q=0.5, other` → {"token": 0.5, "other": 1.0}; names lower-cased, bad q-values read as 0."""
    out: dict[str, float] = {}
    for element in value.split(","):
        name, _, params = element.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, eq, raw = param.partition("=")
            if eq and key.strip().lower() == "q":
                q = _qvalue(raw.strip())
        name = ALIASES.get(name, name)
        out[name] = max(q, out.get(name, 0.0))  # a repeated name: the kinder value
    return out


def _qvalue(text: str) -> float:
    # qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )   (RFC 9110 §12.4.2)
    try:
        q = float(text)
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 and len(text) <= 5 else 0.0


def choose_coding(accept_encoding: str | None, available: tuple[str, ...]) -> str | None:
    """The content coding to send ("br", "gzip") among those available, or None for identity.

    No Accept-Encoding: identity (a client that says nothing may not decode anything). When no
    coding is acceptable, identity is sent even if the client ruled it out with `identity;q=0`:
    RFC 9110 §12.5.3 prefers that to a 406.
    """
    if not accept_encoding or not available:
        return None
    q = qvalues(accept_encoding)
    star = q.get("*")
    identity_q = q.get("identity", 1.0 if star is None else star)
    best, best_q = None, 0.0
    for coding in CODINGS:
        if coding not in available:
            continue
        coding_q = q.get(coding, star or 0.0)
        if coding_q > best_q:
            best, best_q = coding, coding_q
    if best is not None and best_q >= identity_q:
        return best
    return None


def prefers_json(accept: str | None) -> bool:
    """True when Accept ranks application/json above text/html (the most specific range wins)."""
    if not accept:
        return False
    q = qvalues(accept)
    json_q = _media_q(q, "application", "json")
    html_q = _media_q(q, "text", "html")
    return json_q > 0 and json_q > html_q


def _media_q(q: dict[str, float], kind: str, subtype: str) -> float:
    for key in (f"{kind}/{subtype}", f"{kind}/*", "*/*"):
        if key in q:
            return q[key]
    return 0.0
