#!/bin/sh
# A header block and a first part, then silence. QUERY_STRING: where to write the pid.
[ -n "$QUERY_STRING" ] && echo $$ > "$QUERY_STRING"
printf 'Content-Type: text/plain\n\nfirst part\n'
sleep 30
printf 'never sent\n'
