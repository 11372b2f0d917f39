#!/usr/bin/env bash
# Writes a minimal Janus configuration into "$1": HTTP API on 127.0.0.2:8088, the
# videoroom plugin only, RTP ports 20000-20999, ICE only on the benchmark veth.
set -euo pipefail
dir="$1"
lib=/usr/lib/x86_64-linux-gnu/janus
mkdir -p "$dir"
cat > "$dir/janus.jcfg" <<JCFG
general: {
	configs_folder = "$dir"
	plugins_folder = "$lib/plugins"
	transports_folder = "$lib/transports"
	events_folder = "$lib/events"
	loggers_folder = "$lib/loggers"
	debug_level = 3
}
media: {
	rtp_port_range = "20000-20999"
}
nat: {
	ice_enforce_list = "syv1"
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so"
}
transports: {
	disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so"
}
events: {
	broadcast = false
}
JCFG
cat > "$dir/janus.transport.http.jcfg" <<JCFG
general: {
	json = "indented"
	base_path = "/janus"
	http = true
	port = 8088
	ip = "127.0.0.2"
	https = false
}
admin: {
	admin_http = false
}
JCFG
cat > "$dir/janus.plugin.videoroom.jcfg" <<JCFG
general: {
}
JCFG
