<?php
// A PHP page run through php-cgi (the route maps ".php" to it): a form that greets you.
header('Content-Type: text/html; charset=utf-8');
$name = isset($_POST['name']) ? trim($_POST['name']) : '';
?>
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Hello from PHP</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1><?php echo $name === '' ? 'Hello from PHP ' . PHP_VERSION : 'Hello, ' . htmlspecialchars($name) . '!'; ?></h1>
<form method="post"><label>Your name <input name="name"></label> <button>Greet me</button></form>
<p>Served by <?php echo htmlspecialchars($_SERVER['SERVER_SOFTWARE']); ?> through <?php echo htmlspecialchars($_SERVER['GATEWAY_INTERFACE']); ?>.</p>
<p><a href="/">Back to the demo site</a></p>
</body></html>
