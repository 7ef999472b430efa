#!/bin/sh
# Action: tells the customer about their order. A real hook would call a mail API; this one
# prints JSON, which becomes the action's result.
entity="$1"; state="$2"
printf '{"notified":"%s","state":"%s","channel":"%s"}\n' "$entity" "$state" "${NOTIFY_CHANNEL:-none}"
