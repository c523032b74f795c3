#!/bin/sh
# Never reads its stdin: what a client sends piles up in the pipe, then in the server's buffer.
exec sleep 60
