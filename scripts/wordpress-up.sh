#!/usr/bin/env bash
# A real WordPress on 127.0.0.1 for brandforge's integration tests and for trying the
# WordPress target by hand: Debian's wordpress + MariaDB + PHP's built-in server, no
# systemd, no Apache, nothing outside 127.0.0.0/8.
#
#   scripts/wordpress-up.sh start   install packages if missing, bring the site up, print
#                                   BF_WP_URL / BF_WP_USER / BF_WP_APP_PASSWORD (and a
#                                   subscriber's) as KEY=VALUE lines on stdout
#   scripts/wordpress-up.sh stop    stop PHP (and its workers) and MariaDB
#   scripts/wordpress-up.sh status  exit 0 when the site answers
#
# Idempotent: a second `start` reuses the database and the install (a few seconds);
# the first one on a fresh machine installs the packages (~45 s) and the site (~5 s).
# Settings: BF_WP_DIR (state folder, default ~/.cache/brandforge/wordpress),
# BF_WP_PORT (default 8089), BF_WP_WORKERS (PHP workers, default 2).
# Exit status 3 means the Debian packages are missing and cannot be installed here.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${BF_WP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/brandforge/wordpress}"
PORT="${BF_WP_PORT:-8089}"
WORKERS="${BF_WP_WORKERS:-2}"
URL="http://127.0.0.1:${PORT}"
WWW="$DIR/www"
DATA="$DIR/mysql"
SOCK="$DIR/mysqld.sock"
PKGS=(wordpress mariadb-server php-cli php-mysql php-gd php-xml php-curl php-mbstring)

