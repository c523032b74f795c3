#!/bin/sh
# Starts a grandchild that ignores TERM, writes the pids to the file named in QUERY_STRING, then
# trickles output forever. forkd must kill the whole group when the client goes away or time runs out.
sh -c 'trap "" TERM; while :; do sleep 0.05; done' &
echo "$$ $!" > "$QUERY_STRING.tmp" && mv "$QUERY_STRING.tmp" "$QUERY_STRING"
printf 'Content-Type: text/plain\n\n'
while :; do echo tick; sleep 0.05; done
