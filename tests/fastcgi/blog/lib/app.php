<?php
// Helpers of the blog: pages, redirects, comments in DATA_DIR, a signed login cookie, uploads.

function h(string $text): string {
    return htmlspecialchars($text, ENT_QUOTES);
}

function page(string $title, string $content): void {
    header('Content-Type: text/html; charset=utf-8');
    echo "<!DOCTYPE html><title>" . h($title) . "</title><h1>" . h($title) . "</h1>$content\n";
}

function redirect(string $to, int $status): never {
    header("Location: $to", true, $status);
    exit;
}

function comments_file(string $slug): string {
    return $_SERVER['DATA_DIR'] . "/comments-$slug.json";
}

function comments(string $slug): array {
    $file = comments_file($slug);
    return is_file($file) ? json_decode(file_get_contents($file), true) : [];
}

function add_comment(string $slug, string $text): void {
    $all = comments($slug);
    $all[] = $text;
    file_put_contents(comments_file($slug), json_encode($all));
}

function check_password(string $user, string $password): bool {
    return $user === 'admin' && hash_equals('correct horse', $password);
}

function sign(string $user): string {
    return hash_hmac('sha256', $user, $_SERVER['APP_SECRET']);
}

function log_in(string $user): void {
    setcookie('who', $user . ':' . sign($user), ['httponly' => true, 'samesite' => 'Lax']);
}

function logged_in(): ?string {
    [$user, $mac] = explode(':', $_COOKIE['who'] ?? ':', 2) + ['', ''];
    return $user !== '' && hash_equals(sign($user), $mac) ? $user : null;
}

function store_upload(?array $file, string $directory): string {
    $name = basename($file['name'] ?? '');
    if (!$file || $file['error'] !== UPLOAD_ERR_OK || !preg_match('/^[a-z0-9-]+\.(jpg|png)$/', $name)) {
        http_response_code(400);
        page('Bad upload', 'Images only.');
        exit;
    }
    move_uploaded_file($file['tmp_name'], "$directory/$name");
    return $name;
}
