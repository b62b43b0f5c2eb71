#!/bin/sh
# Render the project's Asterisk config (the *.conf beside this script) with
# this site's ports, addresses and passwords: the dev container runs it at
# every start, container-less `make up` before starting Asterisk chrooted.
#
#   render.sh SRC_DIR DEST_DIR
#
# Settings come from the environment (`make up` reads them from .env):
#   AGENT_ARI__PASSWORD          ARI password of user ai-agent (required)
#   SOFTPHONE_1001_PASSWORD      SIP passwords of the softphones (required)
#   SOFTPHONE_1002_PASSWORD
#   ASTERISK_SIP_BIND=0.0.0.0    ASTERISK_SIP_PORT=5060
#   ASTERISK_ARI_BIND=127.0.0.1  ASTERISK_ARI_PORT=8088
#   ASTERISK_RTP_START=10000     ASTERISK_RTP_END=20000
#   ASTERISK_EXTERNAL_ADDRESS    public address to put in SIP and SDP (NAT)
#   ASTERISK_LOCAL_NET           comma-separated LAN ranges not to NAT
#   ASTERISK_AGENT_POOL          yes: extension 100 offers calls to a pool of
#                                agents (StasisBroadcast, apps ai-agent-pool-*);
#                                empty: Stasis(ai-agent) (one agent)
#   ASTERISK_BASE                if set: etc, run, log, spool, db and cache
#                                directories under it (a second Asterisk
#                                beside others in one root filesystem)
# Refuses (exit 1) on a missing password, a malformed value, or any
# @PLACEHOLDER@ left in the output: never run Asterisk with a default secret.
set -eu

SRC=${1:?usage: render.sh SRC_DIR DEST_DIR}
DEST=${2:?usage: render.sh SRC_DIR DEST_DIR}

fail() {
    echo "render.sh: $*" >&2
    exit 1
}

secret() { # name value
    case $2 in
    '') fail "$1 is empty: run \`make up\` once (it generates .env), or set it in .env" ;;
    *[!A-Za-z0-9._~-]*) fail "$1 may hold only letters, digits and . _ ~ -" ;;
    esac
}

port() { # name value
    case $2 in
    '' | *[!0-9]*) fail "$1 must be a port number, got '$2'" ;;
    esac
    [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || fail "$1 must be 1-65535, got $2"
}

address() { # name value (IPv4, hostname or CIDR list; no spaces or sed specials)
    case $2 in
    *[!A-Za-z0-9.:/,_-]*) fail "$1 must be an address (letters, digits, . : / , - _), got '$2'" ;;
    esac
}

ARI_PASSWORD=${AGENT_ARI__PASSWORD:-}
P1001=${SOFTPHONE_1001_PASSWORD:-}
P1002=${SOFTPHONE_1002_PASSWORD:-}
SIP_BIND=${ASTERISK_SIP_BIND:-0.0.0.0}
SIP_PORT=${ASTERISK_SIP_PORT:-5060}
ARI_BIND=${ASTERISK_ARI_BIND:-127.0.0.1}
ARI_PORT=${ASTERISK_ARI_PORT:-8088}
RTP_START=${ASTERISK_RTP_START:-10000}
RTP_END=${ASTERISK_RTP_END:-20000}
EXTERNAL=${ASTERISK_EXTERNAL_ADDRESS:-}
LOCAL_NET=${ASTERISK_LOCAL_NET:-}
BASE=${ASTERISK_BASE:-}
POOL=${ASTERISK_AGENT_POOL:-}

secret AGENT_ARI__PASSWORD "$ARI_PASSWORD"
secret SOFTPHONE_1001_PASSWORD "$P1001"
secret SOFTPHONE_1002_PASSWORD "$P1002"
port ASTERISK_SIP_PORT "$SIP_PORT"
port ASTERISK_ARI_PORT "$ARI_PORT"
port ASTERISK_RTP_START "$RTP_START"
port ASTERISK_RTP_END "$RTP_END"
[ "$RTP_START" -lt "$RTP_END" ] || fail "ASTERISK_RTP_START must be below ASTERISK_RTP_END"
address ASTERISK_SIP_BIND "$SIP_BIND"
address ASTERISK_ARI_BIND "$ARI_BIND"
address ASTERISK_EXTERNAL_ADDRESS "$EXTERNAL"
address ASTERISK_LOCAL_NET "$LOCAL_NET"
address ASTERISK_BASE "$BASE"
case $POOL in
'' | yes | no) ;;
*) fail "ASTERISK_AGENT_POOL must be yes, no or empty, got '$POOL'" ;;
esac

mkdir -p "$DEST"
for f in "$SRC"/*.conf; do
    cp "$f" "$DEST/"
done

# Each edit matches the exact line the shipped file has (the test lab rewrites
# the same lines), and must hit: a changed template fails here, not silently.
edit() { # file sed-expression pattern-that-must-exist
    grep -q -- "$3" "$DEST/$1" || fail "$1: expected a line matching '$3' to rewrite"
    sed -i -e "$2" "$DEST/$1"
}
edit ari.conf "s|= @ARI_PASSWORD@\$|= $ARI_PASSWORD|" '= @ARI_PASSWORD@$'
edit http.conf "s|^bindaddr = 127.0.0.1\$|bindaddr = $ARI_BIND|" '^bindaddr = 127.0.0.1$'
edit http.conf "s|^bindport = 8088\$|bindport = $ARI_PORT|" '^bindport = 8088$'
edit pjsip.conf "s|^bind = 127.0.0.1:5060\$|bind = $SIP_BIND:$SIP_PORT|" '^bind = 127.0.0.1:5060$'
edit pjsip.conf "s|@SOFTPHONE_1001_PASSWORD@|$P1001|" '@SOFTPHONE_1001_PASSWORD@'
edit pjsip.conf "s|@SOFTPHONE_1002_PASSWORD@|$P1002|" '@SOFTPHONE_1002_PASSWORD@'
edit rtp.conf "s|^rtpstart = 10000\$|rtpstart = $RTP_START|" '^rtpstart = 10000$'
edit rtp.conf "s|^rtpend = 20000\$|rtpend = $RTP_END|" '^rtpend = 20000$'
if [ "$POOL" = yes ]; then
    edit extensions.conf "s|^AI_AGENT_POOL =\$|AI_AGENT_POOL = yes|" '^AI_AGENT_POOL =$'
fi

if [ -n "$EXTERNAL" ]; then
    {
        echo
        echo "; Added by render.sh: ASTERISK_EXTERNAL_ADDRESS / ASTERISK_LOCAL_NET (NAT)."
        echo "[transport-udp](+)"
        echo "external_media_address = $EXTERNAL"
        echo "external_signaling_address = $EXTERNAL"
        old_ifs=$IFS
        IFS=,
        for net in $LOCAL_NET; do
            [ -n "$net" ] && echo "local_net = $net"
        done
        IFS=$old_ifs
    } >>"$DEST/pjsip.conf"
fi

if [ -n "$BASE" ]; then
    for pair in astetcdir:etc astdbdir:db astcachedir:cache astspooldir:spool astrundir:run astlogdir:log; do
        key=${pair%%:*}
        sub=${pair#*:}
        edit asterisk.conf "s|^$key =>.*\$|$key => $BASE/$sub|" "^$key =>"
    done
fi

left=$(grep -l '^[^;]*@[A-Z0-9_]*@' "$DEST"/*.conf || true)
[ -z "$left" ] && exit 0
fail "placeholders left unrendered in: $left"