log() { echo "wordpress-up: $*" >&2; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

site_answers() {
  curl -fsS -m 5 -o /dev/null "$URL/?rest_route=/brandforge/v1/status" 2>/dev/null
}

ensure_packages() {
  local need=() pkg
  for pkg in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing Debian packages ${need[*]} and cannot install them (needs root and apt-get)"
    exit 3
  fi
  log "installing ${need[*]} (about 45 s)"
  export DEBIAN_FRONTEND=noninteractive
  # apt may start the system apache2/MariaDB where no policy-rc.d blocks it; we use our
  # own socket and port regardless.
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
    log "apt-get could not install ${need[*]}"
    exit 3
  fi
}

start_db() {
  if alive "$DIR/mariadb.pid" && [ -S "$SOCK" ]; then return 0; fi
  if [ ! -d "$DATA/mysql" ]; then
    log "initialising MariaDB in $DATA"
    mkdir -p "$DATA"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$DATA" \
      --auth-root-authentication-method=normal --skip-test-db >"$DIR/mariadb-install.log" 2>&1
  fi
  rm -f "$SOCK"
  # setsid: the server must outlive this script and the caller's process group.
  setsid mariadbd --no-defaults --user="$(id -un)" --datadir="$DATA" --socket="$SOCK" \
    --pid-file="$DIR/mariadb.pid" --skip-networking --innodb-buffer-pool-size=32M \
    --log-error="$DIR/mariadb.log" </dev/null >/dev/null 2>&1 9>&- &
  for _ in $(seq 1 150); do
    if [ -S "$SOCK" ] && mariadb-admin --no-defaults --socket="$SOCK" -uroot ping >/dev/null 2>&1; then
      break
    fi
    sleep 0.2
  done
  mariadb-admin --no-defaults --socket="$SOCK" -uroot ping >/dev/null || { log "MariaDB did not start; see $DIR/mariadb.log"; exit 1; }
  mariadb --no-defaults --socket="$SOCK" -uroot -e "
    CREATE DATABASE IF NOT EXISTS wordpress CHARACTER SET utf8mb4;
    CREATE USER IF NOT EXISTS 'wp'@'localhost' IDENTIFIED BY 'wp';
    GRANT ALL ON wordpress.* TO 'wp'@'localhost';"
}

write_files() {
  if [ ! -f "$WWW/wp-settings.php" ]; then
    # A private copy: Debian's own wp-config looks up /etc/wordpress/config-<host>.php and
    # keeps wp-content outside the served folder.
    mkdir -p "$WWW"
    cp -a /usr/share/wordpress/. "$WWW/"
    rm -f "$WWW/.htaccess" "$WWW/wp-config.php"
    mkdir -p "$WWW/wp-content/uploads" "$WWW/wp-content/themes"
  fi
  mkdir -p "$WWW/wp-content/mu-plugins"
  cp "$HERE/wordpress/brandforge-meta.php" "$WWW/wp-content/mu-plugins/brandforge-meta.php"
  cp "$HERE/wordpress/brandforge-trigger.php" "$WWW/wp-content/mu-plugins/brandforge-trigger.php"
  cp "$HERE/wordpress/router.php" "$DIR/router.php"
  [ -f "$DIR/salt" ] || head -c 48 /dev/urandom | base64 | tr -d '/+=\n' >"$DIR/salt"
  local salt
  salt="$(cat "$DIR/salt")"
  # Rewritten on every start: the port may change between runs.
  cat >"$WWW/wp-config.php" <<PHP
<?php
define('DB_NAME', 'wordpress');
define('DB_USER', 'wp');
define('DB_PASSWORD', 'wp');
define('DB_HOST', 'localhost:$SOCK');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
foreach (['AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT'] as \$k) {
    define(\$k, '$salt' . \$k);
}
\$table_prefix = 'wp_';
define('WP_HOME', '$URL');
define('WP_SITEURL', '$URL');
define('WP_CONTENT_DIR', __DIR__ . '/wp-content');
define('WP_CONTENT_URL', '$URL/wp-content');
// Application passwords over plain HTTP need a local environment.
define('WP_ENVIRONMENT_TYPE', 'local');
// Deprecation notices of WP 6.1 on PHP 8.2 must stay out of the JSON answers.
define('WP_DEBUG', false);
define('WP_DEBUG_DISPLAY', false);
@ini_set('display_errors', '0');
// Nothing may leave 127.0.0.0/8: no update checks, no cron loopbacks, no external HTTP.
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_AUTO_UPDATE_CORE', false);
define('DISABLE_WP_CRON', true);
define('FS_METHOD', 'direct');
if (!defined('ABSPATH')) {
    define('ABSPATH', __DIR__ . '/');
}
require_once ABSPATH . 'wp-settings.php';
PHP
}

start_php() {
  if alive "$DIR/php.pid" && site_answers; then return 0; fi
  stop_php
  PHP_CLI_SERVER_WORKERS="$WORKERS" setsid php -d post_max_size=256M -d upload_max_filesize=256M \
    -d memory_limit=256M -d opcache.revalidate_freq=0 -d display_errors=0 \
    -S "127.0.0.1:$PORT" -t "$WWW" "$DIR/router.php" </dev/null >"$DIR/php.log" 2>&1 9>&- &
  echo $! >"$DIR/php.pid"
  for _ in $(seq 1 100); do
    site_answers && return 0
    alive "$DIR/php.pid" || break
    sleep 0.2
  done
  log "PHP's server did not answer on $URL; see $DIR/php.log"
  tail -5 "$DIR/php.log" >&2 || true
  exit 1
}

stop_php() {
  [ -f "$DIR/php.pid" ] || return 0
  local pid child
  pid="$(cat "$DIR/php.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    # SIGTERM to the main `php -S` leaves its workers running: stop them by pid too.
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill "$child" 2>/dev/null || true; done
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$DIR/php.pid"
}

stop_db() {
  alive "$DIR/mariadb.pid" || return 0
  local pid
  pid="$(cat "$DIR/mariadb.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

cmd="${1:-start}"
case "$cmd" in
  start)
    ensure_packages
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
    write_files
    start_db
    # Install (once) and mint application passwords before serving: the installer's
    # pretty-permalink probe then fails fast instead of waiting on a busy worker.
    creds="$(php -d display_errors=stderr -d error_reporting=E_ERROR "$HERE/wordpress/install.php" "$WWW" "$URL")"
    start_php
    { echo "BF_WP_URL=$URL"; echo "$creds"; } | tee "$DIR/env"
    ;;
  stop)
    mkdir -p "$DIR"
    stop_php
    stop_db
    log "stopped"
    ;;
  status)
    site_answers
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
