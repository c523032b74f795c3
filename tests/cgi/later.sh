#!/bin/sh
# Its body comes a moment after its header block: streamed, not collected whole.
printf "Content-Type: text/plain\n\n"
sleep 0.3
echo later
