#!/bin/sh
# Action: email the customer that their order changed state. The full hook input (JSON) is on
# stdin; a real hook would pipe it to a mail API. JSON on stdout is the action's result.
printf '{"emailed":"%s","state":"%s"}\n' "$1" "$2"
