#!/bin/sh
# Every message back as it came: cat copies stdin to stdout as it reads it (no buffering).
exec cat
