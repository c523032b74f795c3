#!/bin/sh
printf 'HTTP/1.1 299 Custom\r\nContent-Type: text/plain\r\nX-Nph: yes\r\nConnection: close\r\n\r\nraw body\n'
