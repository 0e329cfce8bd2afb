#!/bin/sh
# The browser tests of `replaystore ui` (tests/test_ui.py) drive Debian's headless Chromium through its
# driver; install both when missing (as root, or with sudo).
set -eu
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -q && $sudo apt-get install -y -q chromium chromium-driver
