#!/bin/sh
# Guard: exit 0 allows, exit 1 denies (what is printed is the reason).
# The hook input (JSON) is on stdin; the customer is the first argument.
customer="$1"
case "$customer" in
  blocked-*) echo "customer $customer is blocked"; exit 1 ;;
  *) exit 0 ;;
esac
