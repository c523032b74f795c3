#!/bin/sh
# Writes lines for ever: only the client's pace may slow it down.
exec yes "flood of lines, the client decides how fast"
