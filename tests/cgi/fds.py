#!/usr/bin/env python3
"""List this process's open descriptors with what they point at: nothing of the server may leak in."""
import json
import os

fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        fds[name] = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        pass  # the directory descriptor listdir used, already closed
print("Content-Type: application/json\n")
print(json.dumps(fds))
