#!/bin/sh
# The chat room of the demo site, one copy per WebSocket connection (forkd's websocket route).
#
# The room is a file (the first argument): each line a visitor sends is appended to it (one write
# of a short line, atomic with O_APPEND), and `tail -f` sends every line anyone appends to this
# visitor. When the visitor leaves, forkd stops this program's whole process group, tail included.
room="$1"
touch "$room" || exit 1
tail -n 20 -f "$room" &
while IFS= read -r line; do
    printf '%s\n' "$line" >> "$room"
done
kill $!
