#!/bin/sh
printf 'Location: /cgi/env.py/after?from=redirect\n\n'
