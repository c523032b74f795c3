<?php
// A status, two cookies and a header of its own.
http_response_code(201);
setcookie('first', 'one');
setcookie('second', 'two');
header('X-From-Php: yes');
header('Content-Type: text/plain');
echo "created\n";
