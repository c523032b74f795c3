#!/bin/sh
# The CGI variables a program sees, one per message, then exits.
for name in REQUEST_METHOD SCRIPT_NAME PATH_INFO QUERY_STRING REMOTE_ADDR HTTP_X_TEST \
            SERVER_SOFTWARE GATEWAY_INTERFACE REQUEST_SCHEME HTTPS; do
    eval "echo $name=\${$name-}"
done
pwd
