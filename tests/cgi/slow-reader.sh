#!/bin/sh
# Takes its request body slowly, a piece every 0.3 s, longer in all than the /fast/ timeout, and
# answers only once it has read everything: a script busy with its input is not stuck.
i=0
while [ $i -lt 5 ]; do
    dd bs=65536 count=1 of=/dev/null 2>/dev/null
    sleep 0.3
    i=$((i + 1))
done
cat > /dev/null
printf 'Content-Type: text/plain\n\nread it all\n'
