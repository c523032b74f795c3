#!/bin/sh
printf "forged\r2026-01-01T00:00:00Z [error] 1: fake line \033[31mred\n" >&2
printf "Content-Type: text/plain\n\nok\n"
