#!/bin/sh
# Says its process id first (so a test can watch it go), then echoes.
echo "$$"
exec cat
