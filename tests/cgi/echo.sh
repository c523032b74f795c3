#!/bin/sh
# Writes 1 MiB before reading anything, then echoes its input: forkd must pump both pipes at once.
printf 'Content-Type: application/octet-stream\nX-Content-Length: %s\n\n' "$CONTENT_LENGTH"
head -c 1048576 /dev/zero
exec cat
