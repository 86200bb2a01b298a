<?php
// Router for PHP's built-in server: real files (uploads, CSS, wp-admin/*.php) are served
// as they are; everything else (pretty permalinks, /wp-json/...) goes to WordPress.
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path !== '/' && is_file($_SERVER['DOCUMENT_ROOT'] . $path)) {
    return false;
}
$_SERVER['SCRIPT_NAME'] = '/index.php';
require $_SERVER['DOCUMENT_ROOT'] . '/index.php';
