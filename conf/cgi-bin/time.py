#!/usr/bin/env python3
"""A time service: the server's clock as text, or JSON with ?format=json (or Accept: application/json)."""

import json
import os
import time
from urllib.parse import parse_qs

query = parse_qs(os.environ.get("QUERY_STRING", ""))
wants_json = query.get("format") == ["json"] or "application/json" in os.environ.get("HTTP_ACCEPT", "")
now = time.time()
iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))

if wants_json:
    body = json.dumps({"utc": iso, "unix": round(now, 3), "local": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    content_type = "application/json"
else:
    body = f"{iso}\n"
    content_type = "text/plain; charset=utf-8"
print(f"Content-Type: {content_type}")
print("Cache-Control: no-store")
print("Vary: Accept")
print()
print(body, end="")
