#!/bin/sh
# Job: a weekly report. The job input (JSON with the job name and scheduled time) is on stdin.
printf '{"report":"weekly","generatedAt":"%s"}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
