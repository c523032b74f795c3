<?php
// The first line is flushed at once; the second comes two seconds later.
header('Content-Type: text/plain');
echo "first\n";
flush();
sleep(2);
echo "second\n";
