#!/usr/bin/env bash
# Re-extract the customer texts and merge them into the catalogs (translators then fill
# the new msgstr). The .po files are the source; they are compiled in memory at first
# use (billing_engine/i18n.py), so there is no build step and no compiled file in git.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/pybabel" extract -F babel.cfg -k N_ --no-location --sort-output --omit-header \
  -o billing_engine/locale/messages.pot .
for lang in ru he hu; do
  # (the template has no locations already; update has no --no-location, and must keep the
  # catalog's header: its Plural-Forms)
  "$BIN/pybabel" update -i billing_engine/locale/messages.pot -d billing_engine/locale -l "$lang" \
    --ignore-obsolete --no-fuzzy-matching
done
echo "now translate the empty msgstr entries; tests/test_i18n.py fails until every message is translated"
