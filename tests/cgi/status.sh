#!/bin/sh
printf 'Status: 418 I am a teapot\nContent-Type: text/plain\nX-Custom: yes\nContent-Length: 6\n\nteapotEXTRA'
