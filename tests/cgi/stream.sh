#!/bin/sh
# Sends a first chunk, then waits until the test creates the file named in QUERY_STRING.
printf 'Content-Type: text/plain\n\nfirst\n'
i=0
while [ ! -e "$QUERY_STRING" ] && [ $i -lt 200 ]; do sleep 0.02; i=$((i + 1)); done
printf 'second\n'
