<?php
// Everything a script learns about its request, as JSON.
$input = file_get_contents('php://input');
header('Content-Type: application/json');
echo json_encode([
    'server' => $_SERVER,
    'get' => $_GET,
    'post' => $_POST,
    'input_length' => strlen($input),
    'input_md5' => md5($input),
], JSON_UNESCAPED_SLASHES);
