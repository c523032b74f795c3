#!/bin/sh
# 2 MiB on stderr before any output: a server that reads only stdout deadlocks here.
head -c 262144 /dev/zero | tr '\0' 'e' | fold -w 100 >&2
printf 'Content-Type: text/plain\n\ndone\n'
