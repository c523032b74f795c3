#!/usr/bin/env python3
"""Dump the environment as JSON, plus what the script read on stdin (its length and digest)."""
import hashlib
import json
import os
import sys

data = sys.stdin.buffer.read()
env = {k: v for k, v in os.environ.items()}
out = json.dumps({"env": env, "stdin_length": len(data), "stdin_sha256": hashlib.sha256(data).hexdigest(),
                  "cwd": os.getcwd(), "argv": sys.argv}).encode()
sys.stdout.buffer.write(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
