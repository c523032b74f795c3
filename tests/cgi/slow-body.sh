#!/bin/sh
printf 'Content-Type: text/plain\n\nfirst part\n'
sleep 30
printf 'never sent\n'
