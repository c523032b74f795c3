<?php
// The demo's php-fpm page: the route's front controller, so /php/any/pretty/path lands here too.
header('Content-Type: text/html; charset=utf-8');
$name = isset($_POST['name']) ? trim($_POST['name']) : '';
$uri = $_SERVER['REQUEST_URI'];
?>
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PHP through php-fpm</title>
<link rel="stylesheet" href="/php/style.css"></head>
<body>
<h1><?php echo $name === '' ? 'Hello from php-fpm ' . PHP_VERSION : 'Hello, ' . htmlspecialchars($name) . '!'; ?></h1>
<form method="post" action="<?php echo htmlspecialchars($uri); ?>"><label>Your name <input name="name"></label> <button>Greet me</button></form>
<p>You asked for <code><?php echo htmlspecialchars($uri); ?></code>; it ran
<code><?php echo htmlspecialchars($_SERVER['SCRIPT_NAME']); ?></code> through FastCGI
(try <a href="/php/any/pretty/path">a pretty URL</a>). The stylesheet is a file of the same route,
served by forkd itself.</p>
<p><a href="/">Back to the demo site</a></p>
</body></html>
