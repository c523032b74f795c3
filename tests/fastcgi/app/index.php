<?php
// The front controller: says which URI it was asked for.
header('Content-Type: text/plain');
echo "front controller\n";
echo "REQUEST_URI=" . $_SERVER['REQUEST_URI'] . "\n";
echo "SCRIPT_NAME=" . $_SERVER['SCRIPT_NAME'] . "\n";
echo "PATH_INFO=" . ($_SERVER['PATH_INFO'] ?? '') . "\n";
