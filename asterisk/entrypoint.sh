#!/bin/sh
# Container entry: render the config from the environment, then run Asterisk
# in the foreground (its console log is the container's log).
set -eu
sh /opt/ari-agent/asterisk/render.sh /opt/ari-agent/asterisk /etc/asterisk
# Debian's packages own these for the asterisk user; a fresh volume may not.
for d in /var/lib/asterisk /var/log/asterisk /var/spool/asterisk /var/run/asterisk; do
    mkdir -p "$d"
    chown -R asterisk:asterisk "$d" 2>/dev/null || true
done
chown -R asterisk:asterisk /etc/asterisk 2>/dev/null || true
exec /usr/sbin/asterisk -f -n -U asterisk -G asterisk "$@"
