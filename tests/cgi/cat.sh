#!/bin/sh
# Echo the request body and report the length forkd announced.
printf 'Content-Type: application/octet-stream\nX-Content-Length: %s\n\n' "$CONTENT_LENGTH"
exec cat
