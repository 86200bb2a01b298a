<?php
/**
 * Plugin Name: brandforge trigger
 * Description: Tells the brandforge gateway about new images: every image uploaded to the media
 *   library and the featured image of every saved WooCommerce product. Each call is a JSON POST
 *   signed with a shared secret: header X-Brandforge-Signature: sha256=<hex HMAC-SHA256 of
 *   "<X-Brandforge-Timestamp>.<body>">. Images brandforge published itself (they carry the
 *   _brandforge_generation_key meta) are never announced, so a result never starts a run.
 *
 * Install as a must-use plugin: copy this file to wp-content/mu-plugins/. Settings (Settings →
 * General, or the REST settings route): brandforge_gateway_url — the client's gateway route,
 * e.g. https://gateway.example/assets/acme — and brandforge_gateway_secret — the client's
 * webhook_token.
 */

if (!defined('ABSPATH')) {
    exit;
}

add_action('init', function () {
    foreach (['brandforge_gateway_url', 'brandforge_gateway_secret'] as $option) {
        register_setting('general', $option, ['type' => 'string', 'show_in_rest' => true, 'default' => '']);
    }
});

$GLOBALS['brandforge_pending'] = [];

// Meta arrives after the insert (REST uploads write it next): decide at the end of the request.
add_action('add_attachment', function ($id) {
    $GLOBALS['brandforge_pending'][$id] = ['kind' => 'media', 'id' => $id];
});

add_action('wp_after_insert_post', function ($id, $post) {
    if ($post->post_type === 'product' && $post->post_status !== 'auto-draft' && get_post_thumbnail_id($id)) {
        $GLOBALS['brandforge_pending']["product-$id"] = ['kind' => 'product', 'id' => $id];
    }
}, 10, 2);

function brandforge_attachment_payload($attachment_id) {
    $mime = (string) get_post_mime_type($attachment_id);
    if (strpos($mime, 'image/') !== 0 || get_post_meta($attachment_id, '_brandforge_generation_key', true)) {
        return null;
    }
    return [
        'id' => $attachment_id,
        'url' => wp_get_attachment_url($attachment_id),
        'mime' => $mime,
        'title' => get_the_title($attachment_id),
        'parent' => wp_get_post_parent_id($attachment_id),
    ];
}

function brandforge_send($payload) {
    $url = get_option('brandforge_gateway_url');
    $secret = get_option('brandforge_gateway_secret');
    if (!$url || !$secret) {
        return;
    }
    $body = wp_json_encode($payload);
    $timestamp = (string) time();
    wp_remote_post($url, [
        'body' => $body,
        'timeout' => 5,
        'headers' => [
            'Content-Type' => 'application/json',
            'X-Brandforge-Timestamp' => $timestamp,
            'X-Brandforge-Signature' => 'sha256=' . hash_hmac('sha256', $timestamp . '.' . $body, $secret),
        ],
    ]);
}

add_action('shutdown', function () {
    foreach ($GLOBALS['brandforge_pending'] as $item) {
        if ($item['kind'] === 'media') {
            $attachment = brandforge_attachment_payload($item['id']);
            if ($attachment) {
                brandforge_send(['source' => 'wordpress', 'event' => 'media.create', 'site' => home_url(),
                                 'attachment' => $attachment]);
            }
        } else {
            $attachment = brandforge_attachment_payload(get_post_thumbnail_id($item['id']));
            if ($attachment) {
                brandforge_send(['source' => 'wordpress', 'event' => 'product.save', 'site' => home_url(),
                                 'product' => ['id' => $item['id'], 'title' => get_the_title($item['id']),
                                               'sku' => (string) get_post_meta($item['id'], '_sku', true)],
                                 'attachment' => $attachment]);
            }
        }
    }
    $GLOBALS['brandforge_pending'] = [];
});
