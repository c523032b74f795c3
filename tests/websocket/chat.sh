#!/bin/sh
# A chat room in a file: each line a client sends is appended to the room (one write, atomic for
# short lines), and every line appended by anyone is sent to every client (tail -f).
room="$1"
touch "$room"
tail -n 0 -f "$room" &
while IFS= read -r line; do
    printf '%s\n' "$line" >> "$room"
done
kill $!
