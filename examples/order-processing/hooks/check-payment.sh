#!/bin/sh
# Guard: allow the PAY transition when the payment provider authorized the amount.
# Exit 0 allows; exit 1 denies and what is printed becomes the reason.
order="$1"; amount="$2"
if [ -z "$amount" ] || [ "$amount" = "0" ]; then
  echo "order $order has no amount to authorize"
  exit 1
fi
exit 0
