#!/bin/sh
# The classic "printenv" CGI: the environment forkd gives a script (RFC 3875 §4.1), sorted.
# Try /cgi-bin/env.sh/some/path?a=1&b=2 to see PATH_INFO, PATH_TRANSLATED and QUERY_STRING.
printf 'Content-Type: text/plain; charset=utf-8\n'
printf 'Cache-Control: no-store\n\n'
env | LC_ALL=C sort
