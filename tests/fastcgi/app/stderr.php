<?php
// A line on FastCGI stderr, with an escape sequence a terminal would obey.
error_log("complaint from php: \x1b[31mred\x1b[0m");
header('Content-Type: text/plain');
echo "answered\n";
