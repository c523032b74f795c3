#!/bin/sh
# No header block for 30 s (the /fast/ route times out after 1 s). QUERY_STRING: where to write the pid.
[ -n "$QUERY_STRING" ] && echo $$ > "$QUERY_STRING"
exec sleep 30
