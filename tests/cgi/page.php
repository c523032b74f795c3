<?php
header('Content-Type: text/plain; charset=utf-8');
header('X-Powered-Check: php');
echo "method=" . $_SERVER['REQUEST_METHOD'] . "\n";
echo "name=" . (isset($_POST['name']) ? $_POST['name'] : '') . "\n";
echo "q=" . (isset($_GET['q']) ? $_GET['q'] : '') . "\n";
echo "script=" . $_SERVER['SCRIPT_NAME'] . "\n";
echo "path_info=" . (isset($_SERVER['PATH_INFO']) ? $_SERVER['PATH_INFO'] : '') . "\n";
