#!/bin/sh
sleep 30
printf 'Content-Type: text/plain\n\ntoo late\n'
