<?php
// Streams a line every 100 ms for up to 20 s; records how far it got when it stops.
$marker = $_GET['marker'];
$count = 0;
register_shutdown_function(function () use ($marker, &$count) {
    file_put_contents($marker, "stopped after $count\n");
});
header('Content-Type: text/plain');
for ($count = 0; $count < 200; $count++) {
    echo str_repeat('x', 1024) . "\n";
    flush();
    usleep(100000);
}
