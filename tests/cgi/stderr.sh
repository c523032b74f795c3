#!/bin/sh
echo "first complaint" >&2
printf 'second complaint\nthird without newline' >&2
printf 'Content-Type: text/plain\n\nok\n'
