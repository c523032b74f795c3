<?php
// The front controller of a small blog: every path that is not a file comes here.
require __DIR__ . '/lib/app.php';
require __DIR__ . '/lib/posts.php';

$base = rtrim(dirname($_SERVER['SCRIPT_NAME']), '/');
$path = substr(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH), strlen($base)) ?: '/';
$method = $_SERVER['REQUEST_METHOD'];

if ($path === '/') {
    page('Posts', implode('', array_map(
        fn($slug) => '<li><a href="' . $base . '/post/' . $slug . '/">' . h(POSTS[$slug]['title']) . '</a></li>',
        array_keys(POSTS))));
} elseif (preg_match('#^/post/([a-z0-9-]+)/$#', $path, $m) && isset(POSTS[$m[1]])) {
    $slug = $m[1];
    if ($method === 'POST') {
        add_comment($slug, $_POST['comment'] ?? '');
        redirect("$base/post/$slug/", 303);
    }
    $comments = implode('', array_map(fn($c) => '<p class="comment">' . h($c) . '</p>', comments($slug)));
    page(POSTS[$slug]['title'], '<article>' . h(POSTS[$slug]['body']) . "</article>$comments");
} elseif ($path === '/login') {
    if ($method === 'POST' && check_password($_POST['user'] ?? '', $_POST['password'] ?? '')) {
        log_in($_POST['user']);
        redirect("$base/admin/", 302);
    }
    page('Log in', '<form method="post"><input name="user"><input name="password" type="password"></form>');
} elseif ($path === '/admin/') {
    $user = logged_in() ?? redirect("$base/login", 302);
    if ($method === 'POST') {
        $name = store_upload($_FILES['media'] ?? null, __DIR__ . '/uploads');
        redirect("$base/uploads/$name", 303);
    }
    page('Dashboard', 'Hello, ' . h($user));
} else {
    http_response_code(404);
    page('Not found', 'No such page: ' . h($path));
}
