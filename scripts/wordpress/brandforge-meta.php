<?php
/**
 * Plugin Name: brandforge publish keys
 * Description: Lets brandforge publish exactly once. Registers the post meta it writes
 *   (generation key, source URI) for the REST API, and adds a `brandforge_generation_key`
 *   filter to every REST post collection (posts, pages, media, custom types) so brandforge
 *   can ask the site whether an image was already uploaded or posted.
 *
 * Install as a must-use plugin: copy this file to wp-content/mu-plugins/.
 */

if (!defined('ABSPATH')) {
    exit;
}

const BRANDFORGE_META_KEYS = ['_brandforge_generation_key', '_source_image'];

add_action('init', function () {
    foreach (BRANDFORGE_META_KEYS as $key) {
        // Protected (underscore) meta: without auth_callback REST writes answer 403.
        register_meta('post', $key, [
            'show_in_rest' => true,
            'single' => true,
            'type' => 'string',
            'auth_callback' => function () {
                return current_user_can('edit_posts');
            },
        ]);
    }
}, 5);

add_action('rest_api_init', function () {
    foreach (get_post_types(['show_in_rest' => true]) as $type) {
        add_filter("rest_{$type}_query", function ($args, $request) {
            $key = $request->get_param('brandforge_generation_key');
            if (is_string($key) && $key !== '') {
                $args['meta_query'] = [[
                    'key' => '_brandforge_generation_key',
                    'value' => $key,
                    'compare' => '=',
                ]];
            }
            return $args;
        }, 10, 2);
    }
    // brandforge asks this route before publishing: it proves the plugin is installed
    // (without it the filter above is silently ignored and a lookup finds nothing), and
    // says who the credentials belong to (WordPress treats wrong Basic-auth credentials
    // as an anonymous visitor, not as an error).
    register_rest_route('brandforge/v1', '/status', [
        'methods' => 'GET',
        'permission_callback' => '__return_true',
        'callback' => function () {
            $user = wp_get_current_user();
            return [
                'plugin' => 'brandforge-meta',
                'version' => 1,
                'meta_keys' => BRANDFORGE_META_KEYS,
                'user_id' => $user->ID,
                'user' => $user->ID ? $user->user_login : null,
                'can_upload_files' => current_user_can('upload_files'),
                'can_edit_posts' => current_user_can('edit_posts'),
            ];
        },
    ]);
});
