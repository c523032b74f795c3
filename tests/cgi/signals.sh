#!/bin/sh
# Report this shell's ignored-signal mask, and show that a broken pipe kills `yes` (exit 141).
printf 'Content-Type: text/plain\n\n'
grep '^SigIgn' /proc/self/status
yes | head -n 1 > /dev/null
echo "pipestatus-ok"
echo "pgid=$(ps -o pgid= -p $$ | tr -d ' ') pid=$$ sid=$(ps -o sid= -p $$ | tr -d ' ')"
