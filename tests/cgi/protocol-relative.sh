#!/bin/sh
printf 'Location: //example.com/x\n\n'
