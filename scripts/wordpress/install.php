<?php
// Installs WordPress (once) and prints fresh application passwords for an admin and a
// subscriber, as KEY=VALUE lines. Run from PHP's CLI: wp-cli is not packaged in Debian 12.
// usage: php install.php WPDIR SITE_URL
if ($argc < 3) {
    fwrite(STDERR, "usage: php install.php WPDIR SITE_URL\n");
    exit(2);
}
[$_, $wpdir, $url] = $argv;
$parts = parse_url($url);
$_SERVER['HTTP_HOST'] = $parts['host'] . (isset($parts['port']) ? ':' . $parts['port'] : '');
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['SERVER_NAME'] = $parts['host'];
define('WP_INSTALLING', true);
require $wpdir . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';

// No MTA here: the new-site e-mail would only print sendmail errors.
add_filter('pre_wp_mail', '__return_false');

if (!is_blog_installed()) {
    $result = wp_install('brandforge test site', 'admin', 'admin@example.invalid', false, '', wp_generate_password(24));
    if (is_wp_error($result)) {
        fwrite(STDERR, 'wp_install failed: ' . $result->get_error_message() . "\n");
        exit(1);
    }
}

function brandforge_user(string $login, string $role): WP_User {
    $user = get_user_by('login', $login);
    if (!$user) {
        $id = wp_insert_user([
            'user_login' => $login, 'user_pass' => wp_generate_password(24),
            'user_email' => $login . '@example.invalid', 'role' => $role,
        ]);
        if (is_wp_error($id)) {
            fwrite(STDERR, "creating $login failed: " . $id->get_error_message() . "\n");
            exit(1);
        }
        $user = get_user_by('id', $id);
    }
    return $user;
}

function brandforge_app_password(WP_User $user): string {
    // One password per bring-up; older ones are dropped so they do not pile up.
    foreach (WP_Application_Passwords::get_user_application_passwords($user->ID) as $item) {
        if ($item['name'] === 'brandforge-ci') {
            WP_Application_Passwords::delete_application_password($user->ID, $item['uuid']);
        }
    }
    $created = WP_Application_Passwords::create_new_application_password($user->ID, ['name' => 'brandforge-ci']);
    if (is_wp_error($created)) {
        fwrite(STDERR, 'application password failed: ' . $created->get_error_message() . "\n");
        exit(1);
    }
    return $created[0];
}

$admin = brandforge_user('admin', 'administrator');
$viewer = brandforge_user('viewer', 'subscriber');
echo 'BF_WP_USER=admin', "\n";
echo 'BF_WP_APP_PASSWORD=', brandforge_app_password($admin), "\n";
echo 'BF_WP_VIEWER_USER=viewer', "\n";
echo 'BF_WP_VIEWER_APP_PASSWORD=', brandforge_app_password($viewer), "\n";
