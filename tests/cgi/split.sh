#!/bin/sh
# A bare CR inside a value: with LF line ends it would split the response if passed on.
printf 'Content-Type: text/plain\nX-Injected: a\rSet-Cookie: evil=1\n\nbody\n'
