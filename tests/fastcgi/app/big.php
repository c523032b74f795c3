<?php
// ?mb=N megabytes of a repeating pattern, written in 64 KiB pieces.
header('Content-Type: application/octet-stream');
$block = str_repeat('0123456789abcdef', 4096);
$count = 16 * (int)($_GET['mb'] ?? 4);
for ($i = 0; $i < $count; $i++) {
    echo $block;
}
