#!/bin/sh
# Leaves a TERM-ignoring grandchild behind and ends normally; the group is swept after the response.
sh -c 'trap "" TERM; exec sleep 60' < /dev/null > /dev/null 2>&1 &
echo "$!" > "$QUERY_STRING.tmp" && mv "$QUERY_STRING.tmp" "$QUERY_STRING"
printf 'Content-Type: text/plain\n\ndone\n'
